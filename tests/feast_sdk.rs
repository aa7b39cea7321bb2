//! Feast's own Python SDK (0.67, from the virtual environment the test
//! command installs; `WAFER_FEAST_PYTHON`) against a real `wafer serve`,
//! through `online_store: {type: remote}`: lookups of features, services
//! with an on-demand view and full names, missing entities;
//! `write_to_online_store` and `push` seen by the next lookup; each error
//! raised as Feast's own exception type; async materialization.
//! `tests/feast/sdk_check.py` holds the checks, the values it expects come
//! from here.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use server::Server;

fn feast_python() -> PathBuf {
    let path = std::env::var_os("WAFER_FEAST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/wafer/feast-venv-0.67.0/bin/python")
        });
    assert!(
        path.exists(),
        "no Python with Feast 0.67 at {} (run .ci/test, which installs it, or set WAFER_FEAST_PYTHON)",
        path.display()
    );
    path
}

#[test]
fn feasts_python_sdk_reads_writes_and_raises_its_own_errors() {
    let python = feast_python();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    cli::init_example(dir, 30, 12);
    let definitions = dir.join("definitions.yaml");
    let text = std::fs::read_to_string(&definitions).unwrap().replacen(
        "feature_services:\n",
        "feature_services:\n  - name: scoring\n    features:\n      - driver_hourly_stats: [conv_rate]\n      - scored\n",
        1,
    ) + cli::SCORED_FROM_VIEW;
    std::fs::write(&definitions, text).unwrap();
    let module = dir.join("conv.wasm");
    std::fs::write(&module, wasm::transform_module("conv_rate_plus_val")).unwrap();
    cli::ok(cli::wafer(
        dir,
        &["transform", "upload", "conv", module.to_str().unwrap()],
    ));
    cli::ok(cli::wafer(dir, &["apply"]));
    let materialized_until = chrono::Utc::now();
    cli::ok(cli::wafer(
        dir,
        &[
            "materialize",
            "1970-01-01T00:00:00Z",
            &materialized_until.to_rfc3339(),
        ],
    ));
    let server = Server::start(dir, &[]);

    let repo = dir.join("feast_repo");
    std::fs::create_dir_all(repo.join("data")).unwrap();
    std::fs::write(
        repo.join("feature_store.yaml"),
        format!(
            "project: driver_ranking\nregistry: data/registry.db\nprovider: local\n\
             online_store:\n  type: remote\n  path: http://{}\n\
             offline_store:\n  type: file\nentity_key_serialization_version: 3\n",
            server.address
        ),
    )
    .unwrap();
    let reference = cli::newest_driver_stats(dir);
    let known = 1002;
    let expected = json!({
        "known": known,
        "unknown": 99_999,
        "trips": reference[&known].2,
        "materialized_until": materialized_until.to_rfc3339(),
    });
    let expected_file = dir.join("expected.json");
    std::fs::write(&expected_file, expected.to_string()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/feast/sdk_check.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&repo)
        .arg(dir.join("data/driver_stats/part-0000.parquet"))
        .arg(&expected_file)
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Feast SDK checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        summary["errors"],
        json!([
            "FeatureViewNotFoundException",
            "RequestDataNotFoundInEntityRowsException",
            "FeatureServiceNotFoundException",
            "PushSourceNotFoundException"
        ])
    );
    assert_eq!(
        summary["lookup"]["avg_daily_trips"],
        json!([reference[&known].2, null])
    );
    // The server saw the SDK's write and push: the stored value is the
    // pushed one.
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [known]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["values"][0], json!(0.25));
}
