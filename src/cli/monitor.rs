//! `wafer monitor skew|drift`: a report as a table (or JSON), exit status 2
//! when it crossed a threshold.

use std::path::Path;

use anyhow::Result;

use super::args::MonitorCommand;
use super::ThresholdCrossed;
use crate::monitor::drift::DriftRequest;
use crate::monitor::skew::SkewRequest;
use crate::monitor::{DataSpec, DriftReport, SkewReport, Window};
use crate::FeatureStore;

pub(super) fn run(store: &FeatureStore, dir: &Path, command: MonitorCommand) -> Result<()> {
    match command {
        MonitorCommand::Skew {
            feature_service,
            from,
            to,
            limit,
            json,
        } => {
            let window = window(from.as_deref(), to.as_deref())?;
            let report = store.skew_report(&SkewRequest {
                feature_service,
                window,
                limit,
                threads: None,
            })?;
            let crossed = report.crossed.then_some("skew");
            finish(&report, &report.feature_service, crossed, json, print_skew)
        }
        MonitorCommand::Drift {
            feature_service,
            reference,
            current,
            from,
            to,
            json,
        } => {
            let current_text = match current {
                Some(current) => current,
                None => format!("logs:{}", window(from.as_deref(), to.as_deref())?),
            };
            let report = store.drift_report(&DriftRequest {
                feature_service,
                reference: DataSpec::parse(&reference, dir)?,
                reference_text: reference,
                current: DataSpec::parse(&current_text, dir)?,
                current_text,
                threads: None,
            })?;
            let crossed = report.crossed.then_some("drift");
            finish(&report, &report.feature_service, crossed, json, print_drift)
        }
    }
}

/// Prints a report (JSON or a table), then fails with exit status 2 when
/// it crossed a threshold (`crossed` names what).
fn finish<T: serde::Serialize>(
    report: &T,
    service: &str,
    crossed: Option<&str>,
    json: bool,
    print: fn(&T),
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print(report);
    }
    match crossed {
        Some(what) => Err(ThresholdCrossed(format!(
            "{what} over a threshold in feature service '{service}'"
        ))
        .into()),
        None => Ok(()),
    }
}

fn window(from: Option<&str>, to: Option<&str>) -> Result<Window> {
    let end = |t: Option<&str>| crate::monitor::parse_end(t.unwrap_or(""));
    Ok(Window {
        from: end(from)?,
        to: end(to)?,
    })
}

fn print_skew(report: &SkewReport) {
    println!(
        "skew of feature service '{}': {} logged rows in {} replayed offline (registry version {})",
        report.feature_service, report.rows, report.window, report.registry_version
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11}  causes",
        "feature", "match", "mismatch", "no online", "no offl.", "rate", "max |diff|"
    );
    for f in &report.features {
        let causes = f
            .causes
            .iter()
            .map(|(cause, n)| format!("{cause}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:<40} {:>9} {:>9} {:>9} {:>9} {:>7.3}% {:>11}  {}{}",
            f.feature,
            f.matched,
            f.mismatched,
            f.missing_online,
            f.missing_offline,
            f.skew_rate * 100.0,
            f.max_abs_diff
                .map(|d| format!("{d:.4e}"))
                .unwrap_or_default(),
            causes,
            if f.crossed { "  CROSSED" } else { "" }
        );
    }
    for f in report.features.iter().filter(|f| !f.examples.is_empty()) {
        println!("examples of {}:", f.feature);
        for e in &f.examples {
            println!(
                "  {} [{}] online {} ({}, {}) offline {} ({}): {}",
                e.log_timestamp,
                e.entity,
                e.online.as_deref().unwrap_or("null"),
                e.online_status,
                e.online_event_timestamp.as_deref().unwrap_or("-"),
                e.offline.as_deref().unwrap_or("null"),
                e.offline_event_timestamp.as_deref().unwrap_or("-"),
                e.cause
            );
        }
    }
    if !report.not_logged.is_empty() {
        println!("not in the logs: {}", report.not_logged.join(", "));
    }
}

fn print_drift(report: &DriftReport) {
    println!(
        "drift of feature service '{}': reference {}, current {}",
        report.feature_service, report.reference.spec, report.current.spec
    );
    println!(
        "{:<40} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8}  crossed",
        "feature", "ref rows", "cur rows", "psi", "ks p", "js", "null chg", "band"
    );
    let number = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    for f in &report.features {
        println!(
            "{:<40} {:>9} {:>9} {:>8} {:>9} {:>9} {:>+9.4} {:>8}  {}",
            f.feature,
            f.reference_rows,
            f.current_rows,
            number(f.psi),
            number(f.ks_p_value),
            number(f.jensen_shannon),
            f.null_rate_change,
            f.psi_band,
            f.crossed.join(",")
        );
    }
    for (feature, reason) in &report.skipped {
        println!("skipped {feature}: {reason}");
    }
}
