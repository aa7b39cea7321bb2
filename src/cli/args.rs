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
    Quickstart {
        /// The example project's directory.
        #[arg(default_value = "wafer-demo")]
        dir: PathBuf,
        /// Stop after the lookup instead of serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Serve the HTTP API: Feast-compatible lookups, push, materialize, registry, metrics.
    Serve {
        /// Address to listen on (server.host in wafer.yaml by default).
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on (server.port in wafer.yaml, 6566, by default).
        #[arg(long)]
        port: Option<u16>,
    },
    /// WebAssembly transforms: build, upload, list, history, rollback, test.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
    /// Show what `apply` would add, change or remove.
    Plan,
    /// Validate the definitions and store them as a new registry version.
    Apply,
    /// Copy the latest values with event times in [START, END] into the online store.
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
    /// Browse the registry.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Build a training set: entity rows joined with features, point in time correct.
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
