//! What a feature service says about watching itself in production: the
//! `logging:` of what it serves ([`FeatureLogging`]) and the `monitoring:`
//! thresholds its skew and drift reports are judged by ([`Monitoring`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `logging: {sample_rate: 0.1, path: logs/driver_activity}`: a share of
/// the entities a service serves, every lookup of theirs, logged to
/// Parquet files under `path` (relative to the project), one directory per
/// day (`__log_date=YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureLogging {
    /// In (0, 1]: the share of entity keys logged, chosen by a hash of the
    /// key, so an entity is logged every time or never.
    #[serde(default = "one")]
    pub sample_rate: f64,
    pub path: String,
}

fn one() -> f64 {
    1.0
}

/// `monitoring:` thresholds: `thresholds` for every feature of the
/// service, `features` (by `view__feature`) overriding some of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    #[serde(default)]
    pub thresholds: Thresholds,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, Thresholds>,
}

/// Thresholds a report is judged by; unset ones take the conventional
/// defaults ([`Limits::default`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Skew: the largest share of logged rows whose online value differs
    /// from the offline one (mismatched or missing on one side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_rate: Option<f64>,
    /// Drift: the population stability index at which a feature drifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<f64>,
    /// Drift: a Kolmogorov-Smirnov p-value below this is drift (numbers);
    /// 0 turns the test off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ks_p_value: Option<f64>,
    /// Drift: the Jensen-Shannon distance (base 2, in [0, 1]) at which a
    /// string or bool feature drifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jensen_shannon: Option<f64>,
    /// Drift: the largest change of the null rate (absolute, 0.1 is ten
    /// points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_rate_change: Option<f64>,
}

/// Thresholds with every value resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub skew_rate: f64,
    pub psi: f64,
    pub ks_p_value: f64,
    pub jensen_shannon: f64,
    pub null_rate_change: f64,
}

impl Default for Limits {
    /// The conventional bands: PSI 0.25 (0.1 is reported as moderate), KS
    /// p < 0.05, Jensen-Shannon 0.1; a null rate moved by 10 points; 1% of
    /// rows skewed.
    fn default() -> Self {
        Limits {
            skew_rate: 0.01,
            psi: 0.25,
            ks_p_value: 0.05,
            jensen_shannon: 0.1,
            null_rate_change: 0.1,
        }
    }
}

/// The PSI from which a shift is reported as moderate (below the drift
/// threshold).
pub const PSI_MODERATE: f64 = 0.1;

impl Thresholds {
    fn over(&self, base: Limits) -> Limits {
        Limits {
            skew_rate: self.skew_rate.unwrap_or(base.skew_rate),
            psi: self.psi.unwrap_or(base.psi),
            ks_p_value: self.ks_p_value.unwrap_or(base.ks_p_value),
            jensen_shannon: self.jensen_shannon.unwrap_or(base.jensen_shannon),
            null_rate_change: self.null_rate_change.unwrap_or(base.null_rate_change),
        }
    }

    /// Each threshold that is set, by name, for validation.
    pub fn values(&self) -> [(&'static str, Option<f64>); 5] {
        [
            ("skew_rate", self.skew_rate),
            ("psi", self.psi),
            ("ks_p_value", self.ks_p_value),
            ("jensen_shannon", self.jensen_shannon),
            ("null_rate_change", self.null_rate_change),
        ]
    }
}

impl Monitoring {
    /// The limits for `feature` (its logged name, `view__feature`).
    pub fn limits(&self, feature: &str) -> Limits {
        let service = self.thresholds.over(Limits::default());
        match self.features.get(feature) {
            Some(own) => own.over(service),
            None => service,
        }
    }
}
