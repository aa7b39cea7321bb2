//! What skew and drift reports say, as they are printed, sent as JSON and
//! saved.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Figure, Window};
use crate::registry::monitoring::Limits;

/// Online against offline for one feature service's logged lookups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SkewReport {
    pub feature_service: String,
    /// The logged rows' window (by `__log_timestamp`).
    #[schema(value_type = Object)]
    pub window: Window,
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: DateTime<Utc>,
    /// The registry version the rows were replayed with.
    pub registry_version: u64,
    /// Logged rows compared (the newest ones up to the limit).
    pub rows: u64,
    pub features: Vec<FeatureSkew>,
    /// Features of the service the logs do not have (logged before the
    /// service named them), skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_logged: Vec<String>,
    /// Whether any feature crossed its threshold.
    pub crossed: bool,
}

/// One feature's skew.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureSkew {
    /// `view__feature`.
    pub feature: String,
    /// Computed by an on-demand view.
    pub on_demand: bool,
    /// Logged rows compared (rows logged before the service had this
    /// feature are not).
    pub rows: u64,
    /// Equal values (floats bit for bit), or null on both sides.
    pub matched: u64,
    /// Both present, different.
    pub mismatched: u64,
    /// Null online (not found, outside its TTL, or null), present offline.
    pub missing_online: u64,
    /// Present online, null offline.
    pub missing_offline: u64,
    /// Rows not matched over rows.
    pub skew_rate: f64,
    /// Numbers: the largest absolute difference of a mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_diff: Option<f64>,
    /// Numbers: the largest difference relative to the larger magnitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rel_diff: Option<f64>,
    /// Rows not matched, by likely cause: `materialization_lag` (online
    /// older than offline), `not_materialized` (offline has a row, online
    /// none), `online_only` (online newer than anything offline, e.g.
    /// pushed online only), `same_event_time` (same event, another value),
    /// `ttl`, and for on-demand features `inputs_differ`,
    /// `inputs_not_logged` or `transform` (inputs equal, output not: never
    /// expected).
    pub causes: BTreeMap<String, u64>,
    /// A few rows not matched.
    pub examples: Vec<SkewExample>,
    pub threshold: f64,
    pub crossed: bool,
}

/// A logged row whose online value differs from the offline one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SkewExample {
    pub request_id: String,
    pub log_timestamp: String,
    /// Join keys, `key=value`.
    pub entity: String,
    pub online: Option<String>,
    pub online_status: String,
    pub online_event_timestamp: Option<String>,
    pub offline: Option<String>,
    pub offline_event_timestamp: Option<String>,
    pub cause: String,
}

/// Reference against current distributions of a service's features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DriftReport {
    pub feature_service: String,
    #[schema(value_type = String, format = DateTime)]
    pub generated_at: DateTime<Utc>,
    pub reference: DataDescription,
    pub current: DataDescription,
    pub features: Vec<FeatureDrift>,
    /// Features with no column in the data (or, for a source window,
    /// computed by on-demand views), skipped with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, String>,
    pub crossed: bool,
}

/// Where one side's rows came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataDescription {
    /// As given: a file, directory or glob, `logs:FROM..TO` or
    /// `source:FROM..TO`.
    pub spec: String,
}

/// One feature's drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FeatureDrift {
    /// `view__feature`.
    pub feature: String,
    /// `numeric` or `categorical`.
    pub kind: String,
    pub reference_rows: u64,
    pub current_rows: u64,
    pub reference_null_rate: f64,
    pub current_null_rate: f64,
    pub null_rate_change: f64,
    /// Over ten quantile bins of the reference (numbers) or the categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
    /// `none` (< 0.1), `moderate` (< the threshold), `drift`.
    pub psi_band: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ks_statistic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ks_p_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jensen_shannon: Option<f64>,
    /// The tests that crossed their thresholds (`psi`, `ks_p_value`,
    /// `jensen_shannon`, `null_rate_change`).
    pub crossed: Vec<String>,
    #[schema(value_type = Object)]
    pub thresholds: Limits,
}

impl Figure {
    fn of(service: &str, feature: &str, metric: &'static str, value: f64) -> Figure {
        Figure {
            metric,
            feature_service: service.to_string(),
            feature: feature.to_string(),
            value,
        }
    }
}

impl SkewReport {
    pub fn figures(&self) -> Vec<Figure> {
        let service = &self.feature_service;
        self.features
            .iter()
            .flat_map(|f| {
                [
                    Figure::of(service, &f.feature, "skew_rate", f.skew_rate),
                    Figure::of(
                        service,
                        &f.feature,
                        "skew_threshold_crossed",
                        f64::from(u8::from(f.crossed)),
                    ),
                ]
            })
            .collect()
    }
}

impl DriftReport {
    pub fn figures(&self) -> Vec<Figure> {
        let service = &self.feature_service;
        let mut figures = Vec::new();
        for f in &self.features {
            for (metric, value) in [
                ("drift_psi", f.psi),
                ("drift_ks_p_value", f.ks_p_value),
                ("drift_jensen_shannon", f.jensen_shannon),
                ("drift_null_rate_change", Some(f.null_rate_change)),
                (
                    "drift_threshold_crossed",
                    Some(f64::from(u8::from(!f.crossed.is_empty()))),
                ),
            ] {
                if let Some(value) = value {
                    figures.push(Figure::of(service, &f.feature, metric, value));
                }
            }
        }
        figures
    }
}
