//! What a retrieval reads from a store: views with their sources and join
//! keys, and features with their output column names. Built by resolving a
//! request ([`super::request`]) or for one whole view (materialization,
//! pushes).

use std::collections::HashSet;

use super::definitions::{Definitions, FeatureView, Field, OnDemandFeatureView, Source};

/// What a retrieval reads: the distinct views involved, and the requested
/// features in the order they were asked for.
#[derive(Debug, Clone, Default)]
pub struct FeatureSelection {
    pub views: Vec<ViewSelection>,
    pub features: Vec<SelectedFeature>,
}

/// A view taking part in a retrieval, with its source and join keys.
#[derive(Debug, Clone)]
pub struct ViewSelection {
    pub view: FeatureView,
    pub source: Source,
    pub join_keys: Vec<Field>,
}

/// One requested feature.
#[derive(Debug, Clone)]
pub struct SelectedFeature {
    /// Index into [`FeatureSelection::views`].
    pub view: usize,
    pub field: Field,
    /// `feature`, or `view__feature` with full feature names.
    pub output_name: String,
}

/// Why a set of features cannot be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("invalid feature reference '{0}': write view:feature")]
    MalformedReference(String),
    #[error("unknown feature view '{0}'")]
    UnknownView(String),
    #[error("feature view '{view}' has no feature '{feature}'")]
    UnknownFeature { view: String, feature: String },
    #[error("unknown feature service '{0}'")]
    UnknownService(String),
    #[error("feature '{0}' is requested twice")]
    Duplicate(String),
    #[error("feature name '{name}' is produced by both '{first}' and '{second}': use full feature names")]
    NameCollision {
        name: String,
        first: String,
        second: String,
    },
    #[error("no features requested")]
    Empty,
    #[error("'{0}' is an on-demand feature view: it is computed by its transform, not read from a store")]
    OnDemandOffline(String),
}

impl ViewSelection {
    /// A whole view with its source and keys.
    pub fn for_view(definitions: &Definitions, name: &str) -> Result<Self, SelectionError> {
        let view = definitions
            .feature_view(name)
            .ok_or_else(|| SelectionError::UnknownView(name.to_string()))?;
        let source = definitions
            .source(&view.source)
            .ok_or_else(|| SelectionError::UnknownView(name.to_string()))?;
        Ok(ViewSelection {
            view: view.clone(),
            source: source.clone(),
            join_keys: definitions.join_keys(view).into_iter().cloned().collect(),
        })
    }

    /// Where a write-time on-demand view's outputs are stored (see
    /// [`Definitions::write_time_view`]).
    pub fn for_write_time(definitions: &Definitions, odfv: &OnDemandFeatureView) -> Option<Self> {
        let view = definitions.write_time_view(odfv)?;
        let source = definitions.source(&view.source)?.clone();
        let join_keys = definitions.join_keys(&view).into_iter().cloned().collect();
        Some(ViewSelection {
            view,
            source,
            join_keys,
        })
    }
}

/// The name of `view`'s `feature` with full feature names, `view__feature`:
/// also the internal name of stored columns when a plan computes on-demand
/// features.
pub fn full_name(view: &str, feature: &str) -> String {
    format!("{view}__{feature}")
}

/// Splits a `view:feature` reference.
pub fn parse_reference(reference: impl AsRef<str>) -> Result<(String, String), SelectionError> {
    let reference = reference.as_ref().trim();
    reference
        .split_once(':')
        .filter(|(v, f)| !v.is_empty() && !f.is_empty())
        .map(|(v, f)| (v.to_string(), f.to_string()))
        .ok_or_else(|| SelectionError::MalformedReference(reference.to_string()))
}

impl FeatureSelection {
    /// Adds `field` of the view named `view_name` (the view is built by
    /// `view` the first time it is needed, then shared), named
    /// `output_name`; returns the feature's index.
    pub fn add<E>(
        &mut self,
        view_name: &str,
        view: impl FnOnce() -> Result<ViewSelection, E>,
        field: Field,
        output_name: String,
    ) -> Result<usize, E> {
        let index = match self.views.iter().position(|v| v.view.name == view_name) {
            Some(index) => index,
            None => {
                self.views.push(view()?);
                self.views.len() - 1
            }
        };
        self.features.push(SelectedFeature {
            view: index,
            field,
            output_name,
        });
        Ok(self.features.len() - 1)
    }

    /// Every join key the selected views need, each once, in first-seen order.
    pub fn join_keys(&self) -> Vec<&Field> {
        let mut seen = HashSet::new();
        self.views
            .iter()
            .flat_map(|v| v.join_keys.iter())
            .filter(|k| seen.insert(k.name.as_str()))
            .collect()
    }
}
