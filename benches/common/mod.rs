//! Set-up shared by the benchmarks.
#![allow(dead_code)]

#[path = "../../tests/common/child.rs"]
mod child;
pub mod wrk;
#[allow(unused_imports)]
pub use child::ChildGuard;

use std::path::Path;
use std::time::Duration;

/// Adds to the example project an on-demand view `scored` (transform
/// `conv`, which the caller uploads: `conv_rate_plus_val`, over the stored
/// `conv_rate` and a request field `val_to_add`) and a service
/// `driver_activity_scored`: `driver_activity`'s three features plus it.
pub fn add_scored_service(dir: &Path) {
    let definitions = dir.join("definitions.yaml");
    let text = std::fs::read_to_string(&definitions).unwrap()
        + "request_sources:
  - name: scoring_request
    fields: [{name: val_to_add, type: int64}]
on_demand_feature_views:
  - name: scored
    transform: conv
    sources: [driver_hourly_stats, scoring_request]
    features: [{name: conv_rate_plus_val, type: float64}]
";
    let text = text.replacen(
        "feature_services:\n",
        "feature_services:\n  - name: driver_activity_scored\n    features:\n      - driver_hourly_stats: [conv_rate, acc_rate, avg_daily_trips]\n      - scored\n",
        1,
    );
    std::fs::write(&definitions, text).unwrap();
}

/// A `wafer serve` process and its base URL, killed on drop.
pub struct Server(pub std::process::Child, pub String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary serve` on a free port in `dir` with `env`, once it has
/// printed its address.
pub fn serve(binary: &Path, dir: &Path, env: &[(&str, &str)]) -> Server {
    use std::io::BufRead;
    let mut child = std::process::Command::new(binary)
        .arg("-C")
        .arg(dir)
        .args(["serve", "--port", "0"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wafer serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines.next().expect("a first line").expect("readable");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the server prints its address")
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    Server(child, url)
}

/// Copies a directory tree (a project with its data).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("read a directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// A kB field of /proc/PID/status (`VmRSS:`, `VmHWM:`), in MiB.
pub fn memory_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// splitmix64: reproducible random drivers without a dependency.
pub struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// One of the first `drivers` drivers.
    pub fn driver(&mut self, drivers: u32) -> i64 {
        wafer::example::FIRST_DRIVER_ID + (self.next() % drivers as u64) as i64
    }
}

/// p50 and p99 of `samples`, in microseconds.
pub fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| {
        samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99))
}
