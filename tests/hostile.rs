//! Hostile clients against a real `wafer serve`: bodies built to be slow or
//! large to parse, and transforms that run as long as they may. `/health`
//! and plain lookups must keep answering quickly through all of it.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::{ok, wafer};
use serde_json::json;
use server::{http, Server};

/// A float64 transform that copies its input, except that a first row of
/// exactly 777 makes it spin until a limit stops it: slow only for some
/// inputs, so the upload self-check (random values) lets it through.
fn slow_module() -> Vec<u8> {
    // Locals come first in a function: the check follows `(local $n i32)`.
    let (locals, rest) = wasm::IDENTITY_BODY
        .split_once('\n')
        .expect("a multi-line body");
    let body = format!(
        "{locals}
    (if (f64.eq (f64.load (i32.load offset=20 (local.get $desc))) (f64.const 777))
      (then (loop $spin (br $spin))))
{rest}"
    );
    wasm::wat_module("", &body, "", wasm::F64_SCHEMA)
}

/// The example project with a `slow` on-demand view over [`slow_module`],
/// and `server` settings appended to `wafer.yaml`.
fn project_with_slow_view(server_settings: &str) -> tempfile::TempDir {
    let project = cli::example_project();
    let dir = project.path();
    let module = dir.join("slow.wasm");
    std::fs::write(&module, slow_module()).unwrap();
    ok(wafer(
        dir,
        &["transform", "upload", "slow", module.to_str().unwrap()],
    ));
    std::fs::write(
        dir.join("slow.yaml"),
        "request_sources:
  - name: slow_request
    fields: [{name: x, type: float64}]
on_demand_feature_views:
  - name: slow
    transform: slow
    sources: [slow_request]
    features: [{name: y, type: float64}]
",
    )
    .unwrap();
    std::fs::write(
        dir.join("wafer.yaml"),
        format!(
            "project: driver_ranking\ndefinitions: [definitions.yaml, composite.yaml, slow.yaml]\n{server_settings}"
        ),
    )
    .unwrap();
    ok(wafer(dir, &["apply"]));
    project
}

fn plain_lookup() -> Vec<u8> {
    json!({
        "features": ["driver_hourly_stats:conv_rate"],
        "entities": {"driver_id": [1001, 1002]}
    })
    .to_string()
    .into_bytes()
}

fn timed(server: &Server, method: &str, path: &str, body: &[u8]) -> (u16, Duration) {
    let started = Instant::now();
    let (status, _) = http(server.address, method, path, None, body);
    (status, started.elapsed())
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// The peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// `{"a0": [], "a1": [], ...}`: many distinct, empty columns.
fn many_columns(count: usize) -> Vec<u8> {
    let mut body = String::from(r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"#);
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("\"c{i}\":[]"));
    }
    body.push_str("}}");
    body.into_bytes()
}

/// One entity column of about `bytes` bytes of small integers.
fn long_entity_list(bytes: usize) -> Vec<u8> {
    let mut body = String::from(
        r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": ["#,
    );
    let mut i = 0u64;
    while body.len() < bytes {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&(1000 + i % 9000).to_string());
        i += 1;
    }
    body.push_str("]}}");
    body.into_bytes()
}

/// Every error is JSON, a wrong method included.
#[test]
fn a_wrong_method_gets_405_with_a_json_body() {
    let project = cli::example_project();
    let server = Server::start(project.path(), &[]);
    for (method, path) in [
        ("GET", "/push"),
        ("DELETE", "/get-online-features"),
        ("POST", "/health"),
    ] {
        let (status, body) = server.call(method, path, None, "");
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(body["class"], "MethodNotAllowed", "{method} {path}: {body}");
        assert!(body["message"].as_str().unwrap().contains(path), "{body}");
    }
}

#[test]
fn many_columns_parse_in_linear_time() {
    let project = cli::example_project();
    let dir = project.path();
    std::fs::write(
        dir.join("wafer.yaml"),
        "project: driver_ranking\ndefinitions: [definitions.yaml, composite.yaml]\nserver: {max_columns_per_request: 200000}\n",
    )
    .unwrap();
    let server = Server::start(dir, &[]);
    // 80,000 distinct names: comparing each with every earlier one took
    // 5.7 s per body here; linear parsing takes 60-100 ms. A limit, not a
    // ratio against a smaller body: tried, a 20,000-column body (9 ms) is
    // within the noise of the attack tests running beside this one.
    let body = many_columns(80_000);
    let (status, took) = timed(&server, "POST", "/get-online-features", &body);
    assert_ne!(status, 200);
    assert!(
        took < Duration::from_secs(2),
        "80,000 columns took {took:?} to refuse"
    );
}

#[test]
fn columns_over_the_limits_are_refused_while_parsing_with_413() {
    let project = cli::example_project();
    let server = Server::start(project.path(), &[]);
    let (status, body) = server.call(
        "POST",
        "/get-online-features",
        None,
        std::str::from_utf8(&many_columns(1_001)).unwrap(),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("server.max_columns_per_request"),
        "{body}"
    );

    // 14 MiB of entity keys: refused at row 10,001, before the rest is
    // held as values (it raised peak memory by 246 MiB).
    let before = peak_rss(server.child.id());
    let list = long_entity_list(14 << 20);
    let (status, text) = http(server.address, "POST", "/get-online-features", None, &list);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("server.max_entities_per_request"), "{text}");
    let grown = peak_rss(server.child.id()).saturating_sub(before);
    assert!(
        grown < 3 * list.len() as u64,
        "a {} byte body raised peak memory by {grown} bytes",
        list.len()
    );

    // Values nested in one row, and many values in many columns within
    // the row and column limits, count against the values budget: each
    // raised peak memory by about 270 MiB.
    let mut nested = String::from(
        r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [["#,
    );
    nested.push_str(&vec!["0"; 4_000_000].join(","));
    nested.push_str("]]}}");
    let mut wide = String::from(r#"{"features": ["driver_hourly_stats:conv_rate"], "entities": {"#);
    let column = format!("[{}]", vec!["0"; 10_000].join(","));
    for i in 0..700 {
        if i > 0 {
            wide.push(',');
        }
        wide.push_str(&format!("\"c{i}\":{column}"));
    }
    wide.push_str("}}");
    for body in [nested, wide] {
        let before = peak_rss(server.child.id());
        let (status, text) = http(
            server.address,
            "POST",
            "/get-online-features",
            None,
            body.as_bytes(),
        );
        assert_eq!(status, 413, "{}", &text[..text.len().min(300)]);
        assert!(text.contains("server.max_values_per_request"), "{text}");
        // The budget (a million values, about 32 bytes each) bounds what is
        // held before the refusal: about 30 MiB here against 270 without.
        let grown = peak_rss(server.child.id()).saturating_sub(before);
        assert!(
            grown < 80 << 20,
            "a {} byte body raised peak memory by {grown} bytes",
            body.len()
        );
    }

    // A 4 MiB value quoted in an error comes back cut.
    let huge = "x".repeat(4 << 20);
    let (status, text) = http(
        server.address,
        "POST",
        "/get-online-features",
        None,
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [huge]}})
            .to_string()
            .as_bytes(),
    );
    assert!((400..500).contains(&status), "{status}");
    assert!(text.len() < 8192, "an error body of {} bytes", text.len());

    // Feature references and names are bounded too.
    let (status, text) = http(
        server.address,
        "POST",
        "/get-online-features",
        None,
        json!({"features": ["v:".to_string() + &"f".repeat(2000)], "entities": {"driver_id": [1]}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.len() < 8192, "an error body of {} bytes", text.len());
}

#[test]
fn health_and_plain_lookups_keep_their_latency_while_transforms_spin_and_bodies_attack() {
    let project = project_with_slow_view(
        "server: {transform_workers: 2, transform_queue: 4, request_timeout_ms: 3000}\ntransforms: {max_call_ms: 2000}\n",
    );
    let server = Arc::new(Server::start(project.path(), &[]));
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["slow:y"], "entities": {"x": [1.5]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["values"], json!([1.5]));

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_failure = common::StopOnDrop(stop.clone());
    let overloaded = Arc::new(AtomicUsize::new(0));
    let slow_done = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    // Eight clients keep the transform pool (two workers, four waiting)
    // full of calls that spin until their time runs out; the rest are
    // turned away at once.
    for _ in 0..8 {
        let (server, stop, overloaded, slow_done) = (
            server.clone(),
            stop.clone(),
            overloaded.clone(),
            slow_done.clone(),
        );
        attackers.push(std::thread::spawn(move || {
            let rows: Vec<f64> = vec![777.0; 10_000];
            let body = json!({"features": ["slow:y"], "entities": {"x": rows}}).to_string();
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = server.call("POST", "/get-online-features", None, &body);
                assert_ne!(status, 200, "{body}");
                if status == 503 && body["class"] == "Overloaded" {
                    overloaded.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                } else {
                    slow_done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Two clients look up 10,000 plain rows at a time: legitimate, and
    // too much work for the event loop.
    for _ in 0..2 {
        let (server, stop) = (server.clone(), stop.clone());
        attackers.push(std::thread::spawn(move || {
            let ids: Vec<i64> = (0..10_000).map(|i| 1001 + i % 50).collect();
            let body = json!({"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate", "driver_hourly_stats:avg_daily_trips"],
                              "entities": {"driver_id": ids}})
            .to_string();
            while !stop.load(Ordering::Relaxed) {
                let (status, _) = http(server.address, "POST", "/get-online-features", None, body.as_bytes());
                assert_eq!(status, 200);
            }
        }));
    }
    // Two clients send bodies that are large or slow to parse.
    for attack in [long_entity_list(14 << 20), many_columns(80_000)] {
        let (server, stop) = (server.clone(), stop.clone());
        attackers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, _) = http(
                    server.address,
                    "POST",
                    "/get-online-features",
                    None,
                    &attack,
                );
                assert_eq!(status, 413);
            }
        }));
    }
    // Measure once the attack is observed at full strength: the pool has
    // refused a request and finished a slow call.
    let deadline = Instant::now() + Duration::from_secs(30);
    while overloaded.load(Ordering::Relaxed) == 0 || slow_done.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the attack never saturated the pool"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let lookup = plain_lookup();
    let mut health = Vec::new();
    let mut lookups = Vec::new();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let (status, took) = timed(&server, "GET", "/health", b"");
        assert_eq!(status, 200);
        health.push(took);
        let (status, took) = timed(&server, "POST", "/get-online-features", &lookup);
        assert_eq!(status, 200);
        lookups.push(took);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.join().unwrap();
    }
    let (health, lookups) = (p99(health), p99(lookups));
    eprintln!("under attack: /health p99 {health:?}, plain lookup p99 {lookups:?}");
    assert!(
        health < Duration::from_millis(50),
        "/health p99 {health:?} under attack"
    );
    assert!(
        lookups < Duration::from_millis(50),
        "plain lookup p99 {lookups:?} under attack"
    );
    assert!(
        slow_done.load(Ordering::Relaxed) >= 4,
        "the slow lookups did not run"
    );
    assert!(
        overloaded.load(Ordering::Relaxed) > 0,
        "a full transform pool never answered 503"
    );
}

/// A transform call stops when its request's time is up, whatever its own
/// limit, so a timed-out request frees its worker.
#[test]
fn a_timed_out_lookup_frees_its_transform_worker() {
    let project = project_with_slow_view(
        "server: {transform_workers: 1, request_timeout_ms: 500}\ntransforms: {max_call_ms: 30000, fuel_base: 1000000000000}\n",
    );
    let server = Server::start(project.path(), &[]);
    let slow = json!({"features": ["slow:y"], "entities": {"x": [777.0]}});
    let (status, body) = server.post("/get-online-features", slow.clone());
    assert_eq!(status, 503, "{body}");
    // The one worker is free again well within the call's own 30 s: a
    // quick call is answered (polling; 10 s is a third of that limit).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server.post(
            "/get-online-features",
            json!({"features": ["slow:y"], "entities": {"x": [2.0]}}),
        );
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the worker is still held: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
