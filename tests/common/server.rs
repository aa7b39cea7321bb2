//! A real `wafer serve` process on a loopback port and a plain HTTP/1.1
//! client for the tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::ChildGuard;

/// A `wafer serve` process, killed on drop.
pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
}

impl Server {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wafer"));
        command.arg("-C").arg(dir).args(["serve", "--port", "0"]);
        for (name, value) in env {
            command.env(name, value);
        }
        Server::spawn(command)
    }

    /// Runs a `serve` command (which must listen on port 0) and waits for
    /// the address it prints (60 s at most). The process is killed on every
    /// path out of here, a failed start included.
    pub fn spawn(mut command: Command) -> Server {
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = ChildGuard::new(command.spawn().unwrap());
        let stdout = child.child().stdout.take().unwrap();
        let (first, rx) = std::sync::mpsc::channel();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = first.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => panic!("the server exited before printing its address"),
            Err(_) => panic!("the server printed nothing in 60 s"),
        };
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .parse()
            .unwrap();
        Server {
            child: child.disarm(),
            address,
        }
    }

    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let (status, text) = http(self.address, method, path, token, body.as_bytes());
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, None, &body.to_string())
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, "")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; returns status and body.
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    http_with(address, method, path, &headers, body)
}

/// One HTTP/1.1 request with the given extra headers, written as given.
pub fn http_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body and close.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// An error body's object: Wafer's own as sent, or one Feast has a class
/// for, which comes encoded once more as a JSON string (Feast's
/// `to_error_detail()`), with `module` `feast.errors`.
pub fn error_object(body: &Value) -> Value {
    match body {
        Value::String(detail) => {
            let object: Value = serde_json::from_str(detail)
                .unwrap_or_else(|e| panic!("not an encoded error object ({e}): {detail}"));
            assert_eq!(object["module"], "feast.errors", "{detail}");
            object
        }
        other => {
            assert_eq!(other["module"], "wafer", "{other}");
            other.clone()
        }
    }
}
