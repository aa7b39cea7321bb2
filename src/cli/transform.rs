//! `wafer transform`: build a transform crate, upload, list, history,
//! rollback and test modules.

use std::path::Path;

use anyhow::{Context, Result};

use super::args::TransformCommand;
use super::output::print_schema;
use crate::transform::VersionAction;
use crate::FeatureStore;

/// Builds the crate in `crate_dir` and prints each module with its schema.
pub(super) fn build(crate_dir: &Path) -> Result<()> {
    for module in crate::transform::build::build(crate_dir)? {
        println!("{} ({} bytes)", module.path.display(), module.size);
        println!("  transform: {}", module.schema.name);
        print_schema(&module.schema);
    }
    Ok(())
}

pub(super) fn run(store: &FeatureStore, command: TransformCommand) -> Result<()> {
    match command {
        TransformCommand::Build { dir } => build(&dir),
        TransformCommand::Upload { name, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let outcome = store.upload_transform(&name, &bytes)?;
            if outcome.unchanged {
                println!(
                    "{name} is already at sha256:{} (nothing changed)",
                    outcome.sha256
                );
            } else {
                println!(
                    "{name} -> sha256:{} ({} bytes)",
                    outcome.sha256, outcome.size
                );
            }
            print_schema(&outcome.schema);
            Ok(())
        }
        TransformCommand::List => {
            let transforms = store.transforms()?.list()?;
            if transforms.is_empty() {
                println!("No transforms: upload one with `wafer transform upload NAME FILE.wasm`.");
            }
            for summary in transforms {
                println!(
                    "{}  sha256:{}  {} version(s), active since {}",
                    summary.name,
                    summary.active.sha256,
                    summary.versions,
                    summary.active.at.to_rfc3339()
                );
                print_schema(&summary.schema);
            }
            Ok(())
        }
        TransformCommand::History { name } => {
            let history = store.transforms()?.history(&name)?;
            let last = history.len();
            for (i, version) in history.iter().enumerate() {
                let action = match version.action {
                    VersionAction::Upload => "upload",
                    VersionAction::Rollback => "rollback",
                };
                let active = if i + 1 == last { "  (active)" } else { "" };
                println!(
                    "{:>3}  {}  {:<8}  by {:<12} sha256:{}{active}",
                    i + 1,
                    version.at.to_rfc3339(),
                    action,
                    version.by,
                    version.sha256
                );
            }
            Ok(())
        }
        TransformCommand::Rollback { name, version } => {
            let event = store.rollback_transform(&name, &version)?;
            println!("{name} -> sha256:{}", event.sha256);
            Ok(())
        }
        TransformCommand::Test { name, input } => {
            let input: serde_json::Value =
                serde_json::from_str(&input).context("--input is not valid JSON")?;
            for row in store.test_transform(&name, &input)? {
                println!("{row}");
            }
            Ok(())
        }
    }
}
