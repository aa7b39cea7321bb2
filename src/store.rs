//! [`FeatureStore`]: a project (its configuration, registry, stores and
//! transform modules), opened once and shared by the CLI and the HTTP
//! server. The data use cases are `impl FeatureStore` blocks in their own
//! modules: [`crate::lookup`], [`crate::training`], [`crate::materialize`],
//! [`crate::push`] and [`crate::browse`]. This file holds what they share
//! (lazily opened stores and modules, the cached applied registry version,
//! the views being materialized) and the project's own operations: plan and
//! apply definitions, upload, roll back and test transforms.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::codec::columns::{columns_from_json, rows_to_json, ColumnError};
use crate::config::{Config, RegistryKind};
use crate::online::{self, OnlineStore};
use crate::registry::{
    load_definitions, ApplyOutcome, Change, Definitions, FileRegistry, Registry, RegistryError,
    RegistryVersion, TransformSchemas, ViewSelection,
};
use crate::transform::{
    ModuleSchema, ModuleVersion, SchemaField, TransformError, Transforms, UploadOutcome,
};
use crate::types::ValueType;
use crate::Error;

/// A project: its configuration, its registry and its stores.
pub struct FeatureStore {
    project_dir: PathBuf,
    config: Config,
    registry: Registry,
    /// Opened on first use: an embedded store locks its file.
    online: OnceLock<Box<dyn OnlineStore>>,
    /// Opened on first use: it starts the WebAssembly engine.
    transforms: OnceLock<Transforms>,
    /// The applied version, read once: lookups must not read and parse the
    /// registry file on every call. Refreshed by this store's own apply and
    /// by [`FeatureStore::refresh_registry`].
    applied: RwLock<Option<Arc<RegistryVersion>>>,
    /// The schemas of push sources' directories.
    push_schemas: crate::push::SchemaCache,
    /// Views being materialized now, so a second run of a view is refused.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    claims: Claims,
    /// Where the modules live when the registry is shared.
    shared: SharedRegistry,
    /// Set by a server that loads the registry in the background: requests
    /// then only read the cached version, never the registry itself.
    loaded_in_background: std::sync::atomic::AtomicBool,
    /// Set once the registry was read (an empty one included).
    registry_read: std::sync::atomic::AtomicBool,
    /// Where lookups of services with `logging:` go; started by a server.
    feature_log: OnceLock<crate::feature_log::FeatureLog>,
    /// The last failure of a materialization per view (noted before the
    /// run lets go of the view), until a later run of the view succeeds;
    /// shown when browsing the view.
    materialization_failures: Mutex<HashMap<String, String>>,
    /// Lookup plans of the applied version.
    plans: crate::lookup::PlanCache,
}

/// The shared backend of a registry kept outside the data directory.
enum SharedRegistry {
    None,
    #[cfg(feature = "redis")]
    Redis(Arc<crate::redis_client::RedisPool>),
}

/// The registry backend `config` names, and what its modules share.
fn open_registry(
    config: &Config,
    project_dir: &Path,
) -> Result<(Box<dyn crate::registry::RegistryBackend>, SharedRegistry), Error> {
    match config.registry.kind {
        RegistryKind::File => {
            let dir = project_dir.join(&config.data_dir).join("registry");
            Ok((Box::new(FileRegistry::new(dir)), SharedRegistry::None))
        }
        #[cfg(feature = "redis")]
        RegistryKind::Redis => {
            let target = crate::redis_client::RedisTarget::from_config(
                "registry",
                config.registry.url.as_deref(),
                &config.registry.cluster,
            )
            .map_err(RegistryError::Unavailable)?;
            let pool = Arc::new(
                crate::redis_client::RedisPool::new(&target).map_err(RegistryError::Unavailable)?,
            );
            let backend = crate::registry::RedisRegistry::new(pool.clone(), &config.project);
            Ok((Box::new(backend), SharedRegistry::Redis(pool)))
        }
        #[cfg(not(feature = "redis"))]
        RegistryKind::Redis => Err(RegistryError::Unavailable(
            "this build has no Redis support (built without the `redis` feature)".into(),
        )
        .into()),
    }
}

impl FeatureStore {
    /// Opens the project whose `wafer.yaml` is in `project_dir`.
    pub fn open(project_dir: impl AsRef<Path>) -> Result<Self, Error> {
        let project_dir = project_dir.as_ref().to_path_buf();
        let config = Config::load(&project_dir)?;
        let (backend, shared) = open_registry(&config, &project_dir)?;
        Ok(FeatureStore {
            registry: Registry::new(backend),
            shared,
            loaded_in_background: Default::default(),
            registry_read: Default::default(),
            feature_log: OnceLock::new(),
            materialization_failures: Mutex::default(),
            project_dir,
            config,
            online: OnceLock::new(),
            transforms: OnceLock::new(),
            applied: RwLock::new(None),
            push_schemas: Default::default(),
            plans: Default::default(),
            claims: Claims::default(),
        })
    }

    /// A store over given parts: an edge server's, whose registry and
    /// online records live in its state file ([`crate::edge`]).
    pub fn with_parts(
        project_dir: impl Into<PathBuf>,
        config: Config,
        registry: Registry,
        online: Box<dyn OnlineStore>,
    ) -> Self {
        FeatureStore {
            registry,
            shared: SharedRegistry::None,
            loaded_in_background: Default::default(),
            registry_read: Default::default(),
            feature_log: OnceLock::new(),
            materialization_failures: Mutex::default(),
            project_dir: project_dir.into(),
            config,
            online: OnceLock::from(online),
            transforms: OnceLock::new(),
            applied: RwLock::new(None),
            push_schemas: Default::default(),
            plans: Default::default(),
            claims: Claims::default(),
        }
    }

    /// The project's transform modules and the runtime that runs them,
    /// kept in `DATA_DIR/transforms` (or beside a shared registry, with
    /// the compiled cache still in `DATA_DIR/transforms/compiled`).
    pub fn transforms(&self) -> Result<&Transforms, Error> {
        if let Some(transforms) = self.transforms.get() {
            return Ok(transforms);
        }
        let dir = self
            .project_dir
            .join(&self.config.data_dir)
            .join("transforms");
        let limits = self.config.transforms.clone();
        let opened = match &self.shared {
            SharedRegistry::None => Transforms::open(dir, limits)?,
            // Modules shared; the compiled cache stays on this host.
            #[cfg(feature = "redis")]
            SharedRegistry::Redis(pool) => Transforms::open_with(
                Box::new(crate::transform::RedisModuleRepository::new(
                    pool.clone(),
                    &self.config.project,
                )),
                dir.join("compiled"),
                limits,
            )?,
        };
        // Another thread may have won the race; either instance is fine.
        let _ = self.transforms.set(opened);
        Ok(self.transforms.get().expect("set above"))
    }

    /// Uploads a module as `name`'s new active version (see
    /// [`Transforms::upload`]), recording the current user. A version that
    /// would break an applied on-demand view following `name` (an output
    /// renamed or retyped, an input the sources lack) is refused, naming
    /// the view and the field.
    pub fn upload_transform(&self, name: &str, bytes: &[u8]) -> Result<UploadOutcome, Error> {
        let accept = self.views_accept(name)?;
        Ok(self
            .transforms()?
            .upload(name, bytes, &current_user(), &accept)?)
    }

    /// The check a new active version of `name` must pass: the applied
    /// on-demand views that follow `name` still fit its schema.
    fn views_accept(
        &self,
        name: &str,
    ) -> Result<impl Fn(&ModuleSchema) -> Result<(), String> + '_, Error> {
        let applied = self.registry.latest()?;
        let name = name.to_string();
        Ok(move |schema: &ModuleSchema| match &applied {
            Some(applied) => {
                crate::registry::check_new_version(&applied.definitions, &name, schema)
                    .map_err(|errors| errors.to_string())
            }
            None => Ok(()),
        })
    }

    /// Makes an earlier version of `name` active again.
    pub fn rollback_transform(&self, name: &str, version: &str) -> Result<ModuleVersion, Error> {
        let accept = self.views_accept(name)?;
        Ok(self
            .transforms()?
            .rollback(name, version, &current_user(), &accept)?)
    }

    /// Runs `name` (or `name@sha256:HEX`) on JSON input, `{"input": value}`
    /// for one row or `{"input": [values]}` for several, and returns one
    /// JSON object per output row; values read and print as in requests.
    pub fn test_transform(
        &self,
        name: &str,
        input: &serde_json::Value,
    ) -> Result<Vec<serde_json::Value>, Error> {
        let transform = self.transforms()?.resolve(name)?;
        let schema = transform.schema();
        fn fields(fields: &[SchemaField]) -> Vec<(&str, &ValueType)> {
            fields
                .iter()
                .map(|f| (f.name.as_str(), &f.value_type))
                .collect()
        }
        let bad_input = |e: ColumnError| TransformError::Input {
            name: e.name,
            message: e.message,
        };
        let columns = columns_from_json(&fields(&schema.inputs), input).map_err(bad_input)?;
        let results = transform.run(&columns)?;
        Ok(rows_to_json(&fields(&schema.outputs), &results)
            .map_err(|e| TransformError::BadOutput(e.to_string()))?)
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
        if self
            .loaded_in_background
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // A request must not wait on the registry (a shared one may be
            // unreachable): the server's refresh loads it.
            return Err(RegistryError::Unavailable(
                "no registry version is loaded yet: the server loads it in the background (has `wafer apply` run, and is the registry reachable?)".into(),
            )
            .into());
        }
        self.refresh_registry()?;
        let applied = self
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(applied.ok_or(RegistryError::Empty)?)
    }

    /// From now on, requests only read the cached registry version; the
    /// caller (a server) keeps it up to date with
    /// [`FeatureStore::refresh_if_changed`].
    pub fn load_registry_in_background(&self) {
        self.loaded_in_background
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
        if latest.is_none() {
            // A shared registry that lost its data (a Redis restarted
            // without persistence): keep serving what was applied.
            tracing::error!(
                cached,
                "the registry holds no version now; serving the version loaded before"
            );
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

    /// Re-resolves the transform references lookups use (see
    /// [`Transforms::refresh_resolutions`]) and, after a `new_version` was
    /// loaded, resolves those of its on-demand views: servers call it after
    /// [`FeatureStore::refresh_if_changed`], so lookups find the transforms
    /// they need resolved and do not read module storage.
    pub fn refresh_transforms(&self, new_version: bool) {
        if let Some(transforms) = self.transforms.get() {
            transforms.refresh_resolutions();
        }
        if !new_version {
            return;
        }
        // The transforms a newly loaded version names are resolved here,
        // not by its first lookup.
        let applied = self
            .applied
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(applied) = applied else { return };
        for view in &applied.definitions.on_demand_feature_views {
            let resolved = self
                .transforms()
                .and_then(|t| t.resolve(&view.transform).map_err(Error::from));
            if let Err(error) = resolved {
                tracing::warn!(view = %view.name, %error, "cannot load an on-demand view's transform");
            }
        }
    }

    /// Re-reads the newest registry version (another process may have
    /// applied one).
    pub fn refresh_registry(&self) -> Result<(), Error> {
        let latest = self.registry.latest()?.map(Arc::new);
        *self.applied.write().unwrap_or_else(|e| e.into_inner()) = latest;
        self.plans.clear();
        self.registry_read
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Whether requests can be answered from the registry: false only on a
    /// server that has not managed to read it yet (a shared registry
    /// unreachable since it started), whose `/health` then answers 503.
    pub fn registry_ready(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        !self.loaded_in_background.load(Relaxed) || self.registry_read.load(Relaxed)
    }

    /// The schemas of push sources' directories, read once each.
    pub(crate) fn push_schemas(&self) -> &crate::push::SchemaCache {
        &self.push_schemas
    }

    /// Materializations running in this process.
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    pub(crate) fn claims(&self) -> &Claims {
        &self.claims
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
    /// Starts logging what feature services with `logging:` serve (a
    /// server does, once; a second call keeps the first log).
    pub fn start_feature_log(
        &self,
        settings: crate::feature_log::LogSettings,
    ) -> std::io::Result<()> {
        if self.feature_log.get().is_some() {
            return Ok(());
        }
        let log = crate::feature_log::FeatureLog::start(&self.project_dir, settings)?;
        let _ = self.feature_log.set(log);
        Ok(())
    }

    /// The figures of the latest skew and drift reports saved for the
    /// applied version's feature services.
    pub fn latest_monitor_figures(&self) -> Vec<crate::monitor::Figure> {
        let Ok(applied) = self.applied() else {
            return Vec::new();
        };
        crate::monitor::latest_figures(
            &self.project_dir.join(&self.config.data_dir),
            applied
                .definitions
                .feature_services
                .iter()
                .map(|s| s.name.as_str()),
        )
    }

    /// Notes how a materialization of `views` ended: a failure is kept per
    /// view (in this process) until a run of it succeeds.
    pub fn note_materialization(&self, views: &[String], failure: Option<&str>) {
        let mut failures = self
            .materialization_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for view in views {
            match failure {
                Some(message) => failures.insert(view.clone(), message.to_string()),
                None => failures.remove(view),
            };
        }
    }

    /// The last failure of a materialization of `view`.
    pub(crate) fn materialization_failure(&self, view: &str) -> Option<String> {
        self.materialization_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(view)
            .cloned()
    }

    /// Modules the transform runtime compiled and loaded from its cache,
    /// once the transforms are open (never opens them).
    pub fn transform_loads(&self) -> Option<crate::transform::ModuleLoads> {
        self.transforms.get().map(|t| t.runtime().loads())
    }

    /// The lookup plans kept for the applied version.
    pub(crate) fn plan_cache(&self) -> &crate::lookup::PlanCache {
        &self.plans
    }

    /// The feature log, once started.
    pub fn feature_log(&self) -> Option<&crate::feature_log::FeatureLog> {
        self.feature_log.get()
    }

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
}

/// Who is applying, for the registry history.
fn current_user() -> String {
    std::env::var("WAFER_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The views being materialized in this process, so that a second run of a
/// view is refused while the first goes on.
#[derive(Default)]
pub(crate) struct Claims {
    views: Mutex<HashSet<String>>,
}

/// Views marked as being materialized until dropped.
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub(crate) struct Claim<'a> {
    claims: &'a Claims,
    names: Vec<String>,
}

#[cfg_attr(not(feature = "offline"), allow(dead_code))]
impl Claims {
    /// Marks `views`, or fails with [`Error::Busy`] naming those already
    /// claimed.
    pub(crate) fn claim(&self, views: &[ViewSelection]) -> Result<Claim<'_>, Error> {
        let mut busy = self.views.lock().unwrap_or_else(|e| e.into_inner());
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
            claims: self,
            names,
        })
    }

    /// Whether a run in this process holds `view`.
    pub(crate) fn holds(&self, view: &str) -> bool {
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(view)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut busy = self.claims.views.lock().unwrap_or_else(|e| e.into_inner());
        for name in &self.names {
            busy.remove(name);
        }
    }
}
