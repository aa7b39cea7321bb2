//! Historical retrieval checked against a deliberately naive reference: for
//! every entity row and view, scan every source row (nested loops) and keep
//! the best match by the documented rules. Randomized over many seeds.

mod common;

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wafer::{FeatureRequest, FeatureStore};

const SECOND: i64 = 1_000_000_000;
/// 2024-01-01T00:00:00Z in seconds.
const BASE: i64 = 1_704_067_200;

#[derive(Clone, Debug)]
struct DriverRow {
    driver_id: i64,
    ts: i64, // seconds
    created: Option<i64>,
    rate: Option<f64>,
    trips: Option<i64>,
    name: Option<String>,
}

#[derive(Clone, Debug)]
struct CustomerRow {
    customer_id: String,
    ts: i64,
    spend: Option<i32>,
}

#[derive(Clone, Debug)]
struct StoreRow {
    region: String,
    store_id: i32,
    ts: i64,
    created: Option<i64>,
    score: Option<f32>,
}

#[derive(Clone, Debug)]
struct EntityRow {
    driver_id: Option<i64>,
    customer_id: Option<String>,
    region: Option<String>,
    store_id: Option<i32>,
    ts: i64,
    label: i64,
}

/// A timestamp column in a random unit, with or without a zone; values are
/// whole seconds so every unit holds them exactly.
type TimeFormat = (TimeUnit, Option<Arc<str>>);

fn time_format(rng: &mut ChaCha8Rng) -> TimeFormat {
    let zone: Option<Arc<str>> = if rng.random_bool(0.5) {
        Some("UTC".into())
    } else {
        None
    };
    let unit = match rng.random_range(0..4) {
        0 => TimeUnit::Second,
        1 => TimeUnit::Millisecond,
        2 => TimeUnit::Microsecond,
        _ => TimeUnit::Nanosecond,
    };
    (unit, zone)
}

fn timestamps(
    (unit, zone): TimeFormat,
    seconds: impl Iterator<Item = Option<i64>>,
) -> (DataType, ArrayRef) {
    let values: Vec<Option<i64>> = seconds.collect();
    let array: ArrayRef = match unit {
        TimeUnit::Second => {
            Arc::new(TimestampSecondArray::from(values).with_timezone_opt(zone.clone()))
        }
        TimeUnit::Millisecond => Arc::new(
            TimestampMillisecondArray::from(
                values
                    .iter()
                    .map(|v| v.map(|s| s * 1_000))
                    .collect::<Vec<_>>(),
            )
            .with_timezone_opt(zone.clone()),
        ),
        TimeUnit::Microsecond => Arc::new(
            TimestampMicrosecondArray::from(
                values
                    .iter()
                    .map(|v| v.map(|s| s * 1_000_000))
                    .collect::<Vec<_>>(),
            )
            .with_timezone_opt(zone.clone()),
        ),
        TimeUnit::Nanosecond => Arc::new(
            TimestampNanosecondArray::from(
                values
                    .iter()
                    .map(|v| v.map(|s| s * SECOND))
                    .collect::<Vec<_>>(),
            )
            .with_timezone_opt(zone.clone()),
        ),
    };
    (DataType::Timestamp(unit, zone), array)
}

fn batch(columns: Vec<(&str, DataType, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, data_type, _)| Field::new(*name, data_type.clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, _, a)| a).collect(),
    )
    .unwrap()
}

/// The naive rule: among rows with the same key and `ts <= t` (and
/// `ts >= t - ttl` when ttl > 0), the greatest ts wins, ties broken by the
/// greatest created timestamp (null created loses).
fn reference<R: Clone>(
    rows: &[R],
    matches_key: impl Fn(&R) -> bool,
    ts: impl Fn(&R) -> i64,
    created: impl Fn(&R) -> Option<i64>,
    t: i64,
    ttl: i64,
) -> Option<R> {
    let mut best: Option<&R> = None;
    for row in rows {
        if !matches_key(row) || ts(row) > t || (ttl > 0 && ts(row) < t - ttl) {
            continue;
        }
        best = match best {
            None => Some(row),
            Some(current) => {
                let better = ts(row) > ts(current)
                    || (ts(row) == ts(current)
                        && created(row).unwrap_or(i64::MIN) > created(current).unwrap_or(i64::MIN));
                if better {
                    Some(row)
                } else {
                    Some(current)
                }
            }
        };
    }
    best.cloned()
}

fn run_seed(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let span = 3_600; // an hour of event times, with many exact collisions
    let slot = |rng: &mut ChaCha8Rng| BASE + rng.random_range(0..60) * 60;

    // Driver source: duplicate timestamps, created ties broken by distinct created values.
    let mut drivers = Vec::new();
    for _ in 0..rng.random_range(50..300) {
        let ts = slot(&mut rng);
        drivers.push(DriverRow {
            driver_id: rng.random_range(0..8),
            ts,
            created: if rng.random_bool(0.1) {
                None
            } else {
                Some(ts + rng.random_range(0..10_000))
            },
            rate: if rng.random_bool(0.15) {
                None
            } else {
                Some(rng.random::<f64>())
            },
            trips: if rng.random_bool(0.15) {
                None
            } else {
                Some(rng.random_range(-5..1000))
            },
            name: if rng.random_bool(0.1) {
                None
            } else {
                Some(format!("n{}", rng.random_range(0..1000)))
            },
        });
    }
    // Make (driver, ts, created) unique so the winner is well defined.
    drivers.sort_by_key(|r| (r.driver_id, r.ts, r.created));
    drivers.dedup_by_key(|r| (r.driver_id, r.ts, r.created));
    let mut seen = std::collections::HashSet::new();
    drivers.retain(|r| r.created.is_some() || seen.insert((r.driver_id, r.ts)));
    // Shuffle so file order says nothing.
    for i in (1..drivers.len()).rev() {
        let j = rng.random_range(0..=i);
        drivers.swap(i, j);
    }

    let mut customers = Vec::new();
    let mut customer_keys = std::collections::HashSet::new();
    for _ in 0..rng.random_range(20..150) {
        let row = CustomerRow {
            customer_id: format!("c{}", rng.random_range(0..6)),
            ts: slot(&mut rng),
            spend: if rng.random_bool(0.2) {
                None
            } else {
                Some(rng.random_range(-100..100))
            },
        };
        if customer_keys.insert((row.customer_id.clone(), row.ts)) {
            customers.push(row);
        }
    }

    let mut stores = Vec::new();
    let mut store_keys = std::collections::HashSet::new();
    for _ in 0..rng.random_range(20..150) {
        let ts = slot(&mut rng);
        let row = StoreRow {
            region: ["north", "south"][rng.random_range(0..2)].to_string(),
            store_id: rng.random_range(0..4),
            ts,
            created: Some(ts + rng.random_range(0..100_000)),
            score: if rng.random_bool(0.2) {
                None
            } else {
                Some(rng.random::<f32>())
            },
        };
        if store_keys.insert((row.region.clone(), row.store_id, row.ts, row.created)) {
            stores.push(row);
        }
    }

    let ttl_choices = [0, 60, 300, 900, 1800];
    let ttl_rate = ttl_choices[rng.random_range(0..ttl_choices.len())];
    let ttl_trips = ttl_choices[rng.random_range(0..ttl_choices.len())];
    let ttl_spend = ttl_choices[rng.random_range(0..ttl_choices.len())];
    let ttl_score = ttl_choices[rng.random_range(0..ttl_choices.len())];

    let mut entities = Vec::new();
    for i in 0..rng.random_range(100..400) {
        // Some timestamps sit exactly at a source row's time or exactly at its TTL edge.
        let ts = match rng.random_range(0..4) {
            0 if !drivers.is_empty() => {
                let r = &drivers[rng.random_range(0..drivers.len())];
                r.ts + [0, ttl_rate, ttl_trips, ttl_rate + 1][rng.random_range(0..4)]
            }
            _ => BASE - 600 + rng.random_range(0..span + 3_600),
        };
        let entity = EntityRow {
            driver_id: if rng.random_bool(0.05) {
                None
            } else {
                Some(rng.random_range(0..10))
            },
            customer_id: if rng.random_bool(0.05) {
                None
            } else {
                Some(format!("c{}", rng.random_range(0..8)))
            },
            region: Some(["north", "south", "east"][rng.random_range(0..3)].to_string()),
            store_id: Some(rng.random_range(0..5)),
            ts,
            label: i,
        };
        entities.push(entity.clone());
        if rng.random_bool(0.05) {
            entities.push(EntityRow {
                label: i + 10_000,
                ..entity
            }); // same key and time twice
        }
    }

    let definitions = format!(
        "
entities:
  - name: driver
    join_keys: [{{name: driver_id, type: int64}}]
  - name: customer
    join_keys: [{{name: customer_id, type: string}}]
  - name: store
    join_keys:
      - {{name: region, type: string}}
      - {{name: store_id, type: int32}}
sources:
  - name: drivers
    path: data/drivers
    timestamp_field: event_timestamp
    created_timestamp_column: created
    field_mapping: {{trip_count: trips}}
  - name: customers
    path: data/customers.parquet
    timestamp_field: ts
  - name: stores
    path: data/stores.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created_at
feature_views:
  - name: driver_rates
    entities: [driver]
    source: drivers
    ttl: {ttl_rate}s
    features:
      - {{name: rate, type: float64}}
      - {{name: name, type: string}}
  - name: driver_trips
    entities: [driver]
    source: drivers
    ttl: {ttl_trips}s
    features:
      - {{name: trips, type: int64}}
  - name: customer_spend
    entities: [customer]
    source: customers
    ttl: {ttl_spend}s
    features:
      - {{name: spend, type: int32}}
  - name: store_scores
    entities: [store]
    source: stores
    ttl: {ttl_score}s
    features:
      - {{name: score, type: float32}}
"
    );
    let project = common::project(&definitions);
    let dir = project.path();

    // The driver source is split over two files in a directory.
    let split = drivers.len() / 2;
    let (event_format, created_format) = (time_format(&mut rng), time_format(&mut rng));
    for (part, rows) in [&drivers[..split], &drivers[split..]]
        .into_iter()
        .enumerate()
    {
        let (ts_type, ts) = timestamps(event_format.clone(), rows.iter().map(|r| Some(r.ts)));
        let (created_type, created) =
            timestamps(created_format.clone(), rows.iter().map(|r| r.created));
        let data = batch(vec![
            (
                "driver_id",
                DataType::Int64,
                Arc::new(Int64Array::from_iter(
                    rows.iter().map(|r| Some(r.driver_id)),
                )),
            ),
            ("event_timestamp", ts_type, ts),
            ("created", created_type, created),
            (
                "rate",
                DataType::Float64,
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.rate))),
            ),
            (
                "trip_count",
                DataType::Int64,
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.trips))),
            ),
            (
                "name",
                DataType::Utf8,
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.name.clone()))),
            ),
        ]);
        common::write_parquet(&dir.join(format!("data/drivers/part{part}.parquet")), &data);
    }
    let (ts_type, ts) = timestamps(time_format(&mut rng), customers.iter().map(|r| Some(r.ts)));
    common::write_parquet(
        &dir.join("data/customers.parquet"),
        &batch(vec![
            (
                "customer_id",
                DataType::Utf8,
                Arc::new(StringArray::from_iter(
                    customers.iter().map(|r| Some(r.customer_id.clone())),
                )),
            ),
            ("ts", ts_type, ts),
            (
                "spend",
                DataType::Int32,
                Arc::new(Int32Array::from_iter(customers.iter().map(|r| r.spend))),
            ),
        ]),
    );
    let (ts_type, ts) = timestamps(time_format(&mut rng), stores.iter().map(|r| Some(r.ts)));
    let (created_type, created) =
        timestamps(time_format(&mut rng), stores.iter().map(|r| r.created));
    common::write_parquet(
        &dir.join("data/stores.parquet"),
        &batch(vec![
            (
                "region",
                DataType::Utf8,
                Arc::new(StringArray::from_iter(
                    stores.iter().map(|r| Some(r.region.clone())),
                )),
            ),
            (
                "store_id",
                DataType::Int32,
                Arc::new(Int32Array::from_iter(
                    stores.iter().map(|r| Some(r.store_id)),
                )),
            ),
            ("event_timestamp", ts_type, ts),
            ("created_at", created_type, created),
            (
                "score",
                DataType::Float32,
                Arc::new(Float32Array::from_iter(stores.iter().map(|r| r.score))),
            ),
        ]),
    );

    // Entity rows: Parquet with a random timestamp unit, or CSV.
    let csv = rng.random_bool(0.3);
    let entity_path = dir.join(if csv {
        "entities.csv"
    } else {
        "entities.parquet"
    });
    if csv {
        let mut text =
            String::from("driver_id,customer_id,region,store_id,event_timestamp,label\n");
        for e in &entities {
            let time = chrono::DateTime::from_timestamp(e.ts, 0).unwrap();
            text.push_str(&format!(
                "{},{},{},{},{},{}\n",
                e.driver_id.map(|v| v.to_string()).unwrap_or_default(),
                e.customer_id.clone().unwrap_or_default(),
                e.region.clone().unwrap_or_default(),
                e.store_id.map(|v| v.to_string()).unwrap_or_default(),
                time.format("%Y-%m-%d %H:%M:%S"),
                e.label
            ));
        }
        std::fs::write(&entity_path, text).unwrap();
    } else {
        let (ts_type, ts) = timestamps(time_format(&mut rng), entities.iter().map(|e| Some(e.ts)));
        common::write_parquet(
            &entity_path,
            &batch(vec![
                (
                    "driver_id",
                    DataType::Int64,
                    Arc::new(Int64Array::from_iter(entities.iter().map(|e| e.driver_id))),
                ),
                (
                    "customer_id",
                    DataType::Utf8,
                    Arc::new(StringArray::from_iter(
                        entities.iter().map(|e| e.customer_id.clone()),
                    )),
                ),
                (
                    "region",
                    DataType::Utf8,
                    Arc::new(StringArray::from_iter(
                        entities.iter().map(|e| e.region.clone()),
                    )),
                ),
                (
                    "store_id",
                    DataType::Int32,
                    Arc::new(Int32Array::from_iter(entities.iter().map(|e| e.store_id))),
                ),
                ("event_timestamp", ts_type, ts),
                (
                    "label",
                    DataType::Int64,
                    Arc::new(Int64Array::from_iter(
                        entities.iter().map(|e| Some(e.label)),
                    )),
                ),
            ]),
        );
    }

    let store = FeatureStore::open(dir).unwrap();
    store
        .apply()
        .unwrap_or_else(|e| panic!("seed {seed}: apply failed: {e}"));
    let output = dir.join("out.parquet");
    let request = FeatureRequest::Features(
        [
            "store_scores:score",
            "driver_rates:rate",
            "customer_spend:spend",
            "driver_trips:trips",
            "driver_rates:name",
        ]
        .map(String::from)
        .to_vec(),
    );
    let summary = store
        .get_historical_features(&entity_path, &request, false, &output)
        .unwrap_or_else(|e| panic!("seed {seed}: retrieval failed: {e}"));
    assert_eq!(
        summary.rows as usize,
        entities.len(),
        "seed {seed}: every entity row comes out once"
    );

    let result = common::read_parquet(&output);
    let names: Vec<String> = result
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "customer_id",
            "region",
            "store_id",
            "event_timestamp",
            "label",
            "score",
            "rate",
            "spend",
            "trips",
            "name"
        ],
        "seed {seed}"
    );
    let column = |name: &str| result.column_by_name(name).unwrap().clone();
    let labels = column("label");
    let labels = labels.as_any().downcast_ref::<Int64Array>().unwrap();
    let score = column("score");
    let score = score.as_any().downcast_ref::<Float32Array>().unwrap();
    let rate = column("rate");
    let rate = rate.as_any().downcast_ref::<Float64Array>().unwrap();
    let spend = column("spend");
    let spend = spend.as_any().downcast_ref::<Int32Array>().unwrap();
    let trips = column("trips");
    let trips = trips.as_any().downcast_ref::<Int64Array>().unwrap();
    let name = column("name");
    let name = arrow::compute::cast(&name, &DataType::Utf8).unwrap();
    let name = name.as_any().downcast_ref::<StringArray>().unwrap();
    let opt = |array: &dyn Array, i: usize| array.is_valid(i);

    for (i, e) in entities.iter().enumerate() {
        let context = format!("seed {seed}, entity row {i} ({e:?})");
        assert_eq!(labels.value(i), e.label, "{context}: rows keep input order");

        let driver_rate = reference(
            &drivers,
            |r| Some(r.driver_id) == e.driver_id,
            |r| r.ts,
            |r| r.created,
            e.ts,
            ttl_rate,
        );
        let expected_rate = driver_rate.as_ref().and_then(|r| r.rate);
        let got_rate = opt(rate, i).then(|| rate.value(i));
        assert_eq!(
            got_rate.map(f64::to_bits),
            expected_rate.map(f64::to_bits),
            "{context}: rate (ttl {ttl_rate})"
        );
        let expected_name = driver_rate.as_ref().and_then(|r| r.name.clone());
        let got_name = opt(name, i).then(|| name.value(i).to_string());
        assert_eq!(got_name, expected_name, "{context}: name");

        let driver_trips = reference(
            &drivers,
            |r| Some(r.driver_id) == e.driver_id,
            |r| r.ts,
            |r| r.created,
            e.ts,
            ttl_trips,
        );
        let expected_trips = driver_trips.and_then(|r| r.trips);
        assert_eq!(
            opt(trips, i).then(|| trips.value(i)),
            expected_trips,
            "{context}: trips (ttl {ttl_trips})"
        );

        let customer = reference(
            &customers,
            |r| Some(&r.customer_id) == e.customer_id.as_ref(),
            |r| r.ts,
            |_| None,
            e.ts,
            ttl_spend,
        );
        let expected_spend = customer.and_then(|r| r.spend);
        assert_eq!(
            opt(spend, i).then(|| spend.value(i)),
            expected_spend,
            "{context}: spend (ttl {ttl_spend})"
        );

        let store_row = reference(
            &stores,
            |r| Some(&r.region) == e.region.as_ref() && Some(r.store_id) == e.store_id,
            |r| r.ts,
            |r| r.created,
            e.ts,
            ttl_score,
        );
        let expected_score = store_row.and_then(|r| r.score);
        assert_eq!(
            opt(score, i).then(|| score.value(i).to_bits()),
            expected_score.map(f32::to_bits),
            "{context}: score (ttl {ttl_score})"
        );
    }
}

#[test]
fn point_in_time_join_matches_naive_reference() {
    for seed in common::seeds(0, 40) {
        run_seed(seed);
    }
}

/// DuckDB reads big CSV files in parallel: rows must still come out in file
/// order, duplicates included.
#[test]
fn large_csv_entity_files_keep_their_order() {
    let project = common::project(
        "
entities:
  - name: driver
    join_keys: [{name: driver_id, type: int64}]
sources:
  - name: s
    path: s.parquet
    timestamp_field: ts
feature_views:
  - name: v
    entities: [driver]
    source: s
    features: [{name: x, type: int64}]
",
    );
    let dir = project.path();
    let drivers = 1000;
    common::write_parquet(
        &dir.join("s.parquet"),
        &batch(vec![
            (
                "driver_id",
                DataType::Int64,
                Arc::new(Int64Array::from_iter_values(0..drivers)),
            ),
            (
                "ts",
                DataType::Timestamp(TimeUnit::Second, None),
                Arc::new(TimestampSecondArray::from_iter_values(
                    (0..drivers).map(|d| BASE + d),
                )),
            ),
            (
                "x",
                DataType::Int64,
                Arc::new(Int64Array::from_iter_values((0..drivers).map(|d| d * 7))),
            ),
        ]),
    );
    let rows = 300_000i64;
    let mut text = String::with_capacity(rows as usize * 40);
    text.push_str("driver_id,event_timestamp,label\n");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut expected = Vec::with_capacity(rows as usize);
    for label in 0..rows {
        let driver = rng.random_range(0..drivers);
        let time =
            chrono::DateTime::from_timestamp(BASE + rng.random_range(0..2 * drivers), 0).unwrap();
        text.push_str(&format!(
            "{driver},{},{label}\n",
            time.format("%Y-%m-%dT%H:%M:%SZ")
        ));
        expected.push((
            label,
            (time.timestamp() >= BASE + driver).then_some(driver * 7),
        ));
    }
    std::fs::write(dir.join("entities.csv"), text).unwrap();
    let store = FeatureStore::open(dir).unwrap();
    store.apply().unwrap();
    let output = dir.join("out.parquet");
    let request = FeatureRequest::Features(vec!["v:x".to_string()]);
    store
        .get_historical_features(&dir.join("entities.csv"), &request, false, &output)
        .unwrap();
    let result = common::read_parquet(&output);
    let labels = result.column_by_name("label").unwrap();
    let labels = arrow::compute::cast(labels, &DataType::Int64).unwrap();
    let labels = labels.as_any().downcast_ref::<Int64Array>().unwrap();
    let x = result
        .column_by_name("x")
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(result.num_rows(), rows as usize);
    for (i, (label, value)) in expected.into_iter().enumerate() {
        assert_eq!(labels.value(i), label, "row {i} out of order");
        assert_eq!(x.is_valid(i).then(|| x.value(i)), value, "row {i}");
    }
}
