//! Registry browsing, the one use case behind `wafer registry list|show` and
//! the HTTP `/registry` endpoints: a summary of the applied version, every
//! object of a kind, one object by kind and name, every object of a name,
//! and how fresh a feature view is. Objects come back as the JSON their
//! typed definitions serialize to; feature views in lists and lookups by
//! kind carry `last_materialization` (the newest run by window end, or
//! null), their `state` (Feast's `MATERIALIZING`, `AVAILABLE_ONLINE`,
//! `CREATED`) and the last failure of a background run, if any.

pub use crate::error::BrowseError;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::registry::{
    Definitions, MaterializationRecord, MaterializationSummary, ObjectKind, RegistryVersion,
};
use crate::{Error, FeatureStore};

/// Every kind of registry object, in dependency order.
pub const KINDS: [ObjectKind; 7] = [
    ObjectKind::Entity,
    ObjectKind::Source,
    ObjectKind::FeatureView,
    ObjectKind::FeatureService,
    ObjectKind::PushSource,
    ObjectKind::RequestSource,
    ObjectKind::OnDemandFeatureView,
];

/// The applied registry version, in numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrySummary {
    pub project: String,
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub author: String,
    /// How many objects of each kind, in the order of [`KINDS`].
    pub objects: Vec<(ObjectKind, usize)>,
}

impl RegistrySummary {
    /// How many objects of `kind` the version holds.
    pub fn count(&self, kind: ObjectKind) -> usize {
        self.objects
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

/// How fresh one feature view's online values are.
#[derive(Debug, Clone, Default)]
pub struct Freshness {
    /// Completed materializations of the view.
    pub runs: usize,
    /// The newest of them by window end.
    pub last: Option<MaterializationRecord>,
}

impl FeatureStore {
    /// The applied registry version: project, number, author, object counts.
    pub fn registry_summary(&self) -> Result<RegistrySummary, Error> {
        let applied = self.applied()?;
        let d = &applied.definitions;
        Ok(RegistrySummary {
            project: self.config().project.clone(),
            version: applied.version,
            created_at: applied.created_at,
            author: applied.author.clone(),
            objects: KINDS.iter().map(|&kind| (kind, count(d, kind))).collect(),
        })
    }

    /// Every object of `kind` in the applied version; feature views carry
    /// `last_materialization`.
    pub fn list_objects(&self, kind: ObjectKind) -> Result<Vec<Value>, Error> {
        let applied = self.applied()?;
        let mut objects = encode_all(&applied.definitions, kind).map_err(BrowseError::from)?;
        if kind == ObjectKind::FeatureView {
            let history = self.registry().materialization_summary()?;
            for object in &mut objects {
                self.add_materialization(object, &history);
            }
        }
        Ok(objects)
    }

    /// One object of `kind` by name in the applied version; a feature view
    /// carries `last_materialization`.
    pub fn find_object(&self, kind: ObjectKind, name: &str) -> Result<Value, Error> {
        let applied = self.applied()?;
        let mut object = encode_one(&applied.definitions, kind, name)
            .ok_or_else(|| BrowseError::NotFound {
                kind,
                name: name.to_string(),
            })?
            .map_err(BrowseError::from)?;
        if kind == ObjectKind::FeatureView {
            let history = self.registry().materialization_summary()?;
            self.add_materialization(&mut object, &history);
        }
        Ok(object)
    }

    /// Every object named `name`, of any kind, in `version` (the applied
    /// one by default), with that version's number. Fails when none is.
    pub fn objects_named(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<(u64, Vec<(ObjectKind, Value)>), Error> {
        let registry_version: Arc<RegistryVersion> = match version {
            Some(number) => Arc::new(self.registry().version(number)?),
            None => self.applied()?,
        };
        let mut found = Vec::new();
        for kind in KINDS {
            if let Some(object) = encode_one(&registry_version.definitions, kind, name) {
                found.push((kind, object.map_err(BrowseError::from)?));
            }
        }
        if found.is_empty() {
            return Err(BrowseError::NoObjectNamed {
                name: name.to_string(),
                version: registry_version.version,
            }
            .into());
        }
        Ok((registry_version.version, found))
    }

    /// How often `view` was materialized, and its newest run.
    pub fn freshness(&self, view: &str) -> Result<Freshness, Error> {
        let history = self.registry().materialization_summary()?;
        Ok(Freshness {
            runs: history.runs(view),
            last: history.last(view).cloned(),
        })
    }
}

fn count(d: &Definitions, kind: ObjectKind) -> usize {
    match kind {
        ObjectKind::Entity => d.entities.len(),
        ObjectKind::Source => d.sources.len(),
        ObjectKind::FeatureView => d.feature_views.len(),
        ObjectKind::FeatureService => d.feature_services.len(),
        ObjectKind::PushSource => d.push_sources.len(),
        ObjectKind::RequestSource => d.request_sources.len(),
        ObjectKind::OnDemandFeatureView => d.on_demand_feature_views.len(),
    }
}

/// Every object of `kind`, as JSON.
fn encode_all(d: &Definitions, kind: ObjectKind) -> serde_json::Result<Vec<Value>> {
    fn all<T: Serialize>(items: &[T]) -> serde_json::Result<Vec<Value>> {
        items.iter().map(serde_json::to_value).collect()
    }
    match kind {
        ObjectKind::Entity => all(&d.entities),
        ObjectKind::Source => all(&d.sources),
        ObjectKind::FeatureView => all(&d.feature_views),
        ObjectKind::FeatureService => all(&d.feature_services),
        ObjectKind::PushSource => all(&d.push_sources),
        ObjectKind::RequestSource => all(&d.request_sources),
        ObjectKind::OnDemandFeatureView => all(&d.on_demand_feature_views),
    }
}

/// The object of `kind` named `name`, as JSON, if there is one.
fn encode_one(d: &Definitions, kind: ObjectKind, name: &str) -> Option<serde_json::Result<Value>> {
    match kind {
        ObjectKind::Entity => d.entity(name).map(serde_json::to_value),
        ObjectKind::Source => d.source(name).map(serde_json::to_value),
        ObjectKind::FeatureView => d.feature_view(name).map(serde_json::to_value),
        ObjectKind::FeatureService => d.feature_service(name).map(serde_json::to_value),
        ObjectKind::PushSource => d.push_source(name).map(serde_json::to_value),
        ObjectKind::RequestSource => d.request_source(name).map(serde_json::to_value),
        ObjectKind::OnDemandFeatureView => d.on_demand_feature_view(name).map(serde_json::to_value),
    }
}

impl FeatureStore {
    /// Adds to a view its newest materialization (by window end) or null,
    /// its `state` as Feast names it (`MATERIALIZING` while a run in this
    /// server holds it, else `AVAILABLE_ONLINE` once materialized, else
    /// `CREATED`), and the last failure of a background run of it
    /// (`last_materialization_error`) until a run succeeds.
    fn add_materialization(&self, view: &mut Value, history: &MaterializationSummary) {
        let name = view["name"].as_str().unwrap_or_default().to_string();
        let newest = history.last(&name);
        let state = if self.claims().holds(&name) {
            "MATERIALIZING"
        } else if newest.is_some() {
            "AVAILABLE_ONLINE"
        } else {
            "CREATED"
        };
        let failure = self.materialization_failure(&name);
        if let Some(object) = view.as_object_mut() {
            object.insert(
                "last_materialization".into(),
                serde_json::to_value(newest).unwrap_or(Value::Null),
            );
            object.insert("state".into(), Value::from(state));
            if let Some(failure) = failure {
                object.insert("last_materialization_error".into(), Value::from(failure));
            }
        }
    }
}
