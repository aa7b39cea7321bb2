//! Tests of the in-process sort: key order against `Value::encode`, and
//! whole windows read through DuckDB against a plain reference.

use super::*;
use rand::{Rng, SeedableRng};

/// Random keys of random lengths (many sharing their first bytes or
/// more, some prefixes of others, some equal, some with another first
/// byte): the order is the keys' byte order.
#[test]
fn key_order_is_the_byte_order_of_the_keys() {
    for seed in 0..200 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut rows = Rows::default();
        let tag: u8 = rng.random_range(0..3);
        // Few byte values (many shared prefixes and ties) or any.
        let top = if seed % 2 == 0 { 3 } else { 256 };
        // Bytes most keys start with (a string key's length and common
        // start).
        let common: Vec<u8> = (0..rng.random_range(0..12)).map(|_| rng.random()).collect();
        for _ in 0..rng.random_range(0..300) {
            let len = rng.random_range(0..14);
            // Now and then a key whose first byte (its type tag)
            // differs from the others', or without the common start.
            rows.keys
                .push(if rng.random_range(0..50) == 0 { 9 } else { tag });
            if rng.random_range(0..50) != 0 {
                rows.keys.extend(&common);
            }
            for _ in 0..len {
                rows.keys.push(rng.random_range(0..top) as u8);
            }
            rows.key_written((0, 0));
        }
        let got: Vec<&[u8]> = rows.ordered().into_iter().map(|e| rows.key(e.1)).collect();
        let count = rows.key_ends.len() as u32;
        let mut expected: Vec<&[u8]> = (0..count).map(|r| rows.key(r)).collect();
        expected.sort();
        assert_eq!(got, expected, "seed {seed}");
    }
}

/// Random int64 and int32 keys (negatives, repeats, keys that differ
/// in one byte only, the extremes): rows read as one integer join key
/// come in the byte order of the keys' encodings, and rows whose sort
/// prefixes are equal have equal keys.
#[test]
fn integer_keys_sort_in_the_byte_order_of_their_encoding() {
    for seed in 0..100 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let wide = seed % 2 == 0;
        let base: i64 = rng.random();
        let values: Vec<i64> = (0..rng.random_range(0..2_000))
            .map(|_| match rng.random_range(0..5) {
                0 => rng.random_range(-300..300),
                1 => base ^ (rng.random_range(0..256i64) << (8 * rng.random_range(0..8))),
                2 => [i64::MIN, i64::MAX, 0, -1, i32::MIN.into(), i32::MAX.into()]
                    [rng.random_range(0..6)],
                _ => rng.random(),
            })
            .map(|v| if wide { v } else { v as i32 as i64 })
            .collect();
        let column = if wide {
            KeyColumn::Int64(Int64Array::from(values.clone()))
        } else {
            KeyColumn::Int32(Int32Array::from(
                values.iter().map(|&v| v as i32).collect::<Vec<_>>(),
            ))
        };
        let encoded = |v: i64| {
            let mut out = Vec::new();
            if wide {
                Value::Int64(v).encode(&mut out)
            } else {
                Value::Int32(v as i32).encode(&mut out)
            }
            out
        };
        let mut rows = Rows {
            integers: Some(Vec::new()),
            ..Rows::default()
        };
        for row in 0..values.len() {
            let key = integer_order(&column, row).unwrap();
            rows.integers.as_mut().unwrap().push(key);
            rows.at.push((0, row as u32));
        }
        let order = rows.ordered();
        let got: Vec<Vec<u8>> = order
            .iter()
            .map(|e| encoded(values[e.1 as usize]))
            .collect();
        let mut expected: Vec<Vec<u8>> = values.iter().map(|&v| encoded(v)).collect();
        expected.sort();
        assert_eq!(got, expected, "seed {seed}");
        for pair in order.windows(2) {
            let same = values[pair[0].1 as usize] == values[pair[1].1 as usize];
            assert_eq!(pair[0].0 == pair[1].0, same, "seed {seed}");
        }
    }
}

/// A key's newest (event, created) times and the rows that have them.
type Newest = ((i64, Option<i64>), Vec<i64>);

/// Windows read through DuckDB (several batches, repeated keys with
/// ties, null created times) under one int64, one
/// int32 and one string join key: every key once, in the byte order
/// of its encoding, with one of its newest rows.
#[test]
fn read_windows_give_each_key_its_newest_row_in_key_order() {
    for (ty, sql_type) in [
        ("int64", "BIGINT"),
        ("int32", "INTEGER"),
        ("string", "VARCHAR"),
    ] {
        let yaml = format!(
            "entities: [{{name: e, join_keys: [{{name: k, type: {ty}}}]}}]\n\
             sources: [{{name: s, path: s.parquet, timestamp_field: ts}}]\n\
             feature_views: [{{name: v, entities: [e], source: s, features: [{{name: x, type: int64}}]}}]\n"
        );
        let definitions: crate::registry::Definitions = serde_saphyr::from_str(&yaml).unwrap();
        let view = ViewSelection::for_view(&definitions, "v").unwrap();
        for seed in 0..8 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let keys: Vec<i64> = (0..rng.random_range(1..400))
                .map(|_| match rng.random_range(0..3) {
                    0 => rng.random_range(-40..40),
                    1 => rng.random::<i32>().into(),
                    _ => rng.random(),
                })
                // One key per value of the type.
                .map(|key: i64| {
                    if ty == "int32" {
                        key as i32 as i64
                    } else {
                        key
                    }
                })
                .collect();
            // (key, ts, created, x): x names the row.
            let rows: Vec<(i64, i64, Option<i64>, i64)> = (0..rng.random_range(0..5_000))
                .map(|x| {
                    let key = keys[rng.random_range(0..keys.len())];
                    let created = (rng.random_range(0..4) != 0).then(|| rng.random_range(0..3));
                    (key, rng.random_range(0..20), created, x)
                })
                .collect();
            let value = |key: i64| match ty {
                "int64" => Value::Int64(key),
                "int32" => Value::Int32(key as i32),
                _ => Value::String(key.to_string()),
            };
            let connection = Connection::open_in_memory().unwrap();
            connection
                .execute_batch(&format!(
                    "CREATE TABLE t (k0 {sql_type}, ts BIGINT, created BIGINT, f0 BIGINT)"
                ))
                .unwrap();
            {
                let mut appender = connection.appender("t").unwrap();
                for &(key, ts, created, x) in &rows {
                    let k: Box<dyn duckdb::ToSql> = match ty {
                        "int64" => Box::new(key),
                        "int32" => Box::new(key as i32),
                        _ => Box::new(key.to_string()),
                    };
                    appender
                        .append_row(duckdb::params![k, ts, created, x])
                        .unwrap();
                }
            }
            // In several batches (DuckDB's are 2,048 rows).
            let query = "SELECT * FROM t ORDER BY f0";
            let stop = AtomicBool::new(false);
            let Read::Sorted(sorted) =
                Sorted::read(&connection, query, &view, usize::MAX, &stop).unwrap()
            else {
                panic!("{ty} seed {seed}: not sorted")
            };
            assert_eq!(sorted.rows(), rows.len(), "{ty} seed {seed}");
            // The reference: each key's newest (ts, then created, a
            // null created below any) rows.
            let mut newest: std::collections::HashMap<i64, Newest> =
                std::collections::HashMap::new();
            for &(key, ts, created, x) in &rows {
                let entry = newest.entry(key).or_insert(((ts, created), Vec::new()));
                if (ts, created) > entry.0 {
                    *entry = ((ts, created), Vec::new());
                }
                if (ts, created) == entry.0 {
                    entry.1.push(x);
                }
            }
            let mut got = Vec::new();
            for batch in sorted.batches(97) {
                let batch = batch.unwrap();
                let x = batch.column(3).as_primitive::<Int64Type>();
                for i in 0..batch.num_rows() {
                    got.push(rows[x.value(i) as usize]);
                }
            }
            assert_eq!(got.len(), newest.len(), "{ty} seed {seed}: one row per key");
            let encoded = |key: i64| {
                let mut out = Vec::new();
                value(key).encode(&mut out);
                out
            };
            for pair in got.windows(2) {
                assert!(
                    encoded(pair[0].0) < encoded(pair[1].0),
                    "{ty} seed {seed}: order"
                );
            }
            for (key, _, _, x) in got {
                assert!(
                    newest[&key].1.contains(&x),
                    "{ty} seed {seed}: {key} got row {x}"
                );
            }
        }
    }
}
