//! HTTP load benchmark: `wafer serve` on loopback over the example data
//! (10,000 drivers x 100 hours, materialized into sled), driven by `wrk`
//! (Debian's package; installed here when missing). Prints a table; results
//! go in benches/README.md.
//!
//! cargo bench --bench server
//!
//! `WAFER_BENCH_BINS=base=/path/to/wafer,new=/path/to/other` serves the
//! same data with several builds of `wafer` (each on its own copy of the
//! project) and measures them case by case, alternating, so a comparison
//! between builds is made in one run. Every build is also measured on
//! `GET /health`: its HTTP round trip without a lookup, the reference.

mod common;
#[path = "../tests/common/wasm.rs"]
mod wasm;

use std::path::{Path, PathBuf};
use std::process::Child;

use chrono::Utc;
use common::wrk::{self, Run};
use common::{serve, Server};
use serde_json::json;
use wafer::example::{self, ExampleOptions};
use wafer::{FeatureStore, NoProgress};

const SECONDS: u32 = 10;

/// What one case sends: a lookup body, the health check, or pushes of one
/// new row each (a random driver, so every push writes).
enum Request<'a> {
    Lookup(&'a str),
    Health,
    Push,
}

fn wrk(url: &str, request: &Request, connections: u32, threads: u32, dir: &Path) -> Run {
    let check = wrk::CHECK_200;
    let (lua, path) = match request {
        Request::Lookup(body) => (wrk::post_json(body), "/get-online-features"),
        Request::Health => (wrk::get(), "/health"),
        Request::Push => {
            let now = Utc::now().to_rfc3339();
            (
                format!(
                    "math.randomseed(os.time())\nrequest = function()\n  local id = math.random(20000, 100000000)\n  local body = '{{\"push_source_name\": \"driver_stats_push\", \"df\": {{\"driver_id\": [' .. id .. '], \"event_timestamp\": [\"{now}\"], \"conv_rate\": [0.5], \"acc_rate\": [0.5], \"avg_daily_trips\": [' .. id .. ']}}}}'\n  return wrk.format(\"POST\", nil, {{[\"Content-Type\"] = \"application/json\"}}, body)\nend\n{check}"
                ),
                "/push",
            )
        }
    };
    wrk::wrk(
        &format!("{url}{path}"),
        &lua,
        connections,
        threads,
        SECONDS,
        dir,
    )
}

fn main() {
    wrk::ensure_wrk();
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let options = ExampleOptions {
        drivers: 10_000,
        hours: 100,
        entity_rows: 10,
        ..ExampleOptions::default()
    };
    example::scaffold(dir, &options, true).expect("example project");
    // The same service plus an on-demand view with one request field, to
    // measure what the transform adds.
    common::add_scored_service(dir);
    {
        let store = FeatureStore::open(dir).expect("project");
        store
            .upload_transform("conv", &wasm::transform_module("conv_rate_plus_val"))
            .expect("upload");
        store.apply().expect("apply");
        store
            .materialize(
                chrono::DateTime::<Utc>::UNIX_EPOCH,
                Utc::now(),
                None,
                &NoProgress,
            )
            .expect("materialize");
    }
    let binaries: Vec<(String, PathBuf)> = match std::env::var("WAFER_BENCH_BINS") {
        Ok(list) => list
            .split(',')
            .map(|entry| {
                let (label, path) = entry
                    .split_once('=')
                    .expect("WAFER_BENCH_BINS: label=path,...");
                (label.to_string(), PathBuf::from(path))
            })
            .collect(),
        Err(_) => vec![(
            "wafer".to_string(),
            PathBuf::from(env!("CARGO_BIN_EXE_wafer")),
        )],
    };
    // One copy of the materialized project per build: sled locks its
    // directory.
    let servers: Vec<(String, Server, tempfile::TempDir)> = binaries
        .into_iter()
        .map(|(label, binary)| {
            let copy = tempfile::tempdir().expect("tempdir");
            common::copy_dir(dir, copy.path());
            let server = serve(&binary, copy.path(), &[]);
            (label, server, copy)
        })
        .collect();
    let features = json!([
        "driver_hourly_stats:conv_rate",
        "driver_hourly_stats:acc_rate",
        "driver_hourly_stats:avg_daily_trips"
    ]);
    let one = json!({"features": features, "entities": {"driver_id": [1001]}}).to_string();
    let service = json!({"feature_service": "driver_activity", "entities": {"driver_id": [1002]}})
        .to_string();
    let scored = json!({
        "feature_service": "driver_activity_scored",
        "entities": {"driver_id": [1002], "val_to_add": [3]}
    })
    .to_string();
    let hundred = json!({
        "features": features,
        "entities": {"driver_id": (0..100).map(|i| 1001 + i * 37).collect::<Vec<_>>()}
    })
    .to_string();

    println!(
        "| Case | Concurrency | Build | p50 (ms) | p99 (ms) | Requests/s | Errors |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for (name, request) in [
        ("GET /health (reference: HTTP round trip)", Request::Health),
        ("1 entity x 3 features", Request::Lookup(&one)),
        ("1 entity, feature service", Request::Lookup(&service)),
        (
            "1 entity + 1 request field, service with an on-demand view",
            Request::Lookup(&scored),
        ),
        ("100 entities x 3 features", Request::Lookup(&hundred)),
    ] {
        for (connections, threads) in [(1, 1), (16, 2)] {
            for (label, server, copy) in &servers {
                let run = wrk(&server.1, &request, connections, threads, copy.path());
                println!(
                    "| {name} | {connections} | {label} | {:.3} | {:.3} | {:.0} | {} |",
                    run.p50_ms, run.p99_ms, run.requests_per_second, run.errors
                );
            }
        }
    }
    // What acknowledged-means-durable costs: pushes synced before the
    // answer (the default) beside the same build acknowledging from memory.
    let unsynced: Vec<(String, Server, tempfile::TempDir)> = servers
        .iter()
        .map(|(label, server, _)| {
            let copy = tempfile::tempdir().expect("tempdir");
            common::copy_dir(dir, copy.path());
            let binary = server_binary(&server.0);
            let unsynced = serve(
                &binary,
                copy.path(),
                &[("WAFER_ONLINE_STORE_SYNC_WRITES", "false")],
            );
            (format!("{label}, sync_writes: false"), unsynced, copy)
        })
        .collect();
    for (connections, threads) in [(1, 1), (16, 2)] {
        for (label, server, copy) in servers.iter().chain(&unsynced) {
            let run = wrk(&server.1, &Request::Push, connections, threads, copy.path());
            println!(
                "| push 1 new row | {connections} | {label} | {:.3} | {:.3} | {:.0} | {} |",
                run.p50_ms, run.p99_ms, run.requests_per_second, run.errors
            );
        }
    }
}

/// The executable a server process runs.
fn server_binary(child: &Child) -> PathBuf {
    std::fs::read_link(format!("/proc/{}/exe", child.id())).expect("the server's executable")
}
