//! Registry versions: plan, apply, history, concurrent applies and crashes.

mod common;

use std::process::Command;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use wafer::registry::Action;
use wafer::FeatureStore;

fn definitions(features: &[&str]) -> String {
    let mut text = String::from(
        "entities:\n  - name: driver\n    join_keys: [{name: driver_id, type: int64}]\n\
         sources:\n  - name: stats\n    path: stats.parquet\n    timestamp_field: ts\n\
         feature_views:\n  - name: v\n    entities: [driver]\n    source: stats\n    features:\n",
    );
    for f in features {
        text.push_str(&format!("      - {{name: {f}, type: float32}}\n"));
    }
    text
}

fn project() -> tempfile::TempDir {
    let project = common::project(&definitions(&["a"]));
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("a", DataType::Float32, true),
        Field::new("b", DataType::Float32, true),
        Field::new("c", DataType::Float32, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1])),
        Arc::new(TimestampMicrosecondArray::from(vec![0])),
        Arc::new(Float32Array::from(vec![1.0])),
        Arc::new(Float32Array::from(vec![2.0])),
        Arc::new(Float32Array::from(vec![3.0])),
    ];
    common::write_parquet(
        &project.path().join("stats.parquet"),
        &RecordBatch::try_new(Arc::new(schema), columns).unwrap(),
    );
    project
}

#[test]
fn plan_apply_and_history() {
    let project = project();
    let store = FeatureStore::open(project.path()).unwrap();
    assert!(store.applied().is_err(), "nothing applied yet");
    let plan = store.plan().unwrap();
    assert_eq!(plan.len(), 3);
    assert!(plan.iter().all(|c| c.action == Action::Add));
    assert!(
        store.registry().history().unwrap().is_empty(),
        "plan changes nothing"
    );

    assert_eq!(store.apply().unwrap().version, Some(1));
    assert!(store.plan().unwrap().is_empty());
    assert_eq!(
        store.apply().unwrap().version,
        None,
        "no-op apply stores nothing"
    );

    std::fs::write(
        project.path().join("definitions.yaml"),
        definitions(&["a", "b"]),
    )
    .unwrap();
    let plan = store.plan().unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].action, Action::Change);
    assert_eq!(plan[0].name, "v");
    assert_eq!(plan[0].fields, vec!["features"]);
    assert_eq!(store.apply().unwrap().version, Some(2));

    let history = store.registry().history().unwrap();
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(history[1].changes, plan);
    assert_eq!(
        store
            .registry()
            .version(1)
            .unwrap()
            .definitions
            .feature_views[0]
            .features
            .len(),
        1
    );
    assert_eq!(
        store.applied().unwrap().definitions.feature_views[0]
            .features
            .len(),
        2
    );
}

#[test]
fn invalid_definitions_leave_the_registry_alone() {
    let project = project();
    let store = FeatureStore::open(project.path()).unwrap();
    store.apply().unwrap();
    std::fs::write(
        project.path().join("definitions.yaml"),
        definitions(&["a", "zzz"]),
    )
    .unwrap();
    assert!(store.apply().is_err());
    assert_eq!(store.applied().unwrap().version, 1);
}

/// `wafer apply` killed with SIGKILL at each point of replacing the
/// version file (half written, written and synced but not renamed, renamed
/// but the directory not synced): the registry reads the previous version
/// or the whole new one, never a torn one, and the next apply lands as the
/// next consecutive version.
#[test]
fn an_apply_killed_while_writing_its_version_leaves_a_whole_registry() {
    use std::os::unix::process::ExitStatusExt;
    for (stage, lands) in [("write", false), ("rename", false), ("sync_dir", true)] {
        let project = project();
        let store = FeatureStore::open(project.path()).unwrap();
        store.apply().unwrap();
        std::fs::write(
            project.path().join("definitions.yaml"),
            definitions(&["a", "c"]),
        )
        .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_wafer"))
            .args(["-C", project.path().to_str().unwrap(), "apply"])
            .env("WAFER_CRASH_AT", format!("{stage}:v0000000002"))
            .output()
            .unwrap();
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGKILL),
            "{stage}: apply was not killed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let registry_dir = project.path().join(".wafer/registry");
        let staged: Vec<_> = std::fs::read_dir(&registry_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".v0000000002.json.") && n.ends_with(".partial"))
            .collect();
        // The kill happened where it was asked to: before the rename the
        // staged file is still there, after it gone.
        assert_eq!(staged.len(), usize::from(!lands), "{stage}: {staged:?}");

        let features = |store: &FeatureStore| {
            store.applied().unwrap().definitions.feature_views[0]
                .features
                .iter()
                .map(|f| f.name.clone())
                .collect::<Vec<_>>()
        };
        let reopened = FeatureStore::open(project.path()).unwrap();
        let applied = reopened.applied().unwrap();
        let (version, expected) = if lands {
            (2, vec!["a", "c"])
        } else {
            (1, vec!["a"])
        };
        assert_eq!(applied.version, version, "{stage}");
        assert_eq!(features(&reopened), expected, "{stage}");

        // The next apply is the next version, and every version reads.
        std::fs::write(
            project.path().join("definitions.yaml"),
            definitions(&["a", "b"]),
        )
        .unwrap();
        assert_eq!(reopened.apply().unwrap().version, Some(version + 1));
        let history = reopened.registry().history().unwrap();
        assert_eq!(
            history.iter().map(|v| v.version).collect::<Vec<_>>(),
            (1..=version + 1).collect::<Vec<u64>>(),
            "{stage}"
        );
        assert_eq!(
            features(&FeatureStore::open(project.path()).unwrap()),
            ["a", "b"]
        );
    }
}

#[test]
fn concurrent_applies_from_many_processes_never_corrupt() {
    concurrent_applies_never_corrupt(&project());
}

/// The same, with the registry in a real Redis (`registry: {type: redis}`):
/// the commit script serializes the processes as the file lock does.
#[cfg(feature = "redis")]
#[test]
fn concurrent_applies_through_a_redis_registry_never_corrupt() {
    let redis = common::RedisServer::start();
    let project = project();
    std::fs::write(
        project.path().join("wafer.yaml"),
        format!(
            "project: test\nregistry: {{type: redis, url: \"{}\"}}\n",
            redis.url()
        ),
    )
    .unwrap();
    concurrent_applies_never_corrupt(&project);
    // Nothing went to the data directory.
    assert!(!project.path().join(".wafer/registry").exists());
}

fn concurrent_applies_never_corrupt(project: &tempfile::TempDir) {
    FeatureStore::open(project.path()).unwrap().apply().unwrap();
    // Each process applies its own definitions file; all must land as
    // distinct, consecutive, readable versions.
    let variants = [
        vec!["a", "b"],
        vec!["a", "c"],
        vec!["b", "c"],
        vec!["c"],
        vec!["a", "b", "c"],
        vec!["b"],
    ];
    let mut children = Vec::new();
    for (i, features) in variants.iter().enumerate() {
        let file = format!("defs{i}.yaml");
        std::fs::write(project.path().join(&file), definitions(features)).unwrap();
        children.push(
            Command::new(env!("CARGO_BIN_EXE_wafer"))
                .args(["-C", project.path().to_str().unwrap(), "apply"])
                .env("WAFER_DEFINITIONS", &file)
                .output_in_background(),
        );
    }
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let store = FeatureStore::open(project.path()).unwrap();
    let history = store.registry().history().unwrap();
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<u64>>()
    );
    let features = |v: &wafer::registry::RegistryVersion| {
        v.definitions.feature_views[0]
            .features
            .iter()
            .map(|f| f.name.clone())
            .collect::<Vec<_>>()
    };
    // Each version records its changes against the version before it: an
    // apply built on a stale parent would record them against that one.
    for pair in history.windows(2) {
        assert_eq!(
            pair[1].changes,
            wafer::registry::diff(&pair[0].definitions, &pair[1].definitions),
            "version {}",
            pair[1].version
        );
        assert!(!pair[1].changes.is_empty(), "version {}", pair[1].version);
    }
    // Versions 2..=7 are the six variants, each exactly once.
    let mut landed: Vec<Vec<String>> = history[1..].iter().map(features).collect();
    let mut sent: Vec<Vec<String>> = variants
        .iter()
        .map(|v| v.iter().map(|f| f.to_string()).collect())
        .collect();
    landed.sort();
    sent.sort();
    assert_eq!(landed, sent);
}

trait Background {
    fn output_in_background(&mut self) -> std::process::Child;
}

impl Background for Command {
    fn output_in_background(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Lookups keep resolved plans per registry version: each new version of
/// a service (applied by this store or another, with both name styles) is
/// what the next lookup serves, and values stay equal to a fresh store's.
#[test]
fn lookups_follow_each_new_version_of_a_service() {
    use wafer::example::{self, ExampleOptions};
    use wafer::online::EntityRows;
    use wafer::{FeatureRequest, NoProgress};

    let dir = tempfile::tempdir().unwrap();
    let options = ExampleOptions {
        drivers: 20,
        hours: 3,
        entity_rows: 5,
        ..ExampleOptions::default()
    };
    example::scaffold(dir.path(), &options, true).unwrap();
    let store = FeatureStore::open(dir.path()).unwrap();
    store.apply().unwrap();
    store
        .materialize(
            chrono::Utc::now() - chrono::TimeDelta::days(30),
            chrono::Utc::now(),
            None,
            &NoProgress,
        )
        .unwrap();
    let request = FeatureRequest::Service("driver_activity".into());
    let rows = EntityRows {
        columns: vec![(
            "driver_id".to_string(),
            vec![serde_json::json!(example::FIRST_DRIVER_ID + 3)],
        )],
    };
    let answer = |store: &FeatureStore, full: bool| {
        let response = store.get_online_features(&request, full, &rows).unwrap();
        let values: Vec<serde_json::Value> = response
            .results
            .iter()
            .map(|c| serde_json::to_value(&c.values).unwrap())
            .collect();
        (response.feature_names, values)
    };
    // Each feature's value as the first version serves it (the data does
    // not change): later versions must serve the same per feature.
    let (names, values) = answer(&store, false);
    let first: std::collections::HashMap<String, serde_json::Value> =
        names.into_iter().zip(values).collect();
    assert_eq!(first.len(), 4);
    let check = |store: &FeatureStore, short: &[&str], full: &[&str]| {
        for (flag, names) in [(false, short), (true, full)] {
            // Twice: once resolved, once (when kept) from the kept plan.
            for _ in 0..2 {
                let (got, values) = answer(store, flag);
                assert_eq!(got, names, "full_feature_names {flag}");
                for (name, value) in short.iter().zip(&values) {
                    assert_eq!(&first[*name], value, "{name}");
                }
            }
        }
    };
    check(
        &store,
        &["driver_id", "conv_rate", "acc_rate", "avg_daily_trips"],
        &[
            "driver_id",
            "driver_hourly_stats__conv_rate",
            "driver_hourly_stats__acc_rate",
            "driver_hourly_stats__avg_daily_trips",
        ],
    );

    let definitions = dir.path().join("definitions.yaml");
    let text = std::fs::read_to_string(&definitions).unwrap();
    let edit = |from: &str, to: &str| {
        let block = "    features:\n      - driver_hourly_stats: ";
        let at = text.find("  - name: driver_activity").unwrap();
        let end = at + text[at..].find(block).unwrap() + block.len();
        assert!(text[end..].starts_with(from));
        format!("{}{to}{}", &text[..end], &text[end + from.len()..])
    };
    // Applied by this store.
    std::fs::write(
        &definitions,
        edit("[conv_rate, acc_rate, avg_daily_trips]", "[acc_rate]"),
    )
    .unwrap();
    store.apply().unwrap();
    check(
        &store,
        &["driver_id", "acc_rate"],
        &["driver_id", "driver_hourly_stats__acc_rate"],
    );
    // Applied by another store, then read by this one.
    std::fs::write(
        &definitions,
        edit(
            "[conv_rate, acc_rate, avg_daily_trips]",
            "[avg_daily_trips, conv_rate]",
        ),
    )
    .unwrap();
    FeatureStore::open(dir.path()).unwrap().apply().unwrap();
    store.refresh_registry().unwrap();
    check(
        &store,
        &["driver_id", "avg_daily_trips", "conv_rate"],
        &[
            "driver_id",
            "driver_hourly_stats__avg_daily_trips",
            "driver_hourly_stats__conv_rate",
        ],
    );
}
