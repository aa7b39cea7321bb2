//! The `wafer` command line: parses arguments and calls [`FeatureStore`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::example::{self, ExampleOptions};
use crate::online::EntityRows;
use crate::registry::{Action, Definitions, RegistryVersion};
use crate::transform::ModuleSchema;
use crate::{FeatureRequest, FeatureStore};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

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
    fn request(&self) -> FeatureRequest {
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(dir) = &cli.project_dir {
        std::env::set_current_dir(dir)
            .with_context(|| format!("cannot enter {}", dir.display()))?;
    }
    let dir = std::env::current_dir().context("cannot read the current directory")?;
    match cli.command {
        Command::Init {
            dir: target,
            size,
            force,
        } => init(&target, &size, force),
        Command::Quickstart {
            dir: target,
            no_serve,
        } => quickstart(&target, !no_serve),
        Command::Serve { host, port } => serve(FeatureStore::open(&dir)?, host, port, None),
        Command::Transform {
            command: TransformCommand::Build { dir: crate_dir },
        } => build_transform(&crate_dir),
        Command::Transform { command } => transform(&FeatureStore::open(&dir)?, command),
        Command::Plan => {
            let store = FeatureStore::open(&dir)?;
            let changes = store.plan()?;
            if changes.is_empty() {
                println!("No changes: the registry matches the definitions.");
            }
            for change in changes {
                println!("{change}");
            }
            Ok(())
        }
        Command::Apply => apply(&FeatureStore::open(&dir)?),
        Command::Materialize { start, end, views } => {
            let store = FeatureStore::open(&dir)?;
            let (start, end) = (parse_time(&start)?, parse_time(&end)?);
            materialize(&store, Some(start), end, views.as_deref())
        }
        Command::MaterializeIncremental { end, views } => {
            let store = FeatureStore::open(&dir)?;
            materialize(&store, None, parse_time(&end)?, views.as_deref())
        }
        Command::Online {
            selection,
            entities,
        } => {
            let store = FeatureStore::open(&dir)?;
            online(
                &store,
                &selection.request(),
                &entities,
                selection.full_feature_names,
            )
        }
        Command::Registry { command } => registry(&FeatureStore::open(&dir)?, command),
        Command::Historical {
            entities,
            selection,
            output,
        } => {
            let store = FeatureStore::open(&dir)?;
            historical(
                &store,
                &entities,
                &selection.request(),
                selection.full_feature_names,
                &output,
            )
        }
    }
}

fn print_schema(schema: &ModuleSchema) {
    let fields = |fields: &[crate::transform::SchemaField]| {
        fields
            .iter()
            .map(|f| {
                let null = if f.nullable { "?" } else { "" };
                format!("{}: {}{null}", f.name, f.value_type)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  inputs:  {}", fields(&schema.inputs));
    println!("  outputs: {}", fields(&schema.outputs));
}

const TRANSFORM_RUSTFLAGS: &str =
    r#"target.wasm32-unknown-unknown.rustflags=["-C", "link-arg=-zstack-size=65536"]"#;

fn build_transform(crate_dir: &Path) -> Result<()> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!("no Cargo.toml in {}", crate_dir.display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--message-format=json-render-diagnostics",
            // A 64 KiB stack (Rust's default is 1 MiB) keeps a small call's
            // pages at the start of memory, which the runtime keeps
            // resident between calls: about 4 us less per call.
            "--config",
            TRANSFORM_RUSTFLAGS,
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "cargo build failed (is the target installed? `rustup target add wasm32-unknown-unknown`)"
        );
    }
    let mut modules = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten() {
            if let Some(path) = file.as_str().filter(|p| p.ends_with(".wasm")) {
                modules.push(PathBuf::from(path));
            }
        }
    }
    if modules.is_empty() {
        bail!("the build produced no .wasm module: the crate needs `crate-type = [\"cdylib\"]` under [lib]");
    }
    for module in modules {
        let bytes =
            std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
        let schema = crate::transform::schema::inspect(&bytes)
            .with_context(|| format!("{} is not a valid transform", module.display()))?;
        println!("{} ({} bytes)", module.display(), bytes.len());
        println!("  transform: {}", schema.name);
        print_schema(&schema);
    }
    Ok(())
}

fn transform(store: &FeatureStore, command: TransformCommand) -> Result<()> {
    match command {
        TransformCommand::Build { dir } => build_transform(&dir),
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
                    crate::transform::VersionAction::Upload => "upload",
                    crate::transform::VersionAction::Rollback => "rollback",
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
            let transform = store.transforms()?.resolve(&name)?;
            let input: serde_json::Value =
                serde_json::from_str(&input).context("--input is not valid JSON")?;
            let columns = crate::transform::json::input_columns(transform.schema(), &input)?;
            let outputs = transform.run(&columns)?;
            for row in crate::transform::json::output_rows(transform.schema(), &outputs) {
                println!("{row}");
            }
            Ok(())
        }
    }
}

fn init(target: &Path, size: &ExampleSize, force: bool) -> Result<()> {
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

/// Reads a time argument: `now`, RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or a
/// date (midnight UTC).
fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(Utc::now());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(NaiveTime::MIN).and_utc());
    }
    bail!("invalid time '{text}': use now, 2024-01-01T00:00:00Z or 2024-01-01")
}

/// Materializes `[start, end]`, or incrementally up to `end` without a start.
#[cfg(feature = "offline")]
fn materialize(
    store: &FeatureStore,
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    views: Option<&[String]>,
) -> Result<()> {
    let progress = progress::Progress::new();
    let records = match start {
        Some(start) => store.materialize(start, end, views, &progress)?,
        None => store.materialize_incremental(end, views, &progress)?,
    };
    if records.is_empty() {
        println!("No online feature views to materialize.");
    }
    Ok(())
}

#[cfg(not(feature = "offline"))]
fn materialize(
    _: &FeatureStore,
    _: Option<DateTime<Utc>>,
    _: DateTime<Utc>,
    _: Option<&[String]>,
) -> Result<()> {
    bail!("this build of wafer has no offline store to materialize from (built without the `offline` feature)")
}

fn online(
    store: &FeatureStore,
    request: &FeatureRequest,
    entities: &[String],
    full_feature_names: bool,
) -> Result<()> {
    let mut rows = EntityRows::default();
    for entity in entities {
        let (key, value) = entity
            .split_once('=')
            .with_context(|| format!("invalid --entity '{entity}': write KEY=VALUE"))?;
        // Numbers and booleans as JSON, anything else as text; values are
        // coerced to the join key's declared type.
        let json = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        rows.columns.push((key.to_string(), vec![json]));
    }
    let response = store.get_online_features(request, full_feature_names, &rows)?;
    let width = response
        .feature_names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0);
    for (name, column) in response.feature_names.iter().zip(&response.results) {
        let time = column.event_timestamps[0]
            .map(|t| DateTime::from_timestamp_nanos(t).to_rfc3339())
            .unwrap_or_default();
        println!(
            "{name:<width$}  {:<24} {:<16} {time}",
            column.values[0].to_string(),
            column.statuses[0].as_str()
        );
    }
    Ok(())
}

fn apply(store: &FeatureStore) -> Result<()> {
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

#[cfg(feature = "offline")]
fn historical(
    store: &FeatureStore,
    entities: &Path,
    request: &FeatureRequest,
    full_feature_names: bool,
    output: &Path,
) -> Result<()> {
    let started = std::time::Instant::now();
    let summary = store.get_historical_features(entities, request, full_feature_names, output)?;
    println!(
        "Wrote {} rows to {} in {:.2}s.",
        summary.rows,
        output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(not(feature = "offline"))]
fn historical(_: &FeatureStore, _: &Path, _: &FeatureRequest, _: bool, _: &Path) -> Result<()> {
    bail!("this build of wafer has no offline store (built without the `offline` feature)")
}

/// Serves until SIGINT or SIGTERM. `example` prints a curl against the
/// bound address.
fn serve(
    store: FeatureStore,
    host: Option<String>,
    port: Option<u16>,
    example: Option<&str>,
) -> Result<()> {
    let host = host.unwrap_or_else(|| store.config().server.host.clone());
    let port = port.unwrap_or(store.config().server.port);
    let address: std::net::SocketAddr = format!("{host}:{port}")
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .ok()
                .and_then(|mut addresses| addresses.next())
                .ok_or(())
        })
        .map_err(|_| anyhow::anyhow!("cannot resolve host '{host}'"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let store = std::sync::Arc::new(store);
    runtime.block_on(crate::server::serve(store, address, |bound| {
        println!("Serving on http://{bound} (Ctrl-C to stop)");
        if let Some(body) = example {
            println!("Try:\n  curl -s http://{bound}/get-online-features -d '{body}'");
        }
    }))
}

fn quickstart(target: &Path, then_serve: bool) -> Result<()> {
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
    historical(
        &store,
        &target.join(example::ENTITY_FILE),
        &FeatureRequest::Service("driver_activity".into()),
        false,
        &output,
    )?;
    preview(&output, 5)?;
    materialize(&store, None, Utc::now(), None)?;
    println!("\nOnline lookup of driver 1001:");
    online(
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
    serve(
        store,
        None,
        None,
        Some(r#"{"feature_service": "driver_activity", "entities": {"driver_id": [1001, 1002]}}"#),
    )
}

fn registry(store: &FeatureStore, command: RegistryCommand) -> Result<()> {
    match command {
        RegistryCommand::List => {
            let applied = store.applied()?;
            println!(
                "registry version {} ({})",
                applied.version,
                applied.created_at.to_rfc3339()
            );
            print_list(&applied.definitions);
        }
        RegistryCommand::Show { name, version } => {
            let applied = match version {
                Some(number) => std::sync::Arc::new(store.registry().version(number)?),
                None => store.applied()?,
            };
            show(&applied, &name)?;
            if applied.definitions.feature_view(&name).is_some() {
                let runs: Vec<_> = store
                    .registry()
                    .materializations()?
                    .into_iter()
                    .filter(|r| r.view == name)
                    .collect();
                match runs.iter().max_by_key(|r| r.end) {
                    None => println!("# freshness: never materialized"),
                    Some(last) => println!(
                        "# freshness: materialized up to {} ({} rows written by that run, {} runs, last finished {})",
                        last.end.to_rfc3339(),
                        last.rows_written,
                        runs.len(),
                        last.finished_at.to_rfc3339()
                    ),
                }
            }
        }
        RegistryCommand::History => {
            for version in store.registry().history()? {
                let adds = version
                    .changes
                    .iter()
                    .filter(|c| c.action == Action::Add)
                    .count();
                let changes = version
                    .changes
                    .iter()
                    .filter(|c| c.action == Action::Change)
                    .count();
                let removes = version
                    .changes
                    .iter()
                    .filter(|c| c.action == Action::Remove)
                    .count();
                println!(
                    "version {}  {}  by {}  (+{adds} ~{changes} -{removes})",
                    version.version,
                    version.created_at.to_rfc3339(),
                    version.author
                );
                for change in &version.changes {
                    println!("    {change}");
                }
            }
        }
    }
    Ok(())
}

fn print_list(definitions: &Definitions) {
    println!("{:<16} {:<28} DETAILS", "KIND", "NAME");
    for e in &definitions.entities {
        let keys: Vec<String> = e
            .join_keys
            .iter()
            .map(|k| format!("{}:{}", k.name, k.value_type))
            .collect();
        println!(
            "{:<16} {:<28} join keys {}",
            "entity",
            e.name,
            keys.join(", ")
        );
    }
    for s in &definitions.sources {
        println!("{:<16} {:<28} {}", "source", s.name, s.path);
    }
    for v in &definitions.feature_views {
        println!(
            "{:<16} {:<28} {} features, entities {}, ttl {}",
            "feature view",
            v.name,
            v.features.len(),
            v.entities.join(", "),
            v.ttl
        );
    }
    for s in &definitions.feature_services {
        let views: Vec<&str> = s.features.iter().map(|i| i.view.as_str()).collect();
        println!(
            "{:<16} {:<28} views {}",
            "feature service",
            s.name,
            views.join(", ")
        );
    }
}

fn show(version: &RegistryVersion, name: &str) -> Result<()> {
    let d = &version.definitions;
    let mut found = false;
    let mut print = |kind: &str, value: serde_json::Result<serde_json::Value>| -> Result<()> {
        found = true;
        println!("# {kind} (registry version {})", version.version);
        println!("{}", serde_json::to_string_pretty(&value?)?);
        Ok(())
    };
    if let Some(x) = d.entity(name) {
        print("entity", serde_json::to_value(x))?;
    }
    if let Some(x) = d.source(name) {
        print("source", serde_json::to_value(x))?;
    }
    if let Some(x) = d.feature_view(name) {
        print("feature view", serde_json::to_value(x))?;
    }
    if let Some(x) = d.feature_service(name) {
        print("feature service", serde_json::to_value(x))?;
    }
    if !found {
        bail!(
            "no object named '{name}' in registry version {}",
            version.version
        );
    }
    Ok(())
}

/// Prints the first rows of a Parquet file as a table.
fn preview(path: &Path, rows: usize) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(rows)
        .build()?;
    if let Some(batch) = reader.next().transpose()? {
        println!("{}", arrow::util::pretty::pretty_format_batches(&[batch])?);
    }
    Ok(())
}

#[cfg(feature = "offline")]
mod progress {
    //! Materialization progress: a live bar with rows/s on a terminal,
    //! plain lines otherwise.

    use std::io::IsTerminal;
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};
    use indicatif::{ProgressBar, ProgressStyle};

    use crate::registry::MaterializationRecord;
    use crate::MaterializeProgress;

    pub struct Progress {
        terminal: bool,
        bar: Mutex<Option<ProgressBar>>,
        started: Mutex<std::time::Instant>,
    }

    impl Progress {
        pub fn new() -> Self {
            Progress {
                terminal: std::io::stderr().is_terminal(),
                bar: Mutex::new(None),
                started: Mutex::new(std::time::Instant::now()),
            }
        }
    }

    impl MaterializeProgress for Progress {
        fn view_started(&self, view: &str, start: DateTime<Utc>, end: DateTime<Utc>) {
            *self.started.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now();
            let window = format!("{view}: {} .. {}", start.to_rfc3339(), end.to_rfc3339());
            if self.terminal {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {human_pos} rows ({per_sec})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(window);
                bar.enable_steady_tick(std::time::Duration::from_millis(100));
                *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
            } else {
                eprintln!("materializing {window}");
            }
        }

        fn rows_written(&self, _view: &str, rows: u64) {
            if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                bar.inc(rows);
            }
        }

        fn view_finished(&self, record: &MaterializationRecord) {
            if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
                bar.finish_and_clear();
            }
            let seconds = self
                .started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .elapsed()
                .as_secs_f64();
            println!(
                "{}: wrote {} rows in {:.2}s ({:.0} rows/s), window {} .. {}",
                record.view,
                record.rows_written,
                seconds,
                record.rows_written as f64 / seconds.max(1e-9),
                record.start.to_rfc3339(),
                record.end.to_rfc3339()
            );
        }
    }
}
