//! Pushes against a real `wafer serve`: an acknowledged push survives
//! kill -9, a retried push adds nothing, and event times outside a sane
//! window are refused before anything is written.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use server::Server;

fn lookup(server: &Server, drivers: &[i64]) -> Value {
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
               "entities": {"driver_id": drivers}}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn push_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("data/driver_stats"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("push-")
        })
        .collect()
}

/// Every push answered 200 is there after the server is killed with
/// SIGKILL right after the last answer (sled used to hold them in memory
/// for up to half a second: 100 of 100 rows lost).
#[test]
fn acknowledged_pushes_survive_kill_9() {
    acknowledged_pushes_survive_kill_9_in("sled");
}

#[test]
fn acknowledged_pushes_survive_kill_9_with_redb() {
    acknowledged_pushes_survive_kill_9_in("redb");
}

fn acknowledged_pushes_survive_kill_9_in(store: &str) {
    let project = cli::example_project();
    let dir = project.path();
    let config = std::fs::read_to_string(dir.join("wafer.yaml")).unwrap();
    std::fs::write(
        dir.join("wafer.yaml"),
        format!("{config}online_store: {{type: {store}}}\n"),
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for round in 0..3i64 {
        let server = Server::start(dir, &[]);
        let now = chrono::Utc::now().to_rfc3339();
        let mut expected = Vec::new();
        for push in 0..20i64 {
            let ids: Vec<i64> = (0..5)
                .map(|i| 50_000 + round * 1000 + push * 5 + i)
                .collect();
            let trips: Vec<i64> = ids.iter().map(|_| rng.random_range(0..1_000_000)).collect();
            let (status, body) = server.post(
                "/push",
                json!({"push_source_name": "driver_stats_push",
                       "df": {"driver_id": ids, "event_timestamp": vec![&now; 5],
                              "conv_rate": vec![0.5; 5], "acc_rate": vec![0.5; 5],
                              "avg_daily_trips": trips}}),
            );
            assert_eq!(status, 200, "{body}");
            expected.extend(ids.into_iter().zip(trips));
        }
        let mut server = server;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        drop(server);

        let server = Server::start(dir, &[]);
        let drivers: Vec<i64> = expected.iter().map(|(id, _)| *id).collect();
        let body = lookup(&server, &drivers);
        let lost: Vec<i64> = expected
            .iter()
            .enumerate()
            .filter(|(row, (_, trips))| body["results"][2]["values"][*row] != json!(trips))
            .map(|(_, (id, _))| *id)
            .collect();
        assert!(
            lost.is_empty(),
            "{store}, round {round}: {} of {} acknowledged rows lost: {lost:?}",
            lost.len(),
            expected.len()
        );
    }
}

/// A client that did not see the answer retries: the same rows again add
/// no second file and change no value.
#[test]
fn a_retried_push_adds_nothing() {
    let project = cli::example_project();
    let dir = project.path();
    let server = Server::start(dir, &[]);
    let now = chrono::Utc::now().to_rfc3339();
    let push = json!({"push_source_name": "driver_stats_push", "to": "online_and_offline",
                      "df": {"driver_id": [60001, 60002], "event_timestamp": [now, now],
                             "created": [now, now],
                             "conv_rate": [0.1, 0.2], "acc_rate": [0.3, 0.4],
                             "avg_daily_trips": [5, 6]}});
    let before = push_files(dir).len();
    let (status, first) = server.post("/push", push.clone());
    assert_eq!(status, 200, "{first}");
    let (status, second) = server.post("/push", push);
    assert_eq!(status, 200, "{second}");
    assert_eq!(first["offline_file"], second["offline_file"]);
    assert_eq!(push_files(dir).len(), before + 1);
    let body = lookup(&server, &[60001, 60002]);
    assert_eq!(body["results"][2]["values"], json!([5, 6]));

    // Different rows are a different file.
    let (status, _) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "offline",
               "df": {"driver_id": [60003], "event_timestamp": [now], "created": [now],
                      "conv_rate": [0.1], "acc_rate": [0.3], "avg_daily_trips": [7]}}),
    );
    assert_eq!(status, 200);
    assert_eq!(push_files(dir).len(), before + 2);
}

/// Epoch milliseconds where seconds are read used to land in 2262 and
/// shadow every later push of the entity.
#[test]
fn event_times_outside_the_window_are_refused_naming_the_column() {
    let project = cli::example_project();
    let dir = project.path();
    let server = Server::start(dir, &[]);
    let before = push_files(dir).len();
    let seconds = chrono::Utc::now().timestamp();
    let push = |event: Value, created: Value| {
        server.post(
            "/push",
            json!({"push_source_name": "driver_stats_push", "to": "online_and_offline",
                   "df": {"driver_id": [70001], "event_timestamp": [event], "created": [created],
                          "conv_rate": [0.1], "acc_rate": [0.3], "avg_daily_trips": [9]}}),
        )
    };
    let now = json!(seconds);
    for (event, created, column) in [
        (json!(seconds * 1000), now.clone(), "event_timestamp"),
        (json!(-5), now.clone(), "event_timestamp"),
        (
            json!("2099-01-01T00:00:00Z"),
            now.clone(),
            "event_timestamp",
        ),
        (now.clone(), json!(seconds * 1000), "created"),
    ] {
        let (status, body) = push(event.clone(), created);
        assert_eq!(status, 422, "{event}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("column '{column}'"))
                && message.contains("push.max_future_seconds"),
            "{message}"
        );
    }
    assert_eq!(push_files(dir).len(), before, "a refused push wrote a file");
    let body = lookup(&server, &[70001]);
    assert_eq!(body["results"][2]["statuses"][0], "NOT_FOUND");

    let (status, body) = push(now.clone(), now);
    assert_eq!(status, 200, "{body}");
    let body = lookup(&server, &[70001]);
    assert_eq!(body["results"][2]["values"][0], json!(9));
}
