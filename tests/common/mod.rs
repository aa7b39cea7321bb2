//! Helpers shared by the integration tests.
#![allow(dead_code)]

mod child;
pub mod redis_cluster;
#[allow(unused_imports)]
pub use child::ChildGuard;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

/// The seeds of a randomized test: `default` of them from `first`, as many
/// times more with `WAFER_TEST_SEED_SCALE=K` (a longer run), and shifted by
/// `WAFER_TEST_SEED_OFFSET=N` to draw data no earlier run drew. Failures
/// name their seed, so one can be run again alone.
pub fn seeds(first: u64, default: u64) -> std::ops::Range<u64> {
    let var = |name: &str, fallback: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(fallback)
    };
    let start = first + var("WAFER_TEST_SEED_OFFSET", 0);
    start..start + default * var("WAFER_TEST_SEED_SCALE", 1).max(1)
}

pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let file = File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

pub fn read_parquet(path: &Path) -> RecordBatch {
    let file = File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let schema: Arc<Schema> = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// A project directory with `wafer.yaml` and `definitions.yaml`.
pub fn project(definitions: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wafer.yaml"), "project: test\n").unwrap();
    std::fs::write(dir.path().join("definitions.yaml"), definitions).unwrap();
    dir
}

/// A real `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: std::process::Child,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts on a free port, trying another when a different process wins
    /// the race for the one picked.
    pub fn start() -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start_on(free_port()) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts on `port` (a restart on the port a store is configured with).
    pub fn start_on(port: u16) -> Self {
        Self::try_start_on(port)
            .unwrap_or_else(|| panic!("redis-server could not listen on port {port}"))
    }

    /// None when the server exits before it is ready (the port was taken).
    fn try_start_on(port: u16) -> Option<Self> {
        let mut child = ChildGuard::new(
            std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server must be installed: run the README's test command (.ci/test), which installs it"),
        );
        let pid = child.child().id();
        // Ready when the server on the port is the one just started (not
        // another test's that won a race for the port).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.child().try_wait() {
                return None;
            }
            // Any failure (refused, or reset by a process that lost the
            // port) means not ready yet.
            if try_redis_command(port, &["INFO", "server"])
                .is_ok_and(|info| info.contains(&format!("process_id:{pid}\r\n")))
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(RedisServer {
            port,
            child: child.disarm(),
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command and returns its raw reply (one read).
    pub fn command(&self, args: &[&str]) -> String {
        redis_command(self.port, args)
    }
}

/// Sends one command to the Redis on `port` and returns its raw reply (one
/// read).
pub fn redis_command(port: u16, args: &[&str]) -> String {
    try_redis_command(port, args).unwrap()
}

/// [`redis_command`], with connection errors returned.
pub fn try_redis_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes())?;
    let mut reply = vec![0u8; 64 * 1024];
    let n = stream.read(&mut reply).unwrap_or(0);
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a directory tree (a store's state, to restore it later).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs `command` in a process group of its own and collects its output;
/// the whole group (background jobs included) is killed when the command
/// ends, when `limit` passes (a panic), or when the test fails first.
pub fn output_within(
    mut command: std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;

    struct Group(std::process::Child);
    impl Drop for Group {
        fn drop(&mut self) {
            let pgid = self.0.id() as i32;
            // SAFETY: kill(2) on a process group this test created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }

    command
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut group = Group(command.spawn().unwrap());
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(group.0.stdout.take().unwrap()));
    let stderr = drain(Box::new(group.0.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = group.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Background jobs left behind would hold the pipes open.
    drop(group);
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The lines `child` writes to its stderr (which must be piped), as they
/// come, from a thread that keeps reading until the pipe closes: the
/// child never meets a closed or full stderr.
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Sets a stop flag when dropped, a failed assertion's unwinding included,
/// so helper threads holding a server end and the server is killed.
pub struct StopOnDrop(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A float as a request carries it: JSON has no NaN or infinities, so those
/// travel as strings (protobuf's JSON mapping).
pub fn float_json(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or_else(
        || {
            serde_json::json!(if v.is_nan() {
                "NaN"
            } else if v > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            })
        },
        serde_json::Value::Number,
    )
}
