//! The `wafer` command line: a thin layer over [`FeatureStore`](crate::FeatureStore).
//! `args` declares the commands; each group's module turns them into
//! library calls and prints the outcome:
//!
//! - `project`: `init`, `quickstart`, `plan`, `apply`;
//! - `data`: `materialize`, `materialize-incremental`, `online`,
//!   `historical`;
//! - `registry`: `registry list|show|history`;
//! - `transform`: `transform build|upload|list|history|rollback|test`;
//! - `serve`: `serve`, the HTTP server on a tokio runtime (also as an
//!   edge server: `--bundle`, `--sync-from`);
//! - `edge`: `bundle create|inspect|verify`, `edge sync`;
//! - `monitor`: `monitor skew|drift`.

mod args;
mod data;
mod edge;
#[cfg(feature = "offline")]
mod monitor;
mod output;
#[cfg(feature = "offline")]
mod progress;
mod project;
mod registry;
mod serve;
mod transform;

use anyhow::{Context, Result};

pub use args::{
    BundleCommand, Cli, Command, EdgeCommand, EdgeServeArgs, ExampleSize, FeatureArgs, LogFormat,
    MonitorCommand, RegistryCommand, SyncArgs, TransformCommand,
};

use crate::FeatureStore;

/// `wafer plan --exit-code` found changes: the process exits with
/// [`PendingChanges::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("changes are pending: run `wafer apply`")]
pub struct PendingChanges;

impl PendingChanges {
    pub const EXIT_CODE: u8 = 2;
}

/// A `wafer monitor` report crossed a threshold: the process exits with
/// [`ThresholdCrossed::EXIT_CODE`] after printing the report.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ThresholdCrossed(pub String);

impl ThresholdCrossed {
    pub const EXIT_CODE: u8 = 2;
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(dir) = &cli.project_dir {
        std::env::set_current_dir(dir)
            .with_context(|| format!("cannot enter {}", dir.display()))?;
    }
    let dir = std::env::current_dir().context("cannot read the current directory")?;
    #[cfg(not(feature = "offline"))]
    if let Some(name) = needs_offline(&cli.command) {
        anyhow::bail!(
            "this build of wafer has no offline store (the edge build, without DuckDB): `{name}` needs the full build"
        );
    }
    match cli.command {
        Command::Init {
            dir: target,
            size,
            force,
        } => project::init(&target, &size, force),
        Command::Quickstart {
            dir: target,
            no_serve,
        } => project::quickstart(&target, !no_serve),
        Command::Serve {
            host,
            port,
            materialize_every,
            edge,
        } if edge.bundle.is_some() || edge.sync_from.is_some() || edge.data_dir.is_some() => {
            if materialize_every.is_some() {
                anyhow::bail!("--materialize-every: an edge server follows its source and does not materialize");
            }
            edge::serve(&edge, host, port)
        }
        Command::Serve {
            host,
            port,
            materialize_every,
            ..
        } => serve::serve(
            FeatureStore::open(&dir)?,
            host,
            port,
            materialize_every.as_deref(),
            None,
        ),
        Command::Bundle { command } => edge::bundle(&dir, command),
        Command::Edge {
            command:
                EdgeCommand::Sync {
                    from,
                    data_dir,
                    sync,
                },
        } => edge::sync(&from, &data_dir, &sync),
        Command::Transform {
            command: TransformCommand::Build { dir: crate_dir },
        } => transform::build(&crate_dir),
        Command::Transform { command } => transform::run(&FeatureStore::open(&dir)?, command),
        Command::Plan { exit_code } => project::plan(&FeatureStore::open(&dir)?, exit_code),
        Command::Apply => project::apply(&FeatureStore::open(&dir)?),
        Command::Materialize { start, end, views } => {
            let store = FeatureStore::open(&dir)?;
            let (start, end) = (data::parse_time(&start)?, data::parse_time(&end)?);
            data::materialize(&store, Some(start), end, views.as_deref())
        }
        Command::MaterializeIncremental { end, views } => {
            let store = FeatureStore::open(&dir)?;
            data::materialize(&store, None, data::parse_time(&end)?, views.as_deref())
        }
        Command::Online {
            selection,
            entities,
        } => {
            let store = FeatureStore::open(&dir)?;
            data::online(
                &store,
                &selection.request(),
                &entities,
                selection.full_feature_names,
            )
        }
        Command::Registry { command } => registry::run(&FeatureStore::open(&dir)?, command),
        #[cfg(feature = "offline")]
        Command::Monitor { command } => monitor::run(&FeatureStore::open(&dir)?, &dir, command),
        #[cfg(not(feature = "offline"))]
        Command::Monitor { .. } => anyhow::bail!("`monitor` needs the offline store"),
        Command::Historical {
            entities,
            selection,
            output,
        } => {
            let store = FeatureStore::open(&dir)?;
            data::historical(
                &store,
                &entities,
                &selection.request(),
                selection.full_feature_names,
                &output,
            )
        }
    }
}

/// The commands the edge build lacks (they read the offline store).
#[cfg(not(feature = "offline"))]
fn needs_offline(command: &Command) -> Option<&'static str> {
    match command {
        Command::Quickstart { .. } => Some("quickstart"),
        Command::Materialize { .. } => Some("materialize"),
        Command::MaterializeIncremental { .. } => Some("materialize-incremental"),
        Command::Historical { .. } => Some("historical"),
        Command::Monitor { .. } => Some("monitor"),
        _ => None,
    }
}
