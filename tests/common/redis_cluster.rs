//! A real Redis Cluster on loopback: Debian's `redis-server` with
//! `cluster-enabled yes`, one process per master, joined with
//! `redis-cli --cluster create`. Each node keeps an append-only file synced
//! on every write, so a node killed and restarted comes back with its data
//! and its slots.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{redis_command, try_redis_command, ChildGuard};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: tempfile::TempDir,
}

/// A port whose cluster bus port (+10000) is free too, both below the
/// ephemeral range (32768 and up), where the kernel hands out ports to
/// outgoing connections.
fn cluster_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(20_000..22_768);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

impl RedisCluster {
    /// `masters` nodes, no replicas; all slots covered, state ok.
    pub fn start(masters: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for _ in 0..masters {
            let port = cluster_port();
            cluster.ports.push(port);
            cluster.children.push(None);
            cluster.spawn(cluster.ports.len() - 1);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let output = create.stdin(Stdio::null()).output().unwrap();
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok();
        cluster
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        let dir = self.dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn spawn(&mut self, i: usize) {
        let port = self.ports[i];
        let mut child = ChildGuard::new(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "1000"])
                .args(["--appendonly", "yes", "--appendfsync", "always", "--save", ""])
                .arg("--dir")
                .arg(self.node_dir(i))
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server must be installed: run the README's test command (.ci/test), which installs it"),
        );
        let pid = child.child().id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !try_redis_command(port, &["INFO", "server"])
            .is_ok_and(|info| info.contains(&format!("process_id:{pid}\r\n")))
        {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.children[i] = Some(child.disarm());
    }

    /// Waits until every live node reports `cluster_state:ok` (30 s at most).
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .ports
                .iter()
                .zip(&self.children)
                .filter(|(_, child)| child.is_some())
                .all(|(port, _)| {
                    redis_command(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `[redis://127.0.0.1:P1, ...]` for wafer.yaml.
    pub fn yaml_nodes(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}\""))
            .collect();
        format!("[{}]", nodes.join(", "))
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts node `i` again on its port, with its data and cluster state.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Sends one command to node `i`.
    pub fn command(&self, i: usize, args: &[&str]) -> String {
        redis_command(self.ports[i], args)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
