//! Feature logging's cost: single-entity lookups of a service through
//! `wafer serve` at concurrency 16, driven by `wrk` with a random driver
//! per request, for the same features served by three services on one
//! server: not logged, logged at sample_rate 0.1, logged at 1.0. Rounds
//! alternate the cases so the machine's noise falls on all of them; `GET
//! /health` through the same server is the HTTP round trip's reference.
//! Then a skew report over the newest 100,000 logged rows and a drift
//! report of every logged row against the sources are timed.
//!
//! cargo bench --bench feature_log

mod common;

use std::path::Path;

use common::serve;
use common::wrk::{self, Run};
use wafer::example::{self, ExampleOptions};
use wafer::{FeatureStore, NoProgress};

const SECONDS: u32 = 5;
const ROUNDS: usize = 5;
const DRIVERS: u32 = 10_000;

/// Lua POSTing a lookup of one random driver of `service`.
fn lookup(service: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         request = function()\n  local id = math.random(1001, {})\n  return wrk.format(nil, nil, nil, '{{\"feature_service\": \"{service}\", \"entities\": {{\"driver_id\": [' .. id .. ']}}}}')\nend\n{}",
        1000 + DRIVERS,
        wrk::CHECK_200
    )
}

fn main() {
    wrk::ensure_wrk();
    let root = tempfile::tempdir().expect("a temporary directory");
    let dir = root.path();
    example::scaffold(
        dir,
        &ExampleOptions {
            drivers: DRIVERS,
            hours: 24,
            entity_rows: 10,
            ..ExampleOptions::default()
        },
        false,
    )
    .expect("the example project");
    let definitions = dir.join("definitions.yaml");
    let features =
        "    features:\n      - driver_hourly_stats: [conv_rate, acc_rate, avg_daily_trips]\n";
    let text = std::fs::read_to_string(&definitions).expect("definitions").replacen(
        "feature_services:\n",
        &format!(
            "feature_services:\n  - name: logged_all\n{features}    logging: {{sample_rate: 1.0, path: logs/all}}\n  - name: logged_tenth\n{features}    logging: {{sample_rate: 0.1, path: logs/tenth}}\n"
        ),
        1,
    );
    std::fs::write(&definitions, text).expect("definitions");
    let store = FeatureStore::open(dir).expect("the project");
    store.apply().expect("apply");
    let now = chrono::Utc::now();
    store
        .materialize(now - chrono::Duration::days(2), now, None, &NoProgress)
        .expect("materialize");
    drop(store);

    let server = serve(Path::new(env!("CARGO_BIN_EXE_wafer")), dir, &[]);
    let url = |path: &str| format!("{}{path}", server.1);
    let cases = [
        ("GET /health (HTTP reference)", None),
        ("not logged", Some("driver_activity")),
        ("logged, sample_rate 0.1", Some("logged_tenth")),
        ("logged, sample_rate 1.0", Some("logged_all")),
    ];
    let mut results: Vec<Vec<Run>> = cases.iter().map(|_| Vec::new()).collect();
    // Warm up: the store's pages and the connections.
    wrk::wrk(
        &url("/get-online-features"),
        &lookup("driver_activity"),
        16,
        2,
        2,
        dir,
    );
    for _ in 0..ROUNDS {
        for (i, (_, service)) in cases.iter().enumerate() {
            let run = match service {
                None => wrk::wrk(&url("/health"), &wrk::get(), 16, 2, SECONDS, dir),
                Some(service) => wrk::wrk(
                    &url("/get-online-features"),
                    &lookup(service),
                    16,
                    2,
                    SECONDS,
                    dir,
                ),
            };
            results[i].push(run);
        }
    }
    let median = |runs: &[Run], f: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    // Each round's throughput against the unlogged case of the same round.
    let ratio = |i: usize| {
        let mut ratios: Vec<f64> = results[i]
            .iter()
            .zip(&results[1])
            .map(|(run, base)| run.requests_per_second / base.requests_per_second)
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    println!(
        "single-entity service lookups, concurrency 16, {ROUNDS} rounds of {SECONDS} s (medians)"
    );
    println!(
        "{:<32} {:>10} {:>9} {:>9} {:>10}  errors",
        "case", "req/s", "p50 ms", "p99 ms", "vs unlogged"
    );
    for (i, ((name, _), runs)) in cases.iter().zip(&results).enumerate() {
        let rps = median(runs, |r| r.requests_per_second);
        println!(
            "{name:<32} {rps:>10.0} {:>9.3} {:>9.3} {:>+9.1}%  {}",
            median(runs, |r| r.p50_ms),
            median(runs, |r| r.p99_ms),
            (ratio(i) - 1.0) * 100.0,
            runs.iter()
                .map(|r| r.errors.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let metrics = fetch(&url("/metrics"));
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("wafer_feature_log_rows_total"))
    {
        println!("{line}");
    }
    // Reports over what was logged: the newest 100,000 rows replayed, and
    // the drift of every logged row against the sources.
    drop(server);
    let store = FeatureStore::open(dir).expect("the project");
    let started = std::time::Instant::now();
    let skew = store
        .skew_report(&wafer::monitor::skew::SkewRequest {
            feature_service: "logged_all".into(),
            window: Default::default(),
            limit: 100_000,
            threads: None,
        })
        .expect("skew");
    println!(
        "skew report: {} logged rows replayed and compared in {:.2} s (crossed: {})",
        skew.rows,
        started.elapsed().as_secs_f64(),
        skew.crossed
    );
    let started = std::time::Instant::now();
    let drift = store
        .drift_report(&wafer::monitor::drift::DriftRequest {
            feature_service: "logged_all".into(),
            reference: wafer::monitor::DataSpec::Source(Default::default()),
            reference_text: "source:..".into(),
            current: wafer::monitor::DataSpec::Logs(Default::default()),
            current_text: "logs:..".into(),
            threads: None,
        })
        .expect("drift");
    println!(
        "drift report: {} source rows against {} logged rows, {} features, in {:.2} s",
        drift.features.first().map_or(0, |f| f.reference_rows),
        drift.features.first().map_or(0, |f| f.current_rows),
        drift.features.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A GET's body, by curl.
fn fetch(url: &str) -> String {
    let output = std::process::Command::new("curl")
        .args(["-s", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
