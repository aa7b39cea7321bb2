//! The online stores side by side: sled, redb and Redis, same run, same
//! data (issue 15's benchmark).
//!
//! (a) wide materialization (1,000,000 drivers, one row each), beside each
//!     engine's own bulk insert of the same records outside Wafer (the
//!     limit: sled `insert` + one flush; redb one transaction, one durable
//!     commit, through `insert` and, in key order, through a cursor at the
//!     table's end with redb's default 1 GiB cache and with Wafer's 64 MiB;
//!     Redis pipelined `SET`s, 2,000 per round trip, no script), in key
//!     order and shuffled;
//! (b) the example materialization (10,000 drivers x 100 hours);
//! (c) lookups of 1 and 100 random drivers (feature service, 3 features)
//!     over the 1M store, p50/p99, in process and through `wafer serve`
//!     (wrk) at concurrency 1 and 16;
//! (d) size on disk after (a) (Redis: its RDB snapshot, and used_memory);
//! (e) RSS of `wafer serve` over the 1M store after 60 s of random lookups
//!     at concurrency 16 (VmHWM, the peak, and VmRSS);
//! (f) open time: process start to the first lookup answered.
//!
//! Materializations run twice per store, alternating stores; both runs are
//! printed. Prints tables; results go in benches/README.md.
//!
//! cargo bench --bench online   (needs redis-server and wrk; wrk is
//! installed when missing)

mod common;
#[path = "../tests/common/server.rs"]
mod http_server;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::{percentiles, wrk, Random};
use http_server::{http, Server};
use serde_json::json;
use wafer::example::{self, ExampleOptions};
use wafer::online::EntityRows;
use wafer::{FeatureRequest, FeatureStore, NoProgress};

const WIDE: u32 = 1_000_000;
const REDIS_PIPELINE: usize = 2_000;

struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port, dir }
    }

    fn connection(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .and_then(|c| c.get_connection())
            .expect("a Redis connection")
    }

    fn flush_all(&self) {
        redis::cmd("FLUSHALL")
            .query::<()>(&mut self.connection())
            .expect("FLUSHALL");
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Store {
    Sled,
    Redb,
    Redis,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Sled => "sled",
            Store::Redb => "redb",
            Store::Redis => "redis",
        }
    }
}

const STORES: [Store; 3] = [Store::Sled, Store::Redb, Store::Redis];

/// Points the project's `online_store` at `store`.
fn use_store(dir: &Path, store: Store, redis: &Redis) {
    let path = dir.join("wafer.yaml");
    let config = std::fs::read_to_string(&path).expect("wafer.yaml");
    let mut out = String::new();
    let mut skipping = false;
    for line in config.lines() {
        if line.starts_with("online_store:") {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with(' ') {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&match store {
        Store::Sled => "online_store: {type: sled}\n".to_string(),
        Store::Redb => "online_store: {type: redb}\n".to_string(),
        Store::Redis => format!(
            "online_store: {{type: redis, url: \"redis://127.0.0.1:{}\"}}\n",
            redis.port
        ),
    });
    std::fs::write(path, out).expect("write wafer.yaml");
}

fn template(drivers: u32, hours: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ExampleOptions {
        drivers,
        hours,
        entity_rows: 10,
        ..ExampleOptions::default()
    };
    example::scaffold(dir.path(), &options, true).expect("example project");
    dir
}

/// A fresh copy of `template` on `store` (Redis emptied first), applied
/// and materialized; returns the copy and the seconds materialization took.
fn materialized(template: &Path, store: Store, redis: &Redis) -> (tempfile::TempDir, f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    common::copy_dir(template, dir.path());
    use_store(dir.path(), store, redis);
    if store == Store::Redis {
        redis.flush_all();
    }
    let project = FeatureStore::open(dir.path()).expect("project");
    project.apply().expect("apply");
    let now = Utc::now();
    let started = Instant::now();
    let done = project
        .materialize(now - TimeDelta::days(30), now, None, &NoProgress)
        .expect("materialize");
    let seconds = started.elapsed().as_secs_f64();
    (dir, seconds, done[0].rows_written)
}

/// Bytes allocated on disk under `path` (a file or a directory).
fn disk_bytes(path: &Path) -> u64 {
    let meta = std::fs::symlink_metadata(path).expect("metadata");
    if meta.is_dir() {
        std::fs::read_dir(path)
            .expect("read a directory")
            .map(|e| disk_bytes(&e.expect("an entry").path()))
            .sum()
    } else {
        meta.blocks() * 512
    }
}

fn store_disk(dir: &Path, store: Store, redis: &Redis) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    match store {
        Store::Sled => format!("{:.0} MiB", mib(disk_bytes(&dir.join(".wafer/online")))),
        Store::Redb => format!(
            "{:.0} MiB",
            mib(disk_bytes(&dir.join(".wafer/online.redb")))
        ),
        Store::Redis => {
            let mut c = redis.connection();
            redis::cmd("SAVE").query::<()>(&mut c).expect("SAVE");
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query(&mut c)
                .expect("INFO");
            let used = info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            format!(
                "{:.0} MiB RDB; used_memory {:.0} MiB",
                mib(disk_bytes(&redis.dir.path().join("dump.rdb"))),
                mib(used)
            )
        }
    }
}

/// In-process lookups of `entities` random drivers among the first
/// `drivers`; p50/p99 in us. Every looked-up driver must be found (the
/// bench measures hits, not misses).
fn lookups(project: &FeatureStore, drivers: u32, entities: usize, iterations: usize) -> (f64, f64) {
    let request = FeatureRequest::Service("driver_activity".into());
    let mut random = Random(entities as u64);
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let ids = (0..entities)
            .map(|_| json!(random.driver(drivers)))
            .collect();
        let rows = EntityRows {
            columns: vec![("driver_id".to_string(), ids)],
        };
        let started = Instant::now();
        let response = project
            .get_online_features(&request, false, &rows)
            .expect("lookup");
        samples.push(started.elapsed());
        let found = response.results[1]
            .event_timestamps
            .iter()
            .flatten()
            .count();
        assert_eq!(found, entities, "every driver is stored");
    }
    percentiles(samples)
}

/// A wrk script posting lookups of `entities` random drivers.
fn lookup_script(entities: usize) -> String {
    format!(
        "local first, count = {first}, {WIDE}\n\
         request = function()\n  local ids = {{}}\n  for i = 1, {entities} do ids[i] = math.random(first, first + count - 1) end\n  \
         local body = '{{\"feature_service\": \"driver_activity\", \"entities\": {{\"driver_id\": [' .. table.concat(ids, ',') .. ']}}}}'\n  \
         return wrk.format(\"POST\", \"/get-online-features\", {{[\"Content-Type\"] = \"application/json\"}}, body)\nend\n{check}",
        first = example::FIRST_DRIVER_ID,
        check = wrk::CHECK_200,
    )
}

/// Starts `wafer serve` and waits for its first lookup answered with the
/// driver found; returns the server and the time from spawn.
fn serve_and_time(dir: &Path) -> (Server, Duration) {
    let body = json!({"feature_service": "driver_activity", "entities": {"driver_id": [1001]}})
        .to_string();
    let started = Instant::now();
    let server = Server::start(dir, &[]);
    loop {
        let (status, text) = http(
            server.address,
            "POST",
            "/get-online-features",
            None,
            body.as_bytes(),
        );
        if status == 200 {
            assert!(text.contains("PRESENT"), "driver 1001 is stored: {text}");
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (server, started.elapsed())
}

/// Keys and records as Wafer stored them, read back from a redb store.
fn records_of(redb_file: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    use redb::{ReadableDatabase, ReadableTable};
    let table = redb::TableDefinition::<&[u8], &[u8]>::new("online");
    let db = redb::Database::open(redb_file).expect("open the redb file");
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(table).expect("the online table");
    table
        .iter()
        .expect("iterate")
        .map(|entry| {
            let (k, v) = entry.expect("an entry");
            (k.value().to_vec(), v.value().to_vec())
        })
        .collect()
}

/// Each engine's own bulk insert of `records`; seconds.
fn bulk_insert(store: Store, records: &[(Vec<u8>, Vec<u8>)], redis: &Redis) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    match store {
        Store::Sled => {
            let db = sled::Config::new()
                .path(dir.path().join("online"))
                .open()
                .expect("sled");
            let tree = db.open_tree("online").expect("tree");
            let started = Instant::now();
            for (k, v) in records {
                tree.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
            db.flush().expect("flush");
            started.elapsed().as_secs_f64()
        }
        Store::Redb => redb_insert(records, REDB_DEFAULT_CACHE, false),
        Store::Redis => {
            redis.flush_all();
            let mut c = redis.connection();
            let started = Instant::now();
            for chunk in records.chunks(REDIS_PIPELINE) {
                let mut pipe = redis::pipe();
                for (k, v) in chunk {
                    pipe.cmd("SET").arg(k).arg(v).ignore();
                }
                pipe.query::<()>(&mut c).expect("pipelined SET");
            }
            started.elapsed().as_secs_f64()
        }
    }
}

fn shuffled(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = records.to_vec();
    let mut random = Random(7);
    for i in (1..out.len()).rev() {
        out.swap(i, (random.next() % (i as u64 + 1)) as usize);
    }
    out
}

/// Whether `part` (materialize, reference, serve) is to run:
/// `WAFER_BENCH_PARTS=materialize,reference` runs those only.
fn runs(part: &str) -> bool {
    std::env::var("WAFER_BENCH_PARTS")
        .map(|parts| parts.split(',').any(|p| p.trim() == part))
        .unwrap_or(true)
}

fn main() {
    wrk::ensure_wrk();
    let redis = Redis::start();
    let wide = template(WIDE, 1);
    if runs("materialize") {
        materialization(&redis, wide.path());
    }
    if runs("reference") {
        bulk_inserts(&redis, wide.path());
    }
    if runs("serve") {
        serving(&redis, wide.path());
    }
}

/// (a, b) and in-process lookups over the example.
fn materialization(redis: &Redis, wide: &Path) {
    let small = template(10_000, 100);
    println!("(a, b) materialization, two runs per store (alternating)\n");
    println!("| case | store | run 1 | run 2 | rows written |");
    println!("|---|---|---:|---:|---:|");
    let mut example_lookups = Vec::new();
    for (case, template, drivers) in [
        ("wide: 1,000,000 drivers x 1 h", wide, WIDE),
        ("example: 10,000 drivers x 100 h", small.path(), 10_000),
    ] {
        let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); STORES.len()];
        let mut rows = vec![0; STORES.len()];
        for round in 0..2 {
            for (i, &store) in STORES.iter().enumerate() {
                let (dir, took, written) = materialized(template, store, redis);
                seconds[i].push(took);
                rows[i] = written;
                if round == 1 && drivers == 10_000 {
                    let project = FeatureStore::open(dir.path()).expect("project");
                    lookups(&project, drivers, 1, 2_000); // warm up
                    let one = lookups(&project, drivers, 1, 20_000);
                    let hundred = lookups(&project, drivers, 100, 2_000);
                    example_lookups.push((store, one, hundred));
                }
            }
        }
        for (i, store) in STORES.iter().enumerate() {
            println!(
                "| {case} | {} | {:.2} s | {:.2} s | {} |",
                store.name(),
                seconds[i][0],
                seconds[i][1],
                rows[i]
            );
        }
    }
    println!(
        "\nin-process lookups over the example (10,000 drivers), feature service of 3 features\n"
    );
    println!("| store | 1 entity p50 | p99 | 100 entities p50 | p99 |");
    println!("|---|---:|---:|---:|---:|");
    for (store, (p50, p99), (p50_100, p99_100)) in example_lookups {
        println!(
            "| {} | {p50:.1} us | {p99:.1} us | {p50_100:.1} us | {p99_100:.1} us |",
            store.name()
        );
    }
}

/// (a)'s reference: each engine's own bulk insert of the records Wafer
/// stored (read back from a redb materialization).
fn bulk_inserts(redis: &Redis, wide: &Path) {
    let records = {
        let (dir, _, _) = materialized(wide, Store::Redb, redis);
        records_of(&dir.path().join(".wafer/online.redb"))
    };
    println!(
        "\n(a) each engine's own bulk insert of the same {} records (outside Wafer)\n",
        records.len()
    );
    println!("| engine | key order, run 1 | key order, run 2 | shuffled |");
    println!("|---|---:|---:|---:|");
    let mixed = shuffled(&records);
    for store in STORES {
        let first = bulk_insert(store, &records, redis);
        let second = bulk_insert(store, &records, redis);
        let random = bulk_insert(store, &mixed, redis);
        println!(
            "| {} | {first:.2} s | {second:.2} s | {random:.2} s |",
            store.name()
        );
    }
    for (cache, name) in [
        (REDB_DEFAULT_CACHE, "default 1 GiB"),
        (64 << 20, "64 MiB, as Wafer's"),
    ] {
        let first = redb_insert(&records, cache, true);
        let second = redb_insert(&records, cache, true);
        println!(
            "| redb, cursor, cache {name} | {first:.2} s | {second:.2} s | (key order only) |"
        );
    }
}

/// redb's default page cache (`redb::Builder`'s).
const REDB_DEFAULT_CACHE: usize = 1 << 30;

/// redb's own bulk insert of `records` in a new file with a page cache of
/// `cache_bytes`: one transaction, one durable commit. Each record goes
/// through `Table::insert`, or with `cursor` (records in key order; redb's
/// fastest way in) through a cursor at the end of the table, whose pending
/// inserts redb splices in when it closes or every 1 MiB; seconds.
fn redb_insert(records: &[(Vec<u8>, Vec<u8>)], cache_bytes: usize, cursor: bool) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(dir.path().join("online.redb"))
        .expect("redb");
    let definition = redb::TableDefinition::<&[u8], &[u8]>::new("online");
    let started = Instant::now();
    let txn = db.begin_write().expect("write");
    {
        let mut table = txn.open_table(definition).expect("table");
        if cursor {
            let mut end = table
                .upper_bound_mut(std::ops::Bound::<&[u8]>::Unbounded)
                .expect("cursor");
            for (k, v) in records {
                end.insert_before(k.as_slice(), v.as_slice())
                    .expect("insert in key order");
            }
            end.close().expect("close");
        } else {
            for (k, v) in records {
                table.insert(k.as_slice(), v.as_slice()).expect("insert");
            }
        }
    }
    txn.commit().expect("commit");
    started.elapsed().as_secs_f64()
}

/// (c) to (f) over the 1M store.
fn serving(redis: &Redis, wide: &Path) {
    println!("\n(c-f) over the 1M store\n");
    println!("| store | size on disk (d) | open to first answer (f) | RSS after open |");
    println!("|---|---:|---:|---:|");
    let mut serving = Vec::new();
    for store in STORES {
        let (dir, _, _) = materialized(wide, store, redis);
        let disk = store_disk(dir.path(), store, redis);
        // sled releases its lock from a background thread after a close.
        std::thread::sleep(Duration::from_secs(1));
        let (server, open) = serve_and_time(dir.path());
        println!(
            "| {} | {disk} | {:.0} ms | {:.0} MiB |",
            store.name(),
            open.as_secs_f64() * 1e3,
            common::memory_mib(server.child.id(), "VmRSS:")
        );
        let url = format!("http://{}", server.address);
        let mut http_runs = Vec::new();
        for entities in [1, 100] {
            for (connections, threads) in [(1, 1), (16, 2)] {
                let run = wrk::wrk(
                    &url,
                    &lookup_script(entities),
                    connections,
                    threads,
                    10,
                    dir.path(),
                );
                http_runs.push((entities, connections, run));
            }
        }
        let long = wrk::wrk(&url, &lookup_script(1), 16, 2, 60, dir.path());
        let pid = server.child.id();
        let rss = (
            common::memory_mib(pid, "VmHWM:"),
            common::memory_mib(pid, "VmRSS:"),
        );
        drop(server);
        // In process once the server is gone (sled and redb lock their files).
        let mut in_process = Vec::new();
        {
            let project = FeatureStore::open(dir.path()).expect("project");
            lookups(&project, WIDE, 1, 2_000); // warm up
            for entities in [1, 100] {
                let iterations = if entities == 1 { 20_000 } else { 2_000 };
                in_process.push((entities, lookups(&project, WIDE, entities, iterations)));
            }
        }
        serving.push((store, in_process, http_runs, long, rss));
        // Redis holds one store at a time: this one goes with the loop.
        drop(dir);
    }

    println!("\n(c) lookups, feature service of 3 features, random drivers among 1M\n");
    println!("| store | entities | where | concurrency | p50 | p99 | requests/s | errors |");
    println!("|---|---:|---|---:|---:|---:|---:|---|");
    for (store, in_process, http_runs, _, _) in &serving {
        for (entities, (p50, p99)) in in_process {
            println!(
                "| {} | {entities} | in process | 1 | {p50:.1} us | {p99:.1} us | | |",
                store.name()
            );
        }
        for (entities, connections, run) in http_runs {
            println!(
                "| {} | {entities} | wafer serve | {connections} | {:.3} ms | {:.3} ms | {:.0} | {} |",
                store.name(),
                run.p50_ms,
                run.p99_ms,
                run.requests_per_second,
                run.errors
            );
        }
    }

    println!("\n(e) wafer serve after 60 s of random 1-entity lookups at concurrency 16\n");
    println!("| store | requests/s | p99 | peak RSS (VmHWM) | RSS at the end |");
    println!("|---|---:|---:|---:|---:|");
    for (store, _, _, long, (peak, end)) in &serving {
        println!(
            "| {} | {:.0} | {:.3} ms | {peak:.0} MiB | {end:.0} MiB |",
            store.name(),
            long.requests_per_second,
            long.p99_ms
        );
    }
}
