//! An integer timestamp means one thing everywhere: seconds since the Unix
//! epoch, UTC. The same instant, sent as an integer or as RFC 3339 text,
//! reads the same in `wafer transform test`, in request data of a lookup and
//! in a push, and prints the same (RFC 3339 with `Z`).

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;
#[path = "common/wasm.rs"]
mod wasm;

use cli::{ok, wafer};
use serde_json::{json, Value};
use server::Server;

/// 2023-11-14T22:13:20Z.
const SECONDS: i64 = 1_700_000_000;
const TEXT: &str = "2023-11-14T22:13:20Z";
const HOUR: &str = "2023-11-14T22:00:00Z";

const ON_DEMAND: &str = "
request_sources:
  - name: event_request
    fields: [{name: event_time, type: timestamp}]
on_demand_feature_views:
  - name: event_hours
    transform: event_hour
    sources: [event_request]
    features:
      - {name: event_hour, type: timestamp}
      - {name: event_epoch_seconds, type: int64}
";

#[test]
fn integer_timestamps_are_epoch_seconds_in_transform_test_requests_and_pushes() {
    let project = cli::example_project();
    let dir = project.path();
    let module = wasm::transforms_dir().join("event_hour.wasm");
    ok(wafer(
        dir,
        &[
            "transform",
            "upload",
            "event_hour",
            module.to_str().unwrap(),
        ],
    ));

    // `wafer transform test`: one row or columns, integer or text.
    let transform_test = |input: Value| {
        ok(wafer(
            dir,
            &[
                "transform",
                "test",
                "event_hour",
                "--input",
                &input.to_string(),
            ],
        ))
    };
    let expected = json!({"event_epoch_seconds": SECONDS, "event_hour": HOUR});
    for input in [
        json!({"event_time": SECONDS}),
        json!({"event_time": TEXT}),
        json!({"event_time": "2023-11-14T23:13:20+01:00"}),
    ] {
        let row: Value = serde_json::from_str(transform_test(input.clone()).trim()).unwrap();
        assert_eq!(row, expected, "{input}");
    }
    let out = transform_test(json!({"event_time": [SECONDS, TEXT]}));
    let rows: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows, vec![expected.clone(), expected.clone()]);

    // Request data of a lookup.
    std::fs::write(dir.join("on_demand.yaml"), ON_DEMAND).unwrap();
    std::fs::write(
        dir.join("wafer.yaml"),
        "project: driver_ranking\ndefinitions: [definitions.yaml, composite.yaml, on_demand.yaml]\n",
    )
    .unwrap();
    ok(wafer(dir, &["apply"]));
    let server = Server::start(dir, &[]);
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate", "event_hours:event_hour",
                            "event_hours:event_epoch_seconds"],
               "entities": {"driver_id": [1001, 1002], "event_time": [SECONDS, TEXT]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metadata"]["feature_names"],
        json!([
            "driver_id",
            "conv_rate",
            "event_hour",
            "event_epoch_seconds"
        ])
    );
    assert_eq!(body["results"][2]["values"], json!([HOUR, HOUR]), "{body}");
    assert_eq!(
        body["results"][3]["values"],
        json!([SECONDS, SECONDS]),
        "{body}"
    );

    // A push: the event time of drivers with no other rows.
    let (status, body) = server.post(
        "/push",
        json!({"push_source_name": "driver_stats_push", "to": "online",
               "df": {"driver_id": [9001, 9002], "event_timestamp": [SECONDS, TEXT],
                      "created": [SECONDS, TEXT], "conv_rate": [0.5, 0.5],
                      "acc_rate": [0.5, 0.5], "avg_daily_trips": [1, 1]}}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post(
        "/get-online-features",
        json!({"features": ["driver_hourly_stats:conv_rate"],
               "entities": {"driver_id": [9001, 9002]}}),
    );
    assert_eq!(status, 200, "{body}");
    // Older than the view's TTL, but stored with that event time.
    assert_eq!(
        body["results"][1]["event_timestamps"],
        json!([TEXT, TEXT]),
        "{body}"
    );
    assert_eq!(
        body["results"][1]["statuses"],
        json!(["OUTSIDE_MAX_AGE", "OUTSIDE_MAX_AGE"])
    );
}
