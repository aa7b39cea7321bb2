//! Redis as the shared online store, against real redis-server processes:
//! lookups survive a quick restart of Redis (pooled connections that died
//! while idle are replaced), a materialization with Redis stopped answers
//! 503, and a view being materialized is claimed in Redis, so another
//! store (another process) is refused with 409 until the run ends or its
//! claim expires. Also: the embedded store cannot be opened by a second
//! process at all, which is why it needs no shared claim.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::RedisServer;
use serde_json::json;
use server::Server;
use wafer::error::MaterializeError;
use wafer::example::{self, ExampleOptions};
use wafer::online::{EntityRows, FieldStatus};
use wafer::registry::MaterializationRecord;
use wafer::{Error, FeatureRequest, FeatureStore, MaterializeProgress, NoProgress};

const DRIVERS: u32 = 40;
const VIEW: &str = "driver_hourly_stats";

/// The example project (its one online view, `driver_hourly_stats`) on the
/// Redis at `url`, applied; claims live `claim_ttl_ms`.
fn redis_project(url: &str, claim_ttl_ms: u64) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let options = ExampleOptions {
        drivers: DRIVERS,
        hours: 6,
        entity_rows: 5,
        seed: 7,
        end: example::current_hour(),
    };
    example::scaffold(root.path(), &options, true).unwrap();
    std::fs::write(
        root.path().join("wafer.yaml"),
        format!(
            "project: driver_ranking\ndefinitions: [definitions.yaml]\n\
             online_store: {{type: redis, url: \"{url}\", claim_ttl_ms: {claim_ttl_ms}}}\n"
        ),
    )
    .unwrap();
    FeatureStore::open(root.path()).unwrap().apply().unwrap();
    root
}

fn epoch() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

fn materialize(store: &FeatureStore) -> Result<Vec<MaterializationRecord>, Error> {
    store.materialize(epoch(), Utc::now(), None, &NoProgress)
}

/// Looks every driver up; fails if any value is not present.
fn lookup_all(store: &FeatureStore) -> Result<(), Error> {
    let first = example::FIRST_DRIVER_ID;
    let drivers = (first..first + i64::from(DRIVERS)).map(|d| json!(d));
    let entities = EntityRows {
        columns: vec![("driver_id".into(), drivers.collect())],
    };
    let request = FeatureRequest::Features(vec![format!("{VIEW}:conv_rate")]);
    let response = store.get_online_features(&request, false, &entities)?;
    assert!(
        response.results[1]
            .statuses
            .iter()
            .all(|s| *s == FieldStatus::Present),
        "every driver is present"
    );
    Ok(())
}

#[test]
fn lookups_after_a_quick_redis_restart_all_succeed() {
    let redis = RedisServer::start();
    let port = redis.port;
    let project = redis_project(&redis.url(), 30_000);
    let store = FeatureStore::open(project.path()).unwrap();
    materialize(&store).unwrap();
    // Concurrent lookups leave several idle connections in the pool.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..5 {
                    lookup_all(&store).unwrap();
                }
            });
        }
    });

    // Redis restarts on the same port (empty: it keeps nothing on disk);
    // another store, with no pooled connection, writes the data again.
    drop(redis);
    let _redis = RedisServer::start_on(port);
    materialize(&FeatureStore::open(project.path()).unwrap()).unwrap();

    let failures: Vec<String> = (0..16)
        .filter_map(|_| lookup_all(&store).err().map(|e| e.to_string()))
        .collect();
    assert!(failures.is_empty(), "lookups failed: {failures:?}");
    // Concurrent lookups after a second restart, too.
    drop(_redis);
    let _redis = RedisServer::start_on(port);
    materialize(&FeatureStore::open(project.path()).unwrap()).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| lookup_all(&store).unwrap());
        }
    });
}

#[test]
fn materialize_with_redis_stopped_is_503() {
    let redis = RedisServer::start();
    let project = redis_project(&redis.url(), 30_000);
    let server = Server::start(project.path(), &[]);
    drop(redis);
    for (path, body) in [
        (
            "/materialize",
            json!({"start_ts": "1970-01-01T00:00:00Z", "end_ts": "now"}),
        ),
        ("/materialize-incremental", json!({"end_ts": "now"})),
    ] {
        let (status, body) = server.post(path, body);
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["class"], "Unavailable", "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Redis"),
            "{path}: {body}"
        );
    }
    let (status, view) = server.get(&format!("/registry/feature-views/{VIEW}"));
    assert_eq!(status, 200, "{view}");
    assert!(view["last_materialization"].is_null(), "nothing recorded");
}

/// `server.request_timeout_ms` alone (no transform's deadline involved):
/// a lookup waiting on a Redis that holds its clients gets 503 Timeout at
/// the route's limit, and the server answers normally once Redis does.
#[test]
fn a_lookup_waiting_on_a_paused_redis_times_out_with_503() {
    let redis = RedisServer::start();
    let project = redis_project(&redis.url(), 30_000);
    let config = project.path().join("wafer.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("server: {request_timeout_ms: 300}\n");
    std::fs::write(&config, text).unwrap();
    materialize(&FeatureStore::open(project.path()).unwrap()).unwrap();
    let server = Server::start(project.path(), &[]);
    let body =
        json!({"features": [format!("{VIEW}:conv_rate")], "entities": {"driver_id": [1001]}});
    let (status, answer) = server.post("/get-online-features", body.clone());
    assert_eq!(status, 200, "{answer}");

    // Redis holds every client for 5 s: without the route's limit the
    // lookup would wait, then succeed or fail as Unavailable at the
    // client's own 2 s timeout (not the Timeout checked below).
    assert_eq!(
        redis.command(&["CLIENT", "PAUSE", "5000", "ALL"]),
        "+OK\r\n"
    );
    let (status, answer) = server.post("/get-online-features", body.clone());
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["class"], "Timeout", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("300 ms (server.request_timeout_ms)"),
        "{answer}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = server.post("/get-online-features", body.clone());
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(std::time::Instant::now() < deadline, "{answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Holds a run inside its first view until told to go on (or until the
/// sender is dropped, so a failing test does not hang).
struct Gate {
    entered: Mutex<mpsc::Sender<()>>,
    go_on: Mutex<mpsc::Receiver<()>>,
}

impl Gate {
    fn new() -> (Gate, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered, entered_rx) = mpsc::channel();
        let (go_on_tx, go_on) = mpsc::channel();
        let gate = Gate {
            entered: Mutex::new(entered),
            go_on: Mutex::new(go_on),
        };
        (gate, entered_rx, go_on_tx)
    }
}

impl MaterializeProgress for Gate {
    fn view_started(&self, _: &str, _: DateTime<Utc>, _: DateTime<Utc>) {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.go_on.lock().unwrap().recv();
    }
    fn rows_written(&self, _: &str, _: u64) {}
    fn view_finished(&self, _: &MaterializationRecord) {}
}

fn claim_key() -> String {
    format!(
        "{{wafer:materializing:{}:driver_ranking}}:{VIEW}",
        "driver_ranking".len()
    )
}

/// Scripts Redis has run so far (EVALSHA and EVAL): every claim taken or
/// renewed is one.
fn script_calls(redis: &RedisServer) -> u64 {
    let stats = redis.command(&["INFO", "commandstats"]);
    ["cmdstat_evalsha:calls=", "cmdstat_eval:calls="]
        .iter()
        .filter_map(|name| {
            let rest = &stats[stats.find(name)? + name.len()..];
            rest[..rest.find(',')?].parse::<u64>().ok()
        })
        .sum()
}

/// Waits (at most a minute) until Redis has run `more` scripts after the
/// `base` count: renewals, one after the other on the claim's thread.
fn await_script_calls(redis: &RedisServer, base: u64, more: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while script_calls(redis) < base + more {
        assert!(
            std::time::Instant::now() < deadline,
            "no renewals seen: {} scripts",
            script_calls(redis) - base
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_busy(result: Result<Vec<MaterializationRecord>, Error>) {
    match result {
        Err(Error::Busy(views)) => assert_eq!(views, vec![VIEW.to_string()]),
        other => panic!("expected Busy, got {:?}", other.map(|r| r.len())),
    }
}

#[test]
fn a_view_materializing_in_one_store_is_refused_by_others_until_the_run_ends() {
    let redis = RedisServer::start();
    // Claims live 600 ms: the run below outlasts several, so it holds only
    // because it renews its claim.
    let project = redis_project(&redis.url(), 600);
    let dir = project.path();
    let first = FeatureStore::open(dir).unwrap();
    let second = FeatureStore::open(dir).unwrap();
    let server = Server::start(dir, &[]);
    let window = json!({"start_ts": "1970-01-01T00:00:00Z", "end_ts": "now"});
    let (gate, entered, go_on) = Gate::new();
    std::thread::scope(|s| {
        // Dropped as this closure unwinds, so a failed assertion frees the run.
        let go_on = go_on;
        let run = s.spawn(|| first.materialize(epoch(), Utc::now(), None, &gate));
        entered.recv_timeout(Duration::from_secs(60)).unwrap();
        // Four renewals, a third of the TTL apart: the run has outlived
        // its first claim's TTL.
        await_script_calls(&redis, script_calls(&redis), 4);
        // Another store in this process, and another process.
        assert_busy(materialize(&second));
        assert_busy(second.materialize_incremental(Utc::now(), None, &NoProgress));
        let (status, body) = server.post("/materialize", window.clone());
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["feature_views"], json!([VIEW]), "{body}");
        go_on.send(()).unwrap();
        assert_eq!(run.join().unwrap().unwrap().len(), 1);
    });
    assert_eq!(
        redis.command(&["EXISTS", &claim_key()]),
        ":0\r\n",
        "released"
    );
    assert_eq!(materialize(&second).unwrap().len(), 1);
    let (status, body) = server.post("/materialize", window);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_crashed_holders_claim_expires_and_a_lost_claim_stops_the_run() {
    let redis = RedisServer::start();
    let project = redis_project(&redis.url(), 600);
    let store = FeatureStore::open(project.path()).unwrap();
    // What a holder that crashed leaves: its token, expiring.
    let reply = redis.command(&["SET", &claim_key(), "crashed", "PX", "1500"]);
    assert_eq!(reply, "+OK\r\n");
    assert_busy(materialize(&store));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while redis.command(&["EXISTS", &claim_key()]) != ":0\r\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "the claim never expired"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(materialize(&store).unwrap().len(), 1);
    let runs = store.freshness(VIEW).unwrap().runs;

    // A run whose claim another holder took meanwhile (as after a renewal
    // failing for longer than the TTL) stops, records nothing, and leaves
    // the other holder's claim alone.
    let (gate, entered, go_on) = Gate::new();
    std::thread::scope(|s| {
        let go_on = go_on;
        let run = s.spawn(|| store.materialize(epoch(), Utc::now(), None, &gate));
        entered.recv_timeout(Duration::from_secs(60)).unwrap();
        let reply = redis.command(&["SET", &claim_key(), "another", "PX", "60000"]);
        assert_eq!(reply, "+OK\r\n");
        // A renewal run after the SET notices; the next one starts only
        // once the first has noted the loss.
        await_script_calls(&redis, script_calls(&redis), 2);
        go_on.send(()).unwrap();
        match run.join().unwrap() {
            Err(Error::Materialize(MaterializeError::ClaimLost(views))) => {
                assert_eq!(views, vec![VIEW.to_string()])
            }
            other => panic!("expected ClaimLost, got {:?}", other.map(|r| r.len())),
        }
    });
    assert_eq!(
        store.freshness(VIEW).unwrap().runs,
        runs,
        "nothing recorded"
    );
    assert_eq!(
        redis.command(&["GET", &claim_key()]),
        "$7\r\nanother\r\n",
        "the other holder's claim is kept"
    );
}

#[test]
fn the_embedded_store_cannot_be_opened_by_a_second_process() {
    for store in ["redb", "sled"] {
        let project = cli::example_project();
        let dir: &Path = project.path();
        let config = std::fs::read_to_string(dir.join("wafer.yaml")).unwrap();
        std::fs::write(
            dir.join("wafer.yaml"),
            format!("{config}online_store: {{type: {store}}}\n"),
        )
        .unwrap();
        let server = Server::start(dir, &[]);
        assert_eq!(server.get("/health").0, 200, "the server opened the store");
        let error = cli::fails(cli::wafer(dir, &["materialize", "1970-01-01", "now"]));
        assert!(
            error.contains("is in use by another process"),
            "{store}: {error}"
        );
    }
}
