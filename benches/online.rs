//! Online store benchmark: materialization into sled and Redis (the example:
//! 1M source rows, 10,000 latest rows; and a wide case: 1M distinct
//! entities), then in-process lookups (1 and 100 entities x 3 features),
//! p50/p99, next to a raw Redis GET round trip. Prints a table; results go
//! in benches/README.md.
//!
//! cargo bench --bench online   (needs redis-server on the PATH)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::json;
use wafer::example::{self, ExampleOptions};
use wafer::online::EntityRows;
use wafer::{FeatureRequest, FeatureStore, NoProgress};

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis(child, port)
}

fn project(dir: &Path, drivers: u32, hours: u32, redis: Option<u16>) -> FeatureStore {
    let options = ExampleOptions {
        drivers,
        hours,
        entity_rows: 10,
        ..ExampleOptions::default()
    };
    example::scaffold(dir, &options, true).unwrap();
    if let Some(port) = redis {
        let config = std::fs::read_to_string(dir.join("wafer.yaml")).unwrap();
        let config = config.replace(
            "  type: sled\n",
            &format!("  type: redis\n  url: redis://127.0.0.1:{port}\n"),
        );
        std::fs::write(dir.join("wafer.yaml"), config).unwrap();
    }
    let store = FeatureStore::open(dir).unwrap();
    store.apply().unwrap();
    store
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}

fn lookups(store: &FeatureStore, entities: usize, iterations: usize) -> (f64, f64) {
    let request = FeatureRequest::Service("driver_activity".into());
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let ids = (0..entities)
            .map(|j| json!(example::FIRST_DRIVER_ID + ((i * 7919 + j * 31) % 10_000) as i64))
            .collect();
        let rows = EntityRows {
            columns: vec![("driver_id".to_string(), ids)],
        };
        let started = Instant::now();
        let response = store.get_online_features(&request, false, &rows).unwrap();
        samples.push(started.elapsed());
        assert_eq!(response.results.len(), 4);
    }
    percentiles(samples)
}

fn main() {
    let redis = start_redis();
    let now = example::current_hour();
    let window = (now - TimeDelta::days(30), Utc::now());

    println!("| case | store | materialize | rows written | rows/s |");
    println!("|---|---|---:|---:|---:|");
    let mut stores = Vec::new();
    for (case, drivers, hours) in [
        ("example: 10,000 drivers x 100 h", 10_000, 100),
        ("wide: 1,000,000 drivers x 1 h", 1_000_000, 1),
    ] {
        for (name, port) in [("sled", None), ("redis", Some(redis.1))] {
            let dir = tempfile::tempdir().unwrap();
            let store = project(dir.path(), drivers, hours, port);
            let started = Instant::now();
            let done = store
                .materialize(window.0, window.1, None, &NoProgress)
                .unwrap();
            let elapsed = started.elapsed().as_secs_f64();
            let rows = done[0].rows_written;
            println!(
                "| {case} | {name} | {elapsed:.3} s | {rows} | {:.0} |",
                rows as f64 / elapsed
            );
            if drivers == 10_000 {
                stores.push((name, store, dir));
            }
        }
    }

    println!();
    println!("| lookup (in process) | store | p50 | p99 |");
    println!("|---|---|---:|---:|");
    for (name, store, _dir) in &stores {
        lookups(store, 1, 1_000); // warm up
        for entities in [1, 100] {
            let (p50, p99) = lookups(store, entities, 10_000);
            println!("| {entities} entity x 3 features | {name} | {p50:.1} us | {p99:.1} us |");
        }
    }
    // A raw round trip on one connection: the floor for any Redis lookup.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.1)).unwrap();
    let mut connection = client.get_connection().unwrap();
    let mut samples = Vec::with_capacity(10_000);
    for i in 0..11_000 {
        let started = Instant::now();
        let _: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut connection)
            .unwrap();
        if i >= 1_000 {
            samples.push(started.elapsed());
        }
    }
    let (p50, p99) = percentiles(samples);
    println!("| raw GET round trip | redis | {p50:.1} us | {p99:.1} us |");
}
