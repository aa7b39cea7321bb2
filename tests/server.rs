//! `wafer serve` end to end: a real server process on a loopback port, the
//! example project behind it, and plain HTTP/1.1 requests.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use cli::{ok, wafer};
use serde_json::{json, Value};
use server::{http, Server};

const READ_TOKEN: &str = "read-token-0123456789";
const WRITE_TOKEN: &str = "write-token-0123456789";
const ADMIN_TOKEN: &str = "admin-token-0123456789";

fn project() -> tempfile::TempDir {
    cli::example_project()
}

fn reference(dir: &Path) -> HashMap<i64, (f32, f32, i64, i64)> {
    cli::newest_driver_stats(dir)
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn class(body: &Value) -> String {
    server::error_object(body)["class"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn message(body: &Value) -> String {
    server::error_object(body)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn lookups_answer_feasts_request_bodies_with_the_stored_values() {
    let project = project();
    let server = Server::start(project.path(), &[]);
    let expected = reference(project.path());

    // Feast's documented request body, verbatim.
    let (status, body) = server.post(
        "/get-online-features",
        json!({
            "features": [
                "driver_hourly_stats:conv_rate",
                "driver_hourly_stats:acc_rate",
                "driver_hourly_stats:avg_daily_trips"
            ],
            "entities": {"driver_id": [1001, 1002, 1003, 9999]},
            "full_feature_names": false
        }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "conv_rate", "acc_rate", "avg_daily_trips"])
    );
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["values"], json!([1001, 1002, 1003, 9999]));
    assert_eq!(results[0]["statuses"][0], "PRESENT");
    for (row, id) in [1001i64, 1002, 1003].into_iter().enumerate() {
        let (conv, acc, trips, event) = expected[&id];
        assert_eq!(results[1]["values"][row].as_f64().unwrap() as f32, conv);
        assert_eq!(results[2]["values"][row].as_f64().unwrap() as f32, acc);
        assert_eq!(results[3]["values"][row], json!(trips));
        for column in &results[1..] {
            assert_eq!(column["statuses"][row], "PRESENT");
            assert_eq!(column["event_timestamps"][row], rfc3339(event));
        }
    }
    for column in &results[1..] {
        assert_eq!(column["statuses"][3], "NOT_FOUND");
        assert_eq!(column["values"][3], Value::Null);
        assert_eq!(column["event_timestamps"][3], "1970-01-01T00:00:00Z");
    }

    // The requested order is kept, and full names are prefixed.
    let (status, body) = server.post(
        "/get-online-features",
        json!({
            "features": ["driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:conv_rate"],
            "entities": {"driver_id": [1005]},
            "full_feature_names": true
        }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!([
            "driver_id",
            "driver_hourly_stats__avg_daily_trips",
            "driver_hourly_stats__conv_rate"
        ])
    );
    assert_eq!(body["results"][1]["values"][0], json!(expected[&1005].2));

    // By feature service, with the id sent as a string of an int64 key.
    let (status, body) = server.post(
        "/get-online-features",
        json!({"feature_service": "driver_activity", "entities": {"driver_id": ["1010"]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["values"][0], json!(1010));
    assert_eq!(body["results"][3]["values"][0], json!(expected[&1010].2));

    // Composite keys.
    let (status, body) = server.post(
        "/get-online-features",
        json!({
            "features": ["driver_city_stats:trips"],
            "entities": {"driver_id": [1001, 1001, 1002, 1002], "city": ["paris", "rome", "paris", "rome"]}
        }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "city", "trips"])
    );
    assert_eq!(body["results"][2]["values"], json!([7, 11, 13, null]));
    assert_eq!(
        body["results"][2]["statuses"],
        json!(["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND"])
    );
}

#[test]
fn bad_requests_get_the_right_status_and_a_message_naming_the_problem() {
    let project = project();
    let server = Server::start(
        project.path(),
        &[
            ("WAFER_SERVER_MAX_BODY_BYTES", "4000"),
            ("WAFER_SERVER_MAX_ENTITIES_PER_REQUEST", "50"),
            ("WAFER_TRANSFORMS_MAX_MODULE_BYTES", "1000"),
        ],
    );
    let lookup = |features: Value, entities: Value| {
        server.post(
            "/get-online-features",
            json!({"features": features, "entities": entities}),
        )
    };
    let conv = json!(["driver_hourly_stats:conv_rate"]);

    let (status, body) = server.call("POST", "/get-online-features", None, "{\"features\": [");
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("invalid request body"), "{body}");

    let (status, body) = lookup(
        conv.clone(),
        json!({"driver_id": [1001], "city": ["a", "b"]}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("differ in length"), "{body}");

    let (status, body) = lookup(json!(["no_colon"]), json!({"driver_id": [1001]}));
    assert_eq!(status, 400, "{body}");

    let (status, body) = lookup(
        json!(["driver_hourly_stats:nope"]),
        json!({"driver_id": [1]}),
    );
    assert_eq!(status, 404, "{body}");
    assert!(message(&body).contains("nope"), "{body}");

    let (status, body) = lookup(json!(["ghost_view:conv_rate"]), json!({"driver_id": [1]}));
    assert_eq!(status, 404, "{body}");
    assert_eq!(class(&body), "FeatureViewNotFoundException");

    let (status, body) = server.post(
        "/get-online-features",
        json!({"feature_service": "ghost", "entities": {"driver_id": [1]}}),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(class(&body), "FeatureServiceNotFoundException");

    let (status, body) = lookup(conv.clone(), json!({"driver_id": ["abc"]}));
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).contains("driver_id"), "{body}");

    let (status, body) = lookup(conv.clone(), json!({"driver": [1001]}));
    assert_eq!(status, 422, "{body}");
    assert!(
        message(&body).contains("missing join key 'driver_id'"),
        "{body}"
    );

    let (status, body) = lookup(
        conv.clone(),
        json!({"driver_id": (0..51).collect::<Vec<_>>()}),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        message(&body).contains("max_entities_per_request"),
        "{body}"
    );

    let big = json!({"features": conv, "entities": {"driver_id": vec![1001; 2000]}}).to_string();
    let (status, body) = server.call("POST", "/get-online-features", None, &big);
    assert_eq!(status, 413, "{body}");

    // Pushes are bounded by the same entity limit, and write nothing.
    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "online",
               "df": {"driver_id": (5000..5051).collect::<Vec<_>>(),
                      "event_timestamp": vec!["2001-01-01T00:00:00Z"; 51],
                      "conv_rate": vec![0.5; 51], "acc_rate": vec![0.5; 51],
                      "avg_daily_trips": vec![1; 51]}}),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        message(&body).contains("max_entities_per_request"),
        "{body}"
    );
    let (status, body) = lookup(conv.clone(), json!({"driver_id": [5000]}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["statuses"][0], "NOT_FOUND", "{body}");

    // A module over transforms.max_module_bytes (1000 here), and a body over
    // server.max_body_bytes: both 413 with a JSON message.
    let (status, body) = server.call("POST", "/transforms/big", None, &"x".repeat(1500));
    assert_eq!(status, 413, "{body}");
    assert!(message(&body).contains("max_module_bytes"), "{body}");
    let (status, body) = server.call("POST", "/transforms/big", None, &"x".repeat(5000));
    assert_eq!(status, 413, "{body}");
    assert!(!message(&body).is_empty(), "{body}");

    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "ghost", "df": {"driver_id": [1]}, "to": "online"}),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(class(&body), "PushSourceNotFoundException");

    let (status, body) = server.get("/no-such-endpoint");
    assert_eq!(status, 404, "{body}");

    let (status, body) = server.get("/registry/feature-views/ghost");
    assert_eq!(status, 404, "{body}");

    // After all of that, the server still answers.
    let (status, _) = lookup(conv, json!({"driver_id": [1001]}));
    assert_eq!(status, 200);
}

#[test]
fn tokens_grant_roles_and_auth_is_off_without_them() {
    let project = project();
    let open = Server::start(project.path(), &[]);
    let (status, _) = open.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}),
    );
    assert_eq!(status, 200);
    drop(open);

    let server = Server::start(
        project.path(),
        &[
            ("WAFER_SERVER_AUTH_READ_TOKENS", READ_TOKEN),
            ("WAFER_SERVER_AUTH_WRITE_TOKENS", WRITE_TOKEN),
            ("WAFER_SERVER_AUTH_ADMIN_TOKENS", ADMIN_TOKEN),
        ],
    );
    let lookup =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}})
            .to_string();
    let push = json!({
        "push_source_name": "driver_stats_push",
        "df": {"driver_id": [1001], "event_timestamp": ["2001-01-01T00:00:00Z"],
               "conv_rate": [0.5], "acc_rate": [0.5], "avg_daily_trips": [1]},
        "to": "online"
    })
    .to_string();
    let status =
        |path: &str, token: Option<&str>, body: &str| server.call("POST", path, token, body).0;
    assert_eq!(status("/get-online-features", None, &lookup), 401);
    assert_eq!(
        status(
            "/get-online-features",
            Some("wrong-token-0123456789"),
            &lookup
        ),
        401
    );
    assert_eq!(
        status("/get-online-features", Some(READ_TOKEN), &lookup),
        200
    );
    assert_eq!(
        status("/get-online-features", Some(WRITE_TOKEN), &lookup),
        200
    );
    assert_eq!(
        status("/get-online-features", Some(ADMIN_TOKEN), &lookup),
        200
    );
    let (code, body) = server.call("POST", "/push", Some(READ_TOKEN), &push);
    assert_eq!(code, 403, "{body}");
    assert!(message(&body).contains("read"), "{body}");
    assert_eq!(status("/push", Some(WRITE_TOKEN), &push), 200);
    assert_eq!(status("/push", Some(ADMIN_TOKEN), &push), 200);
    assert_eq!(server.call("GET", "/registry", None, "").0, 401);
    assert_eq!(server.call("GET", "/registry", Some(READ_TOKEN), "").0, 200);
    assert_eq!(server.call("GET", "/metrics", None, "").0, 401);
    // Load balancers probe health without a token.
    assert_eq!(server.call("GET", "/health", None, "").0, 200);
}

fn lookup_one(server: &Server, driver: i64) -> Value {
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
               "entities": {"driver_id": [driver]}}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("data/driver_stats"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn pushes_reach_lookups_and_training_sets_and_bad_batches_write_nothing() {
    let project = project();
    let dir = project.path();
    let server = Server::start(dir, &[]);
    let now = chrono::Utc::now();
    let fresh = rfc3339(now.timestamp_nanos_opt().unwrap());

    // Online: a newer row wins, an older one does not regress it.
    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "online",
               "df": {"driver_id": [1001, 1002], "event_timestamp": [fresh, fresh],
                      "created": [fresh, fresh],
                      "conv_rate": [0.25, null], "acc_rate": [0.5, 0.5], "avg_daily_trips": [77, 78]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], 2);
    let body = lookup_one(&server, 1001);
    assert_eq!(body["results"][1]["values"][0], json!(0.25));
    assert_eq!(body["results"][2]["values"][0], json!(77));
    let body = lookup_one(&server, 1002);
    assert_eq!(body["results"][1]["statuses"][0], "NULL_VALUE");
    let (status, _) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push",
               "df": {"driver_id": [1001], "event_timestamp": ["2000-01-01T00:00:00Z"],
                      "conv_rate": [0.9], "acc_rate": [0.9], "avg_daily_trips": [1]}}),
    );
    assert_eq!(status, 200);
    assert_eq!(
        lookup_one(&server, 1001)["results"][2]["values"][0],
        json!(77)
    );

    // A batch with one bad value writes nothing, online or offline.
    let files_before = parquet_files(dir);
    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "online_and_offline",
               "df": {"driver_id": [1003, 1004], "event_timestamp": [fresh, fresh],
                      "created": [fresh, fresh],
                      "conv_rate": [0.1, "high"], "acc_rate": [0.1, 0.1], "avg_daily_trips": [5, 5]}}),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        message(&body).contains("conv_rate") && message(&body).contains("row 1"),
        "{body}"
    );
    assert_ne!(
        lookup_one(&server, 1003)["results"][2]["values"][0],
        json!(5)
    );
    assert_eq!(parquet_files(dir), files_before);

    // Offline: a new driver pushed now is in a training set built after.
    let pushed_at = now - chrono::TimeDelta::minutes(5);
    let pushed = rfc3339(pushed_at.timestamp_nanos_opt().unwrap());
    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "offline",
               "df": {"driver_id": [5555], "event_timestamp": [pushed], "created": [pushed],
                      "conv_rate": [0.625], "acc_rate": [0.75], "avg_daily_trips": [42]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body["offline_file"].as_str().unwrap().ends_with(".parquet"),
        "{body}"
    );
    assert_eq!(parquet_files(dir).len(), files_before.len() + 1);
    // Offline only: the online store does not have it.
    assert_eq!(
        lookup_one(&server, 5555)["results"][1]["statuses"][0],
        "NOT_FOUND"
    );

    let entity_schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
    ]));
    let at = now.timestamp_nanos_opt().unwrap();
    let entities = RecordBatch::try_new(
        entity_schema,
        vec![
            Arc::new(Int64Array::from(vec![5555, 5555])),
            Arc::new(
                TimestampNanosecondArray::from(vec![
                    at,
                    pushed_at.timestamp_nanos_opt().unwrap() - 1,
                ])
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    common::write_parquet(&dir.join("pushed_entities.parquet"), &entities);
    ok(wafer(
        dir,
        &[
            "historical",
            "--entities",
            "pushed_entities.parquet",
            "--feature-service",
            "driver_activity",
            "--output",
            "pushed_training.parquet",
        ],
    ));
    let training = common::read_parquet(&dir.join("pushed_training.parquet"));
    let trips = training.column_by_name("avg_daily_trips").unwrap();
    let trips = trips.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(trips.value(0), 42);
    // Before the pushed event time, nothing: no future data leaks.
    assert!(trips.is_null(1));
}

#[test]
fn concurrent_pushes_and_lookups_all_succeed_and_land() {
    let project = project();
    let server = Arc::new(Server::start(project.path(), &[]));
    let base = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let mut threads = Vec::new();
    for worker in 0..4i64 {
        let server = server.clone();
        threads.push(std::thread::spawn(move || {
            for round in 0..25i64 {
                let driver = 2000 + worker;
                let at = rfc3339(base + round * 1_000_000_000);
                let (status, body) = server.post(
                    "/push",
                    json!({"push_source_name": "driver_stats_push",
                           "df": {"driver_id": [driver], "event_timestamp": [at],
                                  "conv_rate": [0.5], "acc_rate": [0.5], "avg_daily_trips": [round]}}),
                );
                assert_eq!(status, 200, "{body}");
                let body = lookup_one(&server, 1001 + round);
                assert_eq!(body["results"][1]["statuses"][0], "PRESENT");
            }
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    for worker in 0..4 {
        let body = lookup_one(&server, 2000 + worker);
        assert_eq!(body["results"][2]["values"][0], json!(24), "{body}");
    }
}

#[test]
fn registry_browsing_metrics_openapi_and_live_registry_refresh() {
    let project = project();
    let dir = project.path();
    let server = Server::start(dir, &[("WAFER_SERVER_REGISTRY_REFRESH_MS", "100")]);

    let (status, body) = server.get("/registry");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["feature_views"], 2);
    let (status, body) = server.get("/registry/feature-views/driver_hourly_stats");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ttl"], "1day");
    assert!(
        body["last_materialization"]["rows_written"]
            .as_u64()
            .unwrap()
            > 0,
        "{body}"
    );
    let (status, body) = server.get("/registry/push-sources");
    assert_eq!(status, 200);
    assert_eq!(body[0]["name"], "driver_stats_push");
    let (status, body) = server.get("/registry/versions");
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 1);

    // Apply a new service while the server runs: it shows up without a restart.
    let definitions = std::fs::read_to_string(dir.join("definitions.yaml")).unwrap();
    let definitions = definitions.replace(
        "push_sources:",
        "  - name: trips_only\n    features:\n      - driver_hourly_stats: [avg_daily_trips]\n\npush_sources:",
    );
    std::fs::write(dir.join("definitions.yaml"), definitions).unwrap();
    ok(wafer(dir, &["apply"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.post(
            "/get-online-features",
            json!({"feature_service": "trips_only", "entities": {"driver_id": [1001]}}),
        );
        if status == 200 {
            assert_eq!(
                body["metadata"]["feature_names"],
                json!(["driver_id", "avg_daily_trips"])
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new service never appeared: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.get("/registry").1["version"], 2);

    // Metrics count what happened, exactly.
    let metrics = || -> String {
        let (status, body) = server.call("GET", "/metrics", None, "");
        assert_eq!(status, 200);
        body.as_str().unwrap_or_default().to_string()
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let requests = "wafer_http_requests_total{endpoint=\"/get-online-features\",status=\"200\"}";
    let service = "wafer_feature_service_requests_total{feature_service=\"trips_only\"}";
    let present = "wafer_online_values_total{status=\"PRESENT\"}";
    let not_found = "wafer_online_values_total{status=\"NOT_FOUND\"}";
    let errors = "wafer_errors_total{kind=\"EntityNotFoundException\"}";
    let before = metrics();
    for _ in 0..3 {
        let (status, body) = server.post(
            "/get-online-features",
            json!({"feature_service": "trips_only", "entities": {"driver_id": [1001, 1002, 99999]}}),
        );
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server.get("/registry/entities/ghost");
    assert_eq!(status, 404);
    let after = metrics();
    let grew = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(grew(requests), 3.0, "{after}");
    assert_eq!(grew(service), 3.0, "{after}");
    assert_eq!(
        grew(present),
        6.0,
        "two known drivers, one feature, 3 times:\n{after}"
    );
    assert_eq!(grew(not_found), 3.0, "{after}");
    assert_eq!(grew(errors), 1.0, "{after}");
    assert!(
        after.contains("wafer_http_request_duration_seconds_bucket{"),
        "{after}"
    );
    let freshness = value(
        &after,
        "wafer_feature_freshness_seconds{view=\"driver_hourly_stats\"}",
    );
    assert!((0.0..2.0 * 86_400.0).contains(&freshness), "{freshness}");

    // The OpenAPI document lists every endpoint.
    let (status, body) = server.get("/openapi.json");
    assert_eq!(status, 200);
    let paths = body["paths"].as_object().unwrap();
    for path in [
        "/get-online-features",
        "/push",
        "/materialize",
        "/materialize-incremental",
        "/health",
        "/metrics",
        "/registry",
        "/registry/entities/{name}",
        "/registry/feature-views",
        "/registry/feature-services",
        "/registry/push-sources",
        "/registry/versions/{version}",
    ] {
        assert!(paths.contains_key(path), "openapi lacks {path}");
    }
}

#[test]
fn materialize_endpoints_take_feasts_bodies() {
    let project = project();
    let server = Server::start(project.path(), &[]);
    let (status, body) = server.post(
        "/materialize",
        json!({"start_ts": "2000-01-01T00:00:00", "end_ts": rfc3339(chrono::Utc::now().timestamp_nanos_opt().unwrap()),
               "feature_views": ["driver_hourly_stats"]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["feature_views"][0]["name"], "driver_hourly_stats");
    assert_eq!(body["feature_views"][0]["rows_written"], 50);
    let end = body["feature_views"][0]["end"].clone();
    let (status, body) = server.post(
        "/materialize-incremental",
        json!({"end_ts": "now", "feature_views": ["driver_hourly_stats"]}),
    );
    assert_eq!(status, 200, "{body}");
    // It starts where the first run ended, and nothing is new since.
    assert_eq!(body["feature_views"][0]["start"], end, "{body}");
    assert_eq!(body["feature_views"][0]["rows_written"], 0, "{body}");
    let (status, body) = server.post("/materialize", json!({"end_ts": "now"}));
    assert_eq!(status, 422, "{body}");
    assert!(message(&body).contains("start_ts"), "{body}");
    let (status, body) = server.post(
        "/materialize",
        json!({"start_ts": "2000-01-01", "end_ts": "now", "feature_views": ["ghost"]}),
    );
    assert_eq!(status, 404, "{body}");
}

#[test]
fn sigterm_finishes_and_exits_cleanly() {
    let project = project();
    let mut server = Server::start(project.path(), &[]);
    assert_eq!(lookup_one(&server, 1001)["results"][0]["values"][0], 1001);
    let pid = server.child.id() as i32;
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// A request in flight when SIGTERM arrives is finished (its write lands and
/// survives a restart), and no new connection is accepted meanwhile.
#[test]
fn sigterm_finishes_a_request_in_flight() {
    use std::io::{Read, Write};
    let project = project();
    let mut server = Server::start(project.path(), &[]);
    let now = rfc3339(chrono::Utc::now().timestamp_nanos_opt().unwrap());
    let push = json!({
        "push_source_name": "driver_stats_push", "to": "online",
        "df": {"driver_id": [1001], "event_timestamp": [now],
               "conv_rate": [0.125], "acc_rate": [0.5], "avg_daily_trips": [7]}
    })
    .to_string();
    let mut stream = std::net::TcpStream::connect(server.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The request is in progress once the server asks for its body.
    write!(
        stream,
        "POST /push HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        push.len()
    )
    .unwrap();
    stream.flush().unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    // Shutdown has begun once new connections are refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(server.address).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    stream.write_all(push.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    drop(server);

    let server = Server::start(project.path(), &[]);
    let body = lookup_one(&server, 1001);
    assert_eq!(body["results"][1]["values"][0], 0.125, "{body}");
}

#[test]
fn redis_down_is_503_and_recovers_when_redis_is_back() {
    let project = project();
    let dir = project.path();
    let redis = common::RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let env = [
        ("WAFER_ONLINE_STORE_TYPE", "redis"),
        ("WAFER_ONLINE_STORE_URL", url.as_str()),
    ];
    let materialized = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .arg("-C")
        .arg(dir)
        .args(["materialize", "1970-01-01", "now"])
        .envs(env)
        .output()
        .unwrap();
    ok(materialized);
    let server = Server::start(dir, &env);
    let expected = reference(dir);
    let body = lookup_one(&server, 1001);
    assert_eq!(body["results"][2]["values"][0], json!(expected[&1001].2));
    assert_eq!(server.get("/health").0, 200);

    drop(redis);
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}),
    );
    assert_eq!(status, 503, "{body}");
    assert!(message(&body).contains("Redis"), "{body}");
    assert_eq!(server.get("/health").0, 503);

    let _redis = common::RedisServer::start_on(port);
    let body = lookup_one(&server, 1001);
    // A fresh Redis holds nothing, but answers.
    assert_eq!(body["results"][1]["statuses"][0], "NOT_FOUND");
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn transforms_upload_browse_and_rollback_over_http_while_lookups_carry_on() {
    let project = project();
    let server = Arc::new(Server::start(
        project.path(),
        &[
            ("WAFER_SERVER_AUTH_READ_TOKENS", READ_TOKEN),
            ("WAFER_SERVER_AUTH_WRITE_TOKENS", WRITE_TOKEN),
            ("WAFER_SERVER_AUTH_ADMIN_TOKENS", ADMIN_TOKEN),
        ],
    ));
    let upload = |name: &str, token: &str, bytes: &[u8]| -> (u16, Value) {
        let (status, text) = http(
            server.address,
            "POST",
            &format!("/transforms/{name}"),
            Some(token),
            bytes,
        );
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    };
    let conv = wasm::transform_module("conv_rate_plus_val");
    let (status, body) = upload("conv", WRITE_TOKEN, &conv);
    assert_eq!(status, 403, "{body}");
    let (status, first) = upload("conv", ADMIN_TOKEN, &conv);
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["schema"]["outputs"][0]["name"], "conv_rate_plus_val");
    let (status, again) = upload("conv", ADMIN_TOKEN, &conv);
    assert_eq!((status, &again["unchanged"]), (200, &json!(true)));

    // Hostile uploads, while another client keeps looking features up.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_on_failure = common::StopOnDrop(stop.clone());
    let lookups = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let body = json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}).to_string();
            let mut done = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, _) =
                    server.call("POST", "/get-online-features", Some(READ_TOKEN), &body);
                assert_eq!(status, 200);
                done += 1;
            }
            done
        })
    };
    let looping = wasm::wat_module("", "(loop $l (br $l)) (i32.const 0)", "", wasm::F64_SCHEMA);
    let wasi = wasm::wat_module(
        r#"(import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))"#,
        wasm::IDENTITY_BODY,
        "",
        wasm::F64_SCHEMA,
    );
    for (bytes, expected) in [
        (b"not a module".to_vec(), "not a valid WebAssembly module"),
        (wasi, "wasi_snapshot_preview1.random_get"),
        (looping, "ran out of fuel"),
    ] {
        let (status, body) = upload("conv", ADMIN_TOKEN, &bytes);
        assert_eq!(status, 422, "{body}");
        assert_eq!(class(&body), "InvalidTransformModule");
        assert!(message(&body).contains(expected), "{body}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(lookups.join().unwrap() > 0);

    let haversine = wasm::transform_module("haversine_distance");
    let (status, second) = upload("conv", ADMIN_TOKEN, &haversine);
    assert_eq!(status, 201, "{second}");
    let (status, listed) = server.call("GET", "/transforms", Some(READ_TOKEN), "");
    assert_eq!(status, 200);
    assert_eq!(listed[0]["active"]["sha256"], second["sha256"]);
    let (status, detail) = server.call("GET", "/transforms/conv", Some(READ_TOKEN), "");
    assert_eq!(status, 200);
    assert_eq!(
        detail["history"].as_array().unwrap().len(),
        2,
        "bad uploads left no trace: {detail}"
    );

    let (status, body) = server.call(
        "POST",
        "/transforms/conv/rollback",
        Some(ADMIN_TOKEN),
        r#"{"version": "1"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (_, detail) = server.call("GET", "/transforms/conv", Some(READ_TOKEN), "");
    assert_eq!(detail["active"]["sha256"], first["sha256"]);
    assert_eq!(
        server
            .call("GET", "/transforms/nope", Some(READ_TOKEN), "")
            .0,
        404
    );
    assert_eq!(
        server
            .call(
                "POST",
                "/transforms/conv/rollback",
                Some(ADMIN_TOKEN),
                r#"{"version": "7"}"#
            )
            .0,
        404
    );
    let (_, openapi) = server.call("GET", "/openapi.json", None, "");
    assert!(openapi["paths"]["/transforms/{name}"].is_object());

    // The CLI sees the same registry and runs the active version.
    let out = ok(wafer(
        project.path(),
        &[
            "transform",
            "test",
            "conv",
            "--input",
            r#"{"conv_rate": 0.5, "val_to_add": 2}"#,
        ],
    ));
    assert_eq!(out.trim(), r#"{"conv_rate_plus_val":2.5}"#);
    let out = ok(wafer(project.path(), &["transform", "history", "conv"]));
    assert_eq!(out.lines().count(), 3, "{out}");
    ok(wafer(
        project.path(),
        &[
            "transform",
            "rollback",
            "conv",
            &format!("sha256:{}", &second["sha256"].as_str().unwrap()[..10]),
        ],
    ));
    let out = ok(wafer(project.path(), &["transform", "list"]));
    assert!(out.contains("distance_km"), "{out}");
    let out = ok(wafer(
        project.path(),
        &[
            "transform",
            "upload",
            "conv2",
            wasm::transforms_dir()
                .join("email_domain.wasm")
                .to_str()
                .unwrap(),
        ],
    ));
    assert!(out.contains("email_domain: string?"), "{out}");

    // An on-demand view over the uploaded module applies and shows up in
    // registry browsing once the server has refreshed.
    ok(wafer(
        project.path(),
        &["transform", "rollback", "conv", "1"],
    ));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(project.path().join("composite.yaml"))
        .unwrap();
    file.write_all(cli::SCORED_VIEW.as_bytes()).unwrap();
    ok(wafer(project.path(), &["apply"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.call(
            "GET",
            "/registry/on-demand-feature-views/scored",
            Some(READ_TOKEN),
            "",
        );
        if status == 200 {
            assert_eq!(body["transform"], "conv");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new view never appeared: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, summary) = server.call("GET", "/registry", Some(READ_TOKEN), "");
    assert_eq!(summary["on_demand_feature_views"], 1);
    let request_source = "/registry/request-sources/scoring_request";
    assert_eq!(
        server.call("GET", request_source, Some(READ_TOKEN), "").0,
        200
    );

    // Lookups: request data travels in `entities`, as in Feast.
    let lookup = |body: Value| {
        server.call(
            "POST",
            "/get-online-features",
            Some(READ_TOKEN),
            &body.to_string(),
        )
    };
    let (status, body) = lookup(json!({
        "features": ["driver_hourly_stats:acc_rate", "scored:conv_rate_plus_val"],
        "entities": {"driver_id": [1001, 1002], "conv_rate": [0.5, null], "val_to_add": [2, 3]}
    }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "acc_rate", "conv_rate_plus_val"])
    );
    assert_eq!(body["results"][2]["values"], json!([2.5, null]));
    assert_eq!(
        body["results"][2]["statuses"],
        json!(["PRESENT", "NULL_VALUE"])
    );
    let (status, body) = lookup(json!({
        "features": ["scored:conv_rate_plus_val"],
        "entities": {"driver_id": [1001], "conv_rate": [0.5]}
    }));
    // Feast's class and status for request data missing from entity rows.
    assert_eq!(status, 404, "{body}");
    assert_eq!(class(&body), "RequestDataNotFoundInEntityRowsException");
    assert!(
        message(&body).contains("missing request data 'val_to_add'"),
        "{body}"
    );
    let (status, body) = lookup(json!({
        "features": ["scored:conv_rate_plus_val"],
        "entities": {"driver_id": [1001], "conv_rate": ["x"], "val_to_add": [1]}
    }));
    assert_eq!(status, 422, "{body}");
    assert!(
        message(&body).contains("request data 'conv_rate'"),
        "{body}"
    );
    let (status, _) = lookup(json!({
        "features": ["scored:nope"], "entities": {"conv_rate": [0.5], "val_to_add": [1]}
    }));
    assert_eq!(status, 404);

    // A view reading a stored feature it does not return: a float32 copy
    // module over driver_hourly_stats:conv_rate.
    let copy32 = wasm::wat_module(
        "",
        r#"(local $n i32)
    (local.set $n (i32.load offset=4 (local.get $desc)))
    (memory.copy (i32.load offset=36 (local.get $desc)) (i32.load offset=20 (local.get $desc))
      (i32.mul (local.get $n) (i32.const 4)))
    (if (i32.load offset=16 (local.get $desc))
      (then (memory.copy (i32.load offset=32 (local.get $desc)) (i32.load offset=16 (local.get $desc))
        (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3))))
      (else (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
        (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))))
    (i32.const 0)"#,
        "",
        r#"{"abi":1,"name":"copy","inputs":[{"name":"conv_rate","type":"float32","nullable":true}],"outputs":[{"name":"conv_rate_copy","type":"float32","nullable":true}]}"#,
    );
    let (status, body) = upload("copy32", ADMIN_TOKEN, &copy32);
    assert_eq!(status, 201, "{body}");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(project.path().join("composite.yaml"))
        .unwrap();
    file.write_all(
        b"  - name: copied
    transform: copy32
    sources: [driver_hourly_stats]
    features: [{name: conv_rate_copy, type: float32}]
",
    )
    .unwrap();
    ok(wafer(project.path(), &["apply"]));
    let request = json!({
        "features": ["copied:conv_rate_copy"],
        "entities": {"driver_id": [1001, 1003, 999999]}
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = lookup(request.clone());
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (_, plain) = lookup(json!({
        "features": ["driver_hourly_stats:conv_rate"],
        "entities": {"driver_id": [1001, 1003, 999999]}
    }));
    assert_eq!(
        body["metadata"]["feature_names"],
        json!(["driver_id", "conv_rate_copy"])
    );
    assert_eq!(body["results"][1]["values"], plain["results"][1]["values"]);
    assert!(plain["results"][1]["values"][0].is_number(), "{plain}");
    assert_eq!(body["results"][1]["statuses"][2], "NULL_VALUE");

    // A feature service mixing an ordinary view and an on-demand one.
    std::fs::write(
        project.path().join("services.yaml"),
        "feature_services:\n  - name: scoring\n    features:\n      - driver_hourly_stats: [acc_rate]\n      - scored\n",
    )
    .unwrap();
    std::fs::write(
        project.path().join("wafer.yaml"),
        "project: driver_ranking\ndefinitions: [definitions.yaml, composite.yaml, services.yaml]\n",
    )
    .unwrap();
    ok(wafer(project.path(), &["apply"]));
    let request = json!({
        "feature_service": "scoring",
        "entities": {"driver_id": [1001], "conv_rate": [1.5], "val_to_add": [1]},
        "full_feature_names": true
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = lookup(request.clone());
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        body["metadata"]["feature_names"],
        json!([
            "driver_id",
            "driver_hourly_stats__acc_rate",
            "scored__conv_rate_plus_val"
        ])
    );
    assert_eq!(body["results"][2]["values"], json!([2.5]));

    // A module that traps fails its lookups alone, and metrics count runs,
    // rows, time and failures per on-demand view.
    // It traps on one request value the upload self-check never samples.
    let trap = wasm::wat_module(
        "",
        r#"(local $n i32)
    (local.set $n (i32.load offset=4 (local.get $desc)))
    (if (i64.eq (i64.load (i32.load offset=20 (local.get $desc))) (i64.const 4242424242))
      (then unreachable))
    (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 0)
      (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
    (i32.const 0)"#,
        "",
        r#"{"abi":1,"name":"boom","inputs":[{"name":"val_to_add","type":"int64","nullable":true}],"outputs":[{"name":"boom","type":"float64","nullable":true}]}"#,
    );
    let (status, body) = upload("boom", ADMIN_TOKEN, &trap);
    assert_eq!(status, 201, "{body}");
    std::fs::OpenOptions::new()
        .append(true)
        .open(project.path().join("composite.yaml"))
        .unwrap()
        .write_all(
            b"  - name: exploding
    transform: boom
    sources: [scoring_request]
    features: [{name: boom, type: float64}]
",
        )
        .unwrap();
    ok(wafer(project.path(), &["apply"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = lookup(json!({
            "features": ["exploding:boom"],
            "entities": {"driver_id": [1001, 1002], "val_to_add": [4242424242i64, 1]}
        }));
        if status == 500 {
            break body;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(class(&body), "OnDemandTransformError", "{body}");
    assert!(message(&body).contains("exploding"), "{body}");
    let (status, _) = lookup(request.clone());
    assert_eq!(status, 200, "the others keep being served");
    let (status, metrics) = server.call("GET", "/metrics", Some(READ_TOKEN), "");
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap_or_default();
    let sample = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in:\n{text}"))
    };
    assert!(sample("wafer_on_demand_transform_runs_total{view=\"scored\"}") >= 3.0);
    assert!(sample("wafer_on_demand_transform_rows_total{view=\"scored\"}") >= 4.0);
    assert!(sample("wafer_on_demand_transform_duration_seconds_count{view=\"scored\"}") >= 3.0);
    assert!(sample("wafer_on_demand_transform_duration_seconds_sum{view=\"scored\"}") > 0.0);
    assert!(
        sample("wafer_on_demand_transform_failures_total{view=\"exploding\",kind=\"trap\"}") >= 1.0
    );

    // The CLI looks up with request data too (once the server has released
    // the embedded store); a training set needs the request data as entity
    // file columns.
    drop(server);
    let out = ok(wafer(
        project.path(),
        &[
            "online",
            "--features",
            "scored:conv_rate_plus_val",
            "--entity",
            "driver_id=1001",
            "--entity",
            "conv_rate=0.25",
            "--entity",
            "val_to_add=2",
        ],
    ));
    assert!(out.contains("2.25"), "{out}");
    let failed = wafer(
        project.path(),
        &[
            "historical",
            "--entities",
            "data/entities.parquet",
            "--features",
            "driver_hourly_stats:acc_rate,scored:conv_rate_plus_val",
            "--output",
            "out.parquet",
        ],
    );
    // The sample entity file carries no request data.
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("input `conv_rate`: missing from the entity file"),
        "{stderr}"
    );
    assert!(!project.path().join("out.parquet").exists());
}
