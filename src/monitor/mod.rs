//! Watching a feature service in production: training-serving skew (its
//! logged lookups replayed through historical retrieval, [`skew`]) and
//! drift (feature distributions compared, [`drift`]), both computed by
//! DuckDB over Parquet.
//!
//! Reports ([`SkewReport`], [`DriftReport`]) say per feature what they
//! found and whether a threshold of the service's `monitoring:` was
//! crossed. Every report made, by the CLI or the server, is saved as the
//! service's latest in the data directory (`monitor/SERVICE.skew.json`,
//! `.drift.json`), where `/metrics` reads its [`Figure`]s from.

#[cfg(feature = "offline")]
pub mod data;
#[cfg(feature = "offline")]
pub mod drift;
mod report;
#[cfg(feature = "offline")]
pub mod skew;
#[cfg(feature = "offline")]
mod stats;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

#[cfg(feature = "offline")]
pub use data::{parse_end, parse_window, DataSpec};
pub use report::{
    DataDescription, DriftReport, FeatureDrift, FeatureSkew, SkewExample, SkewReport,
};

/// The gauges reports feed, with their help text.
pub const GAUGES: &[(&str, &str)] = &[
    (
        "skew_rate",
        "Share of logged rows whose online value differed from the offline one, per feature, in the latest skew report",
    ),
    (
        "skew_threshold_crossed",
        "1 when the latest skew report crossed a threshold for the feature",
    ),
    (
        "drift_psi",
        "Population stability index of the feature in the latest drift report",
    ),
    (
        "drift_ks_p_value",
        "Kolmogorov-Smirnov p-value of a numeric feature in the latest drift report",
    ),
    (
        "drift_jensen_shannon",
        "Jensen-Shannon distance (base 2) of a string or bool feature in the latest drift report",
    ),
    (
        "drift_null_rate_change",
        "Change of the null rate (current minus reference) in the latest drift report",
    ),
    (
        "drift_threshold_crossed",
        "1 when the latest drift report crossed a threshold for the feature",
    ),
];

/// One gauge value.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub metric: &'static str,
    pub feature_service: String,
    pub feature: String,
    pub value: f64,
}

/// A time window: either end open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = |t: Option<DateTime<Utc>>| {
            t.map(|t| crate::codec::time::format_timestamp(crate::codec::time::nanos(t)))
                .unwrap_or_default()
        };
        write!(f, "{}..{}", end(self.from), end(self.to))
    }
}

/// The service a report is about, and its plan offline with full names
/// (`view__feature`, as logged).
#[cfg(feature = "offline")]
fn service_plan<'d>(
    store: &crate::FeatureStore,
    definitions: &'d crate::registry::Definitions,
    name: &str,
) -> Result<(&'d crate::registry::FeatureService, crate::on_demand::Plan), crate::Error> {
    let service = definitions
        .feature_service(name)
        .ok_or_else(|| crate::error::MonitorError::UnknownService(name.to_string()))?;
    let request = crate::FeatureRequest::Service(name.to_string());
    let plan = crate::on_demand::plan(
        store,
        definitions,
        &request,
        true,
        crate::registry::Target::Offline,
    )?;
    Ok((service, plan))
}

/// The offline store a report reads with: the project's, on at most
/// `threads` DuckDB threads when given.
#[cfg(feature = "offline")]
fn report_offline(
    store: &crate::FeatureStore,
    threads: Option<usize>,
) -> crate::offline::OfflineStore {
    let mut config = store.config().offline_store.clone();
    if let Some(threads) = threads {
        config.threads = Some(u32::try_from(threads.max(1)).unwrap_or(u32::MAX));
    }
    crate::offline::OfflineStore::new(store.project_dir(), &config)
}

/// Where the latest reports of a project are saved.
pub fn reports_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("monitor")
}

fn report_path(data_dir: &Path, service: &str, kind: &str) -> PathBuf {
    reports_dir(data_dir).join(format!("{service}.{kind}.json"))
}

/// Saves `report` as the latest of its kind for its service.
#[cfg(feature = "offline")]
pub(crate) fn save_report<T: serde::Serialize>(
    data_dir: &Path,
    service: &str,
    kind: &str,
    report: &T,
) -> std::io::Result<()> {
    let dir = reports_dir(data_dir);
    crate::durable::create_dir_all(&dir)?;
    let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    crate::durable::write_atomic(&report_path(data_dir, service, kind), &bytes)
}

/// The figures of the latest saved reports of `services`. A report that
/// cannot be read is skipped.
pub fn latest_figures<'s>(data_dir: &Path, services: impl Iterator<Item = &'s str>) -> Vec<Figure> {
    let mut figures = Vec::new();
    for service in services {
        let read = |kind: &str| std::fs::read(report_path(data_dir, service, kind)).ok();
        if let Some(report) =
            read("skew").and_then(|b| serde_json::from_slice::<SkewReport>(&b).ok())
        {
            figures.extend(report.figures());
        }
        if let Some(report) =
            read("drift").and_then(|b| serde_json::from_slice::<DriftReport>(&b).ok())
        {
            figures.extend(report.figures());
        }
    }
    figures
}
