//! Several `wafer serve` processes sharing a registry in one real
//! `redis-server`: what they serve while it is down, and module versions
//! reaching a replica that already runs the name.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/replica.rs"]
mod replica;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use std::time::{Duration, Instant};

use cli::wafer_with;
use replica::{eventually, own_data_dir, replica, run, upload};
use serde_json::json;
use server::Server;

/// Lookups read nothing from the registry's Redis: with it gone, a server
/// goes on answering lookups (an on-demand view's included) with the
/// version and modules it loaded, while writes to the registry fail
/// clearly.
#[test]
fn lookups_go_on_while_the_registry_redis_is_down() {
    let registry = common::RedisServer::start();
    let online = common::RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    cli::init_example(dir, 50, 6);
    std::fs::write(
        dir.join("wafer.yaml"),
        format!(
            "project: driver_ranking\n\
             registry: {{type: redis, url: \"{}\"}}\n\
             online_store: {{type: redis, url: \"{}\"}}\n\
             server: {{registry_refresh_ms: 100}}\n",
            registry.url(),
            online.url()
        ),
    )
    .unwrap();
    run(dir, &["apply"]);
    run(dir, &["materialize", "1970-01-01T00:00:00Z", "now"]);
    let server = replica(dir, "a", &[]);
    let (status, body) = upload(
        &server,
        "conv",
        &wasm::transform_module("conv_rate_plus_val"),
    );
    assert_eq!(status, 201, "{body}");
    cli::add_scored_view(dir);
    run(dir, &["apply"]);
    let request = json!({
        "features": ["scored:conv_rate_plus_val", "driver_hourly_stats:avg_daily_trips"],
        "entities": {"driver_id": [1001], "conv_rate": [0.5], "val_to_add": [2]},
    });
    let expected = cli::newest_driver_stats(dir)[&1001].2;
    eventually("the new view served", || {
        (server.post("/get-online-features", request.clone()).0 == 200).then_some(())
    });

    drop(registry);
    // Many times the transforms' resolution TTL (1 s) and the refresh
    // interval: every lookup still answers from what was loaded.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let (status, body) = server.post("/get-online-features", request.clone());
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["results"][1]["values"], json!([2.5]), "{body}");
        assert_eq!(body["results"][2]["values"], json!([expected]), "{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.get("/health").0, 200);
    let (status, body) = upload(&server, "other", &wasm::transform_module("email_domain"));
    assert_eq!(status, 503, "{body}");
    let output = wafer_with(
        dir,
        &["apply"],
        &[("WAFER_DATA_DIR", &own_data_dir(dir, "cli"))],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unavailable"), "{stderr}");
}

/// A module version uploaded through one replica replaces, on another
/// replica that already runs the name, the version it resolved: within a
/// few refresh intervals, without a restart, and without that replica's
/// lookups reading module storage.
#[test]
fn a_new_module_version_reaches_a_replica_already_running_the_name() {
    let redis = common::RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    cli::init_example(dir, 20, 3);
    std::fs::write(
        dir.join("wafer.yaml"),
        format!(
            "project: driver_ranking\n\
             registry: {{type: redis, url: \"{0}\"}}\n\
             online_store: {{type: redis, url: \"{0}\"}}\n\
             server: {{registry_refresh_ms: 100}}\n",
            redis.url()
        ),
    )
    .unwrap();
    let definitions = std::fs::read_to_string(dir.join("definitions.yaml")).unwrap()
        + "request_sources:
  - name: x_request
    fields: [{name: x, type: float64}]
on_demand_feature_views:
  - name: echo
    transform: t
    sources: [x_request]
    features: [{name: y, type: float64}]
";
    std::fs::write(dir.join("definitions.yaml"), definitions).unwrap();
    let a = replica(dir, "a", &[]);
    let b = replica(dir, "b", &[]);
    let identity = wasm::wat_module("", wasm::IDENTITY_BODY, "", wasm::F64_SCHEMA);
    // Same schema, other bytes: y is 0 whatever x is.
    let zero = wasm::wat_module(
        "",
        r#"(local $n i32)
    (local.set $n (i32.load offset=4 (local.get $desc)))
    (memory.fill (i32.load offset=36 (local.get $desc)) (i32.const 0)
      (i32.mul (local.get $n) (i32.const 8)))
    (memory.fill (i32.load offset=32 (local.get $desc)) (i32.const 255)
      (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))
    (i32.const 0)"#,
        "",
        wasm::F64_SCHEMA,
    );
    assert_eq!(upload(&a, "t", &identity).0, 201);
    run(dir, &["apply"]);
    let request = json!({"features": ["echo:y"], "entities": {"driver_id": [1001], "x": [2.5]}});
    let y = |server: &Server| {
        let (status, body) = server.post("/get-online-features", request.clone());
        assert!(status == 200 || status == 503, "{status}: {body}");
        body["results"][0]["values"][0].as_f64()
    };
    eventually("A and B running version 1", || {
        (y(&a) == Some(2.5) && y(&b) == Some(2.5)).then_some(())
    });

    let (status, body) = upload(&a, "t", &zero);
    assert_eq!(status, 201, "{body}");
    assert_eq!(y(&a), Some(0.0), "the uploading replica at once");
    let uploaded = Instant::now();
    while y(&b) != Some(0.0) {
        assert!(
            uploaded.elapsed() < Duration::from_secs(5),
            "B still runs the old version after 5 s (refresh every 100 ms)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
