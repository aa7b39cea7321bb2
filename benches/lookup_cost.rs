//! The cost of one in-process lookup. A small example project (100 drivers
//! x 5 hours) is materialized into the default store (redb), then
//! `ITERATIONS` lookups of the `driver_activity` service for one entity.
//! Run it under callgrind, which counts instructions (repeatable on a noisy
//! machine, unlike time):
//!
//! valgrind --tool=callgrind --toggle-collect='*FeatureStore*get_online_features_at' \
//!     target/release/deps/lookup_cost-HASH --bench
//!
//! and divide the collected instructions by `ITERATIONS`.
//!
//! With `WAFER_BENCH_TIMED=1` it times lookups instead, over the example
//! (10,000 drivers x 10 hours), beside the engine's own cost measured in
//! the same run: a read transaction, the table opened and one `get` of a
//! stored key straight from the redb file. Rounds alternate the two, and
//! each prints p50 and p99 of 20,000 calls.

mod common;

use std::time::Instant;

use chrono::{TimeDelta, Utc};
use serde_json::json;
use wafer::example::{self, ExampleOptions};
use wafer::online::EntityRows;
use wafer::{FeatureRequest, FeatureStore, NoProgress};

use common::{percentiles, Random};

const ITERATIONS: usize = 2_000;

fn project(drivers: u32, hours: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let options = ExampleOptions {
        drivers,
        hours,
        entity_rows: 10,
        ..ExampleOptions::default()
    };
    example::scaffold(dir.path(), &options, true).unwrap();
    let store = FeatureStore::open(dir.path()).unwrap();
    store.apply().unwrap();
    store
        .materialize(
            Utc::now() - TimeDelta::days(30),
            Utc::now(),
            None,
            &NoProgress,
        )
        .unwrap();
    dir
}

fn rows(driver: i64) -> EntityRows {
    EntityRows {
        columns: vec![("driver_id".to_string(), vec![json!(driver)])],
    }
}

fn main() {
    if std::env::var_os("WAFER_BENCH_TIMED").is_some() {
        timed();
        return;
    }
    let dir = project(100, 5);
    let store = FeatureStore::open(dir.path()).unwrap();
    let request = FeatureRequest::Service("driver_activity".into());
    let mut found = 0;
    for i in 0..ITERATIONS {
        let rows = rows(example::FIRST_DRIVER_ID + (i % 100) as i64);
        let response = store.get_online_features(&request, false, &rows).unwrap();
        found += response.results.len();
    }
    println!("{ITERATIONS} lookups, {found} columns");
}

fn timed() {
    const DRIVERS: u32 = 10_000;
    const CALLS: usize = 20_000;
    let dir = project(DRIVERS, 10);
    let file = dir.path().join(".wafer/online.redb");
    let request = FeatureRequest::Service("driver_activity".into());
    println!("| round | what | p50 | p99 |");
    println!("|---:|---|---:|---:|");
    for round in 1..=3 {
        // The engine alone: the keys as stored, read back in random order.
        {
            use redb::{ReadableDatabase, ReadableTable};
            let table = redb::TableDefinition::<&[u8], &[u8]>::new("online");
            let db = redb::Database::open(&file).expect("open the redb file");
            let keys: Vec<Vec<u8>> = {
                let txn = db.begin_read().unwrap();
                let t = txn.open_table(table).unwrap();
                t.iter()
                    .unwrap()
                    .map(|e| e.unwrap().0.value().to_vec())
                    .collect()
            };
            let mut random = Random(7);
            let mut samples = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                let key = &keys[(random.next() % keys.len() as u64) as usize];
                let started = Instant::now();
                let txn = db.begin_read().unwrap();
                let t = txn.open_table(table).unwrap();
                let value = t.get(key.as_slice()).unwrap().map(|v| v.value().to_vec());
                samples.push(started.elapsed());
                assert!(value.is_some());
            }
            let (p50, p99) = percentiles(samples);
            println!("| {round} | redb read txn + get | {p50:.1} us | {p99:.1} us |");
        }
        {
            let store = FeatureStore::open(dir.path()).unwrap();
            let mut random = Random(11);
            for _ in 0..2_000 {
                let driver = random.driver(DRIVERS);
                store
                    .get_online_features(&request, false, &rows(driver))
                    .unwrap();
            }
            let mut samples = Vec::with_capacity(CALLS);
            for _ in 0..CALLS {
                let driver = random.driver(DRIVERS);
                let rows = rows(driver);
                let started = Instant::now();
                let response = store.get_online_features(&request, false, &rows).unwrap();
                samples.push(started.elapsed());
                assert!(response.results[1].event_timestamps[0].is_some());
            }
            let (p50, p99) = percentiles(samples);
            println!("| {round} | 1-entity lookup | {p50:.1} us | {p99:.1} us |");
        }
    }
}
