//! The edge: a server answering lookups from a bundle's state, with no
//! DuckDB, no Redis and no central store at request time.
//!
//! Its state is one redb file (`DIR/online.redb`) holding the online
//! records, the registry snapshot they belong to and the manifest of what
//! was applied last (where it came from, its change-log position); a
//! bundle or a sync replaces the three in one durable transaction, so a
//! crash or a refused bundle leaves the state served before. Modules go to
//! `DIR/transforms` first (content-addressed, compiled and checked on this
//! host); the snapshot pins them by sha256, so they take effect with it.
//! [`sync`] fetches bundles from a central `wafer serve`.

pub mod sync;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bundle::{Bundle, BundleError, Manifest};
use crate::config::Config;
use crate::online::redb_store::RedbStore;
use crate::online::{KeyedRecord, LogPosition, OnlineError, OnlineStore, ScanVisitor};
use crate::registry::{
    MaterializationRecord, Registry, RegistryBackend, RegistryError, RegistryVersion,
};
use crate::{Error, FeatureStore};

/// An edge's state directory and its open state file.
pub struct Edge {
    dir: PathBuf,
    state: Arc<RedbStore>,
}

/// What applying a bundle changed.
#[derive(Debug, Clone)]
pub struct Applied {
    pub full: bool,
    /// The bundle's size.
    pub bytes: u64,
    pub records: u64,
    pub registry_version: u64,
    pub cursor: Option<LogPosition>,
}

impl Edge {
    /// Opens (or creates) the state in `dir`.
    pub fn open(dir: impl Into<PathBuf>, cache_bytes: u64) -> Result<Edge, Error> {
        let dir = dir.into();
        crate::durable::create_dir_all(&dir)
            .map_err(|e| BundleError::State(format!("cannot create {}: {e}", dir.display())))?;
        let state = RedbStore::open(&dir.join("online.redb"), cache_bytes)?;
        Ok(Edge {
            dir,
            state: Arc::new(state),
        })
    }

    /// The manifest of the bundle applied last, if any.
    pub fn manifest(&self) -> Result<Option<Manifest>, Error> {
        Ok(match self.state.edge_state("manifest")? {
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                BundleError::State(format!("unreadable manifest in the state: {e}"))
            })?),
            None => None,
        })
    }

    /// A feature store serving this state, for `project`.
    pub fn feature_store(&self, project: &str) -> Result<FeatureStore, Error> {
        let config = Config::for_edge(&self.dir, project)?;
        let registry = Registry::new(Box::new(EdgeRegistry {
            state: self.state.clone(),
        }));
        Ok(FeatureStore::with_parts(
            self.dir.clone(),
            config,
            registry,
            Box::new(SharedState(self.state.clone())),
        ))
    }

    /// Applies a verified bundle to the state `store` serves: modules
    /// first (inert until the snapshot pinning them is committed), then the
    /// records, the registry snapshot and the manifest in one durable
    /// transaction. A bundle of another project, or a partial one that does
    /// not continue from this state's position, changes nothing.
    pub fn apply(&self, store: &FeatureStore, bundle: &Bundle) -> Result<Applied, Error> {
        let manifest = &bundle.manifest;
        let current = self.manifest()?;
        if manifest.project != store.config().project {
            return Err(BundleError::Corrupt(format!(
                "the bundle is of project '{}'; this edge serves '{}' (use another --data-dir)",
                manifest.project,
                store.config().project
            ))
            .into());
        }
        if !manifest.full {
            let at = current.as_ref().and_then(|m| m.cursor);
            if at.is_none() || manifest.since != at {
                return Err(BundleError::Corrupt(format!(
                    "the bundle holds changes since position {:?}; this edge is at {at:?}",
                    manifest.since
                ))
                .into());
            }
        }
        let registry = bundle
            .part("registry")
            .ok_or_else(|| BundleError::Corrupt("no registry part".into()))?;
        let snapshot: RegistryVersion = serde_json::from_slice(registry)
            .map_err(|e| BundleError::Corrupt(format!("unreadable registry snapshot: {e}")))?;
        check_snapshot(manifest, &snapshot)?;
        // Every module is checked before any is stored: a refused bundle
        // leaves the modules as they were too.
        let mut modules = Vec::new();
        for module in &manifest.modules {
            let bytes = match bundle.part(&format!("module/{}", module.sha256)) {
                Some(bytes) => bytes.to_vec(),
                None => store.transforms()?.module(&module.sha256)?.ok_or_else(|| {
                    BundleError::Corrupt(format!(
                        "module '{}' (sha256:{}) is neither in the bundle nor on this edge",
                        module.name, module.sha256
                    ))
                })?,
            };
            let sha256 = crate::transform::sha256_hex(&bytes);
            if sha256 != module.sha256 {
                return Err(BundleError::Corrupt(format!(
                    "module '{}' hashes to {sha256}, not {}",
                    module.name, module.sha256
                ))
                .into());
            }
            modules.push((module, bytes));
        }
        for (module, bytes) in &modules {
            store.transforms()?.install(&module.name, bytes, "edge")?;
        }
        crate::durable::crash_point("edge.modules_installed");
        let prefixes: Vec<Vec<u8>> = manifest
            .views
            .iter()
            .map(|v| crate::online::record::view_prefix(&manifest.project, v))
            .collect();
        let records = bundle.records(&prefixes)?;
        let mut kept = manifest.clone();
        kept.parts.clear();
        let manifest_json = serde_json::to_vec(&kept)
            .map_err(|e| BundleError::State(format!("cannot encode the manifest: {e}")))?;
        self.state.replace_state(
            manifest.full,
            &records,
            &[("registry", registry), ("manifest", &manifest_json)],
        )?;
        crate::durable::crash_point("edge.committed");
        store.refresh_registry()?;
        Ok(Applied {
            full: manifest.full,
            bytes: bundle.len() as u64,
            records: records.len() as u64,
            registry_version: snapshot.version,
            cursor: manifest.cursor,
        })
    }

    /// How many records the state holds.
    pub fn records(&self) -> Result<u64, Error> {
        Ok(self.state.records()?)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads a bundle file and verifies it.
pub fn read_bundle(path: &Path) -> Result<Bundle, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| BundleError::Corrupt(format!("cannot read {}: {e}", path.display())))?;
    Ok(Bundle::verify(bytes)?)
}

/// The state's records, as the online store of the edge's feature store.
struct SharedState(Arc<RedbStore>);

impl OnlineStore for SharedState {
    fn write(&self, records: &[KeyedRecord]) -> Result<(), OnlineError> {
        self.0.write(records)
    }
    fn read(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
        self.0.read(keys)
    }
    fn flush(&self) -> Result<(), OnlineError> {
        self.0.flush()
    }
    fn ping(&self) -> Result<(), OnlineError> {
        self.0.ping()
    }
    fn blocks_on_network(&self) -> bool {
        false
    }
    fn scan(
        &self,
        prefixes: &[Vec<u8>],
        visit: &mut ScanVisitor,
    ) -> Result<Option<LogPosition>, OnlineError> {
        self.0.scan(prefixes, visit)
    }
    fn changed_since(
        &self,
        since: LogPosition,
        prefixes: &[Vec<u8>],
    ) -> Result<Option<(Vec<KeyedRecord>, LogPosition)>, OnlineError> {
        self.0.changed_since(since, prefixes)
    }
}

/// The edge's registry: the snapshot in the state file, read-only (it
/// follows the central server).
struct EdgeRegistry {
    state: Arc<RedbStore>,
}

impl EdgeRegistry {
    fn read_only() -> RegistryError {
        RegistryError::ReadOnly(
            "this edge's registry follows its bundle or central server: apply there".into(),
        )
    }

    fn state_error(e: OnlineError) -> RegistryError {
        RegistryError::Corrupt {
            path: PathBuf::from("online.redb"),
            message: e.to_string(),
        }
    }

    /// One JSON value of the state (`registry`, `manifest`).
    fn read<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, RegistryError> {
        let corrupt = |message: String| RegistryError::Corrupt {
            path: PathBuf::from("online.redb"),
            message,
        };
        match self.state.edge_state(name).map_err(Self::state_error)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| corrupt(format!("{name}: {e}"))),
            None => Ok(None),
        }
    }
}

impl RegistryBackend for EdgeRegistry {
    fn latest(&self) -> Result<Option<RegistryVersion>, RegistryError> {
        self.read("registry")
    }

    fn version(&self, number: u64) -> Result<Option<RegistryVersion>, RegistryError> {
        Ok(self.latest()?.filter(|v| v.version == number))
    }

    fn versions(&self) -> Result<Vec<u64>, RegistryError> {
        Ok(self.latest()?.map(|v| v.version).into_iter().collect())
    }

    fn commit(&self, _: Option<u64>, _: &RegistryVersion) -> Result<(), RegistryError> {
        Err(Self::read_only())
    }

    fn record_materialization(&self, _: &MaterializationRecord) -> Result<(), RegistryError> {
        Err(Self::read_only())
    }

    /// The source's last materialization of each view, as of the bundle.
    fn materializations(&self) -> Result<Vec<MaterializationRecord>, RegistryError> {
        let Some(manifest) = self.read::<Manifest>("manifest")? else {
            return Ok(Vec::new());
        };
        Ok(manifest
            .watermarks
            .iter()
            .map(|(view, end)| MaterializationRecord {
                view: view.clone(),
                start: *end,
                end: *end,
                rows_written: 0,
                finished_at: manifest.created_at,
            })
            .collect())
    }
}

/// The snapshot is the one the manifest describes, and pins exactly the
/// modules it lists (64 hex digits each): a state committed from it can
/// resolve every on-demand view.
fn check_snapshot(manifest: &Manifest, snapshot: &RegistryVersion) -> Result<(), BundleError> {
    if snapshot.version != manifest.registry_version {
        return Err(BundleError::Corrupt(format!(
            "the registry snapshot is version {}, the manifest says {}",
            snapshot.version, manifest.registry_version
        )));
    }
    for module in &manifest.modules {
        if module.sha256.len() != 64 || !module.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BundleError::Corrupt(format!(
                "module '{}': '{}' is not a sha256",
                module.name, module.sha256
            )));
        }
    }
    for view in &snapshot.definitions.on_demand_feature_views {
        let pinned = crate::transform::TransformRef::parse(&view.transform)
            .ok()
            .and_then(|r| r.sha256.map(|sha| (r.name, sha)));
        let listed = pinned.as_ref().is_some_and(|(name, sha)| {
            manifest
                .modules
                .iter()
                .any(|m| &m.name == name && &m.sha256 == sha)
        });
        if !listed {
            return Err(BundleError::Corrupt(format!(
                "on-demand view '{}' uses '{}', which the bundle does not pin",
                view.name, view.transform
            )));
        }
    }
    Ok(())
}
