//! The drift report: per feature of a service, its distribution in
//! reference rows against current rows. Numbers: the population stability
//! index over ten quantile bins of the reference, and the two-sample
//! Kolmogorov-Smirnov test; strings and bools: PSI over the categories and
//! the Jensen-Shannon distance; both: the change of the null rate. DuckDB
//! computes the counts over Parquet; only counts reach Rust
//! ([`super::stats`]).

use std::collections::BTreeMap;

use chrono::Utc;
use duckdb::Connection;

use super::data::{self, engine, DataSpec};
use super::stats;
use super::{DataDescription, DriftReport, FeatureDrift};
use crate::error::MonitorError;
use crate::feature_log::LOG_TIMESTAMP;
use crate::offline::sql::ident;
use crate::offline::OfflineStore;
use crate::registry::monitoring::{Limits, PSI_MODERATE};
use crate::registry::{FeatureService, Origin, PlannedOutput, RetrievalPlan};
use crate::types::ValueType;
use crate::{Error, FeatureStore};

/// What to compare.
#[derive(Debug, Clone)]
pub struct DriftRequest {
    pub feature_service: String,
    pub reference: DataSpec,
    /// `reference` as the user wrote it, for the report.
    pub reference_text: String,
    pub current: DataSpec,
    pub current_text: String,
    /// DuckDB threads; the offline store's setting when `None`.
    pub threads: Option<usize>,
}

/// Most categories compared one by one; the rarer ones are pooled.
const CATEGORIES: usize = 1000;
/// Quantile bins of the reference.
const BINS: usize = 10;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Numeric,
    Timestamp,
    Categorical,
}

impl FeatureStore {
    /// Compares the service's feature distributions.
    pub fn drift_report(&self, request: &DriftRequest) -> Result<DriftReport, Error> {
        let applied = self.applied()?;
        let definitions = &applied.definitions;
        let name = &request.feature_service;
        let (service, plan) = super::service_plan(self, definitions, name)?;
        let offline = super::report_offline(self, request.threads);
        let connection = offline.connect()?;
        let sides = [
            Side::open(self, &connection, service, &request.reference)?,
            Side::open(self, &connection, service, &request.current)?,
        ];
        let monitoring = service.monitoring.clone().unwrap_or_default();
        let mut features = Vec::new();
        let mut skipped = BTreeMap::new();
        for (j, output) in plan.outputs.iter().enumerate() {
            let logged = crate::registry::full_name(&output.view, &output.feature);
            let kind = match output.value_type {
                ValueType::Int32 | ValueType::Int64 | ValueType::Float32 | ValueType::Float64 => {
                    Kind::Numeric
                }
                ValueType::Timestamp => Kind::Timestamp,
                ValueType::String | ValueType::Bool => Kind::Categorical,
                _ => {
                    skipped.insert(
                        logged,
                        format!("{} values are not compared", output.value_type),
                    );
                    continue;
                }
            };
            let mut tables = Vec::new();
            for (s, side) in sides.iter().enumerate() {
                match side.relation(&offline, &connection, &plan, output, &logged)? {
                    Ok(relation) => {
                        let table = format!("s{s}f{j}");
                        let value = match kind {
                            Kind::Numeric => "CAST(v AS DOUBLE)",
                            Kind::Timestamp => "CAST(epoch_ns(v) AS DOUBLE)",
                            Kind::Categorical => "CAST(v AS VARCHAR)",
                        };
                        connection
                            .execute_batch(&format!(
                                "CREATE TEMP TABLE {table} AS SELECT {value} AS v FROM {relation}"
                            ))
                            .map_err(engine)?;
                        tables.push(table);
                    }
                    Err(reason) => {
                        skipped.insert(logged.clone(), reason);
                        break;
                    }
                }
            }
            if tables.len() < 2 {
                continue;
            }
            let limits = monitoring.limits(&logged);
            match compare(&connection, &tables[0], &tables[1], kind, &logged, limits)? {
                Some(drift) => features.push(drift),
                None => {
                    skipped.insert(
                        logged,
                        "no non-null values in the reference or the current rows".into(),
                    );
                }
            }
        }
        let report = DriftReport {
            feature_service: name.clone(),
            generated_at: Utc::now(),
            reference: DataDescription {
                spec: request.reference_text.clone(),
            },
            current: DataDescription {
                spec: request.current_text.clone(),
            },
            crossed: features.iter().any(|f| !f.crossed.is_empty()),
            features,
            skipped,
        };
        self.save_monitor_report(name, "drift", &report);
        Ok(report)
    }
}

/// One side of the comparison, opened.
enum Side {
    /// A Parquet scan (files, or the service's logs with a window
    /// condition) and its columns.
    Scan {
        scan: String,
        condition: String,
        columns: Vec<String>,
        spec: String,
    },
    /// The offline sources in a window.
    Source(super::Window),
}

impl Side {
    fn open(
        store: &FeatureStore,
        connection: &Connection,
        service: &FeatureService,
        spec: &DataSpec,
    ) -> Result<Side, Error> {
        let (scan, condition, description) = match spec {
            DataSpec::Files(path) => (
                data::parquet_scan(path)?,
                "TRUE".to_string(),
                path.display().to_string(),
            ),
            DataSpec::Logs(window) => {
                let dir = data::log_dir(store.project_dir(), service)?;
                (
                    data::log_scan(&dir, window)?,
                    data::window_condition(&data::log_time_ns(), window),
                    format!("the logs of '{}' in {window}", service.name),
                )
            }
            DataSpec::Source(window) => return Ok(Side::Source(*window)),
        };
        let columns = data::columns(connection, &scan)?
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>();
        if matches!(spec, DataSpec::Logs(_)) && !columns.iter().any(|c| c == LOG_TIMESTAMP) {
            return Err(MonitorError::Input(format!(
                "{description} have no {LOG_TIMESTAMP} column"
            ))
            .into());
        }
        Ok(Side::Scan {
            scan,
            condition,
            columns,
            spec: description,
        })
    }

    /// A relation with the feature's values as `v`, or why there is none.
    fn relation<M>(
        &self,
        offline: &OfflineStore,
        connection: &Connection,
        plan: &RetrievalPlan<M>,
        output: &PlannedOutput,
        logged: &str,
    ) -> Result<Result<String, String>, Error> {
        match self {
            Side::Scan {
                scan,
                condition,
                columns,
                spec,
            } => {
                // A log or a training set with full names, else one with
                // short names.
                let column = [logged, output.feature.as_str()]
                    .into_iter()
                    .find(|c| columns.iter().any(|n| n == c));
                // Logs: rows logged before the service had this feature
                // have no status; they are not rows of it.
                let status = format!("{logged}{}", crate::feature_log::STATUS_SUFFIX);
                let logged_rows = if columns.contains(&status) {
                    format!(" AND {} IS NOT NULL", ident(&status))
                } else {
                    String::new()
                };
                Ok(match column {
                    Some(column) => Ok(format!(
                        "(SELECT {} AS v FROM {scan} WHERE {condition}{logged_rows})",
                        ident(column)
                    )),
                    None => Err(format!(
                        "{spec} has no column '{logged}' or '{}'",
                        output.feature
                    )),
                })
            }
            Side::Source(window) => {
                let (Origin::Stored(i), Some(stored)) = (output.origin, &plan.stored) else {
                    return Ok(Err(
                        "computed by an on-demand view: not in the sources".into()
                    ));
                };
                let view = &stored.views[stored.features[i].view];
                let input = offline.source_input(connection, view)?;
                let source = &view.source;
                let column = source
                    .column_for(&output.feature)
                    .unwrap_or(&output.feature)
                    .to_string();
                Ok(Ok(format!(
                    "(SELECT {} AS v FROM {} WHERE {})",
                    ident(&column),
                    input.scan(),
                    data::window_condition(&input.instant(&source.timestamp_field), window)
                )))
            }
        }
    }
}

/// Compares one feature's reference and current tables (`v` each); `None`
/// when a side has no non-null value.
fn compare(
    connection: &Connection,
    reference: &str,
    current: &str,
    kind: Kind,
    feature: &str,
    limits: Limits,
) -> Result<Option<FeatureDrift>, MonitorError> {
    let valid = if kind == Kind::Categorical {
        "v IS NOT NULL"
    } else {
        "v IS NOT NULL AND NOT isnan(v)"
    };
    let counts = |table: &str| -> Result<(u64, u64, u64), MonitorError> {
        let n = data::query_numbers(
            connection,
            &format!("SELECT count(*), count(v), count(*) FILTER (WHERE {valid}) FROM {table}"),
            3,
        )?;
        let get = |i: usize| n[i].unwrap_or(0.0) as u64;
        Ok((get(0), get(0) - get(1), get(2)))
    };
    let (r_rows, r_nulls, r_valid) = counts(reference)?;
    let (c_rows, c_nulls, c_valid) = counts(current)?;
    if r_valid == 0 || c_valid == 0 {
        return Ok(None);
    }
    let rate = |nulls: u64, rows: u64| nulls as f64 / rows.max(1) as f64;
    let (r_null_rate, c_null_rate) = (rate(r_nulls, r_rows), rate(c_nulls, c_rows));
    let mut drift = FeatureDrift {
        feature: feature.to_string(),
        kind: if kind == Kind::Categorical {
            "categorical"
        } else {
            "numeric"
        }
        .into(),
        reference_rows: r_rows,
        current_rows: c_rows,
        reference_null_rate: r_null_rate,
        current_null_rate: c_null_rate,
        null_rate_change: c_null_rate - r_null_rate,
        psi: None,
        psi_band: String::new(),
        ks_statistic: None,
        ks_p_value: None,
        jensen_shannon: None,
        crossed: Vec::new(),
        thresholds: limits,
    };
    if kind == Kind::Categorical {
        let (r, c) = category_counts(connection, reference, current, r_valid, c_valid)?;
        drift.psi = Some(stats::psi(&r, &c));
        drift.jensen_shannon = Some(stats::jensen_shannon(&r, &c));
    } else {
        let edges = quantile_edges(connection, reference, valid)?;
        let r = bin_counts(connection, reference, valid, &edges)?;
        let c = bin_counts(connection, current, valid, &edges)?;
        drift.psi = Some(stats::psi(&r, &c));
        let d = data::query_numbers(
            connection,
            &format!(
                "WITH a AS (SELECT v, 1 AS r, 0 AS c FROM {reference} WHERE {valid} UNION ALL SELECT v, 0, 1 FROM {current} WHERE {valid}), \
                 g AS (SELECT v, sum(r) AS r, sum(c) AS c FROM a GROUP BY v), \
                 s AS (SELECT sum(r) OVER (ORDER BY v) AS cr, sum(c) OVER (ORDER BY v) AS cc FROM g) \
                 SELECT max(abs(cr / {r_valid}.0 - cc / {c_valid}.0)) FROM s"
            ),
            1,
        )?[0]
            .unwrap_or(0.0);
        drift.ks_statistic = Some(d);
        drift.ks_p_value = Some(stats::ks_p_value(d, r_valid, c_valid));
    }
    let psi = drift.psi.unwrap_or(0.0);
    drift.psi_band = if psi >= limits.psi {
        "drift"
    } else if psi >= PSI_MODERATE {
        "moderate"
    } else {
        "none"
    }
    .into();
    if psi >= limits.psi {
        drift.crossed.push("psi".into());
    }
    if drift.ks_p_value.is_some_and(|p| p < limits.ks_p_value) {
        drift.crossed.push("ks_p_value".into());
    }
    if drift
        .jensen_shannon
        .is_some_and(|js| js >= limits.jensen_shannon)
    {
        drift.crossed.push("jensen_shannon".into());
    }
    if drift.null_rate_change.abs() >= limits.null_rate_change && limits.null_rate_change > 0.0 {
        drift.crossed.push("null_rate_change".into());
    }
    Ok(Some(drift))
}

/// The reference's deciles, distinct and in order: the inner bin edges.
fn quantile_edges(
    connection: &Connection,
    table: &str,
    valid: &str,
) -> Result<Vec<f64>, MonitorError> {
    let terms = (1..BINS)
        .map(|i| format!("quantile_cont(v, {})", i as f64 / BINS as f64))
        .collect::<Vec<_>>()
        .join(", ");
    let mut edges: Vec<f64> = data::query_numbers(
        connection,
        &format!("SELECT {terms} FROM {table} WHERE {valid}"),
        BINS - 1,
    )?
    .into_iter()
    .flatten()
    .collect();
    edges.sort_by(f64::total_cmp);
    edges.dedup();
    Ok(edges)
}

/// Counts per bin: bin i holds values in (edge[i-1], edge[i]].
fn bin_counts(
    connection: &Connection,
    table: &str,
    valid: &str,
    edges: &[f64],
) -> Result<Vec<u64>, MonitorError> {
    let bin = if edges.is_empty() {
        "0".to_string()
    } else {
        edges
            .iter()
            .map(|e| format!("CAST(v > CAST('{e:?}' AS DOUBLE) AS INTEGER)"))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let mut counts = vec![0u64; edges.len() + 1];
    let mut statement = connection
        .prepare(&format!(
            "SELECT {bin} AS b, count(*) FROM {table} WHERE {valid} GROUP BY b"
        ))
        .map_err(engine)?;
    let mut rows = statement.query([]).map_err(engine)?;
    while let Some(row) = rows.next().map_err(engine)? {
        let b: i64 = row.get(0).map_err(engine)?;
        let n: i64 = row.get(1).map_err(engine)?;
        if let Some(slot) = counts.get_mut(b as usize) {
            *slot += n as u64;
        }
    }
    Ok(counts)
}

/// Counts of the most frequent categories on both sides, then the rest
/// pooled.
fn category_counts(
    connection: &Connection,
    reference: &str,
    current: &str,
    r_total: u64,
    c_total: u64,
) -> Result<(Vec<u64>, Vec<u64>), MonitorError> {
    let mut statement = connection
        .prepare(&format!(
            "WITH r AS (SELECT v, count(*) AS n FROM {reference} WHERE v IS NOT NULL GROUP BY v), \
             c AS (SELECT v, count(*) AS n FROM {current} WHERE v IS NOT NULL GROUP BY v) \
             SELECT coalesce(r.n, 0), coalesce(c.n, 0) FROM r FULL OUTER JOIN c ON r.v = c.v \
             ORDER BY coalesce(r.n, 0) + coalesce(c.n, 0) DESC, coalesce(r.v, c.v) LIMIT {CATEGORIES}"
        ))
        .map_err(engine)?;
    let mut rows = statement.query([]).map_err(engine)?;
    let (mut r, mut c) = (Vec::new(), Vec::new());
    while let Some(row) = rows.next().map_err(engine)? {
        r.push(row.get::<_, i64>(0).map_err(engine)? as u64);
        c.push(row.get::<_, i64>(1).map_err(engine)? as u64);
    }
    let (r_rest, c_rest) = (
        r_total.saturating_sub(r.iter().sum()),
        c_total.saturating_sub(c.iter().sum()),
    );
    if r_rest + c_rest > 0 {
        r.push(r_rest);
        c.push(c_rest);
    }
    Ok((r, c))
}
