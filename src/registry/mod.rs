//! The registry: the project's definitions, validated and versioned.
//!
//! Definitions are read from YAML ([`load_definitions`]), checked against
//! each other and the data ([`validate`]), and stored as numbered versions in
//! a [`RegistryBackend`]. A request for features is resolved once into a
//! [`RetrievalPlan`] ([`request`]), whose stored part is a
//! [`FeatureSelection`] the stores read.

mod definitions;
pub mod monitoring;
mod plan;
#[cfg(feature = "redis")]
mod redis_storage;
pub mod request;
mod selection;
mod storage;
mod validate;

use std::path::{Path, PathBuf};

pub use crate::types::{ScalarType, ValueType};
pub use definitions::{
    Definitions, Entity, FeatureService, FeatureView, Field, OnDemandFeatureView, PushSource,
    RequestSource, ServiceItem, Source, SourcePathError, Ttl,
};
pub use monitoring::{FeatureLogging, Monitoring};
pub use plan::{diff, Action, Change, ObjectKind};
#[cfg(feature = "redis")]
pub use redis_storage::RedisRegistry;
pub use request::{
    FeatureRequest, OnDemandStep, Origin, PlannedModule, PlannedOutput, RetrievalPlan, StepInput,
    Target,
};
pub use selection::{
    full_name, parse_reference, FeatureSelection, SelectedFeature, SelectionError, ViewSelection,
};
pub use storage::{
    FileRegistry, MaterializationRecord, MaterializationSummary, RegistryBackend, RegistryVersion,
};
pub use validate::{
    check_new_version, validate, widens_to, TransformSchemas, ValidationError, ValidationErrors,
};

/// Registry failures.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("registry file {path} is unreadable: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("another apply changed the registry at the same time")]
    Conflict,
    #[error("nothing has been applied yet: run `wafer apply` first")]
    Empty,
    #[error("no registry version {0}")]
    NoSuchVersion(u64),
    /// This registry cannot change here (an edge's follows its source).
    #[error("{0}")]
    ReadOnly(String),
    /// The shared registry (Redis) cannot be reached; retry later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

/// Reads and merges definition files, remembering which file defined what.
pub fn load_definitions(files: &[PathBuf]) -> Result<Definitions, RegistryError> {
    let mut all = Definitions::default();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
            path: path.clone(),
            source,
        })?;
        let mut definitions: Definitions = if text.trim().is_empty() {
            Definitions::default()
        } else {
            serde_saphyr::from_str(&text).map_err(|e| RegistryError::Yaml {
                path: path.clone(),
                message: e.to_string(),
            })?
        };
        for e in &mut definitions.entities {
            e.defined_in = path.clone();
        }
        for s in &mut definitions.sources {
            s.defined_in = path.clone();
        }
        for v in &mut definitions.feature_views {
            v.defined_in = path.clone();
        }
        for s in &mut definitions.feature_services {
            s.defined_in = path.clone();
        }
        for s in &mut definitions.push_sources {
            s.defined_in = path.clone();
        }
        for s in &mut definitions.request_sources {
            s.defined_in = path.clone();
        }
        for v in &mut definitions.on_demand_feature_views {
            v.defined_in = path.clone();
        }
        all.extend(definitions);
    }
    Ok(all)
}

/// What an apply did.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// The version stored, or `None` when nothing changed.
    pub version: Option<u64>,
    pub changes: Vec<Change>,
}

/// Versioned definitions over a storage backend.
pub struct Registry {
    backend: Box<dyn RegistryBackend>,
}

impl Registry {
    pub fn new(backend: Box<dyn RegistryBackend>) -> Self {
        Registry { backend }
    }

    /// The newest version, if any.
    pub fn latest(&self) -> Result<Option<RegistryVersion>, RegistryError> {
        self.backend.latest()
    }

    /// One version by number.
    pub fn version(&self, number: u64) -> Result<RegistryVersion, RegistryError> {
        self.backend
            .version(number)
            .and_then(|v| v.ok_or(RegistryError::NoSuchVersion(number)))
    }

    /// Every version, oldest first.
    pub fn history(&self) -> Result<Vec<RegistryVersion>, RegistryError> {
        Ok(self.history_page(Some(0), usize::MAX)?.1)
    }

    /// How many versions there are, and up to `limit` of them, oldest
    /// first, skipping the `offset` oldest (by default, the newest
    /// `limit`). Only the versions returned are read; the rest are counted
    /// from the backend's listing.
    pub fn history_page(
        &self,
        offset: Option<usize>,
        limit: usize,
    ) -> Result<(usize, Vec<RegistryVersion>), RegistryError> {
        let numbers = self.backend.versions()?;
        let offset = offset.unwrap_or_else(|| numbers.len().saturating_sub(limit));
        let page = numbers
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|&n| self.backend.version(n).transpose())
            .collect::<Result<_, _>>()?;
        Ok((numbers.len(), page))
    }

    /// Records a completed materialization.
    pub fn record_materialization(
        &self,
        record: &MaterializationRecord,
    ) -> Result<(), RegistryError> {
        self.backend.record_materialization(record)
    }

    /// The number of the newest version, read without loading it.
    pub fn latest_version_number(&self) -> Result<Option<u64>, RegistryError> {
        self.backend.latest_number()
    }

    /// Every completed materialization, oldest first (reads them all).
    pub fn materializations(&self) -> Result<Vec<MaterializationRecord>, RegistryError> {
        self.backend.materializations()
    }

    /// The completed materializations per view: how many, and the newest.
    /// Cheap to call often (the file backend reads only new records).
    pub fn materialization_summary(&self) -> Result<MaterializationSummary, RegistryError> {
        self.backend.materialization_summary()
    }

    /// What applying `definitions` would change, after validating them.
    pub fn plan(
        &self,
        definitions: &Definitions,
        project_dir: &Path,
        transforms: &dyn TransformSchemas,
    ) -> Result<Vec<Change>, RegistryError> {
        validate(definitions, project_dir, transforms)?;
        let current = self.latest()?.map(|v| v.definitions).unwrap_or_default();
        Ok(diff(&current, definitions))
    }

    /// Validates `definitions` and stores them as a new version, unless they
    /// equal the newest one. Concurrent applies are serialized: a loser of the
    /// race re-reads the newest version and tries again.
    pub fn apply(
        &self,
        definitions: Definitions,
        project_dir: &Path,
        author: &str,
        transforms: &dyn TransformSchemas,
    ) -> Result<ApplyOutcome, RegistryError> {
        validate(&definitions, project_dir, transforms)?;
        loop {
            let current = self.latest()?;
            let parent = current.as_ref().map(|v| v.version);
            let changes = diff(
                &current.map(|v| v.definitions).unwrap_or_default(),
                &definitions,
            );
            if changes.is_empty() && parent.is_some() {
                return Ok(ApplyOutcome {
                    version: None,
                    changes,
                });
            }
            let next = RegistryVersion {
                version: parent.unwrap_or(0) + 1,
                created_at: chrono::Utc::now(),
                author: author.to_string(),
                wafer_version: env!("CARGO_PKG_VERSION").to_string(),
                changes: changes.clone(),
                definitions: definitions.clone(),
            };
            match self.backend.commit(parent, &next) {
                Ok(()) => {
                    return Ok(ApplyOutcome {
                        version: Some(next.version),
                        changes,
                    })
                }
                Err(RegistryError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
