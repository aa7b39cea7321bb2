//! Checks of a feature service's `logging:` and `monitoring:`.

use std::path::{Component, Path};

use super::Collector;
use crate::registry::{Definitions, FeatureService};

/// Checks every service's logging and thresholds. A log directory must
/// be a directory of its own: not the project, not inside (or around) a
/// source's directory, whose scans would read the log as data, nor another
/// service's (their rows have different columns).
pub(super) fn check_services(definitions: &Definitions, errors: &mut Collector) {
    let sources: Vec<(&str, Vec<String>)> = definitions
        .sources
        .iter()
        .filter_map(|source| source_dir(&source.path).map(|dir| (source.name.as_str(), dir)))
        .collect();
    let mut logs: Vec<(&str, Vec<String>)> = Vec::new();
    for service in &definitions.feature_services {
        let object = format!("feature service '{}'", service.name);
        if let Some(logging) = &service.logging {
            let rate = logging.sample_rate;
            if !(rate > 0.0 && rate <= 1.0) {
                errors.push(
                    &service.defined_in,
                    &object,
                    "logging.sample_rate",
                    format!("{rate} is not in (0, 1]"),
                );
            }
            let problem = check_log_path(&logging.path).err().or_else(|| {
                let dir = parts(&logging.path);
                let clash = |other: &[String]| dir.starts_with(other) || other.starts_with(&dir);
                if let Some((name, _)) = sources.iter().find(|(_, other)| clash(other)) {
                    Some(format!("'{}' overlaps the directory of source '{name}', which would read the log as data", logging.path))
                } else if let Some((name, _)) = logs.iter().find(|(_, other)| clash(other)) {
                    Some(format!("'{}' overlaps the log directory of feature service '{name}': each service needs a directory of its own", logging.path))
                } else {
                    logs.push((&service.name, dir));
                    None
                }
            });
            if let Some(message) = problem {
                errors.push(&service.defined_in, &object, "logging.path", message);
            }
        }
        if let Some(monitoring) = &service.monitoring {
            check_thresholds(
                service,
                "monitoring.thresholds",
                &monitoring.thresholds,
                errors,
            );
            for (feature, thresholds) in &monitoring.features {
                let field = format!("monitoring.features.{feature}");
                if !serves(definitions, service, feature) {
                    errors.push(
                        &service.defined_in,
                        &object,
                        &field,
                        format!(
                            "the service serves no feature '{feature}' (name it view__feature)"
                        ),
                    );
                }
                check_thresholds(service, &field, thresholds, errors);
            }
        }
    }
}

/// A path's directory names, `.` left out.
fn parts(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// The directory a source's scan reads under: the part before a glob, or
/// the path when it names a directory; `None` for a single file.
fn source_dir(path: &str) -> Option<Vec<String>> {
    let all = parts(path);
    if let Some(glob) = all.iter().position(|p| p.contains(['*', '?', '['])) {
        return Some(all[..glob].to_vec());
    }
    (!path.ends_with(".parquet")).then_some(all)
}

/// A log directory: relative, inside the project, not a glob.
fn check_log_path(path: &str) -> Result<(), String> {
    let parsed = Path::new(path);
    if path.trim().is_empty() {
        return Err("empty".into());
    }
    if parts(path).is_empty() {
        return Err(format!("'{path}' is the project directory itself"));
    }
    if parsed.is_absolute() {
        return Err(format!("'{path}' must be relative to the project"));
    }
    if parsed
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(format!("'{path}' must stay inside the project (no '..')"));
    }
    if path.contains(['*', '?', '[']) {
        return Err(format!("'{path}' is a directory, not a glob"));
    }
    Ok(())
}

fn check_thresholds(
    service: &FeatureService,
    field: &str,
    thresholds: &crate::registry::monitoring::Thresholds,
    errors: &mut Collector,
) {
    let object = format!("feature service '{}'", service.name);
    for (name, value) in thresholds.values() {
        let Some(value) = value else { continue };
        let bounded = matches!(
            name,
            "skew_rate" | "ks_p_value" | "jensen_shannon" | "null_rate_change"
        );
        if !value.is_finite() || value < 0.0 || (bounded && value > 1.0) {
            errors.push(
                &service.defined_in,
                &object,
                format!("{field}.{name}"),
                format!(
                    "{value} is not {}",
                    if bounded {
                        "in [0, 1]"
                    } else {
                        "a number >= 0"
                    }
                ),
            );
        }
    }
}

/// Whether `service` serves `logged` (`view__feature`).
fn serves(definitions: &Definitions, service: &FeatureService, logged: &str) -> bool {
    service.features.iter().any(|item| {
        let Some(feature) = logged
            .strip_prefix(item.view.as_str())
            .and_then(|rest| rest.strip_prefix("__"))
        else {
            return false;
        };
        match &item.features {
            Some(names) => names.iter().any(|n| n == feature),
            None => definitions
                .feature_view(&item.view)
                .map(|v| v.features.iter().any(|f| f.name == feature))
                .or_else(|| {
                    definitions
                        .on_demand_feature_view(&item.view)
                        .map(|v| v.features.iter().any(|f| f.name == feature))
                })
                .unwrap_or(false),
        }
    })
}
