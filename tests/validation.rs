//! Every kind of bad definition is refused with a message naming the file,
//! the object and the field.

mod common;
#[path = "common/wasm.rs"]
mod wasm;

use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use wafer::FeatureStore;

fn write_stats(dir: &std::path::Path) {
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("not_a_time", DataType::Int64, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2])),
        Arc::new(TimestampNanosecondArray::from(vec![0, 1]).with_timezone("UTC")),
        Arc::new(Float32Array::from(vec![0.5, 0.25])),
        Arc::new(StringArray::from(vec!["a", "b"])),
        Arc::new(Int64Array::from(vec![1, 2])),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns).unwrap();
    common::write_parquet(&dir.join("data/stats.parquet"), &batch);
}

const GOOD: &str = "
entities:
  - name: driver
    join_keys: [{name: driver_id, type: int64}]
sources:
  - name: stats
    path: data/stats.parquet
    timestamp_field: event_timestamp
feature_views:
  - name: driver_stats
    entities: [driver]
    source: stats
    ttl: 2h
    features:
      - {name: conv_rate, type: float32}
      - {name: city, type: string}
feature_services:
  - name: svc
    features:
      - driver_stats: [conv_rate]
";

/// Applies `GOOD` with `from` replaced by `to`, and returns the error text.
fn apply_error(from: &str, to: &str) -> String {
    assert!(
        GOOD.contains(from),
        "test bug: '{from}' not in the definitions"
    );
    let project = common::project(&GOOD.replacen(from, to, 1));
    write_stats(project.path());
    let store = FeatureStore::open(project.path()).unwrap();
    match store.apply() {
        Ok(_) => panic!("applying with '{to}' instead of '{from}' should fail"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            error.contains(part),
            "error should mention '{part}':\n{error}"
        );
    }
    assert!(
        error.contains("definitions.yaml"),
        "error should name the file:\n{error}"
    );
}

#[test]
fn good_definitions_apply() {
    let project = common::project(GOOD);
    write_stats(project.path());
    let store = FeatureStore::open(project.path()).unwrap();
    let outcome = store.apply().unwrap();
    assert_eq!(outcome.version, Some(1));
    assert_eq!(outcome.changes.len(), 4);
}

#[test]
fn unknown_entity() {
    let e = apply_error("entities: [driver]", "entities: [rider]");
    assert_mentions(
        &e,
        &[
            "feature view 'driver_stats'",
            "entities[0]",
            "unknown entity 'rider'",
        ],
    );
}

#[test]
fn unknown_source() {
    let e = apply_error("source: stats", "source: statz");
    assert_mentions(
        &e,
        &[
            "feature view 'driver_stats'",
            "source",
            "unknown source 'statz'",
        ],
    );
}

#[test]
fn unknown_view_and_feature_in_service() {
    let e = apply_error("- driver_stats: [conv_rate]", "- driver_stats: [conv_rat]");
    assert_mentions(&e, &["feature service 'svc'", "has no feature 'conv_rat'"]);
    let e = apply_error("- driver_stats: [conv_rate]", "- nope");
    assert_mentions(
        &e,
        &[
            "feature service 'svc'",
            "features[0]",
            "unknown feature view 'nope'",
        ],
    );
}

#[test]
fn duplicate_names() {
    let e = apply_error(
        "  - name: stats\n",
        "  - name: stats\n    path: data/stats.parquet\n    timestamp_field: event_timestamp\n  - name: stats\n",
    );
    assert_mentions(
        &e,
        &["source 'stats'", "name", "duplicate source name 'stats'"],
    );
    let e = apply_error(
        "      - {name: city, type: string}",
        "      - {name: conv_rate, type: float32}",
    );
    assert_mentions(
        &e,
        &[
            "feature view 'driver_stats'",
            "features[1].name",
            "duplicate feature 'conv_rate'",
        ],
    );
}

#[test]
fn feature_type_mismatch() {
    let e = apply_error(
        "{name: conv_rate, type: float32}",
        "{name: conv_rate, type: float64}",
    );
    assert_mentions(
        &e,
        &[
            "feature view 'driver_stats'",
            "features[0].type",
            "declared float64",
            "is float32",
        ],
    );
}

#[test]
fn missing_feature_column() {
    let e = apply_error("{name: city, type: string}", "{name: town, type: string}");
    assert_mentions(
        &e,
        &[
            "features[1].type",
            "feature 'town'",
            "missing from source 'stats'",
        ],
    );
}

#[test]
fn missing_or_wrong_timestamp_column() {
    let e = apply_error("timestamp_field: event_timestamp", "timestamp_field: ts");
    assert_mentions(
        &e,
        &[
            "source 'stats'",
            "timestamp_field",
            "column 'ts' is missing",
        ],
    );
    let e = apply_error(
        "timestamp_field: event_timestamp",
        "timestamp_field: not_a_time",
    );
    assert_mentions(
        &e,
        &["source 'stats'", "timestamp_field", "not a timestamp"],
    );
    let e = apply_error(
        "timestamp_field: event_timestamp",
        "timestamp_field: event_timestamp\n    created_timestamp_column: created",
    );
    assert_mentions(
        &e,
        &[
            "source 'stats'",
            "created_timestamp_column",
            "column 'created' is missing",
        ],
    );
}

#[test]
fn join_key_missing_or_mistyped() {
    let e = apply_error(
        "{name: driver_id, type: int64}",
        "{name: rider_id, type: int64}",
    );
    assert_mentions(
        &e,
        &[
            "feature view 'driver_stats'",
            "join key rider_id",
            "missing from source 'stats'",
        ],
    );
    let e = apply_error(
        "{name: driver_id, type: int64}",
        "{name: driver_id, type: int32}",
    );
    assert_mentions(&e, &["join key driver_id", "declared int32", "is int64"]);
    let e = apply_error(
        "{name: driver_id, type: int64}",
        "{name: driver_id, type: float64}",
    );
    assert_mentions(
        &e,
        &[
            "entity 'driver'",
            "join_keys[0].type",
            "cannot be a join key",
        ],
    );
}

#[test]
fn missing_source_files() {
    let e = apply_error("path: data/stats.parquet", "path: data/nothing/*.parquet");
    assert_mentions(&e, &["source 'stats'", "path", "no Parquet file matches"]);
}

#[test]
fn field_mapping_is_followed() {
    let e = apply_error(
        "timestamp_field: event_timestamp\n",
        "timestamp_field: event_timestamp\n    field_mapping: {city: town}\n",
    );
    // The view still asks for `city`, which the mapping renamed to `town`.
    assert_mentions(&e, &["feature 'city'", "missing from source"]);
    let project = common::project(
        &GOOD
            .replacen(
                "timestamp_field: event_timestamp\n",
                "timestamp_field: event_timestamp\n    field_mapping: {city: town}\n",
                1,
            )
            .replacen(
                "{name: city, type: string}",
                "{name: town, type: string}",
                1,
            ),
    );
    write_stats(project.path());
    FeatureStore::open(project.path()).unwrap().apply().unwrap();
}

#[test]
fn bad_yaml_and_bad_types_name_the_place() {
    let e = apply_error("type: float32", "type: float");
    assert!(
        e.contains("definitions.yaml") && e.contains("unknown type 'float'"),
        "{e}"
    );
    let e = apply_error("ttl: 2h", "ttl: soon");
    assert!(e.contains("invalid ttl 'soon'"), "{e}");
    let e = apply_error("    ttl: 2h", "    ttl: 2h\n    colour: red");
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let broken = GOOD
        .replacen("entities: [driver]", "entities: [rider]", 1)
        .replacen(
            "{name: conv_rate, type: float32}",
            "{name: conv_rate, type: int64}",
            1,
        );
    let project = common::project(&broken);
    write_stats(project.path());
    let e = FeatureStore::open(project.path())
        .unwrap()
        .apply()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown entity 'rider'") && e.contains("declared int64"),
        "{e}"
    );
    assert!(e.starts_with("2 problem(s)"), "{e}");
}

/// On-demand views are checked against their module's schema at apply: each
/// mismatch names the view, the field and both sides.
#[test]
fn on_demand_views_are_checked_against_their_transform() {
    let odfv = |request_fields: &str, sources: &str, features: &str, name: &str| {
        format!(
            "{GOOD}request_sources:
  - name: req
    fields: [{request_fields}]
on_demand_feature_views:
  - name: {name}
    transform: conv
    sources: [{sources}]
    features: [{features}]
"
        )
    };
    let good_fields = "{name: conv_rate, type: float64}, {name: val_to_add, type: int64}";
    let output = "{name: conv_rate_plus_val, type: float64}";
    let dir = common::project(&odfv(good_fields, "req", output, "scored"));
    write_stats(dir.path());
    let store = FeatureStore::open(dir.path()).unwrap();
    let apply = |text: &str| {
        std::fs::write(dir.path().join("definitions.yaml"), text).unwrap();
        store.apply().map(|_| ()).map_err(|e| e.to_string())
    };

    let error = apply(&odfv(good_fields, "req", output, "scored")).unwrap_err();
    assert!(
        error.contains("on-demand feature view 'scored': transform: unknown transform 'conv'"),
        "{error}"
    );

    store
        .upload_transform("conv", &wasm::transform_module("conv_rate_plus_val"))
        .unwrap();
    let cases = [
        (
            odfv(good_fields, "driver_stats, req", output, "scored"),
            "input 'conv_rate' is provided by both feature view 'driver_stats' and request source 'req'",
        ),
        (
            odfv(
                "{name: conv_rate, type: float64}, {name: val_to_add, type: string}",
                "req",
                output,
                "scored",
            ),
            "input 'val_to_add' is string in request source 'req' but transform 'conv' takes int64",
        ),
        (
            odfv("{name: conv_rate, type: float64}", "req", output, "scored"),
            "takes input 'val_to_add' (int64), which none of the sources provides",
        ),
        (
            odfv(good_fields, "req", "{name: conv_rate_plus_val, type: float32}", "scored"),
            "features[0].type: declared float32 but transform 'conv' produces float64",
        ),
        (
            odfv(good_fields, "req", "{name: plus, type: float64}", "scored"),
            "produces no output 'plus' (its outputs: conv_rate_plus_val)",
        ),
        (
            odfv(good_fields, "req, nowhere", output, "scored"),
            "sources[1]: unknown feature view or request source 'nowhere'",
        ),
        (
            odfv(good_fields, "req", output, "driver_stats"),
            "duplicate feature view name 'driver_stats'",
        ),
        (
            odfv(good_fields, "req", output, "scored")
                .replace("    transform: conv\n", "    transform: conv\n    write_to_online_store: true\n"),
            "write_to_online_store: request source 'req' cannot feed a view computed when rows are written",
        ),
        (
            odfv(good_fields, "", output, "scored")
                .replace("    transform: conv\n", "    transform: conv\n    write_to_online_store: true\n"),
            "write_to_online_store: needs exactly one feature view as its source (has 0)",
        ),
    ];
    for (text, expected) in cases {
        let error = apply(&text).unwrap_err();
        assert!(
            error.contains(expected),
            "expected {expected:?} in:\n{error}"
        );
    }

    apply(&odfv(good_fields, "req", output, "scored")).unwrap();
    let applied = store.applied().unwrap();
    assert_eq!(
        applied.definitions.on_demand_feature_views[0].name,
        "scored"
    );
    assert!(applied
        .changes
        .iter()
        .any(|c| c.to_string() == "+ add on-demand feature view 'scored'"));
    // float32 features widen to the module's float64 input.
    apply(&odfv(
        "{name: val_to_add, type: int64}",
        "driver_stats, req",
        output,
        "scored",
    ))
    .unwrap();
    // Pinned by hash works too; a pin to a hash that was never uploaded does not.
    let sha = store
        .transforms()
        .unwrap()
        .resolve("conv")
        .unwrap()
        .sha256()
        .to_string();
    let pinned = odfv(good_fields, "req", output, "scored")
        .replace("transform: conv", &format!("transform: conv@sha256:{sha}"));
    apply(&pinned).unwrap();
    let bad_pin = pinned.replace(&sha, &"ab".repeat(32));
    let error = apply(&bad_pin).unwrap_err();
    assert!(error.contains("has no version"), "{error}");
}

/// The online record stores a feature name's length in one byte: a longer
/// name used to materialize and then always read NOT_FOUND.
#[test]
fn names_longer_than_the_record_layout_allows() {
    let long = "c".repeat(256);
    let e = apply_error(
        "{name: city, type: string}",
        &format!("{{name: {long}, type: string}}"),
    );
    assert_mentions(&e, &["feature view 'driver_stats'", "at most 255"]);
    // 255 is still fine as a name (the column is missing, not the name).
    let ok = "c".repeat(255);
    let e = apply_error(
        "{name: city, type: string}",
        &format!("{{name: {ok}, type: string}}"),
    );
    assert!(!e.contains("at most 255"), "{e}");
}

/// A TTL so long that `now - ttl` overflows made materialization panic.
#[test]
fn ttl_over_a_hundred_years() {
    let e = apply_error("ttl: 2h", "ttl: 1000000y");
    assert_mentions(
        &e,
        &[
            "feature view 'driver_stats'",
            "ttl",
            "longer than 100 years",
        ],
    );
}
