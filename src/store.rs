//! [`FeatureStore`]: the library API the CLI (and later the server) calls.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use chrono::{DateTime, Utc};

use crate::config::{Config, ConfigError};
use crate::online::{self, EntityRows, OnlineError, OnlineResponse, OnlineStore};
use crate::push::{self, PushError, PushTarget};
use crate::registry::{
    load_definitions, ApplyOutcome, Change, Definitions, FeatureSelection, FileRegistry,
    MaterializationRecord, Registry, RegistryError, RegistryVersion, SelectionError,
};
use crate::registry::{TransformSchemas, ViewSelection};
use crate::serving::WriteTimeTransforms;
use crate::transform::{ModuleSchema, ModuleVersion, TransformError, Transforms, UploadOutcome};

#[cfg(feature = "offline")]
use crate::offline::{OfflineError, OfflineStore, RetrievalSummary};

/// Every failure the library reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[cfg(feature = "offline")]
    #[error(transparent)]
    Offline(#[from] OfflineError),
    #[error(transparent)]
    Online(#[from] OnlineError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// An on-demand view's transform failed for this request.
    #[error("on-demand feature view '{view}': {source}")]
    OnDemand {
        view: String,
        source: TransformError,
    },
    #[error("{0}")]
    Materialize(String),
    /// These views are being materialized by another request.
    #[error("already materializing: {}", .0.join(", "))]
    Busy(Vec<String>),
}

/// Which features a retrieval asks for.
#[derive(Debug, Clone)]
pub enum FeatureRequest {
    /// `view:feature` references.
    Features(Vec<String>),
    /// Every feature of a feature service.
    Service(String),
}

/// A project: its configuration, its registry and its stores.
pub struct FeatureStore {
    project_dir: PathBuf,
    config: Config,
    registry: Registry,
    /// Opened on first use: sled locks its directory.
    online: OnceLock<Box<dyn OnlineStore>>,
    /// Opened on first use: it starts the WebAssembly engine.
    transforms: OnceLock<Transforms>,
    /// The applied version, read once: lookups must not read and parse the
    /// registry file on every call. Refreshed by this store's own apply and
    /// by [`FeatureStore::refresh_registry`].
    applied: RwLock<Option<Arc<RegistryVersion>>>,
    /// Views being materialized now, so a second run of a view is refused.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    materializing: Mutex<HashSet<String>>,
}

/// What a push wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    pub rows: usize,
    /// Online records written (rows times the views fed).
    pub online_records: usize,
    /// The Parquet file an offline push added.
    pub offline_file: Option<PathBuf>,
}

/// Progress of a materialization, for display.
pub trait MaterializeProgress {
    /// A view starts, with its window.
    fn view_started(&self, view: &str, start: DateTime<Utc>, end: DateTime<Utc>);
    /// `rows` more rows of `view` are written.
    fn rows_written(&self, view: &str, rows: u64);
    fn view_finished(&self, record: &MaterializationRecord);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl MaterializeProgress for NoProgress {
    fn view_started(&self, _: &str, _: DateTime<Utc>, _: DateTime<Utc>) {}
    fn rows_written(&self, _: &str, _: u64) {}
    fn view_finished(&self, _: &MaterializationRecord) {}
}

impl FeatureStore {
    /// Opens the project whose `wafer.yaml` is in `project_dir`.
    pub fn open(project_dir: impl AsRef<Path>) -> Result<Self, Error> {
        let project_dir = project_dir.as_ref().to_path_buf();
        let config = Config::load(&project_dir)?;
        let registry_dir = project_dir.join(&config.data_dir).join("registry");
        Ok(FeatureStore {
            registry: Registry::new(Box::new(FileRegistry::new(registry_dir))),
            project_dir,
            config,
            online: OnceLock::new(),
            transforms: OnceLock::new(),
            applied: RwLock::new(None),
            materializing: Mutex::new(HashSet::new()),
        })
    }

    /// The project's transform modules and the runtime that runs them,
    /// kept in `DATA_DIR/transforms`.
    pub fn transforms(&self) -> Result<&Transforms, Error> {
        if let Some(transforms) = self.transforms.get() {
            return Ok(transforms);
        }
        let dir = self
            .project_dir
            .join(&self.config.data_dir)
            .join("transforms");
        let opened = Transforms::open(dir, self.config.transforms.clone())?;
        // Another thread may have won the race; either instance is fine.
        let _ = self.transforms.set(opened);
        Ok(self.transforms.get().expect("set above"))
    }

    /// Uploads a module as `name`'s new active version (see
    /// [`Transforms::upload`]), recording the current user.
    pub fn upload_transform(&self, name: &str, bytes: &[u8]) -> Result<UploadOutcome, Error> {
        Ok(self.transforms()?.upload(name, bytes, &current_user())?)
    }

    /// Makes an earlier version of `name` active again.
    pub fn rollback_transform(&self, name: &str, version: &str) -> Result<ModuleVersion, Error> {
        Ok(self
            .transforms()?
            .rollback(name, version, &current_user())?)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The definitions as the files say now (not yet applied).
    pub fn read_definitions(&self) -> Result<Definitions, Error> {
        let files = self.config.definition_files(&self.project_dir)?;
        Ok(load_definitions(&files)?)
    }

    /// What `apply` would change.
    pub fn plan(&self) -> Result<Vec<Change>, Error> {
        let definitions = self.read_definitions()?;
        Ok(self
            .registry
            .plan(&definitions, &self.project_dir, &StoreTransforms(self))?)
    }

    /// Validates the definition files and stores them as a new registry
    /// version.
    pub fn apply(&self) -> Result<ApplyOutcome, Error> {
        let definitions = self.read_definitions()?;
        let outcome = self.registry.apply(
            definitions,
            &self.project_dir,
            &current_user(),
            &StoreTransforms(self),
        )?;
        self.refresh_registry()?;
        Ok(outcome)
    }

    /// The newest applied registry version (as of the last read).
    pub fn applied(&self) -> Result<Arc<RegistryVersion>, Error> {
        if let Some(applied) = self
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(applied.clone());
        }
        self.refresh_registry()?;
        let applied = self
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(applied.ok_or(RegistryError::Empty)?)
    }

    /// Re-reads the registry if a newer version than the cached one exists;
    /// returns the new version number when it changed. Cheap when nothing
    /// changed (a directory listing), so servers can poll it.
    pub fn refresh_if_changed(&self) -> Result<Option<u64>, Error> {
        let latest = self.registry.latest_version_number()?;
        let cached = self
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|v| v.version);
        if latest == cached {
            return Ok(None);
        }
        self.refresh_registry()?;
        Ok(self
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|v| v.version))
    }

    /// Re-reads the newest registry version (another process may have
    /// applied one).
    pub fn refresh_registry(&self) -> Result<(), Error> {
        let latest = self.registry.latest()?.map(Arc::new);
        *self.applied.write().unwrap_or_else(|e| e.into_inner()) = latest;
        Ok(())
    }

    /// Resolves a feature request against the applied definitions.
    pub fn select(
        &self,
        request: &FeatureRequest,
        full_feature_names: bool,
    ) -> Result<FeatureSelection, Error> {
        let applied = self.applied()?;
        let definitions = &applied.definitions;
        Ok(match request {
            FeatureRequest::Features(references) => {
                FeatureSelection::from_references(definitions, references, full_feature_names)?
            }
            FeatureRequest::Service(name) => {
                FeatureSelection::from_service(definitions, name, full_feature_names)?
            }
        })
    }

    /// The offline store of this project.
    #[cfg(feature = "offline")]
    pub fn offline_store(&self) -> OfflineStore {
        OfflineStore::new(&self.project_dir, &self.config.offline_store)
    }

    /// Builds a training set: every row of `entity_file` joined with the
    /// requested features as of its `event_timestamp`, written to `output`
    /// (Parquet or CSV by extension).
    #[cfg(feature = "offline")]
    pub fn get_historical_features(
        &self,
        entity_file: &Path,
        request: &FeatureRequest,
        full_feature_names: bool,
        output: &Path,
    ) -> Result<RetrievalSummary, Error> {
        let applied = self.applied()?;
        crate::serving::historical_to_file(
            &applied.definitions,
            &self.offline_store(),
            || self.transforms(),
            entity_file,
            request,
            full_feature_names,
            output,
        )
    }
}

/// The project's transform modules, as apply sees them: opened only when a
/// definition names a transform.
struct StoreTransforms<'a>(&'a FeatureStore);

impl TransformSchemas for StoreTransforms<'_> {
    fn schema(&self, reference: &str) -> Result<ModuleSchema, String> {
        let transforms = self.0.transforms().map_err(|e| e.to_string())?;
        transforms
            .resolve(reference)
            .map(|compiled| compiled.schema().clone())
            .map_err(|e| match e {
                TransformError::UnknownTransform(name) => format!(
                    "unknown transform '{name}': upload it first with `wafer transform upload {name} FILE.wasm`"
                ),
                other => other.to_string(),
            })
    }
}

impl FeatureStore {
    /// The online store, opened on first use.
    pub fn online_store(&self) -> Result<&dyn OnlineStore, Error> {
        if let Some(store) = self.online.get() {
            return Ok(store.as_ref());
        }
        let opened = online::open(
            &self.config.online_store,
            &self.project_dir.join(&self.config.data_dir),
        )?;
        Ok(self.online.get_or_init(|| opened).as_ref())
    }

    /// Looks up features for entity rows in the online store, now.
    pub fn get_online_features(
        &self,
        request: &FeatureRequest,
        full_feature_names: bool,
        entities: &EntityRows,
    ) -> Result<OnlineResponse, Error> {
        self.get_online_features_at(request, full_feature_names, entities, Utc::now())
    }

    /// Looks up features as of `now` (TTLs are measured from it).
    pub fn get_online_features_at(
        &self,
        request: &FeatureRequest,
        full_feature_names: bool,
        entities: &EntityRows,
        now: DateTime<Utc>,
    ) -> Result<OnlineResponse, Error> {
        let applied = self.applied()?;
        crate::serving::get_online_features(
            &applied.definitions,
            self.online_store()?,
            || self.transforms(),
            &self.config.project,
            request,
            full_feature_names,
            entities,
            nanos(now),
        )
    }

    /// Writes pushed rows (`df`, columns by name) through `push_source`: to
    /// the online store, as a new Parquet file of its source, or both. Every
    /// row is checked before anything is written.
    pub fn push(
        &self,
        push_source: &str,
        df: &EntityRows,
        to: PushTarget,
    ) -> Result<PushOutcome, Error> {
        let applied = self.applied()?;
        let definitions = &applied.definitions;
        let plan = push::plan(definitions, push_source)?;
        let rows = df.len().map_err(|e| PushError::Malformed(e.to_string()))?;
        let mut records = Vec::new();
        if to.online() {
            for (view, batch) in push::online_batches(definitions, &plan, df)? {
                let selection = ViewSelection::for_view(definitions, &view.name)?;
                records.extend(online::records_from_batch(
                    &self.config.project,
                    &selection,
                    &batch,
                )?);
                // Write-time on-demand views store their outputs too.
                let written = WriteTimeTransforms::over(definitions, view, || self.transforms())?;
                if !written.is_empty() {
                    records.extend(written.records(&self.config.project, &batch)?);
                }
            }
        }
        let staged = if to.offline() {
            Some(push::stage_offline(
                &self.project_dir,
                definitions,
                push_source,
                &plan,
                df,
            )?)
        } else {
            None
        };
        if !records.is_empty() {
            if let Err(e) = self.online_store().and_then(|s| Ok(s.write(&records)?)) {
                if let Some(staged) = staged {
                    staged.discard();
                }
                return Err(e);
            }
        }
        let offline_file = match staged {
            Some(staged) => Some(staged.publish().map_err(|e| PushError::Offline {
                push: push_source.to_string(),
                message: format!("cannot publish the pushed file: {e}"),
            })?),
            None => None,
        };
        Ok(PushOutcome {
            rows,
            online_records: records.len(),
            offline_file,
        })
    }

    #[cfg(feature = "offline")]
    /// The views a materialization covers: those named, else every online view.
    fn views_to_materialize(
        &self,
        definitions: &Definitions,
        views: Option<&[String]>,
    ) -> Result<Vec<ViewSelection>, Error> {
        let names: Vec<String> = match views {
            Some(names) => names.to_vec(),
            None => definitions
                .feature_views
                .iter()
                .filter(|v| v.online)
                .map(|v| v.name.clone())
                .collect(),
        };
        let mut selected = Vec::new();
        for name in names {
            let view = ViewSelection::for_view(definitions, &name)?;
            if !view.view.online {
                return Err(Error::Materialize(format!(
                    "feature view '{name}' is not online (online: false)"
                )));
            }
            selected.push(view);
        }
        Ok(selected)
    }

    /// Copies the newest row per entity with an event time in `[start, end]`
    /// from the offline sources into the online store, view by view, and
    /// records each completed window.
    #[cfg(feature = "offline")]
    pub fn materialize(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        views: Option<&[String]>,
        progress: &dyn MaterializeProgress,
    ) -> Result<Vec<MaterializationRecord>, Error> {
        if start > end {
            return Err(Error::Materialize(format!(
                "start {start} is after end {end}"
            )));
        }
        let applied = self.applied()?;
        let selected = self.views_to_materialize(&applied.definitions, views)?;
        let _claim = self.claim(&selected)?;
        let mut done = Vec::new();
        for view in &selected {
            done.push(self.materialize_view(&applied.definitions, view, start, end, progress)?);
        }
        Ok(done)
    }

    /// Materializes each view from where its last materialization ended (or
    /// `end` minus its TTL, or the epoch for an unbounded TTL) up to `end`.
    #[cfg(feature = "offline")]
    pub fn materialize_incremental(
        &self,
        end: DateTime<Utc>,
        views: Option<&[String]>,
        progress: &dyn MaterializeProgress,
    ) -> Result<Vec<MaterializationRecord>, Error> {
        let applied = self.applied()?;
        let selected = self.views_to_materialize(&applied.definitions, views)?;
        let _claim = self.claim(&selected)?;
        let history = self.registry.materializations()?;
        let mut done = Vec::new();
        for view in &selected {
            let last_end = history
                .iter()
                .filter(|r| r.view == view.view.name)
                .map(|r| r.end)
                .max();
            let start = match last_end {
                Some(last) => last,
                None if view.view.ttl.is_unbounded() => DateTime::<Utc>::UNIX_EPOCH,
                None => {
                    end - chrono::TimeDelta::from_std(view.view.ttl.0)
                        .unwrap_or(chrono::TimeDelta::MAX)
                }
            };
            let start = start.min(end);
            done.push(self.materialize_view(&applied.definitions, view, start, end, progress)?);
        }
        Ok(done)
    }

    /// Marks views as being materialized until the claim is dropped, or
    /// fails with [`Error::Busy`] naming those already claimed.
    #[cfg(feature = "offline")]
    fn claim(&self, views: &[ViewSelection]) -> Result<Claim<'_>, Error> {
        let mut busy = self.materializing.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<String> = views.iter().map(|v| v.view.name.clone()).collect();
        let taken: Vec<String> = names
            .iter()
            .filter(|n| busy.contains(*n))
            .cloned()
            .collect();
        if !taken.is_empty() {
            return Err(Error::Busy(taken));
        }
        busy.extend(names.iter().cloned());
        Ok(Claim {
            set: &self.materializing,
            names,
        })
    }

    #[cfg(feature = "offline")]
    fn materialize_view(
        &self,
        definitions: &Definitions,
        view: &ViewSelection,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        progress: &dyn MaterializeProgress,
    ) -> Result<MaterializationRecord, Error> {
        progress.view_started(&view.view.name, start, end);
        let store = self.online_store()?;
        let written = WriteTimeTransforms::over(definitions, &view.view, || self.transforms())?;
        let mut sink = OnlineSink {
            project: &self.config.project,
            view,
            written,
            store,
            progress,
            written_rows: 0,
        };
        self.offline_store()
            .latest_rows(view, nanos(start), nanos(end), &mut sink)?;
        store.flush()?;
        let record = MaterializationRecord {
            view: view.view.name.clone(),
            start,
            end,
            rows_written: sink.written_rows,
            finished_at: Utc::now(),
        };
        // Recorded only once the data is durable: a crash before this point
        // leaves the window to be done again, which rewrites the same rows.
        self.registry.record_materialization(&record)?;
        progress.view_finished(&record);
        Ok(record)
    }
}

#[cfg(feature = "offline")]
struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    names: Vec<String>,
}

#[cfg(feature = "offline")]
impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut busy = self.set.lock().unwrap_or_else(|e| e.into_inner());
        for name in &self.names {
            busy.remove(name);
        }
    }
}

#[cfg(feature = "offline")]
struct OnlineSink<'a> {
    project: &'a str,
    view: &'a ViewSelection,
    /// Write-time on-demand views over `view`, written beside it.
    written: WriteTimeTransforms,
    store: &'a dyn OnlineStore,
    progress: &'a dyn MaterializeProgress,
    written_rows: u64,
}

#[cfg(feature = "offline")]
impl crate::offline::BatchSink for OnlineSink<'_> {
    fn start(&mut self, _schema: arrow::datatypes::SchemaRef) -> Result<(), OfflineError> {
        Ok(())
    }

    fn write(&mut self, batch: &arrow::record_batch::RecordBatch) -> Result<(), OfflineError> {
        let mut records = online::records_from_batch(self.project, self.view, batch)
            .map_err(|e| OfflineError::Write(e.to_string()))?;
        let rows = records.len() as u64;
        if !self.written.is_empty() {
            let outputs = self
                .written
                .records(self.project, batch)
                .map_err(|e| OfflineError::Write(e.to_string()))?;
            records.extend(outputs);
        }
        self.store
            .write(&records)
            .map_err(|e| OfflineError::Write(e.to_string()))?;
        self.written_rows += rows;
        self.progress.rows_written(&self.view.view.name, rows);
        Ok(())
    }
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Who is applying, for the registry history.
fn current_user() -> String {
    std::env::var("WAFER_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_string())
}

#[cfg(all(test, feature = "offline"))]
mod tests {
    use super::*;

    const DEFINITIONS: &str = "
entities: [{name: e, join_keys: [{name: k, type: int64}]}]
sources: [{name: s, path: s.parquet, timestamp_field: t}]
feature_views:
  - {name: a, entities: [e], source: s, features: [{name: x, type: int64}]}
  - {name: b, entities: [e], source: s, features: [{name: y, type: int64}]}
";

    #[test]
    fn a_view_being_materialized_is_refused_until_its_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wafer.yaml"), "project: t\n").unwrap();
        let store = FeatureStore::open(dir.path()).unwrap();
        let definitions: Definitions = serde_saphyr::from_str(DEFINITIONS).unwrap();
        let view = |name| ViewSelection::for_view(&definitions, name).unwrap();
        let first = store.claim(&[view("a")]).unwrap();
        match store.claim(&[view("b"), view("a")]) {
            Err(Error::Busy(views)) => assert_eq!(views, vec!["a".to_string()]),
            other => panic!("expected Busy, got {:?}", other.map(|_| ())),
        }
        // Another view is free meanwhile; `a` is free once the run ends.
        drop(store.claim(&[view("b")]).unwrap());
        drop(first);
        assert!(store.claim(&[view("a"), view("b")]).is_ok());
    }
}
