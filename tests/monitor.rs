//! Skew and drift reports against a real `wafer serve`, DuckDB and
//! compiled modules: a skew report finds values planted online only
//! (pushed) or offline only (materialization lag), names their causes and
//! finds nothing on clean traffic; drift figures equal an independent
//! computation in this file on synthetic shifted and unshifted data.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/replica.rs"]
mod replica;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use cli::{
    fails, init_example, log_example_service, newest_driver_stats, ok, wafer, SCORED_FROM_VIEW,
};
use replica::eventually;
use server::Server;

/// The example project whose service also serves the on-demand view
/// `scored` and logs everything; applied and materialized.
fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    init_example(dir, 100, 6);
    log_example_service(dir, 1.0, 100, "      - scored\n");
    let path = dir.join("definitions.yaml");
    let definitions = std::fs::read_to_string(&path).unwrap() + SCORED_FROM_VIEW;
    std::fs::write(&path, definitions).unwrap();
    let module = dir.join("conv.wasm");
    std::fs::write(&module, wasm::transform_module("conv_rate_plus_val")).unwrap();
    ok(wafer(
        dir,
        &["transform", "upload", "conv", module.to_str().unwrap()],
    ));
    ok(wafer(dir, &["apply"]));
    ok(wafer(dir, &["materialize", "1970-01-01T00:00:00Z", "now"]));
    root
}

fn metric(server: &Server, line_prefix: &str) -> Option<f64> {
    let (_, text) = server.call("GET", "/metrics", None, "");
    text.as_str()?
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until every row the server queued for the log is written.
fn flushed(server: &Server) {
    let outcome = |o: &str| {
        metric(
            server,
            &format!("wafer_feature_log_rows_total{{feature_service=\"driver_activity\",outcome=\"{o}\"}}"),
        )
    };
    eventually("the feature log flushed", || {
        let queued = outcome("queued")?;
        (queued > 0.0 && outcome("written")? == queued).then_some(())
    });
}

fn look_up(server: &Server, ids: &[i64], rng: &mut impl Rng) {
    let vals: Vec<i64> = ids.iter().map(|_| rng.random_range(-5..100)).collect();
    let (status, body) = server.post(
        "/get-online-features",
        json!({"feature_service": "driver_activity", "entities": {"driver_id": ids, "val_to_add": vals}}),
    );
    assert_eq!(status, 200, "{body}");
}

fn push(
    server: &Server,
    to: &str,
    driver: i64,
    conv_rate: f32,
    event: chrono::DateTime<chrono::Utc>,
) {
    let at = event.to_rfc3339();
    let now = chrono::Utc::now().to_rfc3339();
    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": to, "df": {
            "driver_id": [driver], "event_timestamp": [at], "created": [now],
            "conv_rate": [conv_rate], "acc_rate": [0.25], "avg_daily_trips": [3]}}),
    );
    assert_eq!(status, 200, "{body}");
}

fn feature<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == name)
        .unwrap_or_else(|| panic!("no {name} in {report:#}"))
}

#[test]
fn skew_finds_planted_differences_and_nothing_on_clean_traffic() {
    let root = project();
    let dir = root.path();
    let reference = newest_driver_stats(dir);
    let server = Server::start(dir, &[]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);

    // Clean traffic: known and unknown drivers.
    let mut served = 0;
    for _ in 0..60 {
        let ids: Vec<i64> = (0..rng.random_range(1..4))
            .map(|_| rng.random_range(1001..1110))
            .collect();
        served += ids.len() as u64;
        look_up(&server, &ids, &mut rng);
    }
    flushed(&server);
    let (status, report) = server.post(
        "/monitor/skew",
        json!({"feature_service": "driver_activity"}),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rows"].as_u64(), Some(served));
    assert_eq!(report["crossed"], json!(false), "{report:#}");
    assert_eq!(report["features"].as_array().unwrap().len(), 4);
    for f in report["features"].as_array().unwrap() {
        assert_eq!(f["matched"].as_u64(), Some(served), "{f:#}");
        assert_eq!(f["skew_rate"].as_f64(), Some(0.0), "{f:#}");
    }
    assert_eq!(
        feature(&report, "scored__conv_rate_plus_val")["on_demand"],
        json!(true)
    );

    // Plant: driver 1005 pushed online only (newer than anything offline),
    // driver 1006 pushed offline only (online is behind).
    // Event times after every clean lookup's log time: the clean window
    // stays clean.
    let since = chrono::Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(5));
    push(&server, "online", 1005, 0.125, since);
    push(&server, "offline", 1006, 0.875, since);
    let mut planted = Vec::new();
    for i in 0..40 {
        let id = match i % 8 {
            0..=2 => 1005,
            3 | 4 => 1006,
            _ => rng.random_range(1010..1100),
        };
        planted.push(id);
        look_up(&server, &[id], &mut rng);
    }
    flushed(&server);
    let from = since.to_rfc3339();
    let (status, report) = server.post(
        "/monitor/skew",
        json!({"feature_service": "driver_activity", "from": from}),
    );
    assert_eq!(status, 200, "{report}");
    let online_only = planted.iter().filter(|&&id| id == 1005).count() as u64;
    let lagging = planted.iter().filter(|&&id| id == 1006).count() as u64;
    assert_eq!(report["rows"].as_u64(), Some(planted.len() as u64));
    assert_eq!(report["crossed"], json!(true));
    let conv = feature(&report, "driver_hourly_stats__conv_rate");
    assert_eq!(
        conv["mismatched"].as_u64(),
        Some(online_only + lagging),
        "{conv:#}"
    );
    assert_eq!(
        conv["matched"].as_u64(),
        Some(planted.len() as u64 - online_only - lagging)
    );
    assert_eq!(
        conv["causes"]["online_only"].as_u64(),
        Some(online_only),
        "{conv:#}"
    );
    assert_eq!(
        conv["causes"]["materialization_lag"].as_u64(),
        Some(lagging),
        "{conv:#}"
    );
    // The largest difference, from the source files read here.
    let expected = [(1005, 0.125f32), (1006, 0.875f32)]
        .iter()
        .map(|&(id, pushed)| (f64::from(pushed) - f64::from(reference[&id].0)).abs())
        .fold(0.0, f64::max);
    assert_eq!(conv["max_abs_diff"].as_f64(), Some(expected), "{conv:#}");
    assert!(conv["examples"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["entity"] == "driver_id=1005"));
    // The on-demand output differs exactly where its input did.
    let scored = feature(&report, "scored__conv_rate_plus_val");
    assert_eq!(
        scored["mismatched"].as_u64(),
        Some(online_only + lagging),
        "{scored:#}"
    );
    assert_eq!(
        scored["causes"]["inputs_differ"].as_u64(),
        Some(online_only + lagging)
    );
    assert!(scored["causes"].get("transform").is_none());

    // The latest report's figures are gauges.
    let rate = metric(
        &server,
        "wafer_skew_rate{feature_service=\"driver_activity\",feature=\"driver_hourly_stats__conv_rate\"}",
    );
    assert_eq!(
        rate,
        Some((online_only + lagging) as f64 / planted.len() as f64)
    );

    // The CLI says the same and exits 2; over the clean window, 0.
    let cli_skew = |bound: &str| {
        let args = [
            "monitor",
            "skew",
            "--feature-service",
            "driver_activity",
            bound,
            &from,
        ];
        wafer(dir, &args)
    };
    let out = cli_skew("--from");
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{table}");
    assert!(
        table.contains("online_only=") && table.contains("CROSSED"),
        "{table}"
    );
    let clean = cli_skew("--to");
    let table = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{table}");

    // Drift of the logs against the sources, over HTTP: rows as counted
    // here, the on-demand view skipped on the source side.
    let (status, drift) = server.post(
        "/monitor/drift",
        json!({"feature_service": "driver_activity", "reference": "source:..", "current": format!("logs:{from}..")}),
    );
    assert_eq!(status, 200, "{drift}");
    let conv = feature(&drift, "driver_hourly_stats__conv_rate");
    assert_eq!(conv["current_rows"].as_u64(), Some(planted.len() as u64));
    // Every row of the source's files, the offline push's included.
    let source_rows: usize = std::fs::read_dir(dir.join("data/driver_stats"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| common::read_parquet(&p).num_rows())
        .sum();
    assert!(source_rows > 600);
    assert_eq!(conv["reference_rows"].as_u64(), Some(source_rows as u64));
    assert!(
        drift["skipped"]["scored__conv_rate_plus_val"].is_string(),
        "{drift:#}"
    );

    // Bad requests: a path outside the project, an unknown service, a
    // service that logs nothing.
    for (body, code) in [
        (
            json!({"feature_service": "driver_activity", "reference": "../x.parquet", "current": "logs:.."}),
            422,
        ),
        (
            json!({"feature_service": "driver_activity", "reference": "/etc/passwd", "current": "logs:.."}),
            422,
        ),
        (
            json!({"feature_service": "nope", "reference": "source:..", "current": "logs:.."}),
            404,
        ),
        (
            json!({"feature_service": "driver_activity", "reference": "missing.parquet", "current": "logs:.."}),
            404,
        ),
    ] {
        let (status, answer) = server.post("/monitor/drift", body.clone());
        assert_eq!(status, code, "{body} -> {answer}");
    }
    let (status, _) = server.post(
        "/monitor/skew",
        json!({"feature_service": "driver_activity", "limit": 0}),
    );
    assert_eq!(status, 422);
}

/// Normal(mean, 1) values by Box-Muller.
fn normal(rng: &mut impl Rng, mean: f64) -> f64 {
    let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
    mean + (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

struct Sample {
    x: Vec<f64>,
    n: Vec<Option<i64>>,
    city: Vec<String>,
}

fn sample(seed: u64, rows: usize, shift: f64, null_rate: f64, cities: &[(&str, f64)]) -> Sample {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut s = Sample {
        x: Vec::new(),
        n: Vec::new(),
        city: Vec::new(),
    };
    for _ in 0..rows {
        s.x.push(normal(&mut rng, shift));
        s.n.push((rng.random::<f64>() >= null_rate).then(|| rng.random_range(0..50)));
        let mut pick = rng.random::<f64>();
        let mut city = cities[0].0;
        for (name, p) in cities {
            city = name;
            if pick < *p {
                break;
            }
            pick -= p;
        }
        s.city.push(city.to_string());
    }
    s
}

fn write_sample(path: &Path, s: &Sample) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("v__x", DataType::Float64, true),
        Field::new("v__n", DataType::Int64, true),
        Field::new("v__city", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Float64Array::from(s.x.clone())),
            Arc::new(Int64Array::from(s.n.clone())),
            Arc::new(StringArray::from(s.city.clone())),
        ],
    )
    .unwrap();
    common::write_parquet(path, &batch);
}

/// Linear-interpolated quantile of sorted values (DuckDB's quantile_cont).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let position = p * (sorted.len() - 1) as f64;
    let lower = position.floor() as usize;
    let upper = position.ceil() as usize;
    sorted[lower] + (sorted[upper] - sorted[lower]) * (position - lower as f64)
}

fn psi_of(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&r, &c)| {
            let (r, c) = (r.max(1e-4), c.max(1e-4));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// PSI over deciles of the reference, computed from scratch.
fn psi_numbers(reference: &[f64], current: &[f64]) -> f64 {
    let mut sorted = reference.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..10)
        .map(|i| quantile(&sorted, i as f64 / 10.0))
        .collect();
    edges.dedup();
    let shares = |values: &[f64]| {
        let mut counts = vec![0.0; edges.len() + 1];
        for v in values {
            counts[edges.iter().filter(|e| v > e).count()] += 1.0;
        }
        counts
            .iter()
            .map(|c| c / values.len() as f64)
            .collect::<Vec<_>>()
    };
    psi_of(&shares(reference), &shares(current))
}

fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let v = a[i].min(b[j]);
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

fn category_shares(values: &[String], categories: &[String]) -> Vec<f64> {
    categories
        .iter()
        .map(|c| values.iter().filter(|v| *v == c).count() as f64 / values.len() as f64)
        .collect()
}

fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let mut divergence = 0.0;
    for (&p, &q) in p.iter().zip(q) {
        let m = (p + q) / 2.0;
        if p > 0.0 {
            divergence += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            divergence += 0.5 * q * (q / m).log2();
        }
    }
    divergence.sqrt()
}

/// A project with a view `v` (`x` float64, `n` int64, `city` string) over
/// a one-row source, and a service `s` over it with `service_extra` (YAML
/// lines under the service).
fn things_project(service_extra: &str) -> tempfile::TempDir {
    let dir = common::project(&format!(
        "entities:
  - name: thing
    join_keys: [{{name: id, type: int64}}]
sources:
  - name: things
    path: data/things.parquet
    timestamp_field: ts
feature_views:
  - name: v
    entities: [thing]
    source: things
    features: [{{name: x, type: float64}}, {{name: n, type: int64}}, {{name: city, type: string}}]
feature_services:
  - name: s
    features: [v]
{service_extra}"
    ));
    let source = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
            Field::new("x", DataType::Float64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("city", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(TimestampNanosecondArray::from(vec![0])),
            Arc::new(Float64Array::from(vec![0.0])),
            Arc::new(Int64Array::from(vec![0])),
            Arc::new(StringArray::from(vec!["paris"])),
        ],
    )
    .unwrap();
    common::write_parquet(&dir.path().join("data/things.parquet"), &source);
    dir
}

#[test]
fn drift_figures_equal_an_independent_computation() {
    let dir = things_project(
        "    monitoring:\n      thresholds: {psi: 0.2}\n      features: {v__n: {null_rate_change: 0.05}}\n",
    );
    let dir = dir.path();
    ok(wafer(dir, &["apply"]));

    let cities = [("paris", 0.5), ("rome", 0.3), ("oslo", 0.2)];
    let moved = [("paris", 0.3), ("rome", 0.3), ("oslo", 0.4)];
    let reference = sample(1, 20_000, 0.0, 0.1, &cities);
    let same = sample(2, 15_000, 0.0, 0.1, &cities);
    let shifted = sample(3, 15_000, 0.5, 0.2, &moved);
    write_sample(&dir.join("ref/part-1.parquet"), &reference);
    write_sample(&dir.join("same.parquet"), &same);
    write_sample(&dir.join("shifted.parquet"), &shifted);

    let drift = |reference: &str, current: &str| -> (Option<i32>, Value) {
        let out = wafer(
            dir,
            &[
                "monitor",
                "drift",
                "--feature-service",
                "s",
                "--reference",
                reference,
                "--current",
                current,
                "--json",
            ],
        );
        let report = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let report = |current: &str| drift("ref", current);
    let categories: Vec<String> = ["paris", "rome", "oslo"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    for (current, sample, drifted) in [
        ("same.parquet", &same, false),
        ("shifted.parquet", &shifted, true),
    ] {
        let (code, report) = report(current);
        assert_eq!(code, Some(if drifted { 2 } else { 0 }), "{report:#}");
        let x = feature(&report, "v__x");
        let psi = psi_numbers(&reference.x, &sample.x);
        assert!(
            (x["psi"].as_f64().unwrap() - psi).abs() < 1e-9,
            "{x:#} vs {psi}"
        );
        let d = ks_statistic(&reference.x, &sample.x);
        assert!(
            (x["ks_statistic"].as_f64().unwrap() - d).abs() < 1e-12,
            "{x:#} vs {d}"
        );
        let n = feature(&report, "v__n");
        let null_rate =
            |v: &[Option<i64>]| v.iter().filter(|n| n.is_none()).count() as f64 / v.len() as f64;
        let change = null_rate(&sample.n) - null_rate(&reference.n);
        assert!((n["null_rate_change"].as_f64().unwrap() - change).abs() < 1e-12);
        let valid = |v: &[Option<i64>]| v.iter().flatten().map(|&n| n as f64).collect::<Vec<_>>();
        let psi_n = psi_numbers(&valid(&reference.n), &valid(&sample.n));
        assert!(
            (n["psi"].as_f64().unwrap() - psi_n).abs() < 1e-9,
            "{n:#} vs {psi_n}"
        );
        let city = feature(&report, "v__city");
        let (p, q) = (
            category_shares(&reference.city, &categories),
            category_shares(&sample.city, &categories),
        );
        let js = jensen_shannon(&p, &q);
        assert!(
            (city["jensen_shannon"].as_f64().unwrap() - js).abs() < 1e-12,
            "{city:#} vs {js}"
        );
        assert!((city["psi"].as_f64().unwrap() - psi_of(&p, &q)).abs() < 1e-9);
        assert_eq!(x["thresholds"]["psi"].as_f64(), Some(0.2));
        assert_eq!(n["thresholds"]["null_rate_change"].as_f64(), Some(0.05));
        let crossed: BTreeMap<&str, Vec<String>> = ["v__x", "v__n", "v__city"]
            .iter()
            .map(|f| {
                let list = feature(&report, f)["crossed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect();
                (*f, list)
            })
            .collect();
        if drifted {
            assert!(crossed["v__x"].contains(&"psi".to_string()), "{crossed:?}");
            assert!(
                crossed["v__x"].contains(&"ks_p_value".to_string()),
                "{crossed:?}"
            );
            assert!(
                crossed["v__n"].contains(&"null_rate_change".to_string()),
                "{crossed:?}"
            );
            assert!(
                crossed["v__city"].contains(&"jensen_shannon".to_string()),
                "{crossed:?}"
            );
        } else {
            assert!(crossed.values().all(Vec::is_empty), "{crossed:?}");
            assert!(x["psi"].as_f64().unwrap() < 0.1);
        }
    }
    // A glob names the same files as the directory.
    let (_, by_glob) = drift("ref/*.parquet", "same.parquet");
    assert_eq!(
        feature(&by_glob, "v__x")["psi"],
        feature(&report("same.parquet").1, "v__x")["psi"]
    );
}

#[test]
fn logging_and_thresholds_are_validated_on_apply() {
    for (logging, message) in [
        (
            "logging: {sample_rate: 0, path: logs/a}",
            "logging.sample_rate",
        ),
        (
            "logging: {sample_rate: 1.5, path: logs/a}",
            "logging.sample_rate",
        ),
        ("logging: {path: ../outside}", "logging.path"),
        ("logging: {path: /tmp/abs}", "logging.path"),
        ("logging: {path: ./}", "the project directory itself"),
        ("monitoring: {thresholds: {ks_p_value: 2}}", "ks_p_value"),
        ("monitoring: {features: {v__nope: {psi: 0.3}}}", "v__nope"),
    ] {
        let dir = things_project(&format!("    {logging}\n"));
        let error = fails(wafer(dir.path(), &["apply"]));
        assert!(error.contains(message), "{logging}: {error}");
    }
    // The same project with a valid logging and thresholds applies.
    let dir = things_project(
        "    logging: {sample_rate: 0.5, path: logs/s}\n    monitoring: {features: {v__x: {psi: 0.3}}}\n",
    );
    ok(wafer(dir.path(), &["apply"]));
}

#[test]
fn rows_logged_before_a_feature_was_served_are_not_compared() {
    let root = project();
    let dir = root.path();
    let definitions = dir.join("definitions.yaml");
    let full = std::fs::read_to_string(&definitions).unwrap();
    let without = full.replace(
        "[conv_rate, acc_rate, avg_daily_trips]\n      - scored",
        "[conv_rate, avg_daily_trips]\n      - scored",
    );
    assert_ne!(full, without);
    std::fs::write(&definitions, &without).unwrap();
    ok(wafer(dir, &["apply"]));
    let server = Server::start(dir, &[]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for _ in 0..10 {
        look_up(&server, &[rng.random_range(1001..1100)], &mut rng);
    }
    flushed(&server);
    // The service serves acc_rate from the next version on.
    std::fs::write(&definitions, &full).unwrap();
    ok(wafer(dir, &["apply"]));
    let mut after = 0;
    eventually("the server serving the new version", || {
        let (status, body) = server.post(
            "/get-online-features",
            json!({"feature_service": "driver_activity", "entities": {"driver_id": [1001], "val_to_add": [1]}}),
        );
        assert_eq!(status, 200, "{body}");
        let names = body["metadata"]["feature_names"].to_string();
        names.contains("acc_rate").then(|| after += 1)
    });
    for _ in 0..6 {
        look_up(&server, &[rng.random_range(1001..1100)], &mut rng);
        after += 1;
    }
    flushed(&server);
    let (status, report) = server.post(
        "/monitor/skew",
        json!({"feature_service": "driver_activity"}),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["crossed"], json!(false), "{report:#}");
    let acc = feature(&report, "driver_hourly_stats__acc_rate");
    assert_eq!(acc["rows"].as_u64(), Some(after), "{acc:#}");
    assert_eq!(acc["matched"].as_u64(), Some(after), "{acc:#}");
    let conv = feature(&report, "driver_hourly_stats__conv_rate");
    assert_eq!(conv["rows"], report["rows"], "{conv:#}");
    // Drift over the same logs: the null rate of acc_rate is its own rows'.
    let (status, drift) = server.post(
        "/monitor/drift",
        json!({"feature_service": "driver_activity", "reference": "logs:..", "current": "logs:.."}),
    );
    assert_eq!(status, 200, "{drift}");
    let acc = feature(&drift, "driver_hourly_stats__acc_rate");
    assert_eq!(acc["current_rows"].as_u64(), Some(after), "{acc:#}");
    assert_eq!(acc["current_null_rate"].as_f64(), Some(0.0), "{acc:#}");
    assert_eq!(drift["crossed"], json!(false), "{drift:#}");
}
