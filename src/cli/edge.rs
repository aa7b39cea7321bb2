//! `wafer bundle create|inspect|verify`, `wafer edge sync`, and `wafer
//! serve` as an edge server (`--bundle`, `--sync-from`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::args::{BundleCommand, EdgeServeArgs, SyncArgs};
use crate::bundle::{BundleRequest, Manifest};
use crate::edge::sync::{sync_once, SyncSource};
use crate::edge::{read_bundle, Edge};
use crate::FeatureStore;

/// The edge state's page cache.
const EDGE_CACHE_BYTES: u64 = 64 << 20;

pub(super) fn bundle(dir: &Path, command: BundleCommand) -> Result<()> {
    match command {
        BundleCommand::Create {
            out,
            feature_services,
            views,
            entities,
        } => {
            let store = FeatureStore::open(dir)?;
            let entities = match entities {
                Some(path) => Some(
                    serde_json::from_slice(
                        &std::fs::read(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    )
                    .with_context(|| {
                        format!(
                            "{}: expected a JSON object of join key columns",
                            path.display()
                        )
                    })?,
                ),
                None => None,
            };
            let started = std::time::Instant::now();
            let bytes = store.create_bundle(&BundleRequest {
                feature_services,
                views,
                entities,
                source: dir.display().to_string(),
                ..Default::default()
            })?;
            crate::durable::write_atomic(&out, &bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let manifest = crate::bundle::Bundle::verify(bytes)?.manifest;
            println!(
                "Wrote {} ({} bytes, {} records, registry version {}) in {:.2}s",
                out.display(),
                std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
                manifest.records,
                manifest.registry_version,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        BundleCommand::Inspect { file } => {
            let bundle = read_bundle(&file)?;
            println!("{}", serde_json::to_string_pretty(&bundle.manifest)?);
            Ok(())
        }
        BundleCommand::Verify { file } => {
            let bundle = read_bundle(&file)?;
            println!(
                "{}: ok (format {}, {} parts, {} records)",
                file.display(),
                bundle.manifest.format_version,
                bundle.manifest.parts.len(),
                bundle.manifest.records
            );
            Ok(())
        }
    }
}

fn source(url: &str, sync: &SyncArgs) -> SyncSource {
    SyncSource {
        url: url.to_string(),
        token: sync.token.clone(),
        feature_services: sync.feature_services.clone(),
        max_bytes: sync.max_bundle_mb.saturating_mul(1 << 20),
        timeout: Duration::from_secs(600),
    }
}

/// The project an edge serves: its state's, else the first bundle's.
fn project_of(edge: &Edge, incoming: Option<&Manifest>) -> Result<String> {
    if let Some(manifest) = edge.manifest()? {
        return Ok(manifest.project);
    }
    match incoming {
        Some(manifest) => Ok(manifest.project.clone()),
        None => bail!(
            "{} holds no state yet: give --bundle or --sync-from",
            edge.dir().display()
        ),
    }
}

pub(super) fn sync(url: &str, data_dir: &Path, args: &SyncArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let edge = Edge::open(data_dir, EDGE_CACHE_BYTES)?;
    let source = source(url, args);
    let applied = match edge.manifest()? {
        Some(manifest) => {
            let store = edge.feature_store(&manifest.project)?;
            sync_once(&edge, &store, &source)?
        }
        None => {
            let bundle = source.fetch(None, &[])?;
            let store = edge.feature_store(&bundle.manifest.project)?;
            edge.apply(&store, &bundle)?
        }
    };
    println!(
        "Synced from {url}: {} {} records ({} bytes) in {:.3}s, registry version {}, position {:?}",
        if applied.full { "all" } else { "changed" },
        applied.records,
        applied.bytes,
        started.elapsed().as_secs_f64(),
        applied.registry_version,
        applied.cursor
    );
    Ok(())
}

/// Serves an edge state: loads `--bundle` into it (a bundle that fails
/// verification leaves the state served before, when there is one), syncs
/// once from `--sync-from`, then serves, syncing every `--sync-every`.
pub(super) fn serve(args: &EdgeServeArgs, host: Option<String>, port: Option<u16>) -> Result<()> {
    let data_dir = match (&args.data_dir, &args.bundle) {
        (Some(dir), _) => dir.clone(),
        (None, Some(bundle)) => PathBuf::from(format!("{}.state", bundle.display())),
        (None, None) => bail!("--sync-from needs --data-dir (where the edge keeps its state)"),
    };
    let edge = Edge::open(&data_dir, EDGE_CACHE_BYTES)?;
    let mut store = None;
    if let Some(path) = &args.bundle {
        let held = edge.manifest()?;
        // Only a bundle made after the state's last bundle or sync is
        // applied: a restart must not roll a synced edge back, and need not
        // read more than the bundle's manifest.
        let older = |manifest: &Manifest| {
            held.as_ref()
                .is_some_and(|m| manifest.created_at <= m.created_at)
        };
        let bundle = match crate::bundle::format::read_manifest(path) {
            Ok(manifest) if older(&manifest) => {
                tracing::info!("the state is as new as the bundle or newer: not loaded again");
                None
            }
            _ => Some(read_bundle(path)),
        };
        match bundle {
            None => {}
            Some(Ok(bundle)) => {
                let project = project_of(&edge, Some(&bundle.manifest))?;
                let serving = edge.feature_store(&project)?;
                match edge.apply(&serving, &bundle) {
                    Ok(applied) => {
                        tracing::info!(records = applied.records, "loaded the bundle");
                        store = Some(serving);
                    }
                    Err(error) if held.is_some() => refused(path, &error),
                    Err(error) => return Err(error.into()),
                }
            }
            Some(Err(error)) if held.is_some() => refused(path, &error),
            Some(Err(error)) => return Err(error.into()),
        }
    }
    let source = args.sync_from.as_deref().map(|url| source(url, &args.sync));
    let store = match (store, &source) {
        (Some(store), _) => store,
        (None, Some(source)) if edge.manifest()?.is_none() => {
            let bundle = source.fetch(None, &[])?;
            let store = edge.feature_store(&bundle.manifest.project)?;
            edge.apply(&store, &bundle)?;
            store
        }
        (None, _) => edge.feature_store(&project_of(&edge, None)?)?,
    };
    let store = Arc::new(store);
    let edge = Arc::new(edge);
    if let Some(source) = source {
        if let Err(error) = sync_once(&edge, &store, &source) {
            tracing::error!(%error, "sync failed; serving the state held");
            eprintln!("{error}: serving the state held");
        }
        if let Some(every) = args.sync_every {
            let (edge, store) = (edge.clone(), store.clone());
            std::thread::Builder::new()
                .name("edge-sync".into())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    match sync_once(&edge, &store, &source) {
                        Ok(applied) => tracing::info!(
                            records = applied.records,
                            full = applied.full,
                            cursor = ?applied.cursor,
                            "synced"
                        ),
                        Err(error) => {
                            tracing::error!(%error, "sync failed; serving the state held")
                        }
                    }
                })
                .context("cannot start the sync thread")?;
        }
    }
    super::serve::serve_shared(store, host, port)
}

/// A bundle not loaded: the state loaded before serves, and says so.
fn refused(path: &Path, error: &crate::Error) {
    tracing::error!(%error, "bundle {} refused; serving the state loaded before", path.display());
    eprintln!("{error}: serving the state loaded before");
}
