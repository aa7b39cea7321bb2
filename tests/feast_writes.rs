//! `POST /write-to-online-store` with the body Feast's SDK sends (its
//! remote online store's `online_write_batch`: one view, join keys and
//! features as columns, naive-UTC ISO times under `event_timestamp`, a
//! `created` column that may be null) through a real `wafer serve`: the
//! rows are looked up as written, the newer event wins in either order of
//! arrival, a bad batch writes nothing, and unknown or offline-only views
//! are refused.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use server::Server;

/// Feast's naive-UTC ISO text (`2021-04-12T10:59:42.123456`).
fn naive(t: chrono::DateTime<chrono::Utc>) -> String {
    t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn write(server: &Server, body: Value) -> (u16, Value) {
    server.post("/write-to-online-store", body)
}

fn conv_rates(server: &Server, ids: &[i64]) -> Vec<Value> {
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": ids}}),
    );
    assert_eq!(status, 200, "{body}");
    body["results"][1]["values"].as_array().unwrap().clone()
}

#[test]
fn feast_sdk_writes_land_online_with_push_semantics() {
    let project = cli::example_project();
    let server = Server::start(project.path(), &[]);
    let now = chrono::Utc::now();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    // Random rows, each driver at most once per batch, in two batches
    // whose event times interleave: per driver the later event must win,
    // whichever batch carried it.
    let ids: Vec<i64> = (1001..1041).collect();
    let mut expected = std::collections::HashMap::new();
    for batch in 0..2 {
        let mut rows: Vec<(i64, f32, i64)> = Vec::new();
        for &id in &ids {
            let offset = rng.random_range(1..10_000);
            let value = f32::from(rng.random_range(0u16..1000)) / 1000.0;
            rows.push((id, value, offset));
            let entry = expected.entry(id).or_insert((offset, value, batch));
            if offset > entry.0 {
                *entry = (offset, value, batch);
            }
        }
        let at = |o: i64| naive(now - chrono::Duration::milliseconds(30_000 - o));
        let (status, body) = write(
            &server,
            json!({
                "feature_view_name": "driver_hourly_stats",
                "allow_registry_cache": false,
                "df": {
                    "driver_id": rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    "conv_rate": rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                    "acc_rate": rows.iter().map(|_| 0.5).collect::<Vec<_>>(),
                    "avg_daily_trips": rows.iter().map(|_| 7).collect::<Vec<_>>(),
                    "event_timestamp": rows.iter().map(|r| at(r.2)).collect::<Vec<_>>(),
                    "created": rows.iter().map(|_| Value::Null).collect::<Vec<_>>(),
                }
            }),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, Value::Null, "Feast answers null");
    }
    let values = conv_rates(&server, &ids);
    for (id, value) in ids.iter().zip(&values) {
        // float32: printed as its shortest text, read back to the same bits.
        let got = value.as_f64().map(|v| (v as f32).to_bits());
        assert_eq!(got, Some(expected[id].1.to_bits()), "driver {id}: {value}");
    }

    // A batch with one bad value writes nothing.
    let (status, body) = write(
        &server,
        json!({"feature_view_name": "driver_hourly_stats", "df": {
            "driver_id": [1001, 1002], "conv_rate": [0.9, "high"], "acc_rate": [0.5, 0.5],
            "avg_daily_trips": [1, 1], "event_timestamp": [naive(now), naive(now)], "created": [null, null]}}),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(conv_rates(&server, &[1001, 1002]), values[..2].to_vec());

    // Unknown view: Feast's class, 404; a missing join key: 422.
    let (status, body) = write(
        &server,
        json!({"feature_view_name": "nope", "df": {"driver_id": [1], "event_timestamp": [naive(now)]}}),
    );
    assert_eq!(status, 404, "{body}");
    // Feast's encoding: the error object as a JSON string.
    let detail = body
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {body}"));
    let object: Value = serde_json::from_str(detail).unwrap();
    assert_eq!(object["module"], "feast.errors", "{body}");
    assert_eq!(object["class"], "FeatureViewNotFoundException", "{body}");
    assert!(
        object["message"].as_str().unwrap().contains("'nope'"),
        "{body}"
    );
    let (status, body) = write(
        &server,
        json!({"feature_view_name": "driver_hourly_stats", "df": {"conv_rate": [0.1], "event_timestamp": [naive(now)]}}),
    );
    assert_eq!(status, 422, "{body}");
}
