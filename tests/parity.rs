//! Parity, proven: for every example transform in `transforms/`, random
//! source data is materialized as of T, looked up through a real HTTP server
//! with random request values (nulls, NaN, infinities, empty and long
//! strings, empty lists), and retrieved historically at T from an entity
//! file holding the same values. Every output must be bit-identical on both
//! paths, and equal to the transform compiled natively applied to the newest
//! source row a simple reference picks.

mod common;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float32Builder, Float64Array, Int64Array,
    ListBuilder, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};
use server::Server;
use wafer::{FeatureRequest, FeatureStore, NoProgress};

const DEFINITIONS: &str = "
entities:
  - name: item
    join_keys: [{name: item_id, type: int64}]
sources:
  - name: item_source
    path: data/items.parquet
    timestamp_field: event_timestamp
    created_timestamp_column: created
feature_views:
  - name: item_stats
    entities: [item]
    source: item_source
    ttl: 30d
    features:
      - {name: conv_rate, type: float32}
      - {name: driver_lat, type: float64}
      - {name: driver_lon, type: float64}
      - {name: item_embedding, type: list<float32>}
request_sources:
  - name: conv_request
    fields: [{name: val_to_add, type: int64}]
  - name: location_request
    fields: [{name: request_lat, type: float64}, {name: request_lon, type: float64}]
  - name: email_request
    fields: [{name: email, type: string}]
  - name: query_request
    fields: [{name: query_embedding, type: list<float32>}]
on_demand_feature_views:
  - name: conv
    transform: conv_rate_plus_val
    sources: [item_stats, conv_request]
    features: [{name: conv_rate_plus_val, type: float64}]
  - name: distance
    transform: haversine_distance
    sources: [item_stats, location_request]
    features: [{name: distance_km, type: float64}]
  - name: email
    transform: email_domain
    sources: [email_request]
    features:
      - {name: email_domain, type: string}
      - {name: domain_bucket, type: int64}
      - {name: is_free_mail, type: bool}
  - name: similarity
    transform: cosine_similarity
    sources: [item_stats, query_request]
    features: [{name: similarity, type: float64}]
";

const FEATURES: [&str; 6] = [
    "conv:conv_rate_plus_val",
    "distance:distance_km",
    "email:email_domain",
    "email:domain_bucket",
    "email:is_free_mail",
    "similarity:similarity",
];

const ITEMS: i64 = 30;
const HOUR: i64 = 3_600_000_000_000;

/// One source row.
#[derive(Clone, Debug)]
struct SourceRow {
    item: i64,
    event: i64,
    created: i64,
    conv_rate: Option<f32>,
    lat: Option<f64>,
    lon: Option<f64>,
    embedding: Option<Vec<f32>>,
}

/// One entity row's request values.
#[derive(Clone, Debug)]
struct Request {
    item: i64,
    val_to_add: Option<i64>,
    lat: Option<f64>,
    lon: Option<f64>,
    email: Option<String>,
    query: Option<Vec<f32>>,
}

/// One output value, compared by bits (NaN is canonical after the SDK).
#[derive(Clone, Debug, PartialEq)]
enum Out {
    Null,
    F64(u64),
    I64(i64),
    Bool(bool),
    Str(String),
}

fn float64(rng: &mut ChaCha8Rng) -> Option<f64> {
    Some(match rng.random_range(0..14) {
        0 => return None,
        1 => f64::NAN,
        2 => f64::INFINITY,
        3 => f64::NEG_INFINITY,
        4 => -0.0,
        5 => f64::from_bits(rng.random()), // any bit pattern, subnormals too
        6 => 5e-324,
        _ => rng.random_range(-200.0..200.0),
    })
}

fn float32(rng: &mut ChaCha8Rng) -> f32 {
    match rng.random_range(0..12) {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => -0.0,
        3 => f32::from_bits(rng.random()),
        _ => rng.random_range(-10.0..10.0),
    }
}

fn embedding(rng: &mut ChaCha8Rng) -> Option<Vec<f32>> {
    match rng.random_range(0..8) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some((0..rng.random_range(1..5)).map(|_| float32(rng)).collect()),
    }
}

fn email(rng: &mut ChaCha8Rng) -> Option<String> {
    Some(match rng.random_range(0..10) {
        0 => return None,
        1 => String::new(),
        2 => "ü".repeat(rng.random_range(1000..6000)) + "@Exämple.DE",
        3 => "x".repeat(10_000),
        4 => "Ada@GMAIL.com".to_string(),
        5 => "trailing@".to_string(),
        6 => "quote\"back\\slash\u{0}@nul.org".to_string(),
        _ => {
            let user: String = (0..rng.random_range(0..8))
                .map(|_| rng.random_range(b'a'..=b'z') as char)
                .collect();
            let domain =
                ["proton.me", "Example.com", "b.org", " spaced.net "][rng.random_range(0..4)];
            format!("{user}@{domain}")
        }
    })
}

fn source_rows(rng: &mut ChaCha8Rng, t: i64) -> Vec<SourceRow> {
    let mut rows = Vec::new();
    for item in 0..ITEMS {
        for _ in 0..rng.random_range(0..6) {
            // Hours around T, some after it: those must reach neither path.
            let event = t + rng.random_range(-72..12) * HOUR;
            rows.push(SourceRow {
                item,
                event,
                // Distinct per row: no exact (event, created) ties.
                created: event + rng.random_range(0..3) * HOUR + rows.len() as i64,
                conv_rate: rng.random_bool(0.9).then(|| float32(rng)),
                lat: float64(rng).map(|v| if rng.random_bool(0.7) { v % 90.0 } else { v }),
                lon: float64(rng),
                embedding: embedding(rng),
            });
        }
    }
    rows
}

fn requests(rng: &mut ChaCha8Rng) -> Vec<Request> {
    (0..rng.random_range(1..60))
        .map(|_| Request {
            item: rng.random_range(0..ITEMS + 3), // a few unknown items
            val_to_add: match rng.random_range(0..10) {
                0 => None,
                1 => Some([i64::MAX, i64::MIN, 0][rng.random_range(0..3)]),
                _ => Some(rng.random_range(-1_000_000..1_000_000)),
            },
            lat: float64(rng),
            lon: float64(rng),
            email: email(rng),
            query: embedding(rng),
        })
        .collect()
}

/// The newest row per item as of `t` (event time, then created time; the
/// TTL of 30 days covers all generated rows).
fn newest_as_of(rows: &[SourceRow], t: i64) -> HashMap<i64, SourceRow> {
    let mut newest: HashMap<i64, SourceRow> = HashMap::new();
    for row in rows.iter().filter(|r| r.event <= t) {
        let replace = newest
            .get(&row.item)
            .is_none_or(|seen| (row.event, row.created) >= (seen.event, seen.created));
        if replace {
            newest.insert(row.item, row.clone());
        }
    }
    newest
}

fn f64_out(value: Option<f64>) -> Out {
    // The SDK makes every NaN output the canonical one.
    value.map_or(Out::Null, |v| {
        Out::F64(if v.is_nan() { f64::NAN } else { v }.to_bits())
    })
}

/// The native functions on the reference's inputs, with the SDK's rule that
/// a null input to a non-optional parameter makes every output null.
fn expected(request: &Request, stored: Option<&SourceRow>) -> Vec<Out> {
    let conv = stored
        .and_then(|s| s.conv_rate)
        .zip(request.val_to_add)
        .map(|(rate, val)| conv_rate_plus_val::conv_rate_plus_val(rate as f64, val));
    let distance = match (
        stored.and_then(|s| s.lat.zip(s.lon)),
        request.lat.zip(request.lon),
    ) {
        (Some((dlat, dlon)), Some((rlat, rlon))) => {
            haversine_distance::haversine_distance(rlat, rlon, dlat, dlon)
        }
        _ => None,
    };
    let similarity = stored
        .and_then(|s| s.embedding.as_ref())
        .zip(request.query.as_ref())
        .and_then(|(item, query)| cosine_similarity::cosine_similarity(query, item));
    let email = request.email.as_deref().map(email_domain::email_features);
    vec![
        f64_out(conv),
        f64_out(distance),
        email
            .as_ref()
            .and_then(|e| e.email_domain.clone())
            .map_or(Out::Null, Out::Str),
        email
            .as_ref()
            .map_or(Out::Null, |e| Out::I64(e.domain_bucket)),
        email
            .as_ref()
            .map_or(Out::Null, |e| Out::Bool(e.is_free_mail)),
        f64_out(similarity),
    ]
}

fn utc_ns() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn list_f32(values: impl Iterator<Item = Option<Vec<f32>>>) -> ArrayRef {
    let mut builder = ListBuilder::new(Float32Builder::new());
    for value in values {
        match value {
            Some(items) => {
                builder.values().append_slice(&items);
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Arc::new(builder.finish())
}

fn write_source(path: &Path, rows: &[SourceRow]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::Int64, false),
        Field::new("event_timestamp", utc_ns(), false),
        Field::new("created", utc_ns(), false),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("driver_lat", DataType::Float64, true),
        Field::new("driver_lon", DataType::Float64, true),
        Field::new(
            "item_embedding",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.item))),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.event))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.created))
                .with_timezone("UTC"),
        ),
        Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.conv_rate))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.lat))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.lon))),
        list_f32(rows.iter().map(|r| r.embedding.clone())),
    ];
    common::write_parquet(path, &RecordBatch::try_new(schema, columns).unwrap());
}

fn write_entities(path: &Path, requests: &[Request], t: i64) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::Int64, false),
        Field::new("event_timestamp", utc_ns(), false),
        Field::new("val_to_add", DataType::Int64, true),
        Field::new("request_lat", DataType::Float64, true),
        Field::new("request_lon", DataType::Float64, true),
        Field::new("email", DataType::Utf8, true),
        Field::new(
            "query_embedding",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            requests.iter().map(|r| r.item),
        )),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(requests.iter().map(|_| t))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter(requests.iter().map(|r| r.val_to_add))),
        Arc::new(Float64Array::from_iter(requests.iter().map(|r| r.lat))),
        Arc::new(Float64Array::from_iter(requests.iter().map(|r| r.lon))),
        Arc::new(StringArray::from_iter(
            requests.iter().map(|r| r.email.as_deref()),
        )),
        list_f32(requests.iter().map(|r| r.query.clone())),
    ];
    common::write_parquet(path, &RecordBatch::try_new(schema, columns).unwrap());
}

fn request_body(requests: &[Request]) -> Json {
    let column = |f: &dyn Fn(&Request) -> Json| -> Json { requests.iter().map(f).collect() };
    json!({
        "features": FEATURES,
        "entities": {
            "item_id": column(&|r| json!(r.item)),
            "val_to_add": column(&|r| json!(r.val_to_add)),
            "request_lat": column(&|r| r.lat.map_or(Json::Null, common::float_json)),
            "request_lon": column(&|r| r.lon.map_or(Json::Null, common::float_json)),
            "email": column(&|r| json!(r.email)),
            "query_embedding": column(&|r| {
                r.query.as_ref().map_or(Json::Null, |q| {
                    q.iter().map(|&v| common::float_json(v as f64)).collect()
                })
            }),
        }
    })
}

/// An output value as a lookup's JSON carries it.
fn online_out(value: &Json, status: &Json) -> Out {
    let out = match value {
        Json::Null => Out::Null,
        Json::Bool(b) => Out::Bool(*b),
        Json::Number(n) if n.is_i64() => Out::I64(n.as_i64().unwrap()),
        Json::Number(n) => Out::F64(n.as_f64().unwrap().to_bits()),
        Json::String(s) => match s.as_str() {
            "NaN" => Out::F64(f64::NAN.to_bits()),
            "Infinity" => Out::F64(f64::INFINITY.to_bits()),
            "-Infinity" => Out::F64(f64::NEG_INFINITY.to_bits()),
            _ => Out::Str(s.clone()),
        },
        other => panic!("unexpected value {other}"),
    };
    let expected_status = if out == Out::Null {
        "NULL_VALUE"
    } else {
        "PRESENT"
    };
    assert_eq!(status, expected_status, "status of {value}");
    out
}

/// Floats typed as integers by JSON (e.g. a distance of 0) compare as the
/// declared float64.
fn as_f64(out: Out) -> Out {
    match out {
        Out::I64(v) => Out::F64((v as f64).to_bits()),
        other => other,
    }
}

fn offline_out(column: &ArrayRef, row: usize) -> Out {
    if column.is_null(row) {
        return Out::Null;
    }
    match column.data_type() {
        DataType::Float64 => Out::F64(column.as_primitive::<Float64Type>().value(row).to_bits()),
        DataType::Int64 => Out::I64(column.as_primitive::<Int64Type>().value(row)),
        DataType::Boolean => Out::Bool(
            column
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .value(row),
        ),
        DataType::Utf8 => Out::Str(column.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Out::Str(column.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Out::Str(column.as_string_view().value(row).to_string()),
        other => panic!("unexpected column type {other}"),
    }
}

#[test]
fn every_example_transform_agrees_online_over_http_and_offline_bit_for_bit() {
    let dir = common::project(DEFINITIONS);
    let t = (chrono::Utc::now() - chrono::Duration::hours(12))
        .timestamp_nanos_opt()
        .unwrap()
        / HOUR
        * HOUR;
    let mut rng = ChaCha8Rng::seed_from_u64(0xfea7);
    let source = source_rows(&mut rng, t);
    write_source(&dir.path().join("data/items.parquet"), &source);
    let newest = newest_as_of(&source, t);
    {
        let store = FeatureStore::open(dir.path()).unwrap();
        for name in [
            "conv_rate_plus_val",
            "haversine_distance",
            "email_domain",
            "cosine_similarity",
        ] {
            store
                .upload_transform(name, &wasm::transform_module(name))
                .unwrap();
        }
        store.apply().unwrap();
        let end = chrono::DateTime::from_timestamp_nanos(t);
        store
            .materialize(end - chrono::Duration::days(40), end, None, &NoProgress)
            .unwrap();
    }

    // Online, through HTTP, for every seed.
    let seeds: Vec<(u64, Vec<Request>)> = common::seeds(0, 24)
        .map(|seed| (seed, requests(&mut ChaCha8Rng::seed_from_u64(seed))))
        .collect();
    let mut online: Vec<Vec<Vec<Out>>> = Vec::new();
    {
        let server = Server::start(dir.path(), &[]);
        for (seed, requests) in &seeds {
            let (status, body) = server.post("/get-online-features", request_body(requests));
            assert_eq!(status, 200, "seed {seed}: {body}");
            let names = &body["metadata"]["feature_names"];
            let expected_names: Vec<&str> = std::iter::once("item_id")
                .chain(FEATURES.iter().map(|f| f.split_once(':').unwrap().1))
                .collect();
            assert_eq!(names, &json!(expected_names), "seed {seed}");
            let rows = (0..requests.len())
                .map(|row| {
                    (0..FEATURES.len())
                        .map(|f| {
                            let result = &body["results"][f + 1];
                            online_out(&result["values"][row], &result["statuses"][row])
                        })
                        .collect()
                })
                .collect();
            online.push(rows);
        }
    }

    // Offline, from entity files at T, and both against the reference.
    let store = FeatureStore::open(dir.path()).unwrap();
    let request = FeatureRequest::Features(FEATURES.iter().map(|f| f.to_string()).collect());
    let mut present = [0usize; FEATURES.len()];
    for ((seed, requests), online) in seeds.iter().zip(&online) {
        let entities = dir.path().join(format!("entities-{seed}.parquet"));
        write_entities(&entities, requests, t);
        let output = dir.path().join(format!("training-{seed}.parquet"));
        store
            .get_historical_features(&entities, &request, false, &output)
            .unwrap();
        let training = common::read_parquet(&output);
        assert_eq!(training.num_rows(), requests.len());
        for (row, request) in requests.iter().enumerate() {
            let reference = expected(request, newest.get(&request.item));
            for (f, feature) in FEATURES.iter().enumerate() {
                let name = feature.split_once(':').unwrap().1;
                let column = training
                    .column_by_name(name)
                    .unwrap_or_else(|| panic!("no column {name}"));
                let offline = offline_out(column, row);
                let online = online[row][f].clone();
                let (online, reference) = if matches!(offline, Out::F64(_)) {
                    (as_f64(online), as_f64(reference[f].clone()))
                } else {
                    (online, reference[f].clone())
                };
                let context = || {
                    format!(
                        "seed {seed}, row {row}, {feature}: request {request:?}, stored {:?}",
                        newest.get(&request.item)
                    )
                };
                assert_eq!(online, offline, "online vs training set: {}", context());
                assert_eq!(offline, reference, "training set vs native: {}", context());
                present[f] += usize::from(offline != Out::Null);
            }
        }
    }
    // The random data must exercise every transform, not only its nulls.
    for (f, count) in present.iter().enumerate() {
        assert!(
            *count > 5,
            "{} was almost always null: {count}",
            FEATURES[f]
        );
    }
}
