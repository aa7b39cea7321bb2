//! The `wafer` binary end to end on the example project.

#[path = "common/cli.rs"]
mod cli;
mod common;

use arrow::array::{Array, Float32Array};
use cli::{fails, ok, wafer};

#[test]
fn init_apply_and_retrieve() {
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("demo");
    let p = project.to_str().unwrap();
    ok(wafer(
        root.path(),
        &[
            "init",
            p,
            "--drivers",
            "50",
            "--hours",
            "30",
            "--entity-rows",
            "200",
        ],
    ));
    assert!(project.join("wafer.yaml").exists());

    let plan = ok(wafer(&project, &["plan"]));
    assert!(
        plan.contains("+ add feature view 'driver_hourly_stats'"),
        "{plan}"
    );
    let applied = ok(wafer(&project, &["apply"]));
    assert!(applied.contains("Applied registry version 1"), "{applied}");
    assert!(ok(wafer(&project, &["apply"])).contains("No changes"));

    let list = ok(wafer(&project, &["registry", "list"]));
    assert!(
        list.contains("driver_hourly_stats") && list.contains("driver_activity"),
        "{list}"
    );
    let show = ok(wafer(
        &project,
        &["registry", "show", "driver_hourly_stats"],
    ));
    assert!(
        show.contains("\"ttl\": \"1day\"") && show.contains("conv_rate"),
        "{show}"
    );
    let history = ok(wafer(&project, &["registry", "history"]));
    assert!(history.contains("version 1"), "{history}");

    // By feature list into CSV, and by service into Parquet.
    let csv = project.join("out.csv");
    ok(wafer(
        &project,
        &[
            "historical",
            "--entities",
            "data/entities.parquet",
            "--features",
            "driver_hourly_stats:conv_rate,driver_hourly_stats:avg_daily_trips",
            "--output",
            csv.to_str().unwrap(),
            "--full-feature-names",
        ],
    ));
    let text = std::fs::read_to_string(&csv).unwrap();
    let header = text.lines().next().unwrap();
    assert_eq!(header, "driver_id,event_timestamp,trip_completed,driver_hourly_stats__conv_rate,driver_hourly_stats__avg_daily_trips");
    assert_eq!(text.lines().count(), 201);

    let parquet = project.join("out.parquet");
    ok(wafer(
        &project,
        &[
            "historical",
            "--entities",
            "data/entities.parquet",
            "--feature-service",
            "driver_activity",
            "--output",
            parquet.to_str().unwrap(),
        ],
    ));
    let result = common::read_parquet(&parquet);
    assert_eq!(result.num_rows(), 200);
    let conv = result.column_by_name("conv_rate").unwrap();
    let conv = conv.as_any().downcast_ref::<Float32Array>().unwrap();
    // Entity rows run from an hour before the data to two days after it with
    // a one-day TTL: some find values, some do not.
    assert!(
        conv.null_count() > 0 && conv.null_count() < 200,
        "nulls: {}",
        conv.null_count()
    );

    // Materialize, look up, see freshness.
    assert!(ok(wafer(
        &project,
        &["registry", "show", "driver_hourly_stats"]
    ))
    .contains("never materialized"));
    let done = ok(wafer(&project, &["materialize-incremental", "now"]));
    assert!(
        done.contains("driver_hourly_stats: wrote 50 rows"),
        "{done}"
    );
    let lookup = ok(wafer(
        &project,
        &[
            "online",
            "--feature-service",
            "driver_activity",
            "--entity",
            "driver_id=1001",
        ],
    ));
    assert!(
        lookup.contains("conv_rate") && lookup.matches("PRESENT").count() == 4,
        "{lookup}"
    );
    let missing = ok(wafer(
        &project,
        &[
            "online",
            "--features",
            "driver_hourly_stats:conv_rate",
            "--entity",
            "driver_id=99",
        ],
    ));
    assert!(missing.contains("NOT_FOUND"), "{missing}");
    let show = ok(wafer(
        &project,
        &["registry", "show", "driver_hourly_stats"],
    ));
    assert!(
        show.contains("freshness: materialized up to") && show.contains("50 rows"),
        "{show}"
    );
    let e = fails(wafer(&project, &["materialize", "tomorrow", "now"]));
    assert!(e.contains("invalid time 'tomorrow'"), "{e}");
    let e = fails(wafer(
        &project,
        &[
            "online",
            "--features",
            "driver_hourly_stats:conv_rate",
            "--entity",
            "driver_id=abc",
        ],
    ));
    assert!(e.contains("expected int64"), "{e}");

    // The entity file read as CSV gives the same features.
    let again = project.join("again.csv");
    ok(wafer(
        &project,
        &[
            "historical",
            "--entities",
            csv.to_str().unwrap(),
            "--features",
            "driver_hourly_stats:acc_rate",
            "--output",
            again.to_str().unwrap(),
        ],
    ));
    // Value by value: the CSV outputs hold what the Parquet output holds
    // (an empty field is a null).
    let csv_column = |path: &std::path::Path, name: &str| -> Vec<Option<f64>> {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let at = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{name}"));
        lines
            .map(|line| {
                let field = line.split(',').nth(at).unwrap();
                (!field.is_empty()).then(|| field.parse().unwrap())
            })
            .collect()
    };
    let parquet_column = |name: &str| -> Vec<Option<f64>> {
        let column = result.column_by_name(name).unwrap();
        let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Float64).unwrap();
        let column = column
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        column.iter().collect()
    };
    let as_f32 = |v: Vec<Option<f64>>| -> Vec<Option<f32>> {
        v.into_iter().map(|x| x.map(|x| x as f32)).collect()
    };
    assert_eq!(
        as_f32(csv_column(&csv, "driver_hourly_stats__conv_rate")),
        as_f32(parquet_column("conv_rate"))
    );
    assert_eq!(
        csv_column(&csv, "driver_hourly_stats__avg_daily_trips"),
        parquet_column("avg_daily_trips")
    );
    assert_eq!(
        as_f32(csv_column(&again, "acc_rate")),
        as_f32(parquet_column("acc_rate"))
    );
}

#[test]
fn clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let e = fails(wafer(root.path(), &["apply"]));
    assert!(
        e.contains("no wafer.yaml") && e.contains("wafer init"),
        "{e}"
    );

    let project = root.path().join("demo");
    let p = project.to_str().unwrap();
    ok(wafer(
        root.path(),
        &[
            "init",
            p,
            "--drivers",
            "5",
            "--hours",
            "3",
            "--entity-rows",
            "10",
        ],
    ));
    let e = fails(wafer(
        &project,
        &[
            "historical",
            "--entities",
            "data/entities.parquet",
            "--features",
            "driver_hourly_stats:conv_rate",
            "--output",
            "o.parquet",
        ],
    ));
    assert!(e.contains("wafer apply"), "{e}");
    ok(wafer(&project, &["apply"]));
    let e = fails(wafer(
        &project,
        &[
            "historical",
            "--entities",
            "data/entities.parquet",
            "--features",
            "driver_hourly_stats:speed",
            "--output",
            "o.parquet",
        ],
    ));
    assert!(
        e.contains("feature view 'driver_hourly_stats' has no feature 'speed'"),
        "{e}"
    );
    let e = fails(wafer(
        &project,
        &[
            "historical",
            "--entities",
            "data/entities.parquet",
            "--features",
            "conv_rate",
            "--output",
            "o.parquet",
        ],
    ));
    assert!(e.contains("view:feature"), "{e}");
    let e = fails(wafer(
        &project,
        &[
            "historical",
            "--entities",
            "data/missing.parquet",
            "--feature-service",
            "driver_activity",
            "--output",
            "o.parquet",
        ],
    ));
    assert!(e.contains("missing.parquet"), "{e}");
    let e = fails(wafer(
        &project,
        &[
            "historical",
            "--entities",
            "data/entities.parquet",
            "--feature-service",
            "driver_activity",
            "--output",
            "o.json",
        ],
    ));
    assert!(e.contains("unknown file format"), "{e}");
    let e = fails(wafer(
        &project,
        &[
            "historical",
            "--entities",
            "data/entities.parquet",
            "--feature-service",
            "nope",
            "--output",
            "o.csv",
        ],
    ));
    assert!(e.contains("unknown feature service 'nope'"), "{e}");
    assert!(
        !project.join("o.csv").exists() && !project.join("o.parquet").exists(),
        "failed retrievals leave no output"
    );
}
