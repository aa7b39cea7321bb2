//! An online store that fails in the middle of `POST /materialize`: the
//! request answers 503 (the store is unavailable, not the server broken),
//! nothing is recorded as materialized, lookups keep the values they had,
//! and a rerun once the store is back gives exactly a clean run's values.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{json, Value};
use server::Server;

/// Sends one command to Redis and returns its first reply line.
fn redis(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes()).unwrap();
    let mut reply = [0u8; 512];
    let n = stream.read(&mut reply).unwrap();
    String::from_utf8_lossy(&reply[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// conv_rate and its status for every driver in `drivers`.
fn lookup(server: &Server, drivers: &[i64]) -> Vec<(Value, Value)> {
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": drivers}}),
    );
    assert_eq!(status, 200, "{body}");
    let column = &body["results"][1];
    (0..drivers.len())
        .map(|i| (column["values"][i].clone(), column["statuses"][i].clone()))
        .collect()
}

/// A float32 feature as served: its shortest decimal reads back exactly.
fn as_f32(value: &Value) -> f32 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}")) as f32
}

fn last_materialization(server: &Server) -> Value {
    let (status, view) = server.get("/registry/feature-views/driver_hourly_stats");
    assert_eq!(status, 200, "{view}");
    view["last_materialization"].clone()
}

#[test]
fn an_online_store_failing_during_materialize_is_503_and_leaves_the_store_consistent() {
    let project = cli::example_project();
    let dir = project.path();
    let redis_server = common::RedisServer::start();
    let port = redis_server.port;
    let url = redis_server.url();
    let env = [
        ("WAFER_ONLINE_STORE_TYPE", "redis"),
        ("WAFER_ONLINE_STORE_URL", url.as_str()),
    ];
    let server = Server::start(dir, &env);
    let drivers: Vec<i64> = (1001..=1050).collect();
    let window = json!({"start_ts": "1970-01-01T00:00:00Z", "end_ts": "now",
                        "feature_views": ["driver_hourly_stats"]});
    let (status, body) = server.post("/materialize", window.clone());
    assert_eq!(status, 200, "{body}");
    let first_run = last_materialization(&server);
    assert!(first_run.is_object(), "{first_run}");
    let before = lookup(&server, &drivers);
    let expected = cli::newest_driver_stats(dir);
    for (driver, (value, status)) in drivers.iter().zip(&before) {
        assert_eq!(status, "PRESENT");
        assert_eq!(as_f32(value), expected[driver].0, "driver {driver}");
    }

    // Newer rows land in the offline source only: the next run has
    // something new to write online.
    // After the first run's window: an incremental run has it to write.
    let fresh = chrono::Utc::now().to_rfc3339();
    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "offline",
               "df": {"driver_id": [1001, 1002], "event_timestamp": [fresh, fresh],
                      "created": [fresh, fresh], "conv_rate": [0.125, 0.375],
                      "acc_rate": [0.5, 0.5], "avg_daily_trips": [5, 6]}}),
    );
    assert_eq!(status, 200, "{body}");

    // Redis refuses every write from now on (reads still answer).
    assert_eq!(
        redis(port, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        "+OK"
    );
    assert_eq!(redis(port, &["CONFIG", "SET", "maxmemory", "1"]), "+OK");
    let (status, body) = server.post("/materialize", window.clone());
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["class"], "Unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Redis"),
        "{body}"
    );
    // Not recorded as done, and lookups see what they saw before.
    assert_eq!(last_materialization(&server), first_run);
    assert_eq!(lookup(&server, &drivers), before);
    let (status, body) = server.post(
        "/materialize-incremental",
        json!({"end_ts": "now", "feature_views": ["driver_hourly_stats"]}),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(last_materialization(&server), first_run);

    // Once Redis takes writes again, a rerun equals a clean run.
    assert_eq!(redis(port, &["CONFIG", "SET", "maxmemory", "0"]), "+OK");
    let (status, body) = server.post("/materialize", window);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["feature_views"][0]["rows_written"], 50, "{body}");
    assert_ne!(last_materialization(&server), first_run);
    let expected = cli::newest_driver_stats(dir);
    assert_eq!(expected[&1001].0, 0.125);
    for (driver, (value, status)) in drivers.iter().zip(lookup(&server, &drivers)) {
        assert_eq!(status, "PRESENT");
        assert_eq!(as_f32(&value), expected[driver].0, "driver {driver}");
    }
}
