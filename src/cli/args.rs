//! The command line's arguments: every command, flag and help text, as clap
//! parses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::FeatureRequest;

#[derive(Parser, Debug)]
#[command(name = "wafer", version, about = "A feature store in one binary")]
pub struct Cli {
    /// Run as if started in this directory (the project, holding wafer.yaml).
    #[arg(short = 'C', long, global = true, env = "WAFER_PROJECT_DIR")]
    pub project_dir: Option<PathBuf>,
    /// Log filter, e.g. `info` or `wafer=debug`.
    #[arg(long, global = true, default_value = "warn", env = "WAFER_LOG")]
    pub log_level: String,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "WAFER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an example project with generated driver statistics.
    Init {
        /// Where to create it.
        dir: PathBuf,
        #[command(flatten)]
        size: ExampleSize,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
    /// Set up the example project if missing, apply it, build a training set, materialize and look up.
    #[cfg_attr(not(feature = "offline"), command(hide = true))]
    Quickstart {
        /// The example project's directory.
        #[arg(default_value = "wafer-demo")]
        dir: PathBuf,
        /// Stop after the lookup instead of serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Serve the HTTP API: Feast-compatible lookups, push, materialize, registry, metrics.
    #[cfg_attr(
        not(feature = "offline"),
        command(
            about = "Serve the HTTP API: Feast-compatible lookups, push, registry, metrics; an edge server with --bundle or --sync-from"
        )
    )]
    Serve {
        /// Address to listen on (server.host in wafer.yaml by default).
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on (server.port in wafer.yaml, 6566, by default).
        #[arg(long)]
        port: Option<u16>,
        /// Materialize every view incrementally this often (15m, 1h;
        /// server.materialize_every in wafer.yaml). With several servers
        /// over one Redis, one of them runs each tick.
        #[cfg_attr(not(feature = "offline"), arg(hide = true))]
        #[arg(long, value_name = "INTERVAL")]
        materialize_every: Option<String>,
        #[command(flatten)]
        edge: EdgeServeArgs,
    },
    /// Bundles: one file with what an edge server needs (registry snapshot, modules, online records).
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Edge servers: sync their state from a central `wafer serve`.
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
    /// WebAssembly transforms: build, upload, list, history, rollback, test.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
    /// Show what `apply` would add, change or remove.
    Plan {
        /// Exit with status 2 when changes are pending (0 when none, 1 on
        /// an error): a CI/CD gate.
        #[arg(long)]
        exit_code: bool,
    },
    /// Validate the definitions and store them as a new registry version.
    Apply,
    /// Copy the latest values with event times in [START, END] into the online store.
    #[cfg_attr(not(feature = "offline"), command(hide = true))]
    Materialize {
        /// Window start: RFC 3339 (2024-01-01T00:00:00Z), a date, or `now`.
        start: String,
        /// Window end: RFC 3339, a date, or `now`.
        end: String,
        /// Only these views (comma-separated); every online view by default.
        #[arg(long, short = 'v', value_delimiter = ',')]
        views: Option<Vec<String>>,
    },
    /// Materialize from where the last run ended (or END minus the TTL) up to END.
    #[cfg_attr(not(feature = "offline"), command(hide = true))]
    MaterializeIncremental {
        /// Window end: RFC 3339, a date, or `now`.
        end: String,
        #[arg(long, short = 'v', value_delimiter = ',')]
        views: Option<Vec<String>>,
    },
    /// Look up features for one entity in the online store.
    Online {
        #[command(flatten)]
        selection: FeatureArgs,
        /// Join key values: --entity driver_id=1001 (repeat for composite keys).
        #[arg(long = "entity", value_name = "KEY=VALUE", required = true)]
        entities: Vec<String>,
    },
    /// Skew (online against offline) and drift reports of a feature service.
    #[cfg_attr(not(feature = "offline"), command(hide = true))]
    Monitor {
        #[command(subcommand)]
        command: MonitorCommand,
    },
    /// Browse the registry.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Build a training set: entity rows joined with features, point in time correct.
    #[cfg_attr(not(feature = "offline"), command(hide = true))]
    Historical {
        /// Entity rows: Parquet or CSV with join keys and `event_timestamp`.
        #[arg(long)]
        entities: PathBuf,
        #[command(flatten)]
        selection: FeatureArgs,
        /// Output file: .parquet or .csv.
        #[arg(long)]
        output: PathBuf,
    },
}

/// Which features a retrieval or lookup reads.
#[derive(clap::Args, Debug, Clone)]
pub struct FeatureArgs {
    /// Features as view:feature, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "feature_service",
        conflicts_with = "feature_service"
    )]
    pub features: Vec<String>,
    /// A feature service instead of a feature list.
    #[arg(long)]
    pub feature_service: Option<String>,
    /// Name columns view__feature instead of feature.
    #[arg(long)]
    pub full_feature_names: bool,
}

impl FeatureArgs {
    /// The request these arguments name.
    pub fn request(&self) -> FeatureRequest {
        match &self.feature_service {
            Some(name) => FeatureRequest::Service(name.clone()),
            None => FeatureRequest::Features(self.features.clone()),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExampleSize {
    /// Number of drivers.
    #[arg(long, default_value_t = 10_000)]
    pub drivers: u32,
    /// Hours of data per driver, ending at the current hour.
    #[arg(long, default_value_t = 100)]
    pub hours: u32,
    /// Rows in the sample entity file.
    #[arg(long, default_value_t = 1_000)]
    pub entity_rows: u32,
    /// Seed of the generated values.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Subcommand, Debug)]
pub enum TransformCommand {
    /// Build a transform crate for wasm32-unknown-unknown and print the module and its schema.
    Build {
        /// The crate's directory (holding Cargo.toml).
        dir: PathBuf,
    },
    /// Validate a module and make it NAME's active version.
    Upload { name: String, file: PathBuf },
    /// Every transform with its active version.
    List,
    /// Every version of one transform.
    History { name: String },
    /// Make an earlier version active: its number in `history`, or sha256:HEX (a prefix of 8+ digits will do).
    Rollback { name: String, version: String },
    /// Run a transform (NAME or NAME@sha256:HEX) on JSON input and print its outputs.
    Test {
        name: String,
        /// `{"input": value, ...}` for one row, or `{"input": [values], ...}` for several.
        #[arg(long)]
        input: String,
    },
}

/// `wafer monitor`: exit status 2 when a threshold is crossed.
#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// Replay logged lookups through historical retrieval and compare, feature by feature.
    Skew {
        /// The feature service (it must have `logging:`).
        #[arg(long)]
        feature_service: String,
        /// Logged rows from this time (RFC 3339, a date, or `now`).
        #[arg(long)]
        from: Option<String>,
        /// ... up to this time.
        #[arg(long)]
        to: Option<String>,
        /// Compare the newest this many logged rows.
        #[arg(long, default_value_t = 100_000)]
        limit: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare feature distributions: PSI, Kolmogorov-Smirnov, Jensen-Shannon, null rates.
    Drift {
        /// The feature service.
        #[arg(long)]
        feature_service: String,
        /// The reference rows: a Parquet file, a directory of them or a glob (logs, a training
        /// set), `logs:FROM..TO` (the service's logged rows) or `source:FROM..TO` (the offline
        /// sources by event time).
        #[arg(long, value_name = "FILE|logs:FROM..TO|source:FROM..TO")]
        reference: String,
        /// The current rows, given like --reference; without it, the service's logs from
        /// --from to --to.
        #[arg(long, value_name = "FILE|logs:FROM..TO|source:FROM..TO", conflicts_with_all = ["from", "to"])]
        current: Option<String>,
        /// With no --current: logged rows from this time.
        #[arg(long)]
        from: Option<String>,
        /// With no --current: logged rows up to this time.
        #[arg(long)]
        to: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// List every applied object.
    List,
    /// Print one object (or every object of that name) as JSON.
    Show {
        name: String,
        /// A past version instead of the newest.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Every applied version: when, who, what changed.
    History,
}

/// `wafer serve` as an edge server: from a bundle, a central server, or both.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EdgeServeArgs {
    /// Serve this bundle (no project directory needed); its state goes in --data-dir.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// The edge's state directory (default: beside the bundle, BUNDLE.state).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Sync from this central `wafer serve` (http://host:port) before serving and every --sync-every.
    #[arg(long)]
    pub sync_from: Option<String>,
    /// How often to sync (e.g. 30s, 5m); once at start when not given.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub sync_every: Option<std::time::Duration>,
    #[command(flatten)]
    pub sync: SyncArgs,
}

/// How an edge syncs.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SyncArgs {
    /// A token with the `edge` role on the central server.
    #[arg(long, env = "WAFER_EDGE_TOKEN")]
    pub token: Option<String>,
    /// Only these feature services (repeat); every service by default.
    #[arg(long = "feature-service")]
    pub feature_services: Vec<String>,
    /// The largest bundle accepted, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub max_bundle_mb: u64,
}

#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Write a bundle of this project's feature services for an edge server.
    Create {
        /// The bundle file to write.
        out: PathBuf,
        /// Feature services to include (repeat); every service when none and no --views.
        #[arg(long = "feature-service")]
        feature_services: Vec<String>,
        /// Views to include beside the services (comma-separated).
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
        /// Only these entities: a JSON file of join key columns, as in a lookup's `entities`.
        #[arg(long)]
        entities: Option<PathBuf>,
    },
    /// Print a bundle's manifest (after verifying it).
    Inspect { file: PathBuf },
    /// Check every part of a bundle against its sha256.
    Verify { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum EdgeCommand {
    /// Fetch what changed from a central `wafer serve` into an edge state directory, once.
    Sync {
        /// The central server (http://host:port).
        #[arg(long)]
        from: String,
        /// The edge's state directory.
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        sync: SyncArgs,
    },
}
