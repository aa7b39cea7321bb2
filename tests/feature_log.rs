//! Feature logging through a real `wafer serve`: rows logged under
//! concurrent load match what was served (values from an independent
//! reading of the source files), entities are sampled consistently at the
//! configured rate, and a server killed with SIGKILL leaves only complete
//! files that readers can use.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, Float32Array, Int64Array, StringArray, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};
use serde_json::json;

use cli::{init_example, log_example_service, newest_driver_stats, ok, wafer};
use server::Server;

/// The example project with its service logging at `rate`, flushed every
/// `flush_ms`; applied and materialized.
fn logging_project(rate: f64, flush_ms: u64) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    init_example(dir, 300, 6);
    log_example_service(dir, rate, flush_ms, "");
    ok(wafer(dir, &["apply"]));
    ok(wafer(dir, &["materialize", "1970-01-01T00:00:00Z", "now"]));
    root
}

/// Every published Parquet file under `dir`, recursively.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
    files
}

fn logged_rows(dir: &Path) -> Vec<RecordBatch> {
    parquet_files(&dir.join("logs/driver_activity"))
        .iter()
        .map(|f| common::read_parquet(f))
        .collect()
}

fn stop_gracefully(server: &mut Server) {
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One lookup of `ids` through the service; returns how many rows.
fn look_up(server: &Server, ids: &[i64]) -> usize {
    let (status, body) = server.post(
        "/get-online-features",
        json!({"feature_service": "driver_activity", "entities": {"driver_id": ids}}),
    );
    assert_eq!(status, 200, "{body}");
    ids.len()
}

#[test]
fn logged_rows_match_what_was_served_and_are_sampled_by_entity() {
    let root = logging_project(0.3, 200);
    let dir = root.path();
    let reference = newest_driver_stats(dir);
    let mut server = Server::start(dir, &[]);
    // 8 clients, each 150 lookups of 1 to 3 drivers, some unknown (ids past
    // the example's 1000..1300).
    let served: Arc<Mutex<HashMap<i64, u64>>> = Arc::default();
    std::thread::scope(|scope| {
        for client in 0..8u64 {
            let served = served.clone();
            let server = &server;
            scope.spawn(move || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(client);
                for _ in 0..150 {
                    let n = rng.random_range(1..=3);
                    let ids: Vec<i64> = (0..n).map(|_| rng.random_range(1000..1400)).collect();
                    look_up(server, &ids);
                    let mut served = served.lock().unwrap();
                    for id in ids {
                        *served.entry(id).or_default() += 1;
                    }
                }
            });
        }
    });
    // Lookups of a plain feature list are not logged.
    let (status, _) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}),
    );
    assert_eq!(status, 200);
    stop_gracefully(&mut server);

    let served = served.lock().unwrap().clone();
    let mut logged: HashMap<i64, u64> = HashMap::new();
    let mut total = 0u64;
    for batch in logged_rows(dir) {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no {name}"))
                .clone()
        };
        let ids = column("driver_id");
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        let conv = column("driver_hourly_stats__conv_rate");
        let conv = conv.as_any().downcast_ref::<Float32Array>().unwrap();
        let trips = column("driver_hourly_stats__avg_daily_trips");
        let trips = trips.as_any().downcast_ref::<Int64Array>().unwrap();
        let status = column("driver_hourly_stats__conv_rate__status");
        let status = status.as_any().downcast_ref::<StringArray>().unwrap();
        let time = column("driver_hourly_stats__conv_rate__timestamp");
        let time = time
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        let request_ids = column("__request_id");
        let request_ids = request_ids.as_any().downcast_ref::<StringArray>().unwrap();
        for row in 0..batch.num_rows() {
            let id = ids.value(row);
            *logged.entry(id).or_default() += 1;
            total += 1;
            assert_eq!(request_ids.value(row).len(), 32);
            match reference.get(&id) {
                Some(&(c, _, t, event)) => {
                    assert_eq!(status.value(row), "PRESENT", "driver {id}");
                    assert_eq!(conv.value(row).to_bits(), c.to_bits(), "driver {id}");
                    assert_eq!(trips.value(row), t, "driver {id}");
                    assert_eq!(time.value(row), event, "driver {id}");
                }
                None => {
                    assert_eq!(status.value(row), "NOT_FOUND", "driver {id}");
                    assert!(conv.is_null(row) && time.is_null(row), "driver {id}");
                }
            }
        }
    }
    // An entity is logged on every lookup or on none.
    for (id, count) in &logged {
        assert_eq!(
            Some(count),
            served.get(id),
            "driver {id}: logged {count} times"
        );
    }
    let entities = served.len() as f64;
    let sampled = logged.len() as f64;
    // Binomial(entities, 0.3): within 5 standard deviations.
    let sd = (entities * 0.3 * 0.7).sqrt();
    assert!(
        (sampled - entities * 0.3).abs() <= 5.0 * sd,
        "{sampled} of {entities} entities logged at rate 0.3"
    );
    let rows: u64 = served.values().sum();
    assert!(total > 0 && total < rows, "{total} of {rows} rows logged");
    // The same entities are sampled by a server started again (the hash
    // does not depend on the process).
    let mut server = Server::start(dir, &[]);
    let before = logged.len();
    let ids: Vec<i64> = served.keys().copied().collect();
    look_up(&server, &ids);
    let (_, metrics) = server.call("GET", "/metrics", None, "");
    stop_gracefully(&mut server);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    let mut again: HashMap<i64, u64> = HashMap::new();
    for batch in logged_rows(dir) {
        let ids = batch.column_by_name("driver_id").unwrap().clone();
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        for row in 0..batch.num_rows() {
            *again.entry(ids.value(row)).or_default() += 1;
        }
    }
    assert_eq!(again.len(), before);
    for (id, count) in &again {
        assert_eq!(*count, logged[id] + 1, "driver {id}");
    }
    let queued = format!(
        "wafer_feature_log_rows_total{{feature_service=\"driver_activity\",outcome=\"queued\"}} {before}"
    );
    assert!(metrics.contains(&queued), "{queued} not in\n{metrics}");
    assert!(metrics.contains(
        "wafer_feature_log_rows_total{feature_service=\"driver_activity\",outcome=\"dropped\"} 0"
    ));
}

#[test]
fn a_killed_server_leaves_only_complete_log_files() {
    let root = logging_project(1.0, 50);
    let dir = root.path();
    let mut server = Server::start(dir, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let address = server.address;
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let stop = stop.clone();
            let served = served.clone();
            std::thread::spawn(move || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(client);
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<i64> = (0..20).map(|_| rng.random_range(1000..1300)).collect();
                    let body = json!({"feature_service": "driver_activity", "entities": {"driver_id": ids}});
                    // Requests cut by the kill fail; only answered ones count.
                    let result = std::panic::catch_unwind(|| {
                        server::http(address, "POST", "/get-online-features", None, body.to_string().as_bytes())
                    });
                    if let Ok((200, _)) = result {
                        served.fetch_add(20, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Kill once files are being published under load: several files exist.
    let deadline = Instant::now() + Duration::from_secs(60);
    while parquet_files(&dir.join("logs/driver_activity")).len() < 5 {
        assert!(Instant::now() < deadline, "no log files under load");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let files = parquet_files(&dir.join("logs/driver_activity"));
    let mut rows = 0;
    for file in &files {
        // Every visible file reads completely.
        let batch = common::read_parquet(file);
        assert!(batch.num_rows() > 0, "{}", file.display());
        assert_eq!(
            batch.num_rows() % 20,
            0,
            "a lookup's rows are written together"
        );
        rows += batch.num_rows() as u64;
    }
    assert!(rows > 0 && rows <= served.load(Ordering::Relaxed) + 20 * 4);
    // And DuckDB reads them all: a skew report over the logs works and
    // finds nothing (no pushes, everything materialized).
    let out = ok(wafer(
        dir,
        &[
            "monitor",
            "skew",
            "--feature-service",
            "driver_activity",
            "--json",
            "--limit",
            "1000000",
        ],
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["rows"].as_u64(), Some(rows));
    assert_eq!(report["crossed"], json!(false), "{report:#}");
}

#[test]
fn every_row_is_written_or_counted_as_dropped() {
    // A queue of one lookup and a file per lookup: the writer falls behind
    // under concurrent load and rows are dropped, never lost uncounted.
    let root = logging_project(1.0, 10_000);
    let dir = root.path();
    let config = std::fs::read_to_string(dir.join("wafer.yaml"))
        .unwrap()
        .replace(
            "feature_logging: {flush_interval_ms: 10000}",
            "feature_logging: {flush_interval_ms: 10000, flush_rows: 1, queue: 1}",
        );
    assert!(config.contains("queue: 1"));
    std::fs::write(dir.join("wafer.yaml"), config).unwrap();
    let mut server = Server::start(dir, &[]);
    let served = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for client in 0..8u64 {
            let (server, served) = (&server, &served);
            scope.spawn(move || {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(client);
                for _ in 0..100 {
                    let ids: Vec<i64> = (0..5).map(|_| rng.random_range(1000..1300)).collect();
                    served.fetch_add(look_up(server, &ids) as u64, Ordering::Relaxed);
                }
            });
        }
    });
    let (_, metrics) = server.call("GET", "/metrics", None, "");
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    stop_gracefully(&mut server);
    let count = |outcome: &str| -> u64 {
        let prefix = format!(
            "wafer_feature_log_rows_total{{feature_service=\"driver_activity\",outcome=\"{outcome}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {outcome} in\n{metrics}"))
            .parse()
            .unwrap()
    };
    let (queued, dropped) = (count("queued"), count("dropped"));
    assert_eq!(queued + dropped, served.load(Ordering::Relaxed));
    // One lookup queued at a time, each written alone with a sync, polled
    // every 10 ms: 800 concurrent lookups cannot all fit.
    assert!(
        dropped > 0,
        "nothing dropped: the test did not fill the queue"
    );
    assert_eq!(count("failed"), 0);
    let rows: u64 = logged_rows(dir).iter().map(|b| b.num_rows() as u64).sum();
    // Everything queued reached a file by the graceful stop.
    assert_eq!(rows, queued, "{dropped} dropped");
    eprintln!("{queued} rows queued, {dropped} dropped");
}
