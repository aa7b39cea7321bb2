//! Turns a request for features (`view:feature` references or a feature
//! service) into the views, sources and output column names to read.

use std::collections::HashSet;

use super::definitions::{Definitions, FeatureView, Field, OnDemandFeatureView, Source};

/// What a retrieval reads: the distinct views involved, and the requested
/// features in the order they were asked for.
#[derive(Debug, Clone)]
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
    /// [`Definitions::written_view`]).
    pub fn for_written(definitions: &Definitions, odfv: &OnDemandFeatureView) -> Option<Self> {
        let view = definitions.written_view(odfv)?;
        let source = definitions.source(&view.source)?.clone();
        let join_keys = definitions.join_keys(&view).into_iter().cloned().collect();
        Some(ViewSelection {
            view,
            source,
            join_keys,
        })
    }
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
    /// Selects `view:feature` references.
    pub fn from_references<S: AsRef<str>>(
        definitions: &Definitions,
        references: &[S],
        full_feature_names: bool,
    ) -> Result<Self, SelectionError> {
        Self::references(definitions, references, full_feature_names, false)
    }

    /// Selects `view:feature` references to read from the online store,
    /// where the outputs of write-time on-demand views are stored too.
    pub fn for_lookup<S: AsRef<str>>(
        definitions: &Definitions,
        references: &[S],
        full_feature_names: bool,
    ) -> Result<Self, SelectionError> {
        Self::references(definitions, references, full_feature_names, true)
    }

    fn references<S: AsRef<str>>(
        definitions: &Definitions,
        references: &[S],
        full_feature_names: bool,
        read_written: bool,
    ) -> Result<Self, SelectionError> {
        let pairs = references
            .iter()
            .map(parse_reference)
            .collect::<Result<_, _>>()?;
        Self::build(definitions, pairs, full_feature_names, read_written)
    }

    /// Selects every feature a feature service lists.
    pub fn from_service(
        definitions: &Definitions,
        service: &str,
        full_feature_names: bool,
    ) -> Result<Self, SelectionError> {
        let service = definitions
            .feature_service(service)
            .ok_or_else(|| SelectionError::UnknownService(service.to_string()))?;
        let mut pairs = Vec::new();
        for item in &service.features {
            if definitions.on_demand_feature_view(&item.view).is_some() {
                return Err(SelectionError::OnDemandOffline(item.view.clone()));
            }
            let view = definitions
                .feature_view(&item.view)
                .ok_or_else(|| SelectionError::UnknownView(item.view.clone()))?;
            match &item.features {
                Some(names) => pairs.extend(names.iter().map(|n| (item.view.clone(), n.clone()))),
                None => pairs.extend(
                    view.features
                        .iter()
                        .map(|f| (item.view.clone(), f.name.clone())),
                ),
            }
        }
        Self::build(definitions, pairs, full_feature_names, false)
    }

    fn build(
        definitions: &Definitions,
        pairs: Vec<(String, String)>,
        full_feature_names: bool,
        read_written: bool,
    ) -> Result<Self, SelectionError> {
        if pairs.is_empty() {
            return Err(SelectionError::Empty);
        }
        let mut selection = FeatureSelection {
            views: Vec::new(),
            features: Vec::new(),
        };
        let mut requested = HashSet::new();
        for (view_name, feature_name) in pairs {
            let written;
            let view = match definitions.on_demand_feature_view(&view_name) {
                Some(odfv) => {
                    written = definitions
                        .written_view(odfv)
                        .filter(|_| read_written)
                        .ok_or_else(|| SelectionError::OnDemandOffline(view_name.clone()))?;
                    &written
                }
                None => definitions
                    .feature_view(&view_name)
                    .ok_or_else(|| SelectionError::UnknownView(view_name.clone()))?,
            };
            let field =
                view.feature(&feature_name)
                    .ok_or_else(|| SelectionError::UnknownFeature {
                        view: view_name.clone(),
                        feature: feature_name.clone(),
                    })?;
            if !requested.insert((view_name.clone(), feature_name.clone())) {
                return Err(SelectionError::Duplicate(format!(
                    "{view_name}:{feature_name}"
                )));
            }
            let index = match selection
                .views
                .iter()
                .position(|v| v.view.name == view_name)
            {
                Some(index) => index,
                None => {
                    let source = definitions
                        .source(&view.source)
                        .ok_or_else(|| SelectionError::UnknownView(view_name.clone()))?;
                    selection.views.push(ViewSelection {
                        view: view.clone(),
                        source: source.clone(),
                        join_keys: definitions.join_keys(view).into_iter().cloned().collect(),
                    });
                    selection.views.len() - 1
                }
            };
            let output_name = if full_feature_names {
                format!("{view_name}__{feature_name}")
            } else {
                feature_name.clone()
            };
            if let Some(existing) = selection
                .features
                .iter()
                .find(|f| f.output_name == output_name)
            {
                return Err(SelectionError::NameCollision {
                    name: output_name,
                    first: format!(
                        "{}:{}",
                        selection.views[existing.view].view.name, existing.field.name
                    ),
                    second: format!("{view_name}:{feature_name}"),
                });
            }
            selection.features.push(SelectedFeature {
                view: index,
                field: field.clone(),
                output_name,
            });
        }
        Ok(selection)
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
