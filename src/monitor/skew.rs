//! The skew report: a service's logged lookups replayed through
//! historical retrieval at each row's log timestamp, with the logged
//! request data, and compared feature by feature with what was served.
//!
//! Logged rows (the newest up to a limit, in a window) become an entity
//! file; [`FeatureStore::get_historical_features`] joins it, as a training
//! set would be; DuckDB then compares the two sides and, for each stored
//! view, finds the offline row's event time (the newest source row at or
//! before the log timestamp), which names the likely cause of a
//! difference.

use std::collections::BTreeMap;

use chrono::Utc;
use duckdb::Connection;

use super::data::{self, engine};
use super::{FeatureSkew, SkewExample, SkewReport, Window};
use crate::codec::time::format_timestamp;
use crate::error::MonitorError;
use crate::feature_log::{LOG_TIMESTAMP, REQUEST_ID, STATUS_SUFFIX, TIMESTAMP_SUFFIX};
use crate::offline::sql::{event_times_query, ident, literal};
use crate::on_demand;
use crate::registry::{full_name, FeatureRequest, Origin, StepInput};
use crate::types::ValueType;
use crate::{Error, FeatureStore};

/// What to compare.
#[derive(Debug, Clone)]
pub struct SkewRequest {
    pub feature_service: String,
    /// Logged rows by log timestamp.
    pub window: Window,
    /// The newest this many logged rows in the window are compared.
    pub limit: usize,
    /// DuckDB threads (a server leaves cores to lookups); the offline
    /// store's setting when `None`.
    pub threads: Option<usize>,
}

/// Examples kept per feature.
const EXAMPLES: usize = 5;

/// One compared feature's columns in the `compared` table.
struct Compared {
    name: String,
    value_type: ValueType,
    on_demand: bool,
    numeric: bool,
    /// Stored: the index of its view's event times table.
    view: Option<usize>,
    ttl_ns: Option<u128>,
    /// On-demand: indexes (among compared features) of its logged stored
    /// inputs, and whether some input was not logged.
    inputs: Vec<usize>,
    unlogged_inputs: bool,
}

impl FeatureStore {
    /// Replays `request`'s logged rows offline and compares.
    pub fn skew_report(&self, request: &SkewRequest) -> Result<SkewReport, Error> {
        let applied = self.applied()?;
        let definitions = &applied.definitions;
        let name = &request.feature_service;
        let (service, plan) = super::service_plan(self, definitions, name)?;
        let log_dir = data::log_dir(self.project_dir(), service)?;
        let service_request = FeatureRequest::Service(name.clone());
        if plan.stored.is_none() {
            return Err(MonitorError::Input(format!(
                "feature service '{name}' serves no stored feature: its on-demand views read request data only, which the log holds as sent, so there is nothing to replay"
            ))
            .into());
        }
        let offline = super::report_offline(self, request.threads);
        let connection = offline.connect()?;
        let scan = data::log_scan(&log_dir, &request.window)?;
        let logged_columns = data::columns(&connection, &scan)?;
        let has = |column: &str| logged_columns.iter().any(|(n, _)| n == column);

        // The logged rows compared: the newest in the window.
        connection
            .execute_batch(&format!(
                "CREATE TEMP TABLE logged AS SELECT row_number() OVER () AS __row, * FROM \
                 (SELECT * FROM {scan} WHERE {} ORDER BY {} DESC, {} LIMIT {})",
                data::window_condition(&data::log_time_ns(), &request.window),
                ident(LOG_TIMESTAMP),
                ident(REQUEST_ID),
                request.limit.max(1)
            ))
            .map_err(engine)?;
        let rows = data::query_numbers(&connection, "SELECT count(*) FROM logged", 1)?[0]
            .unwrap_or(0.0) as u64;
        if rows == 0 {
            return Err(MonitorError::NoData(format!(
                "no rows of feature service '{name}' logged in {} ({})",
                request.window,
                log_dir.display()
            ))
            .into());
        }

        // The entity rows of the replay: keys, request data, log time.
        let keys: Vec<String> = plan
            .stored
            .as_ref()
            .map(|s| s.join_keys().iter().map(|k| k.name.clone()).collect())
            .unwrap_or_default();
        let request_fields: Vec<String> = plan
            .request_fields()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        for column in keys.iter().chain(&request_fields) {
            if !has(column) {
                return Err(MonitorError::Input(format!(
                    "the logged rows of '{name}' have no column '{column}' (logged by an older version of the service?)"
                ))
                .into());
            }
        }
        let scratch = tempfile::tempdir().map_err(engine)?;
        let entity_file = scratch.path().join("entities.parquet");
        let offline_file = scratch.path().join("offline.parquet");
        let mut entity_columns = vec!["__row AS __wafer_log_row".to_string()];
        entity_columns.extend(keys.iter().chain(&request_fields).map(|c| ident(c)));
        entity_columns.push(format!("{} AS event_timestamp", ident(LOG_TIMESTAMP)));
        connection
            .execute_batch(&format!(
                "COPY (SELECT {} FROM logged ORDER BY __row) TO {} (FORMAT parquet)",
                entity_columns.join(", "),
                literal(&entity_file.to_string_lossy())
            ))
            .map_err(engine)?;
        self.historical_features_with(
            &offline,
            &entity_file,
            &service_request,
            true,
            &offline_file,
        )?;
        connection
            .execute_batch(&format!(
                "CREATE TEMP TABLE offline AS SELECT * FROM read_parquet({})",
                literal(&offline_file.to_string_lossy())
            ))
            .map_err(engine)?;

        // The offline event time per stored view.
        let rows_relation = format!("(SELECT *, {} AS __ts FROM logged)", data::log_time_ns());
        if let Some(stored) = &plan.stored {
            for (v, view) in stored.views.iter().enumerate() {
                let input = offline.source_input(&connection, view)?;
                connection
                    .execute_batch(&format!(
                        "CREATE TEMP TABLE t{v} AS {}",
                        event_times_query(view, &input, &rows_relation)
                    ))
                    .map_err(engine)?;
            }
        }

        // The features compared, and where their columns come from.
        let mut compared: Vec<Compared> = Vec::new();
        let mut not_logged = Vec::new();
        for output in &plan.outputs {
            let logged = full_name(&output.view, &output.feature);
            if !(has(&logged)
                && has(&format!("{logged}{STATUS_SUFFIX}"))
                && has(&format!("{logged}{TIMESTAMP_SUFFIX}")))
            {
                not_logged.push(logged);
                continue;
            }
            let numeric = matches!(
                output.value_type,
                ValueType::Int32 | ValueType::Int64 | ValueType::Float32 | ValueType::Float64
            );
            let (view, ttl_ns) = match (output.origin, &plan.stored) {
                (Origin::Stored(i), Some(stored)) => {
                    let v = stored.features[i].view;
                    let ttl = &stored.views[v].view.ttl;
                    (Some(v), (!ttl.is_unbounded()).then_some(ttl.0.as_nanos()))
                }
                _ => (None, None),
            };
            compared.push(Compared {
                name: logged,
                value_type: output.value_type.clone(),
                on_demand: view.is_none(),
                numeric,
                view,
                ttl_ns,
                inputs: Vec::new(),
                unlogged_inputs: false,
            });
        }
        // On-demand features' stored inputs, among the compared features.
        for output in &plan.outputs {
            let Origin::Computed { step, .. } = output.origin else {
                continue;
            };
            let name = full_name(&output.view, &output.feature);
            let Some(position) = compared.iter().position(|c| c.name == name) else {
                continue;
            };
            let mut inputs = Vec::new();
            let mut unlogged = false;
            for input in &plan.on_demand[step].inputs {
                if let (StepInput::Stored { feature, .. }, Some(stored)) = (input, &plan.stored) {
                    let selected = &stored.features[*feature];
                    let input_name =
                        full_name(&stored.views[selected.view].view.name, &selected.field.name);
                    match compared.iter().position(|c| c.name == input_name) {
                        Some(i) => inputs.push(i),
                        None => unlogged = true,
                    }
                }
            }
            compared[position].inputs = inputs;
            compared[position].unlogged_inputs = unlogged;
        }
        create_compared(&connection, &compared, &keys, &plan)?;

        let monitoring = service.monitoring.clone().unwrap_or_default();
        let mut features = Vec::with_capacity(compared.len());
        for (j, feature) in compared.iter().enumerate() {
            features.push(feature_skew(
                &connection,
                j,
                feature,
                monitoring.limits(&feature.name).skew_rate,
            )?);
        }
        let report = SkewReport {
            feature_service: name.clone(),
            window: request.window,
            generated_at: Utc::now(),
            registry_version: applied.version,
            rows,
            crossed: features.iter().any(|f| f.crossed),
            features,
            not_logged,
        };
        self.save_monitor_report(name, "skew", &report);
        Ok(report)
    }

    /// Saves a report as the service's latest; a failure is logged only
    /// (the report itself stands).
    pub(crate) fn save_monitor_report<T: serde::Serialize>(
        &self,
        service: &str,
        kind: &str,
        report: &T,
    ) {
        let data_dir = self.project_dir().join(&self.config().data_dir);
        if let Err(e) = super::save_report(&data_dir, service, kind, report) {
            tracing::warn!(service, kind, error = %e, "cannot save the report as the latest");
        }
    }
}

/// `compared`: per logged row, each feature's online and offline value,
/// status, event times and category (`match`, `mismatch`,
/// `missing_online`, `missing_offline`).
fn create_compared(
    connection: &Connection,
    compared: &[Compared],
    keys: &[String],
    plan: &on_demand::Plan,
) -> Result<(), MonitorError> {
    let mut select = vec![
        "l.__row".to_string(),
        format!("l.{} AS request_id", ident(REQUEST_ID)),
        format!(
            "{} AS log_ns",
            data::log_time_ns().replace("epoch_ns(", "epoch_ns(l.")
        ),
    ];
    let entity = keys
        .iter()
        .map(|k| {
            format!(
                "{} || '=' || coalesce(CAST(l.{} AS VARCHAR), 'null')",
                literal(k),
                ident(k)
            )
        })
        .collect::<Vec<_>>();
    select.push(if entity.is_empty() {
        "'' AS entity".to_string()
    } else {
        format!("concat_ws(', ', {}) AS entity", entity.join(", "))
    });
    for (j, feature) in compared.iter().enumerate() {
        let column = ident(&feature.name);
        select.push(format!("l.{column} AS on{j}"));
        select.push(format!("o.{column} AS off{j}"));
        select.push(format!(
            "l.{} AS st{j}",
            ident(&format!("{}{STATUS_SUFFIX}", feature.name))
        ));
        select.push(format!(
            "epoch_ns(l.{}) AS onts{j}",
            ident(&format!("{}{TIMESTAMP_SUFFIX}", feature.name))
        ));
        select.push(match feature.view {
            Some(v) => format!("t{v}.ts AS offts{j}"),
            None => format!("CAST(NULL AS BIGINT) AS offts{j}"),
        });
        // Equal means the same bits for floats (their shortest round-trip
        // text: -0.0 is not 0.0) and the same instant for timestamps (of
        // any unit or zone). A row logged before the service had this
        // feature (no status) is not compared: null category.
        let same = match feature.value_type {
            ValueType::Float32 | ValueType::Float64 => {
                format!(
                    "CAST(l.{column} AS VARCHAR) IS NOT DISTINCT FROM CAST(o.{column} AS VARCHAR)"
                )
            }
            ValueType::Timestamp => {
                format!("epoch_ns(l.{column}) IS NOT DISTINCT FROM epoch_ns(o.{column})")
            }
            _ => format!("l.{column} IS NOT DISTINCT FROM o.{column}"),
        };
        let status = ident(&format!("{}{STATUS_SUFFIX}", feature.name));
        select.push(format!(
            "CASE WHEN l.{status} IS NULL THEN NULL WHEN {same} THEN 'match' \
             WHEN l.{column} IS NULL THEN 'missing_online' \
             WHEN o.{column} IS NULL THEN 'missing_offline' ELSE 'mismatch' END AS cat{j}"
        ));
    }
    let views = plan.stored.as_ref().map_or(0, |s| s.views.len());
    let joins = (0..views)
        .map(|v| format!("LEFT JOIN t{v} ON t{v}.__row = l.__row"))
        .collect::<Vec<_>>()
        .join(" ");
    connection
        .execute_batch(&format!(
            "CREATE TEMP TABLE compared AS SELECT {} FROM logged l JOIN offline o ON o.__wafer_log_row = l.__row {joins}",
            select.join(", ")
        ))
        .map_err(engine)
}

/// The likely cause of a difference in feature `j`, as SQL over `compared`
/// (null where it matched).
fn cause(j: usize, feature: &Compared) -> String {
    if feature.on_demand {
        let inputs_differ = if feature.inputs.is_empty() {
            "FALSE".to_string()
        } else {
            feature
                .inputs
                .iter()
                .map(|i| format!("cat{i} <> 'match'"))
                .collect::<Vec<_>>()
                .join(" OR ")
        };
        let otherwise = if feature.unlogged_inputs {
            "'inputs_not_logged'"
        } else {
            "'transform'"
        };
        return format!(
            "CASE WHEN cat{j} IS NULL OR cat{j} = 'match' THEN NULL WHEN {inputs_differ} THEN 'inputs_differ' ELSE {otherwise} END"
        );
    }
    let expired = match feature.ttl_ns {
        Some(ttl) => {
            format!("(off{j} IS NULL AND offts{j} IS NOT NULL AND offts{j} < log_ns - {ttl})")
        }
        None => "FALSE".to_string(),
    };
    // Event times first: an online row older than the offline one is lag,
    // a newer one (or none offline) came online some other way; only with
    // the same row on both sides (or none online) is the TTL the cause.
    format!(
        "CASE WHEN cat{j} IS NULL OR cat{j} = 'match' THEN NULL \
         WHEN onts{j} IS NOT NULL AND offts{j} IS NOT NULL AND onts{j} < offts{j} THEN 'materialization_lag' \
         WHEN onts{j} IS NOT NULL AND (offts{j} IS NULL OR onts{j} > offts{j}) THEN 'online_only' \
         WHEN st{j} = 'OUTSIDE_MAX_AGE' OR {expired} THEN 'ttl' \
         WHEN onts{j} IS NULL THEN 'not_materialized' \
         ELSE 'same_event_time' END"
    )
}

fn feature_skew(
    connection: &Connection,
    j: usize,
    feature: &Compared,
    threshold: f64,
) -> Result<FeatureSkew, MonitorError> {
    let diffs = if feature.numeric {
        format!(
            "max(abs(CAST(on{j} AS DOUBLE) - CAST(off{j} AS DOUBLE))) FILTER (WHERE cat{j} = 'mismatch'), \
             max(abs(CAST(on{j} AS DOUBLE) - CAST(off{j} AS DOUBLE)) / nullif(greatest(abs(CAST(on{j} AS DOUBLE)), abs(CAST(off{j} AS DOUBLE))), 0)) FILTER (WHERE cat{j} = 'mismatch')"
        )
    } else {
        "NULL, NULL".to_string()
    };
    let counts = data::query_numbers(
        connection,
        &format!(
            "SELECT count(*) FILTER (WHERE cat{j} = 'match'), count(*) FILTER (WHERE cat{j} = 'mismatch'), \
             count(*) FILTER (WHERE cat{j} = 'missing_online'), count(*) FILTER (WHERE cat{j} = 'missing_offline'), {diffs}, count(cat{j}) FROM compared"
        ),
        7,
    )?;
    let count = |i: usize| counts[i].unwrap_or(0.0) as u64;
    let cause_sql = cause(j, feature);
    let mut causes = BTreeMap::new();
    {
        let mut statement = connection
            .prepare(&format!(
                "SELECT cause, count(*) FROM (SELECT {cause_sql} AS cause FROM compared) WHERE cause IS NOT NULL GROUP BY cause"
            ))
            .map_err(engine)?;
        let mut result = statement.query([]).map_err(engine)?;
        while let Some(row) = result.next().map_err(engine)? {
            let cause: String = row.get(0).map_err(engine)?;
            let n: i64 = row.get(1).map_err(engine)?;
            causes.insert(cause, n as u64);
        }
    }
    let mut examples = Vec::new();
    {
        let mut statement = connection
            .prepare(&format!(
                "SELECT request_id, log_ns, entity, CAST(on{j} AS VARCHAR), st{j}, onts{j}, CAST(off{j} AS VARCHAR), offts{j}, {cause_sql} \
                 FROM compared WHERE cat{j} <> 'match' ORDER BY __row LIMIT {EXAMPLES}"
            ))
            .map_err(engine)?;
        let mut result = statement.query([]).map_err(engine)?;
        while let Some(row) = result.next().map_err(engine)? {
            let time = |i: usize| -> Result<Option<String>, MonitorError> {
                Ok(row
                    .get::<_, Option<i64>>(i)
                    .map_err(engine)?
                    .map(format_timestamp))
            };
            examples.push(SkewExample {
                request_id: row
                    .get::<_, Option<String>>(0)
                    .map_err(engine)?
                    .unwrap_or_default(),
                log_timestamp: time(1)?.unwrap_or_default(),
                entity: row
                    .get::<_, Option<String>>(2)
                    .map_err(engine)?
                    .unwrap_or_default(),
                online: row.get(3).map_err(engine)?,
                online_status: row
                    .get::<_, Option<String>>(4)
                    .map_err(engine)?
                    .unwrap_or_default(),
                online_event_timestamp: time(5)?,
                offline: row.get(6).map_err(engine)?,
                offline_event_timestamp: time(7)?,
                cause: row
                    .get::<_, Option<String>>(8)
                    .map_err(engine)?
                    .unwrap_or_default(),
            });
        }
    }
    let matched = count(0);
    let rows = count(6);
    let skew_rate = if rows == 0 {
        0.0
    } else {
        (rows - matched.min(rows)) as f64 / rows as f64
    };
    let crossed = skew_rate > threshold || causes.contains_key("transform");
    Ok(FeatureSkew {
        feature: feature.name.clone(),
        rows,
        on_demand: feature.on_demand,
        matched,
        mismatched: count(1),
        missing_online: count(2),
        missing_offline: count(3),
        skew_rate,
        max_abs_diff: counts[4],
        max_rel_diff: counts[5],
        causes,
        examples,
        threshold,
        crossed,
    })
}
