//! The cost of one in-process lookup, for instruction counts: a small
//! example project materialized into sled, then `ITERATIONS` lookups of the
//! `driver_activity` service for one entity. Run it under callgrind, which
//! counts instructions (repeatable on a noisy machine, unlike time):
//!
//! valgrind --tool=callgrind --toggle-collect='*get_online_features*' \
//!     target/release/deps/lookup_cost-HASH --bench
//!
//! and divide the collected instructions by `ITERATIONS`.

use chrono::{TimeDelta, Utc};
use serde_json::json;
use wafer::example::{self, ExampleOptions};
use wafer::online::EntityRows;
use wafer::{FeatureRequest, FeatureStore, NoProgress};

const ITERATIONS: usize = 2_000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let options = ExampleOptions {
        drivers: 100,
        hours: 5,
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
    let request = FeatureRequest::Service("driver_activity".into());
    let mut found = 0;
    for i in 0..ITERATIONS {
        let rows = EntityRows {
            columns: vec![(
                "driver_id".to_string(),
                vec![json!(example::FIRST_DRIVER_ID + (i % 100) as i64)],
            )],
        };
        let response = store.get_online_features(&request, false, &rows).unwrap();
        found += response.results.len();
    }
    println!("{ITERATIONS} lookups, {found} columns");
}
