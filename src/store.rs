//! [`FeatureStore`]: the library API the CLI (and later the server) calls.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::registry::{
    load_definitions, ApplyOutcome, Change, Definitions, FeatureSelection, FileRegistry, Registry,
    RegistryError, RegistryVersion, SelectionError,
};

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
        })
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
        Ok(self.registry.plan(&definitions, &self.project_dir)?)
    }

    /// Validates the definition files and stores them as a new registry
    /// version.
    pub fn apply(&self) -> Result<ApplyOutcome, Error> {
        let definitions = self.read_definitions()?;
        Ok(self
            .registry
            .apply(definitions, &self.project_dir, &current_user())?)
    }

    /// The newest applied registry version.
    pub fn applied(&self) -> Result<RegistryVersion, Error> {
        Ok(self.registry.latest()?.ok_or(RegistryError::Empty)?)
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
        let selection = self.select(request, full_feature_names)?;
        Ok(self
            .offline_store()
            .historical_to_file(&selection, entity_file, output)?)
    }
}

/// Who is applying, for the registry history.
fn current_user() -> String {
    std::env::var("WAFER_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_string())
}
