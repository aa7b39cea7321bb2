//! Project commands: `init` (the example project), `quickstart` (the whole
//! tour in one command), `plan` and `apply`.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::Utc;

use super::args::ExampleSize;
use super::{data, serve};
use crate::example::{self, ExampleOptions};
use crate::{FeatureRequest, FeatureStore};

pub(super) fn init(target: &Path, size: &ExampleSize, force: bool) -> Result<()> {
    let options = ExampleOptions {
        drivers: size.drivers,
        hours: size.hours,
        entity_rows: size.entity_rows,
        seed: size.seed,
        ..ExampleOptions::default()
    };
    let written = example::scaffold(target, &options, force)
        .with_context(|| format!("creating the example project in {}", target.display()))?;
    for path in &written {
        println!("created {}", path.display());
    }
    if written.is_empty() {
        println!(
            "{} already holds a project (use --force to overwrite)",
            target.display()
        );
    }
    println!("\nNext: cd {} && wafer apply", target.display());
    Ok(())
}

pub(super) fn plan(store: &FeatureStore, exit_code: bool) -> Result<()> {
    let changes = store.plan()?;
    if changes.is_empty() {
        println!("No changes: the registry matches the definitions.");
        return Ok(());
    }
    for change in changes {
        println!("{change}");
    }
    if exit_code {
        return Err(super::PendingChanges.into());
    }
    Ok(())
}

pub(super) fn apply(store: &FeatureStore) -> Result<()> {
    let outcome = store.apply()?;
    match outcome.version {
        None => println!("No changes: the registry is up to date."),
        Some(version) => {
            for change in &outcome.changes {
                println!("{change}");
            }
            println!("Applied registry version {version}.");
        }
    }
    Ok(())
}

pub(super) fn quickstart(target: &Path, then_serve: bool) -> Result<()> {
    if !target.join(crate::config::CONFIG_FILE).exists() {
        println!("Creating the example project in {} ...", target.display());
        init(
            target,
            &ExampleSize {
                drivers: 10_000,
                hours: 100,
                entity_rows: 1_000,
                seed: 42,
            },
            false,
        )?;
    }
    let store = FeatureStore::open(target)?;
    apply(&store)?;
    let output = target.join("training_set.parquet");
    data::historical(
        &store,
        &target.join(example::ENTITY_FILE),
        &FeatureRequest::Service("driver_activity".into()),
        false,
        &output,
    )?;
    #[cfg(feature = "offline")]
    data::preview(&output, 5)?;
    data::materialize(&store, None, Utc::now(), None)?;
    println!("\nOnline lookup of driver 1001:");
    data::online(
        &store,
        &FeatureRequest::Service("driver_activity".into()),
        &["driver_id=1001".to_string()],
        false,
    )?;
    println!(
        "\nTry it yourself:\n  cargo run --release -- -C {dir} historical --entities {} --feature-service driver_activity --output training.csv\n  cargo run --release -- -C {dir} online --feature-service driver_activity --entity driver_id=1002",
        example::ENTITY_FILE,
        dir = target.display(),
    );
    if !then_serve {
        return Ok(());
    }
    println!();
    serve::serve(
        store,
        None,
        None,
        None,
        Some(r#"{"feature_service": "driver_activity", "entities": {"driver_id": [1001, 1002]}}"#),
    )
}
