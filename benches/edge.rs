//! Issue 16's benchmark: edge deployments, beside the central server on the
//! same machine in the same run.
//!
//! (a) `wafer bundle create` of 1,000,000 drivers (service
//!     `driver_activity_scored`: three stored features and an on-demand view
//!     with request data): time and size; opening it, `wafer serve
//!     --bundle` process start to the first lookup answered, into an empty
//!     state (load) and again over the loaded state;
//! (b) sync: the first (everything) and one after 10,000 drivers were
//!     pushed on the central server (bytes and seconds, `wafer edge sync`);
//! (c) lookups (1 random driver; and the scored service with request data)
//!     through the edge and the central server, wrk 10 s at concurrency 1
//!     and 16, beside `GET /health` on the edge (the HTTP floor);
//! (d) footprint: the edge binary's size (`target/edge/wafer`, when built
//!     with `cargo build --profile edge --no-default-features --features
//!     edge`), idle RSS of an edge serving the example's 10,000 drivers,
//!     and cold start with a bundle of 10 transforms and 100,000 entities
//!     (first start: load and compile; restart over the loaded state).
//!
//! `WAFER_EDGE_BIN` names the edge binary (default `target/edge/wafer`,
//! else the full build stands in, which the output says).
//! Run: `cargo bench --bench edge` (about 5 minutes).

mod common;
#[path = "../tests/common/server.rs"]
mod http_server;
#[path = "../tests/common/wasm.rs"]
mod wasm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::wrk;
use http_server::{http, Server};
use serde_json::json;

fn full_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wafer"))
}

fn edge_bin() -> (PathBuf, &'static str) {
    if let Some(path) = std::env::var_os("WAFER_EDGE_BIN") {
        return (PathBuf::from(path), "WAFER_EDGE_BIN");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let built = target.join("edge").join("wafer");
    if built.exists() {
        (built, "target/edge/wafer")
    } else {
        (full_bin(), "the full build (no edge build found)")
    }
}

fn run(binary: &Path, dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(binary)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run wafer");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An example project of `drivers` drivers, materialized, with the scored
/// service and `extra_transforms` more on-demand views (distinct modules)
/// in a service `many`.
fn project(drivers: u32, extra_transforms: usize) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    run(
        &full_bin(),
        dir,
        &[
            "init",
            ".",
            "--drivers",
            &drivers.to_string(),
            "--hours",
            "1",
            "--entity-rows",
            "10",
        ],
    );
    common::add_scored_service(dir);
    std::fs::write(
        dir.join("conv.wasm"),
        wasm::transform_module("conv_rate_plus_val"),
    )
    .unwrap();
    run(
        &full_bin(),
        dir,
        &["transform", "upload", "conv", "conv.wasm"],
    );
    if extra_transforms > 0 {
        let mut yaml = String::from("on_demand_feature_views:\n");
        let mut service = String::from("  - name: many\n    features:\n");
        for i in 0..extra_transforms {
            let schema = format!(
                r#"{{"abi":1,"name":"t{i}","inputs":[{{"name":"conv_rate","type":"float64"}}],"outputs":[{{"name":"y{i}","type":"float64"}}]}}"#
            );
            let module = wasm::wat_module("", wasm::IDENTITY_BODY, "", &schema);
            let file = format!("t{i}.wasm");
            std::fs::write(dir.join(&file), module).unwrap();
            run(
                &full_bin(),
                dir,
                &["transform", "upload", &format!("t{i}"), &file],
            );
            yaml.push_str(&format!(
                "  - name: v{i}\n    transform: t{i}\n    sources: [driver_hourly_stats]\n    features: [{{name: y{i}, type: float64}}]\n"
            ));
            service.push_str(&format!("      - v{i}\n"));
        }
        let definitions = dir.join("definitions.yaml");
        let text = std::fs::read_to_string(&definitions)
            .unwrap()
            .replacen("on_demand_feature_views:\n", &yaml, 1)
            .replacen(
                "feature_services:\n",
                &format!("feature_services:\n{service}"),
                1,
            );
        std::fs::write(&definitions, text).unwrap();
    }
    run(&full_bin(), dir, &["apply"]);
    run(
        &full_bin(),
        dir,
        &["materialize", "2000-01-01T00:00:00Z", "now"],
    );
    root
}

/// Starts a server and waits for `body`'s lookup to be answered; returns
/// it and the time from spawn.
fn serve_until_answered(
    binary: &Path,
    args: &[&str],
    dir: &Path,
    body: &str,
) -> (Server, Duration) {
    let started = Instant::now();
    let mut command = Command::new(binary);
    command
        .current_dir(dir)
        .args(["serve", "--port", "0"])
        .args(args);
    let server = Server::spawn(command);
    loop {
        let (status, text) = http(
            server.address,
            "POST",
            "/get-online-features",
            None,
            body.as_bytes(),
        );
        if status == 200 {
            assert!(text.contains("PRESENT"), "{text}");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (server, started.elapsed())
}

fn script(drivers: u32, scored: bool) -> String {
    let body = if scored {
        "'{\"feature_service\": \"driver_activity_scored\", \"entities\": {\"driver_id\": [' .. math.random(1001, 1000 + COUNT) .. '], \"val_to_add\": [' .. math.random(1, 100) .. ']}}'"
    } else {
        "'{\"feature_service\": \"driver_activity\", \"entities\": {\"driver_id\": [' .. math.random(1001, 1000 + COUNT) .. ']}}'"
    };
    format!(
        "request = function()\n  local body = {}\n  return wrk.format(\"POST\", \"/get-online-features\", {{[\"Content-Type\"] = \"application/json\"}}, body)\nend\n{}",
        body.replace("COUNT", &drivers.to_string()),
        wrk::CHECK_200
    )
}

const HEALTH: &str = "request = function()\n  return wrk.format(\"GET\", \"/health\")\nend\n";

fn main() {
    wrk::ensure_wrk();
    let (edge, edge_name) = edge_bin();
    println!("edge binary: {} ({edge_name})", edge.display());
    let one = json!({"feature_service": "driver_activity_scored", "entities": {"driver_id": [1001], "val_to_add": [1]}}).to_string();

    // (a)
    const WIDE: u32 = 1_000_000;
    let central = project(WIDE, 0);
    let c = central.path();
    let started = Instant::now();
    run(
        &full_bin(),
        c,
        &[
            "bundle",
            "create",
            "wide.bundle",
            "--feature-service",
            "driver_activity_scored",
            "--feature-service",
            "driver_activity",
        ],
    );
    let create = started.elapsed();
    let size = std::fs::metadata(c.join("wide.bundle")).unwrap().len();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let bundle = c.join("wide.bundle");
    let args = [
        "--bundle",
        bundle.to_str().unwrap(),
        "--data-dir",
        state.to_str().unwrap(),
    ];
    let (server, load) = serve_until_answered(&edge, &args, work.path(), &one);
    drop(server);
    let (server, reopen) = serve_until_answered(&edge, &args, work.path(), &one);
    let reopen_rss = common::memory_mib(server.child.id(), "VmRSS:");
    drop(server);
    let state_only = ["--data-dir", state.to_str().unwrap()];
    let (edge_server, reopen_state) = serve_until_answered(&edge, &state_only, work.path(), &one);
    println!("\n(a) bundle of {WIDE} drivers (driver_activity_scored)\n");
    println!("| create | size | serve --bundle, empty state: first answer | again, state loaded | serve --data-dir, state loaded | RSS after |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {:.2} s | {:.1} MiB | {:.0} ms | {:.0} ms | {:.0} ms | {reopen_rss:.0} MiB |",
        create.as_secs_f64(),
        size as f64 / (1 << 20) as f64,
        load.as_secs_f64() * 1e3,
        reopen.as_secs_f64() * 1e3,
        reopen_state.as_secs_f64() * 1e3,
    );

    // (c) lookups, edge beside central.
    let central_server = Server::start(c, &[]);
    println!("\n(c) lookups over {WIDE} drivers, wrk 10 s\n");
    println!("| server | request | connections | requests/s | p50 | p99 | errors |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for (name, address) in [
        ("edge", edge_server.address),
        ("central", central_server.address),
    ] {
        let url = format!("http://{address}");
        for (request, lua) in [
            ("1 driver", script(WIDE, false)),
            ("1 driver + on-demand", script(WIDE, true)),
            ("GET /health", HEALTH.to_string()),
        ] {
            for (connections, threads) in [(1, 1), (16, 2)] {
                let r = wrk::wrk(&url, &lua, connections, threads, 10, work.path());
                println!(
                    "| {name} | {request} | {connections} | {:.0} | {:.3} ms | {:.3} ms | {} |",
                    r.requests_per_second, r.p50_ms, r.p99_ms, r.errors
                );
            }
        }
    }
    drop(edge_server);

    // (b) sync.
    let url = format!("http://{}", central_server.address);
    let synced = work.path().join("synced");
    let sync = |label: &str| {
        let started = Instant::now();
        let out = stdout(&run(
            &edge,
            work.path(),
            &[
                "edge",
                "sync",
                "--from",
                &url,
                "--data-dir",
                synced.to_str().unwrap(),
            ],
        ));
        println!(
            "| {label} | {:.2} s | {} |",
            started.elapsed().as_secs_f64(),
            out.trim()
        );
    };
    println!("\n(b) sync from the central server ({WIDE} drivers)\n");
    println!("| sync | wall | wafer edge sync says |");
    println!("|---|---:|---|");
    sync("first (everything)");
    let now = chrono::Utc::now().to_rfc3339();
    let drivers: Vec<i64> = (0..10_000).map(|i| 1001 + i * 97).collect();
    let body = json!({
        "push_source_name": "driver_stats_push", "to": "online",
        "df": {
            "driver_id": drivers,
            "event_timestamp": vec![now.clone(); drivers.len()],
            "created": vec![now; drivers.len()],
            "conv_rate": vec![0.5; drivers.len()],
            "acc_rate": vec![0.5; drivers.len()],
            "avg_daily_trips": vec![1; drivers.len()],
        }
    })
    .to_string();
    let (status, text) = http(
        central_server.address,
        "POST",
        "/push",
        None,
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    sync("after 10,000 drivers pushed");
    sync("nothing changed");
    drop(central_server);
    drop(central);

    // (d) footprint.
    println!("\n(d) footprint\n");
    let size = std::fs::metadata(&edge).map(|m| m.len()).unwrap_or(0);
    println!(
        "edge binary: {:.1} MiB ({edge_name})",
        size as f64 / (1 << 20) as f64
    );
    let small = project(10_000, 0);
    run(
        &full_bin(),
        small.path(),
        &["bundle", "create", "small.bundle"],
    );
    let small_state = work.path().join("small-state");
    let small_bundle = small.path().join("small.bundle");
    let (server, _) = serve_until_answered(
        &edge,
        &[
            "--bundle",
            small_bundle.to_str().unwrap(),
            "--data-dir",
            small_state.to_str().unwrap(),
        ],
        work.path(),
        &one,
    );
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "idle RSS, 10,000 drivers, after one lookup and 3 s idle: {:.1} MiB",
        common::memory_mib(server.child.id(), "VmRSS:")
    );
    drop(server);
    let many = project(100_000, 10);
    run(
        &full_bin(),
        many.path(),
        &[
            "bundle",
            "create",
            "many.bundle",
            "--feature-service",
            "many",
        ],
    );
    let many_bundle = many.path().join("many.bundle");
    let many_state = work.path().join("many-state");
    let many_body =
        json!({"feature_service": "many", "entities": {"driver_id": [1001]}}).to_string();
    let args = [
        "--bundle",
        many_bundle.to_str().unwrap(),
        "--data-dir",
        many_state.to_str().unwrap(),
    ];
    let (server, first) = serve_until_answered(&edge, &args, work.path(), &many_body);
    drop(server);
    let mut restarts = Vec::new();
    let mut state_restarts = Vec::new();
    for _ in 0..5 {
        let (server, t) = serve_until_answered(&edge, &args, work.path(), &many_body);
        drop(server);
        restarts.push(t.as_secs_f64() * 1e3);
        let (server, t) = serve_until_answered(
            &edge,
            &["--data-dir", many_state.to_str().unwrap()],
            work.path(),
            &many_body,
        );
        drop(server);
        state_restarts.push(t.as_secs_f64() * 1e3);
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|t| format!("{t:.0}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "cold start, 10 transforms, 100,000 drivers (process start to the first answer of service `many`): first start (load, compile) {:.0} ms; restarts with --bundle {} ms; with --data-dir {} ms",
        first.as_secs_f64() * 1e3,
        fmt(&restarts),
        fmt(&state_restarts)
    );
}
