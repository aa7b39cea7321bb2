//! Edge deployments on loopback: a full build materializes and serves; an
//! edge build (`WAFER_EDGE_BIN`, built without DuckDB and Redis by the test
//! command; the full binary stands in when it is unset) serves a bundle and
//! syncs from the central server; both answer random requests with request
//! data byte for byte alike; a push on the central server reaches the edge
//! by sync; damaged bundles are refused while the old state serves; a sync
//! cut midway (connection dropped, process killed) leaves the old state and
//! the next sync completes.

mod common;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use server::{http, Server};

const DRIVERS: i64 = 300;

const EDGE_DEFINITIONS: &str = "
request_sources:
  - name: scoring_request
    fields: [{name: val_to_add, type: int64}]
on_demand_feature_views:
  - name: scored
    transform: conv
    sources: [driver_hourly_stats, scoring_request]
    features: [{name: conv_rate_plus_val, type: float64}]
feature_services:
  - name: scoring
    features:
      - driver_hourly_stats: [conv_rate, acc_rate, avg_daily_trips]
      - scored
";

fn edge_bin() -> PathBuf {
    match std::env::var_os("WAFER_EDGE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must test the edge build: set WAFER_EDGE_BIN (the test command does)"
            );
            eprintln!("WAFER_EDGE_BIN unset: the full binary stands in for the edge build");
            PathBuf::from(env!("CARGO_BIN_EXE_wafer"))
        }
    }
}

fn run(binary: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails(output: Output) -> String {
    assert!(!output.status.success(), "succeeded unexpectedly");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The central project: the example with an on-demand view taking request
/// data, materialized.
fn central_project() -> tempfile::TempDir {
    let full = Path::new(env!("CARGO_BIN_EXE_wafer"));
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    ok(run(
        full,
        dir,
        &[
            "init",
            ".",
            "--drivers",
            &DRIVERS.to_string(),
            "--hours",
            "20",
        ],
    ));
    let config = std::fs::read_to_string(dir.join("wafer.yaml")).unwrap();
    std::fs::write(
        dir.join("wafer.yaml"),
        config.replace(
            "  - definitions.yaml\n",
            "  - definitions.yaml\n  - edge.yaml\n",
        ),
    )
    .unwrap();
    std::fs::write(dir.join("edge.yaml"), EDGE_DEFINITIONS).unwrap();
    let module = dir.join("conv.wasm");
    std::fs::write(&module, wasm::transform_module("conv_rate_plus_val")).unwrap();
    ok(run(
        full,
        dir,
        &["transform", "upload", "conv", "conv.wasm"],
    ));
    ok(run(full, dir, &["apply"]));
    ok(run(
        full,
        dir,
        &["materialize", "2000-01-01T00:00:00Z", "now"],
    ));
    root
}

/// A random lookup of the `scoring` service: known and unknown drivers,
/// repeated ones, request data, sometimes full feature names.
fn random_request(rng: &mut ChaCha8Rng) -> String {
    let rows = rng.random_range(1..40);
    let drivers: Vec<i64> = (0..rows)
        .map(|_| rng.random_range(1000..1000 + DRIVERS + 20))
        .collect();
    let values: Vec<i64> = (0..rows).map(|_| rng.random_range(-1000..1000)).collect();
    json!({
        "feature_service": "scoring",
        "entities": {"driver_id": drivers, "val_to_add": values},
        "full_feature_names": rng.random_bool(0.3),
    })
    .to_string()
}

fn lookup(server: SocketAddr, body: &str) -> String {
    let (status, text) = http(
        server,
        "POST",
        "/get-online-features",
        None,
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    text
}

/// Both servers answer `count` random requests byte for byte alike.
fn assert_same_answers(central: SocketAddr, edge: SocketAddr, seed: u64, count: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut present = 0;
    for _ in 0..count {
        let body = random_request(&mut rng);
        let expected = lookup(central, &body);
        assert_eq!(lookup(edge, &body), expected, "request {body}");
        present += expected.matches("\"PRESENT\"").count();
    }
    assert!(present > count, "the answers hold almost no values");
}

fn edge_server(args: &[&str]) -> Server {
    let mut command = Command::new(edge_bin());
    command.args(["serve", "--port", "0"]).args(args);
    Server::spawn(command)
}

fn push(central: &Server, drivers: &[i64], conv_rate: f32) {
    let now = chrono::Utc::now().to_rfc3339();
    let (status, body) = central.post(
        "/push",
        json!({
            "push_source_name": "driver_stats_push",
            "to": "online",
            "df": {
                "driver_id": drivers,
                "event_timestamp": vec![now.clone(); drivers.len()],
                "created": vec![now; drivers.len()],
                "conv_rate": vec![conv_rate; drivers.len()],
                "acc_rate": vec![0.5; drivers.len()],
                "avg_daily_trips": vec![7; drivers.len()],
            }
        }),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_edge_build_lacks_what_needs_duckdb_and_says_so() {
    // `edge_bin` fails on CI without the edge build.
    if edge_bin() == Path::new(env!("CARGO_BIN_EXE_wafer")) {
        eprintln!("WAFER_EDGE_BIN unset: nothing to check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let help = ok(run(&edge_bin(), dir.path(), &["--help"]));
    let commands: Vec<&str> = help
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for present in ["serve", "bundle", "edge", "online"] {
        assert!(
            commands.contains(&present),
            "{present} missing from\n{help}"
        );
    }
    for absent in [
        "materialize",
        "materialize-incremental",
        "historical",
        "quickstart",
    ] {
        assert!(!commands.contains(&absent), "{absent} listed in\n{help}");
    }
    let error = fails(run(
        &edge_bin(),
        dir.path(),
        &["materialize", "2020-01-01", "now"],
    ));
    assert!(error.contains("offline store"), "{error}");
}

#[test]
fn an_edge_serves_a_bundle_and_syncs_with_the_same_answers() {
    let project = central_project();
    let dir = project.path();
    let full = Path::new(env!("CARGO_BIN_EXE_wafer"));
    let bundle = dir.join("scoring.bundle");
    let created = ok(run(
        full,
        dir,
        &[
            "bundle",
            "create",
            "scoring.bundle",
            "--feature-service",
            "scoring",
        ],
    ));
    assert!(created.contains(&format!("{DRIVERS} records")), "{created}");
    let checked = ok(run(
        &edge_bin(),
        dir,
        &["bundle", "verify", "scoring.bundle"],
    ));
    assert!(checked.contains("ok"), "{checked}");

    let central = Server::start(dir, &[]);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("from-bundle");
    let from_bundle = edge_server(&[
        "--bundle",
        bundle.to_str().unwrap(),
        "--data-dir",
        state.to_str().unwrap(),
    ]);
    assert_same_answers(central.address, from_bundle.address, 1, 30);
    let (status, health) = from_bundle.get("/health");
    assert_eq!(status, 200, "{health}");

    // Pushes to online views work at the edge too.
    let (status, body) = from_bundle.post(
        "/push",
        json!({
            "push_source_name": "driver_stats_push",
            "to": "online",
            "df": {
                "driver_id": [1002],
                "event_timestamp": [chrono::Utc::now().to_rfc3339()],
                "created": [chrono::Utc::now().to_rfc3339()],
                "conv_rate": [0.875], "acc_rate": [0.5], "avg_daily_trips": [3],
            }
        }),
    );
    assert_eq!(status, 200, "{body}");
    let edge_pushed =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1002]}})
            .to_string();
    assert!(lookup(from_bundle.address, &edge_pushed).contains("0.875"));

    // A sync from the central server: everything the first time.
    let synced_dir = work.path().join("synced");
    let first = ok(run(
        &edge_bin(),
        work.path(),
        &[
            "edge",
            "sync",
            "--from",
            &format!("http://{}", central.address),
            "--data-dir",
            synced_dir.to_str().unwrap(),
        ],
    ));
    assert!(first.contains(&format!("all {DRIVERS} records")), "{first}");

    // A push on the central server reaches the edge by the next sync, which
    // holds only the changed records.
    let pushed: Vec<i64> = vec![1001, 1005, 1010, 1200, 1299];
    push(&central, &pushed, 0.125);
    let second = ok(run(
        &edge_bin(),
        work.path(),
        &[
            "edge",
            "sync",
            "--from",
            &format!("http://{}", central.address),
            "--data-dir",
            synced_dir.to_str().unwrap(),
        ],
    ));
    assert!(second.contains("changed 5 records"), "{second}");
    let synced = edge_server(&["--data-dir", synced_dir.to_str().unwrap()]);
    assert_same_answers(central.address, synced.address, 2, 30);
    let pushed_body =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": pushed}})
            .to_string();
    assert!(lookup(synced.address, &pushed_body).contains("0.125"));
    // The bundle-fed edge has not synced: it still answers the old values.
    assert!(!lookup(from_bundle.address, &pushed_body).contains("0.125"));
    drop(synced);

    // A periodic sync inside `serve` picks up a later push by itself.
    let live = edge_server(&[
        "--data-dir",
        synced_dir.to_str().unwrap(),
        "--sync-from",
        &format!("http://{}", central.address),
        "--sync-every",
        "200ms",
    ]);
    push(&central, &pushed[..2], 0.375);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lookup(live.address, &pushed_body).contains("0.375") {
        assert!(Instant::now() < deadline, "the edge never synced the push");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_same_answers(central.address, live.address, 3, 20);
}

#[test]
fn damaged_bundles_are_refused_and_the_old_state_keeps_serving() {
    let project = central_project();
    let dir = project.path();
    let full = Path::new(env!("CARGO_BIN_EXE_wafer"));
    ok(run(full, dir, &["bundle", "create", "good.bundle"]));
    let good = std::fs::read(dir.join("good.bundle")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut flipped = good.clone();
    let at = rng.random_range(60..good.len());
    flipped[at] ^= 1 << rng.random_range(0..8);
    let mut wrong_version = good.clone();
    wrong_version[8] = 9;
    let cases = [
        ("flipped.bundle", flipped, "sha256"),
        (
            "truncated.bundle",
            good[..rng.random_range(60..good.len())].to_vec(),
            "cut short",
        ),
        ("version.bundle", wrong_version, "format version 9"),
        (
            "extra.bundle",
            [good.as_slice(), b"x"].concat(),
            "follow the last part",
        ),
        ("empty.bundle", Vec::new(), "not a Wafer bundle"),
    ];
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let central = Server::start(dir, &[]);
    // A state loaded from the good bundle, then stopped.
    drop(edge_server(&[
        "--bundle",
        dir.join("good.bundle").to_str().unwrap(),
        "--data-dir",
        state.to_str().unwrap(),
    ]));
    for (name, bytes, reason) in cases {
        let path = work.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let error = fails(run(&edge_bin(), work.path(), &["bundle", "verify", name]));
        assert!(error.contains(reason), "{name}: {error}");
        // With no state, a damaged bundle stops the server from starting.
        let fresh = work.path().join(format!("{name}.fresh"));
        let error = fails(run(
            &edge_bin(),
            work.path(),
            &[
                "serve",
                "--port",
                "0",
                "--bundle",
                name,
                "--data-dir",
                fresh.to_str().unwrap(),
            ],
        ));
        assert!(error.contains(reason), "{name}: {error}");
        // With a state, it is refused and the state loaded before serves.
        let edge = edge_server(&[
            "--bundle",
            path.to_str().unwrap(),
            "--data-dir",
            state.to_str().unwrap(),
        ]);
        assert_same_answers(central.address, edge.address, 4, 5);
    }
}

/// Forwards one connection to `target`, passing at most `limit` bytes of
/// the answer, then drops both sides.
fn cutting_proxy(target: SocketAddr, limit: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let mut upstream = TcpStream::connect(target).unwrap();
            let mut request = [0u8; 4096];
            let n = client.read(&mut request).unwrap_or(0);
            upstream.write_all(&request[..n]).unwrap();
            let mut sent = 0;
            let mut buffer = [0u8; 8192];
            while sent < limit {
                let Ok(n) = upstream.read(&mut buffer) else {
                    break;
                };
                if n == 0 {
                    break;
                }
                let n = n.min(limit - sent);
                if client.write_all(&buffer[..n]).is_err() {
                    break;
                }
                sent += n;
            }
        }
    });
    address
}

#[test]
fn a_sync_cut_midway_leaves_the_old_state_and_the_next_completes() {
    let project = central_project();
    let dir = project.path();
    let central = Server::start(dir, &[]);
    let url = format!("http://{}", central.address);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let sync = |from: &str| {
        run(
            &edge_bin(),
            work.path(),
            &[
                "edge",
                "sync",
                "--from",
                from,
                "--data-dir",
                state.to_str().unwrap(),
            ],
        )
    };
    ok(sync(&url));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let pushed: Vec<i64> = (0..60).map(|i| 1000 + i * 5).collect();
    let probe =
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": pushed}})
            .to_string();
    // Before: answers as the central server gave them.
    let before = {
        let edge = edge_server(&["--data-dir", state.to_str().unwrap()]);
        lookup(edge.address, &probe)
    };
    push(&central, &pushed, 0.625);
    let after_central = lookup(central.address, &probe);
    assert_ne!(before, after_central);

    // Connections dropped after a random number of bytes: the sync fails
    // clearly and the edge keeps its state.
    for _ in 0..5 {
        let proxy = cutting_proxy(central.address, rng.random_range(0..4000));
        let error = fails(sync(&format!("http://{proxy}")));
        assert!(error.contains("sync from"), "{error}");
        let edge = edge_server(&["--data-dir", state.to_str().unwrap()]);
        assert_eq!(lookup(edge.address, &probe), before);
    }

    // Killed (SIGKILL) at each point of applying the bundle, each time from
    // the old state: the records are the old ones or the new ones, never a
    // mix, and the position committed with them agrees (a sync right after
    // fetches the pushed records again exactly when they are not there).
    let old_state = work.path().join("old-state");
    common::copy_dir(&state, &old_state);
    for (point, lands) in [
        ("edge.modules_installed", false),
        ("edge.before_commit", false),
        ("edge.committed", true),
    ] {
        use std::os::unix::process::ExitStatusExt;
        std::fs::remove_dir_all(&state).unwrap();
        common::copy_dir(&old_state, &state);
        let status = Command::new(edge_bin())
            .current_dir(work.path())
            .args([
                "edge",
                "sync",
                "--from",
                &url,
                "--data-dir",
                state.to_str().unwrap(),
            ])
            .env("WAFER_CRASH_AT", format!("point:{point}"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{point}: not killed");
        let seen = {
            let edge = edge_server(&["--data-dir", state.to_str().unwrap()]);
            lookup(edge.address, &probe)
        };
        let resync = ok(sync(&url));
        if lands {
            assert_eq!(seen, after_central, "{point}: not the new state");
            assert!(resync.contains("changed 0 records"), "{point}: {resync}");
        } else {
            assert_eq!(seen, before, "{point}: not the old state");
            assert!(
                resync.contains(&format!("changed {} records", pushed.len())),
                "{point}: {resync}"
            );
        }
    }
    ok(sync(&url));
    let edge = edge_server(&["--data-dir", state.to_str().unwrap()]);
    assert_eq!(lookup(edge.address, &probe), after_central);
    assert_same_answers(central.address, edge.address, 5, 20);
}
