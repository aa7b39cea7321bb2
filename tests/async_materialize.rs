//! `POST /materialize?async=true` and `/materialize-incremental?async=true`
//! as Feast has them, through a real `wafer serve` over a real Redis: 202
//! with the views once the run holds them, the data online afterwards and
//! the view's `state` in the registry; 409 with Feast's body while another
//! process holds a view (its claim written into Redis by hand); a failed
//! background run shown on the view until a run succeeds.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/replica.rs"]
mod replica;
#[path = "common/server.rs"]
mod server;

use serde_json::{json, Value};

use replica::eventually;
use server::Server;

fn view(server: &Server) -> Value {
    let (status, body) = server.get("/registry/feature-views/driver_hourly_stats");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn async_materialization_answers_202_and_shows_its_state() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    cli::init_example(dir, 40, 12);
    cli::ok(cli::wafer(dir, &["apply"]));
    let redis = common::RedisServer::start();
    let url = redis.url();
    let env = [
        ("WAFER_ONLINE_STORE_TYPE", "redis"),
        ("WAFER_ONLINE_STORE_URL", url.as_str()),
    ];
    let server = Server::start(dir, &env);
    assert_eq!(view(&server)["state"], "CREATED");

    // Another process's run holds the view: 409, Feast's body.
    let claim = "{wafer:materializing:14:driver_ranking}:driver_hourly_stats";
    redis.command(&["SET", claim, "other-process", "PX", "60000"]);
    let (status, body) = server.post(
        "/materialize-incremental?async=true",
        json!({"end_ts": "now"}),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["feature_views"],
        json!(["driver_hourly_stats"]),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("MATERIALIZING"),
        "{body}"
    );
    // force=true does not take a live run's views.
    let (status, _) = server.post(
        "/materialize-incremental?async=true&force=true",
        json!({"end_ts": "now"}),
    );
    assert_eq!(status, 409);
    redis.command(&["DEL", claim]);

    // Accepted, then done in the background: the values are online.
    // Flags read as Feast's server reads them (Python's `True`).
    let (status, body) = server.post(
        "/materialize?async=True",
        json!({"start_ts": "1970-01-01T00:00:00Z", "end_ts": "now"}),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"status": "accepted", "feature_views": ["driver_hourly_stats"]})
    );
    let state = eventually("the background run to finish", || {
        let view = view(&server);
        (view["state"] == "AVAILABLE_ONLINE").then_some(view)
    });
    assert!(
        state["last_materialization"]["rows_written"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(state.get("last_materialization_error").is_none(), "{state}");
    let expected = cli::newest_driver_stats(dir);
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:avg_daily_trips"], "entities": {"driver_id": [1001]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1]["values"][0], json!(expected[&1001].2));

    // A background run that fails once it holds the view: the view says
    // so until a run of it succeeds.
    let stats = dir.join("data/driver_stats");
    let moved = dir.join("data/moved");
    std::fs::rename(&stats, &moved).unwrap();
    let (status, body) = server.post(
        "/materialize-incremental?async=true",
        json!({"end_ts": "now"}),
    );
    assert_eq!(status, 202, "{body}");
    let failed = eventually("the failure to show", || {
        let view = view(&server);
        view.get("last_materialization_error").cloned()
    });
    assert!(
        failed.as_str().unwrap().contains("driver_stats"),
        "{failed}"
    );
    std::fs::rename(&moved, &stats).unwrap();
    let (status, body) = server.post("/materialize-incremental", json!({"end_ts": "now"}));
    assert_eq!(status, 200, "{body}");
    assert!(view(&server).get("last_materialization_error").is_none());

    // A bad flag is a 400, not a silent synchronous run.
    let (status, _) = server.post("/materialize?async=maybe", json!({}));
    assert_eq!(status, 400);
}
