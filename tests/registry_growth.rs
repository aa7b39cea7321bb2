//! Files that grow with use, read by a running server without reading them
//! whole on every request: registry versions are listed a page at a time
//! (only the page's versions are read), and the materialization log is
//! followed from where the last request left it, picking up runs other
//! processes append (torn lines skipped).

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use serde_json::{json, Value};
use server::Server;

/// GET `path`: status, `X-Total-Count`, body.
fn get_with_total(server: &Server, path: &str) -> (u16, Option<u64>, Value) {
    let mut stream = TcpStream::connect(server.address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let total = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-total-count")
            .then(|| value.trim().parse().ok())?
    });
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (status, total, body)
}

fn versions(body: &Value) -> Vec<u64> {
    body.as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

/// Applies six more versions (seven in all), each adding a service.
fn apply_versions(dir: &Path) {
    let original = std::fs::read_to_string(dir.join("definitions.yaml")).unwrap();
    let mut services = String::new();
    for i in 0..6 {
        services.push_str(&format!(
            "  - name: extra_{i}\n    features:\n      - driver_hourly_stats: [conv_rate]\n"
        ));
        let definitions = original.replace("push_sources:", &format!("{services}\npush_sources:"));
        std::fs::write(dir.join("definitions.yaml"), definitions).unwrap();
        cli::ok(cli::wafer(dir, &["apply"]));
    }
}

#[test]
fn registry_versions_are_listed_a_page_at_a_time() {
    let project = cli::example_project();
    let dir = project.path();
    apply_versions(dir);
    let server = Server::start(dir, &[]);

    let page = |path: &str| {
        let (status, total, body) = get_with_total(&server, path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(total, Some(7), "{path}");
        versions(&body)
    };
    // Fewer versions than a page: all of them, oldest first, as before.
    assert_eq!(page("/registry/versions"), [1, 2, 3, 4, 5, 6, 7]);
    let (_, _, body) = get_with_total(&server, "/registry/versions");
    assert_eq!(body[6]["changes"][0]["name"], "extra_5", "{body}");
    // Without an offset, the newest `limit`; with one, from the oldest.
    assert_eq!(page("/registry/versions?limit=3"), [5, 6, 7]);
    assert_eq!(page("/registry/versions?offset=0&limit=3"), [1, 2, 3]);
    assert_eq!(page("/registry/versions?offset=5&limit=3"), [6, 7]);
    assert_eq!(page("/registry/versions?offset=9"), Vec::<u64>::new());
    assert_eq!(
        page("/registry/versions?limit=1000000"),
        [1, 2, 3, 4, 5, 6, 7]
    );
    let (status, body) = server.get("/registry/versions?limit=many");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["class"], "BadRequest", "{body}");

    // Only the page's versions are read: an unreadable old version spoils
    // the pages that hold it, not the others.
    std::fs::write(dir.join(".wafer/registry/v0000000001.json"), b"{not json").unwrap();
    assert_eq!(page("/registry/versions?limit=3"), [5, 6, 7]);
    assert_eq!(page("/registry/versions?offset=1&limit=2"), [2, 3]);
    let (status, _, body) = get_with_total(&server, "/registry/versions?offset=0");
    assert_eq!(status, 500, "{body}");
}

#[test]
fn runs_another_process_records_show_up_in_browsing_and_metrics() {
    let project = cli::example_project();
    let dir = project.path();
    let server = Server::start(dir, &[]);
    let view = || server.get("/registry/feature-views/driver_hourly_stats").1;
    let first = view()["last_materialization"].clone();
    assert!(first["rows_written"].as_u64().unwrap() > 0, "{first}");

    // Another process appends a run with a later end, after a torn line.
    let log = dir.join(".wafer/registry/materializations.jsonl");
    let later = json!({"view": "driver_hourly_stats", "start": "2100-01-01T00:00:00Z",
                       "end": "2100-01-02T00:00:00Z", "rows_written": 7,
                       "finished_at": "2100-01-02T00:00:01Z"});
    let mut file = std::fs::File::options().append(true).open(&log).unwrap();
    file.write_all(b"{\"view\": \"driver_hourly_st").unwrap();
    file.write_all(format!("\n{later}\n").as_bytes()).unwrap();
    drop(file);
    assert_eq!(view()["last_materialization"], later);
    let (status, text) = server.call("GET", "/metrics", None, "");
    assert_eq!(status, 200);
    let end = chrono::DateTime::parse_from_rfc3339("2100-01-02T00:00:00Z").unwrap();
    let needle = format!(
        "wafer_materialized_until_timestamp_seconds{{view=\"driver_hourly_stats\"}} {}",
        end.timestamp()
    );
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.lines().any(|l| l.starts_with(&needle)),
        "{needle} not in:\n{text}"
    );

    // A run through this server is picked up too; the later end stays.
    let (status, body) = server.post(
        "/materialize",
        json!({"start_ts": "1970-01-01", "end_ts": "now", "feature_views": ["driver_hourly_stats"]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(view()["last_materialization"], later);
    let (status, body) = server.get("/registry/feature-views");
    assert_eq!(status, 200);
    let listed = body
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "driver_hourly_stats")
        .unwrap();
    assert_eq!(listed["last_materialization"], later);
}
