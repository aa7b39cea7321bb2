//! The walkthrough in `examples/README.md` runs as written: every `sh` block,
//! in order, in one bash session, with `wafer` on the PATH (what the page's
//! `bash` block sets up by hand). Only the server's port is changed, to a
//! free one.

mod common;

use std::path::Path;
use std::process::Command;

fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    blocks
}

#[test]
fn the_examples_walkthrough_runs_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(repo.join("examples/README.md")).unwrap();
    let blocks = sh_blocks(&page);
    assert!(blocks.len() >= 7, "found only {} sh blocks", blocks.len());
    // The server binds a port of its own choosing (port 0) and the script
    // reads it back from the line the server prints; background jobs are
    // stopped however the script ends.
    let script = blocks.join("\n");
    assert!(script.contains("wafer serve --port 6566 &"), "{script}");
    let script = script
        .replace(
            "wafer serve --port 6566 &",
            "wafer serve --port 0 > serve.out &",
        )
        .replace(
            "SERVER=$!\n",
            "SERVER=$!\n\
             until grep -q 'http://' serve.out; do kill -0 $SERVER; sleep 0.05; done\n\
             PORT=$(grep -o 'http://[0-9.]*:[0-9]*' serve.out | head -1 | sed 's/.*://')\n",
        )
        .replace("localhost:6566", "localhost:$PORT");
    let script =
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}");

    let bin = Path::new(env!("CARGO_BIN_EXE_wafer")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("WAFER_REPO", repo)
        // As a user's shell would be: the transform builds into its crate.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = common::output_within(command, std::time::Duration::from_secs(30 * 60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the walkthrough failed:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );

    // The lookup served the on-demand feature: present for the drivers with
    // a fare, null for the one without.
    let lookup_line = stdout
        .lines()
        .find(|line| line.contains("\"feature_names\""))
        .unwrap_or_else(|| panic!("no lookup answer in:\n{stdout}"));
    let lookup: serde_json::Value = serde_json::from_str(lookup_line).unwrap();
    assert_eq!(
        lookup["metadata"]["feature_names"],
        serde_json::json!(["driver_id", "conv_rate", "acc_rate", "trip_value"])
    );
    let statuses = &lookup["results"][3]["statuses"];
    assert_eq!(
        statuses,
        &serde_json::json!(["PRESENT", "PRESENT", "NULL_VALUE"])
    );
    let values = &lookup["results"];
    for (row, fare) in [(0, 12.5), (1, 30.0)] {
        let conv = values[1]["values"][row].as_f64().unwrap() as f32 as f64;
        let acc = values[2]["values"][row].as_f64().unwrap() as f32 as f64;
        let served = values[3]["values"][row].as_f64().unwrap();
        assert_eq!(served.to_bits(), (fare * acc * conv).to_bits(), "row {row}");
    }

    // pandas read the training set, and its check printed 0.0 last.
    assert!(stdout.contains("trip_value"), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default().trim();
    assert_eq!(last, "0.0", "pandas' check:\n{stdout}");
    let training = common::read_parquet(&dir.path().join("demo/training.parquet"));
    assert_eq!(training.num_rows(), 4);
}
