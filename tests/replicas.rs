//! Several stateless `wafer serve` processes over one Redis Cluster (three
//! real masters on loopback), each with a data directory of its own: the
//! registry, the modules, the online records and the materialization
//! claims all live in the cluster.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/replica.rs"]
mod replica;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::redis_cluster::RedisCluster;
use replica::{eventually, own_data_dir, replica, run, upload};
use serde_json::{json, Value};
use server::{http, Server};

/// The example project (`drivers` drivers, `hours` hours of data) with its
/// registry and online store in `cluster`; nothing applied yet.
fn project(cluster: &RedisCluster, drivers: u32, hours: u32) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    cli::init_example(dir, drivers, hours);
    let nodes = cluster.yaml_nodes();
    std::fs::write(
        dir.join("wafer.yaml"),
        format!(
            "project: driver_ranking\n\
             registry: {{type: redis, cluster: {nodes}}}\n\
             online_store: {{type: redis, cluster: {nodes}, claim_ttl_ms: 1000}}\n\
             server: {{registry_refresh_ms: 100}}\n"
        ),
    )
    .unwrap();
    root
}

/// Looks up every driver of the example (and three unknown ones) through
/// `server` and checks each value and status against the newest source row
/// per driver, read independently from the Parquet files.
fn check_lookups(server: &Server, expected: &HashMap<i64, (f32, f32, i64, i64)>) {
    let (status, body) = lookup_all(server, expected);
    assert_eq!(status, 200, "{body}");
    check_body(&body, expected);
}

fn driver_ids(expected: &HashMap<i64, (f32, f32, i64, i64)>) -> Vec<i64> {
    let mut ids: Vec<i64> = expected.keys().copied().collect();
    ids.sort_unstable();
    ids.extend([1, 2, 3]);
    ids
}

fn lookup_all(server: &Server, expected: &HashMap<i64, (f32, f32, i64, i64)>) -> (u16, Value) {
    server.post(
        "/get-online-features",
        json!({
            "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
            "entities": {"driver_id": driver_ids(expected)},
        }),
    )
}

fn check_body(body: &Value, expected: &HashMap<i64, (f32, f32, i64, i64)>) {
    let ids = driver_ids(expected);
    let conv = &body["results"][1];
    let trips = &body["results"][2];
    for (i, id) in ids.iter().enumerate() {
        match expected.get(id) {
            Some(&(conv_rate, _, avg_daily_trips, _)) => {
                assert_eq!(conv["statuses"][i], "PRESENT", "driver {id}: {body}");
                assert_eq!(
                    conv["values"][i].as_f64().map(|v| v as f32),
                    Some(conv_rate),
                    "driver {id}"
                );
                assert_eq!(trips["values"][i], json!(avg_daily_trips), "driver {id}");
            }
            None => {
                assert_eq!(conv["statuses"][i], "NOT_FOUND", "driver {id}");
                assert_eq!(conv["values"][i], Value::Null, "driver {id}");
            }
        }
    }
}

#[test]
fn replicas_share_the_registry_modules_and_online_data_through_a_cluster() {
    let cluster = RedisCluster::start(3);
    let root = project(&cluster, 300, 12);
    let dir = root.path();
    run(dir, &["apply"]);
    let a = replica(dir, "a", &[]);
    let b = replica(dir, "b", &[]);

    // A materialization from the CLI while the replicas serve; lookups of
    // every driver (keys on all three masters) through either replica.
    run(dir, &["materialize", "1970-01-01T00:00:00Z", "now"]);
    let expected = cli::newest_driver_stats(dir);
    check_lookups(&a, &expected);
    check_lookups(&b, &expected);

    // A module uploaded through A, an on-demand view over it applied from
    // the CLI (which finds the module in the cluster), and lookups through
    // B computing it once B has refreshed: no restart.
    let (status, uploaded) = upload(&a, "conv", &wasm::transform_module("conv_rate_plus_val"));
    assert_eq!(status, 201, "{uploaded}");
    let (status, body) = b.get("/transforms/conv");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active"]["sha256"], uploaded["sha256"], "{body}");
    cli::add_scored_view(dir);
    run(dir, &["apply"]);
    let request = json!({
        "features": ["scored:conv_rate_plus_val"],
        "entities": {"driver_id": [1001], "conv_rate": [0.5], "val_to_add": [2]},
    });
    // Within a few refresh intervals (100 ms), not the helper's 20 s.
    let applied = std::time::Instant::now();
    let body = eventually("B serving the new view", || {
        let (status, body) = b.post("/get-online-features", request.clone());
        (status == 200).then_some(body)
    });
    assert!(
        applied.elapsed() < Duration::from_secs(5),
        "{:?}",
        applied.elapsed()
    );
    assert_eq!(body["results"][0]["values"], json!([2.5]), "{body}");
    let (status, versions) = b.get("/registry/versions");
    assert_eq!(status, 200, "{versions}");
    assert_eq!(versions.as_array().map(Vec::len), Some(2), "{versions}");

    // A push through A is read through B.
    let now = chrono::Utc::now().to_rfc3339();
    let (status, body) = a.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "online",
               "df": {"driver_id": [1001, 9999], "event_timestamp": [now, now],
                      "conv_rate": [0.125, 0.25], "acc_rate": [0.5, 0.5],
                      "avg_daily_trips": [77, 88]}}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = b.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"],
               "entities": {"driver_id": [1001, 9999]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["values"], json!([0.125, 0.25]), "{body}");
    assert_eq!(body["results"][2]["values"], json!([77, 88]), "{body}");

    // The same bytes uploaded through B are the version A stored.
    let (status, body) = upload(&b, "conv", &wasm::transform_module("conv_rate_plus_val"));
    assert_eq!((status, &body["unchanged"]), (200, &json!(true)), "{body}");
    assert!(!dir.join("data-a/registry").exists());
    assert!(!dir.join("data-b/transforms/modules").exists());
}

/// Spawns `wafer materialize` (own data directory) and returns it once it
/// has printed its first progress line: it holds its views' claims then.
fn materialization_in_progress(dir: &Path) -> std::process::Child {
    let mut child = common::ChildGuard::new(
        std::process::Command::new(env!("CARGO_BIN_EXE_wafer"))
            .arg("-C")
            .arg(dir)
            .args(["materialize", "1970-01-01T00:00:00Z", "now"])
            .env("WAFER_DATA_DIR", own_data_dir(dir, "cli"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let said = common::stderr_lines(child.child());
    let mut heard = Vec::new();
    loop {
        match said.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.ends_with(" rows read") => break,
            Ok(line) => heard.push(line),
            Err(e) => panic!("no progress from the materialization ({e}): {heard:?}"),
        }
    }
    child.disarm()
}

#[test]
fn a_second_materialization_from_another_process_is_refused_until_the_first_ends() {
    let cluster = RedisCluster::start(3);
    let root = project(&cluster, 100_000, 4);
    let dir = root.path();
    run(dir, &["apply"]);
    let server = replica(dir, "a", &[]);

    // The CLI holds the claim: the replica refuses, as Feast does, with 409.
    let mut cli_run = materialization_in_progress(dir);
    let body =
        json!({"start_ts": "1970-01-01T00:00:00Z", "end_ts": chrono::Utc::now().to_rfc3339()});
    let (status, refused) = server.post("/materialize", body.clone());
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["feature_views"], json!(["driver_hourly_stats"]));

    // Killed, the CLI run never releases its claim: it lapses after
    // claim_ttl_ms (1 s), and the replica's run then goes through.
    cli_run.kill().unwrap();
    cli_run.wait().unwrap();
    let done = eventually("the claim lapsing", || {
        let (status, body) = server.post("/materialize", body.clone());
        match status {
            409 => None,
            _ => Some((status, body)),
        }
    });
    assert_eq!(done.0, 200, "{}", done.1);
    assert_eq!(done.1["feature_views"][0]["rows_written"], json!(100_000));
}

/// Sums a counter's samples with `labels` in a /metrics text.
fn counter(metrics: &str, name: &str, labels: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn metrics(server: &Server) -> String {
    let (status, text) = http(server.address, "GET", "/metrics", None, b"");
    assert_eq!(status, 200);
    text
}

#[test]
fn scheduled_materialization_runs_each_tick_on_exactly_one_replica() {
    let cluster = RedisCluster::start(3);
    let root = project(&cluster, 200, 6);
    let dir = root.path();
    run(dir, &["apply"]);
    let every = ["--materialize-every", "1s"];
    let a = replica(dir, "a", &every);
    let mut b = replica(dir, "b", &every);
    let expected = cli::newest_driver_stats(dir);

    // Nothing was materialized by hand: the schedule fills the store.
    eventually("a scheduled run", || {
        let (status, body) = lookup_all(&a, &expected);
        (status == 200 && body["results"][1]["statuses"][0] == "PRESENT").then_some(())
    });
    check_lookups(&b, &expected);
    let ran = |server: &Server| {
        counter(
            &metrics(server),
            "wafer_scheduled_materializations_total",
            "outcome=\"ran\"",
        )
    };
    eventually("five ticks", || (ran(&a) + ran(&b) >= 5).then_some(()));

    // Every tick ran once: one record per tick, each at a tick's end,
    // none twice, as many as the replicas say they ran.
    let records = |dir: &Path| {
        let store = wafer::FeatureStore::open(dir).unwrap();
        store.registry().materializations().unwrap()
    };
    let (ran_a, ran_b) = (ran(&a), ran(&b));
    let ends: Vec<i64> = records(dir)
        .iter()
        .filter(|r| r.view == "driver_hourly_stats")
        .map(|r| r.end.timestamp_millis())
        .collect();
    let mut distinct = ends.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ends.len(), "a tick ran twice: {ends:?}");
    assert!(ends.iter().all(|end| end % 1000 == 0), "{ends:?}");
    // A tick may finish between the two reads: allow the one in flight.
    let ran_total = ran_a + ran_b;
    assert!(
        (ran_total as usize..=ran_total as usize + 2).contains(&ends.len()),
        "{} records, {ran_total} runs",
        ends.len()
    );
    let skipped = counter(
        &metrics(&a),
        "wafer_scheduled_materializations_total",
        "other_replica",
    ) + counter(
        &metrics(&b),
        "wafer_scheduled_materializations_total",
        "other_replica",
    );
    assert!(skipped >= 1, "the replicas never met at a tick: {skipped}");

    // One replica killed: the other goes on running every tick.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let before = ran(&a);
    eventually("the survivor taking every tick", || {
        (ran(&a) >= before + 3).then_some(())
    });
}

#[test]
fn a_failed_cluster_node_fails_lookups_clearly_and_they_recover() {
    let mut cluster = RedisCluster::start(3);
    let root = project(&cluster, 300, 6);
    let dir = root.path();
    run(dir, &["apply"]);
    run(dir, &["materialize", "1970-01-01T00:00:00Z", "now"]);
    let server = replica(dir, "a", &[]);
    let expected = cli::newest_driver_stats(dir);
    check_lookups(&server, &expected);

    // Node 1 dies: lookups touching it (every lookup of all drivers) fail
    // with 503 and a JSON error; none answers a wrong value.
    cluster.kill(1);
    let failed = eventually("a lookup failing", || {
        let (status, body) = lookup_all(&server, &expected);
        match status {
            200 => {
                check_body(&body, &expected);
                None
            }
            _ => Some((status, body)),
        }
    });
    assert_eq!(failed.0, 503, "{}", failed.1);
    assert!(failed.1["message"].is_string(), "{}", failed.1);
    let (status, health) = server.get("/health");
    assert_eq!(status, 503, "{health}");

    // Back with its data: the cluster heals and lookups answer right again.
    cluster.restart(1);
    cluster.wait_ok();
    let body = eventually("lookups recovering", || {
        let (status, body) = lookup_all(&server, &expected);
        match status {
            200 => Some(body),
            503 => None,
            other => panic!("{other}: {body}"),
        }
    });
    check_body(&body, &expected);
    assert_eq!(server.get("/health").0, 200);
}

/// Slots move between masters while a replica serves (`redis-cli --cluster
/// reshard`, keys migrated one slot at a time: ASK while a slot moves,
/// MOVED after): every lookup answers the right values, and pushes land.
#[test]
fn lookups_and_pushes_follow_slots_moving_between_masters() {
    let cluster = RedisCluster::start(3);
    let root = project(&cluster, 2_000, 4);
    let dir = root.path();
    run(dir, &["apply"]);
    run(dir, &["materialize", "1970-01-01T00:00:00Z", "now"]);
    let server = std::sync::Arc::new(replica(dir, "a", &[]));
    let expected = std::sync::Arc::new(cli::newest_driver_stats(dir));
    check_lookups(&server, &expected);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _stop_on_failure = common::StopOnDrop(stop.clone());
    let lookups = {
        let (server, expected, stop) = (server.clone(), expected.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut done = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                check_lookups(&server, &expected);
                done += 1;
            }
            done
        })
    };
    let id = |node: usize| {
        let reply = cluster.command(node, &["CLUSTER", "MYID"]);
        reply.lines().nth(1).unwrap().trim().to_string()
    };
    let (from, to) = (id(1), id(0));
    let before = std::time::Instant::now();
    let output = Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", cluster.ports[0]),
        ])
        .args(["--cluster-from", &from, "--cluster-to", &to])
        .args(["--cluster-slots", "3000", "--cluster-yes"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Pushes after the move go to the slots' new owner.
    let now = chrono::Utc::now().to_rfc3339();
    let ids: Vec<i64> = (0..200).map(|i| 1_000_000 + i).collect();
    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "online",
               "df": {"driver_id": ids, "event_timestamp": vec![now.clone(); 200],
                      "conv_rate": vec![0.5; 200], "acc_rate": vec![0.5; 200],
                      "avg_daily_trips": (0..200).collect::<Vec<i64>>()}}),
    );
    assert_eq!(status, 200, "{body}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = lookups
        .join()
        .expect("every lookup during the reshard was right");
    assert!(
        done > 0,
        "no lookup ran during the {:?} reshard",
        before.elapsed()
    );
    check_lookups(&server, &expected);
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:avg_daily_trips"], "entities": {"driver_id": ids}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][1]["values"],
        json!((0..200).collect::<Vec<i64>>())
    );
}
