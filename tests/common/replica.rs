//! Several `wafer serve` processes over one project, each with a data
//! directory of its own (so nothing is shared through files), for the
//! replica tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{ok, wafer_with};
use crate::server::{http, Server};

/// A data directory of its own for each process: nothing is shared there.
pub fn own_data_dir(dir: &Path, name: &str) -> String {
    dir.join(format!("data-{name}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// `wafer ARGS` with a data directory of its own.
pub fn run(dir: &Path, args: &[&str]) -> String {
    ok(wafer_with(
        dir,
        args,
        &[("WAFER_DATA_DIR", &own_data_dir(dir, "cli"))],
    ))
}

pub fn replica(dir: &Path, name: &str, extra: &[&str]) -> Server {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wafer"));
    command
        .arg("-C")
        .arg(dir)
        .args(["serve", "--port", "0"])
        .args(extra)
        .env("WAFER_DATA_DIR", own_data_dir(dir, name));
    Server::spawn(command)
}

pub fn upload(server: &Server, name: &str, bytes: &[u8]) -> (u16, Value) {
    let (status, text) = http(
        server.address,
        "POST",
        &format!("/transforms/{name}"),
        None,
        bytes,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls `f` until it returns `Some` (20 s at most).
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}
