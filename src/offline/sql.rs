//! The SQL of a point-in-time join.
//!
//! Per group of views sharing a source and join keys, the source is joined
//! to the entity rows with one `ASOF LEFT JOIN`: the latest source row at or
//! before the entity timestamp, ties on event time going to the latest
//! created timestamp (see the packed order key below). Each view's TTL is
//! applied afterwards: the as-of row is the newest candidate, so when it is
//! too old, every candidate is. Timestamps of every unit and zone are
//! compared as UTC nanoseconds since the epoch.

use std::path::{Path, PathBuf};

use duckdb::Connection;

use super::output::FileFormat;
use super::OfflineError;
use crate::registry::{FeatureSelection, ViewSelection};

/// The column entity rows carry their timestamp in.
pub const ENTITY_TIMESTAMP: &str = "event_timestamp";

pub(super) const TWO_POW_64: &str = "18446744073709551616";
pub(super) const TWO_POW_63: &str = "9223372036854775808";
const U64_MAX: &str = "18446744073709551615";
pub(super) const I64_MIN: &str = "-9223372036854775808";

/// A SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Nanoseconds since the epoch, UTC, of a timestamp-like column, whatever
/// its unit or zone. `epoch_ns` keeps nanoseconds of `TIMESTAMP_NS` and
/// `TIMESTAMPTZ_NS` (pandas' default), which refuse interval arithmetic.
fn instant(expr: &str, duck_type: &str) -> String {
    let upper = duck_type.to_ascii_uppercase();
    if upper.starts_with("TIMESTAMP") || upper == "DATE" {
        format!("epoch_ns({expr})")
    } else if matches!(upper.as_str(), "BIGINT" | "INTEGER") {
        // Parquet has no second unit: Arrow writes second timestamps as
        // plain integers (validation saw the Arrow type), read as seconds.
        format!("(CAST({expr} AS BIGINT) * 1000000000)")
    } else {
        // Text: offsets are honoured, naive values are UTC.
        format!("epoch_ns(CAST({expr} AS TIMESTAMPTZ))")
    }
}

/// Column names and DuckDB types of a relation.
pub fn describe(
    connection: &Connection,
    relation: &str,
) -> Result<Vec<(String, String)>, duckdb::Error> {
    let mut statement = connection.prepare(&format!("DESCRIBE SELECT * FROM {relation}"))?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    rows.collect()
}

/// A source's files as DuckDB scans them.
pub struct SourceInput {
    scan: String,
    columns: Vec<(String, String)>,
}

impl SourceInput {
    pub fn describe(connection: &Connection, files: &[PathBuf]) -> Result<Self, duckdb::Error> {
        let file_list = files
            .iter()
            .map(|f| literal(&f.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(", ");
        let scan = format!("read_parquet([{file_list}], union_by_name = true)");
        let columns = describe(connection, &scan)?;
        Ok(SourceInput { scan, columns })
    }

    /// The scan, as a relation.
    pub fn scan(&self) -> &str {
        &self.scan
    }

    /// Nanoseconds since the epoch of one of its timestamp columns.
    pub fn instant(&self, column: &str) -> String {
        let duck_type = self
            .columns
            .iter()
            .find(|(n, _)| n == column)
            .map(|(_, t)| t.as_str())
            .unwrap_or("TIMESTAMP");
        instant(&ident(column), duck_type)
    }
}

/// An entity file as DuckDB reads it.
pub struct EntityInput {
    path: PathBuf,
    reader: String,
    /// Column names and DuckDB types, in file order.
    columns: Vec<(String, String)>,
    timestamp_column: String,
}

impl EntityInput {
    pub fn describe(connection: &Connection, path: &Path) -> Result<Self, OfflineError> {
        let fail = |message: String| OfflineError::EntityFile {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_file() {
            return Err(fail("no such file".into()));
        }
        let location = literal(&path.to_string_lossy());
        let reader = match FileFormat::of(path)? {
            FileFormat::Parquet => format!(
                "(SELECT file_row_number AS __wafer_row, * EXCLUDE (file_row_number) FROM read_parquet({location}, file_row_number = true))"
            ),
            FileFormat::Csv => format!(
                "(SELECT row_number() OVER () AS __wafer_row, * FROM read_csv({location}, header = true))"
            ),
        };
        let columns: Vec<(String, String)> = describe(connection, &reader)
            .map_err(|e| fail(e.to_string()))?
            .into_iter()
            .filter(|(name, _)| name != "__wafer_row")
            .collect();
        let timestamp_column = if columns.iter().any(|(name, _)| name == ENTITY_TIMESTAMP) {
            ENTITY_TIMESTAMP.to_string()
        } else {
            let candidates: Vec<&String> = columns
                .iter()
                .filter(|(_, t)| t.to_ascii_uppercase().starts_with("TIMESTAMP"))
                .map(|(name, _)| name)
                .collect();
            match candidates.as_slice() {
                [only] => (*only).clone(),
                [] => return Err(fail(format!("no '{ENTITY_TIMESTAMP}' column and no timestamp column"))),
                _ => {
                    return Err(fail(format!(
                        "no '{ENTITY_TIMESTAMP}' column and several timestamp columns ({}): name one '{ENTITY_TIMESTAMP}'",
                        candidates.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                    )))
                }
            }
        };
        Ok(EntityInput {
            path: path.to_path_buf(),
            reader,
            columns,
            timestamp_column,
        })
    }

    fn column_type(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }
}

/// A group of selected views read with one join: same source, same keys.
struct JoinGroup {
    view_indexes: Vec<usize>,
}

/// Builds the whole retrieval query. `sources[i]` scans the files of
/// `selection.views[i]`'s source.
pub fn point_in_time_query(
    selection: &FeatureSelection,
    entities: &EntityInput,
    sources: &[SourceInput],
) -> Result<String, OfflineError> {
    let entity_error = |message: String| OfflineError::EntityFile {
        path: entities.path.clone(),
        message,
    };
    // Entity rows with their instant and each needed key cast to its type.
    let timestamp_type = entities
        .column_type(&entities.timestamp_column)
        .unwrap_or("TIMESTAMP");
    let entity_instant = instant(
        &format!("e.{}", ident(&entities.timestamp_column)),
        timestamp_type,
    );
    let mut entity_select = vec!["e.*".to_string(), format!("{entity_instant} AS __wafer_ts")];
    // (join key, DuckDB type, internal column): a key two views type
    // differently is cast once per type.
    let mut key_columns: Vec<(String, String, String)> = Vec::new();
    for view in &selection.views {
        for key in &view.join_keys {
            let duck_type = key.value_type.duckdb_type();
            if key_columns
                .iter()
                .any(|(n, t, _)| *n == key.name && *t == duck_type)
            {
                continue;
            }
            let internal = format!("__wafer_key_{}", key_columns.len());
            if entities.column_type(&key.name).is_none() {
                return Err(entity_error(format!(
                    "missing join key column '{}' needed by feature view '{}'",
                    key.name, view.view.name
                )));
            }
            entity_select.push(format!(
                "CAST(e.{} AS {}) AS {}",
                ident(&key.name),
                key.value_type.duckdb_type(),
                internal
            ));
            key_columns.push((key.name.clone(), duck_type, internal));
        }
    }
    for feature in &selection.features {
        if entities.column_type(&feature.output_name).is_some() {
            return Err(entity_error(format!(
                "column '{}' has the name of a requested feature: rename it or use full feature names",
                feature.output_name
            )));
        }
    }

    // Group views by source and join keys.
    let mut groups: Vec<JoinGroup> = Vec::new();
    for (index, view) in selection.views.iter().enumerate() {
        let found = groups.iter_mut().find(|g| {
            let first = &selection.views[g.view_indexes[0]];
            first.source.name == view.source.name && first.join_keys == view.join_keys
        });
        match found {
            Some(group) => group.view_indexes.push(index),
            None => groups.push(JoinGroup {
                view_indexes: vec![index],
            }),
        }
    }

    if groups.iter().any(|g| {
        selection.views[g.view_indexes[0]]
            .source
            .created_timestamp_column
            .is_some()
    }) {
        // Entity side of the packed (event, created) order: any created time.
        entity_select.push(format!(
            "CAST({entity_instant} AS HUGEINT) * {TWO_POW_64} + {U64_MAX} AS __wafer_order"
        ));
    }
    let mut ctes = vec![format!(
        "entity_rows AS (SELECT {} FROM {} e)",
        entity_select.join(", "),
        entities.reader
    )];
    let mut joins = Vec::new();
    // (group index, feature column inside the group) per selected feature.
    let mut feature_columns: Vec<String> = vec![String::new(); selection.features.len()];
    for (g, group) in groups.iter().enumerate() {
        let first = &selection.views[group.view_indexes[0]];
        let source = &first.source;
        let input = &sources[group.view_indexes[0]];
        let mut select = Vec::new();
        let mut conditions = Vec::new();
        for (k, key) in first.join_keys.iter().enumerate() {
            select.push(format!(
                "CAST({} AS {}) AS k{k}",
                ident(source.column_for(&key.name).unwrap_or(&key.name)),
                key.value_type.duckdb_type()
            ));
            let duck_type = key.value_type.duckdb_type();
            let internal = key_columns
                .iter()
                .find(|(n, t, _)| *n == key.name && *t == duck_type)
                .map(|(_, _, c)| c.as_str())
                .unwrap_or_default();
            conditions.push(format!("e.{internal} = j{g}.k{k}"));
        }
        select.push(format!("{} AS ts", input.instant(&source.timestamp_field)));
        let mut feature_count = 0;
        for (i, feature) in selection.features.iter().enumerate() {
            if !group.view_indexes.contains(&feature.view) {
                continue;
            }
            let column = format!("f{feature_count}");
            feature_count += 1;
            select.push(format!(
                "{} AS {column}",
                ident(
                    source
                        .column_for(&feature.field.name)
                        .unwrap_or(&feature.field.name)
                )
            ));
            let view = &selection.views[feature.view].view;
            let value = format!("j{g}.{column}");
            feature_columns[i] = if view.ttl.is_unbounded() {
                value
            } else {
                let ttl_ns = view.ttl.0.as_nanos();
                format!("CASE WHEN j{g}.ts >= e.__wafer_ts - {ttl_ns} THEN {value} END")
            };
        }
        // With a created timestamp, the as-of join orders candidates by
        // (event time, created time) packed into one 128-bit integer, so the
        // join itself breaks ties (a window or GROUP BY to deduplicate first
        // cost DuckDB over ten times the join here). Null created loses.
        match &source.created_timestamp_column {
            Some(created) => {
                select.push(format!(
                    "CAST({} AS HUGEINT) * {TWO_POW_64} + (CAST(coalesce({}, {I64_MIN}) AS HUGEINT) + {TWO_POW_63}) AS o",
                    input.instant(&source.timestamp_field),
                    input.instant(created)
                ));
                conditions.push(format!("e.__wafer_order >= j{g}.o"));
            }
            None => conditions.push(format!("e.__wafer_ts >= j{g}.ts")),
        }
        let body = format!(
            "SELECT {} FROM {} WHERE {} IS NOT NULL",
            select.join(", "),
            input.scan,
            ident(&source.timestamp_field)
        );
        ctes.push(format!("src{g} AS ({body})"));
        joins.push(format!(
            "ASOF LEFT JOIN src{g} j{g} ON {}",
            conditions.join(" AND ")
        ));
    }

    let mut output = Vec::new();
    for (name, _) in &entities.columns {
        output.push(format!("e.{}", ident(name)));
    }
    for (feature, expr) in selection.features.iter().zip(&feature_columns) {
        output.push(format!("{expr} AS {}", ident(&feature.output_name)));
    }
    Ok(format!(
        "WITH {} SELECT {} FROM entity_rows e {} ORDER BY e.__wafer_row",
        ctes.join(",\n"),
        output.join(", "),
        joins.join(" ")
    ))
}

/// For each row of `rows` (a relation with `__row`, the view's join keys by
/// name and `__ts`, nanoseconds), the event time in nanoseconds of the
/// newest row of the view's source at or before `__ts` (`ts`, null when
/// none): what a point-in-time join at `__ts` reads, before the TTL.
pub fn event_times_query(view: &ViewSelection, input: &SourceInput, rows: &str) -> String {
    let source = &view.source;
    let mut select = Vec::new();
    let mut conditions = Vec::new();
    for (k, key) in view.join_keys.iter().enumerate() {
        let duck_type = key.value_type.duckdb_type();
        select.push(format!(
            "CAST({} AS {duck_type}) AS k{k}",
            ident(source.column_for(&key.name).unwrap_or(&key.name))
        ));
        conditions.push(format!(
            "CAST(r.{} AS {duck_type}) = s.k{k}",
            ident(&key.name)
        ));
    }
    select.push(format!("{} AS ts", input.instant(&source.timestamp_field)));
    conditions.push("r.__ts >= s.ts".to_string());
    format!(
        "SELECT r.__row, s.ts FROM {rows} r ASOF LEFT JOIN (SELECT {} FROM {} WHERE {} IS NOT NULL) s ON {}",
        select.join(", "),
        input.scan,
        ident(&source.timestamp_field),
        conditions.join(" AND ")
    )
}
