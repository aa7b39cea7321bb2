//! Load through `wrk` (Debian's package; installed when missing): one case
//! is a Lua script run for some seconds at some concurrency; latencies and
//! throughput are read from its report.

use std::path::Path;
use std::process::Command;

/// Lua for a script: fails the run on any answer but 200.
pub const CHECK_200: &str = "response = function(status, headers, body)\n  if status ~= 200 then error(\"status \" .. status .. \": \" .. body) end\nend\n";

/// Lua that POSTs `body` as JSON, failing the run on any answer but 200.
pub fn post_json(body: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n{CHECK_200}"
    )
}

/// Lua that GETs, failing the run on any answer but 200.
pub fn get() -> String {
    format!("wrk.method = \"GET\"\n{CHECK_200}")
}

pub fn ensure_wrk() {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return;
    }
    eprintln!("installing wrk ...");
    let _ = Command::new("apt-get").arg("update").status();
    let status = Command::new("apt-get")
        .args(["install", "-y", "wrk"])
        .status()
        .expect("apt-get");
    assert!(status.success(), "cannot install wrk");
}

/// What one `wrk` run measured.
pub struct Run {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests_per_second: f64,
    pub errors: String,
}

fn milliseconds(text: &str) -> f64 {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// Runs `lua` (written to `dir/load.lua`) against `url` for `seconds`.
pub fn wrk(url: &str, lua: &str, connections: u32, threads: u32, seconds: u32, dir: &Path) -> Run {
    let script = dir.join("load.lua");
    std::fs::write(&script, lua).expect("write the wrk script");
    let output = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("nan")
            .to_string()
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .collect::<Vec<_>>()
        .join("; ");
    Run {
        p50_ms: milliseconds(&field("50%")),
        p99_ms: milliseconds(&field("99%")),
        requests_per_second: field("Requests/sec:").parse().unwrap_or(f64::NAN),
        errors: if errors.is_empty() {
            "none".into()
        } else {
            errors
        },
    }
}
