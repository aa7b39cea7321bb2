//! Replicas benchmark: lookups through 1 and 2 `wafer serve` processes
//! sharing one Redis, then a 3-master Redis Cluster (registry, modules and
//! online values in it), driven by `wrk`; and what the registry refresh
//! costs lookups (refreshing every 10 ms against once a minute). Every
//! case is beside `GET /health` through the same server (its HTTP round
//! trip and a Redis PING; on the cluster, a PING to every master).
//!
//! cargo bench --bench replicas
//!
//! Everything runs on this machine: the servers, Redis and wrk share its
//! cores, so two replicas cannot show more throughput than one when the
//! cores are already busy; see benches/README.md.

// The tests' helpers (Redis, the cluster) load `child.rs` as the benches'
// own helpers do.
#![allow(clippy::duplicate_mod)]

mod common;
#[path = "../tests/common/mod.rs"]
mod tests_common;

use std::path::Path;

use chrono::Utc;
use common::wrk::{self, Run};
use common::{serve, Server};
use serde_json::json;
use tests_common::redis_cluster::RedisCluster;
use tests_common::RedisServer;
use wafer::example::{self, ExampleOptions};
use wafer::{FeatureStore, NoProgress};

const SECONDS: u32 = 5;

fn replica(dir: &Path, data_dir: &str, refresh_ms: u64) -> Server {
    let data_dir = dir.join(data_dir);
    let refresh_ms = refresh_ms.to_string();
    serve(
        Path::new(env!("CARGO_BIN_EXE_wafer")),
        dir,
        &[
            ("WAFER_DATA_DIR", data_dir.to_str().expect("a UTF-8 path")),
            ("WAFER_SERVER_REGISTRY_REFRESH_MS", &refresh_ms),
        ],
    )
}

/// `connections` spread evenly over `servers`, one wrk each, at once:
/// total requests/s, the worst p50 and p99.
fn load(servers: &[&Server], body: Option<&str>, connections: u32, dir: &Path) -> Run {
    let path = if body.is_some() {
        "/get-online-features"
    } else {
        "/health"
    };
    let per_server = (connections / servers.len() as u32).max(1);
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                let url = format!("{}{path}", server.1);
                let script = body.map_or_else(wrk::get, wrk::post_json);
                let dir = dir.join(format!("wrk{i}"));
                std::fs::create_dir_all(&dir).expect("wrk dir");
                scope.spawn(move || {
                    let threads = per_server.min(2);
                    wrk::wrk(&url, &script, per_server, threads, SECONDS, &dir)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("wrk"))
            .collect()
    });
    Run {
        p50_ms: runs.iter().map(|r| r.p50_ms).fold(0.0, f64::max),
        p99_ms: runs.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
        requests_per_second: runs.iter().map(|r| r.requests_per_second).sum(),
        errors: runs
            .iter()
            .map(|r| r.errors.as_str())
            .filter(|e| *e != "none")
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The example project with its registry and online store at `backend`
/// (`url: ...` or `cluster: [...]`), applied and materialized.
fn project(backend: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let options = ExampleOptions {
        drivers: 10_000,
        hours: 24,
        entity_rows: 10,
        ..ExampleOptions::default()
    };
    example::scaffold(dir, &options, true).expect("example project");
    std::fs::write(
        dir.join("wafer.yaml"),
        format!(
            "project: driver_ranking\nregistry: {{type: redis, {backend}}}\nonline_store: {{type: redis, {backend}}}\n"
        ),
    )
    .expect("wafer.yaml");
    let store = FeatureStore::open(dir).expect("project");
    store.apply().expect("apply");
    store
        .materialize(
            chrono::DateTime::<Utc>::UNIX_EPOCH,
            Utc::now(),
            None,
            &NoProgress,
        )
        .expect("materialize");
    root
}

fn row(first: &str, second: impl std::fmt::Display, case: &str, connections: u32, run: &Run) {
    println!(
        "| {first} | {second} | {case} | {connections} | {:.3} | {:.3} | {:.0} | {} |",
        run.p50_ms,
        run.p99_ms,
        run.requests_per_second,
        if run.errors.is_empty() {
            "none"
        } else {
            &run.errors
        }
    );
}

fn main() {
    wrk::ensure_wrk();
    let features = json!([
        "driver_hourly_stats:conv_rate",
        "driver_hourly_stats:acc_rate",
        "driver_hourly_stats:avg_daily_trips"
    ]);
    let one = json!({"features": features, "entities": {"driver_id": [1001]}}).to_string();
    let hundred = json!({
        "features": features,
        "entities": {"driver_id": (0..100).map(|i| 1001 + i * 37).collect::<Vec<_>>()}
    })
    .to_string();

    let redis = RedisServer::start();
    let cluster = RedisCluster::start(3);
    let backends = [
        ("one Redis", format!("url: \"{}\"", redis.url())),
        (
            "3-master cluster",
            format!("cluster: {}", cluster.yaml_nodes()),
        ),
    ];
    println!(
        "| Backend | Replicas | Case | Connections | p50 (ms) | p99 (ms) | Requests/s | Errors |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (name, backend) in &backends {
        let root = project(backend);
        let dir = root.path();
        let a = replica(dir, "data-a", 1000);
        let b = replica(dir, "data-b", 1000);
        for (case, body) in [
            ("GET /health (reference)", None),
            ("1 entity x 3 features", Some(one.as_str())),
            ("100 entities x 3 features", Some(hundred.as_str())),
        ] {
            for connections in [1, 16] {
                row(
                    name,
                    1,
                    case,
                    connections,
                    &load(&[&a], body, connections, dir),
                );
            }
            for connections in [2, 16] {
                row(
                    name,
                    2,
                    case,
                    connections,
                    &load(&[&a, &b], body, connections, dir),
                );
            }
        }
    }

    // The registry refresh on the hot path: one replica refreshing every
    // 10 ms against one refreshing once a minute, alternating.
    println!(
        "\n| Registry refresh | Round | Case | Connections | p50 (ms) | p99 (ms) | Requests/s | Errors |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let root = project(&backends[0].1);
    let dir = root.path();
    let often = replica(dir, "data-often", 10);
    let rarely = replica(dir, "data-rarely", 60_000);
    for round in 1..=2 {
        for (label, server) in [("every 10 ms", &often), ("every 60 s", &rarely)] {
            let run = load(&[server], Some(&one), 16, dir);
            row(label, round, "1 entity x 3 features", 16, &run);
            println!(
                "| {label} | {round} | 1 entity x 3 features | 16 | {:.3} | {:.3} | {:.0} | {} |",
                run.p50_ms,
                run.p99_ms,
                run.requests_per_second,
                if run.errors.is_empty() {
                    "none"
                } else {
                    &run.errors
                }
            );
        }
    }
}
