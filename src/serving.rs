//! Online lookups with on-demand features. Ordinary features come from the
//! online store; an on-demand view's transform runs once per request, as one
//! batch over all entity rows, on the looked-up features it needs (read even
//! when not requested) and on request fields taken from the entity columns,
//! as in Feast. Requests without on-demand features take the plain lookup.

use std::collections::HashSet;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, TimeUnit};
use serde_json::Value as Json;

use crate::online::{
    self, array_from_values, value_at, EntityRows, FeatureColumn, FieldStatus, OnlineError,
    OnlineResponse, OnlineStore, Value,
};
use crate::registry::{Definitions, FeatureSelection, OnDemandFeatureView, SelectionError};
use crate::transform::{TransformError, Transforms};
use crate::{Error, FeatureRequest};

/// `(view, feature)` pairs a request asks for, in order.
fn requested_pairs(
    definitions: &Definitions,
    request: &FeatureRequest,
) -> Result<Vec<(String, String)>, SelectionError> {
    match request {
        FeatureRequest::Features(references) => references
            .iter()
            .map(|reference| {
                let reference = reference.trim();
                reference
                    .split_once(':')
                    .filter(|(v, f)| !v.is_empty() && !f.is_empty())
                    .map(|(v, f)| (v.to_string(), f.to_string()))
                    .ok_or_else(|| SelectionError::MalformedReference(reference.to_string()))
            })
            .collect(),
        FeatureRequest::Service(name) => {
            let service = definitions
                .feature_service(name)
                .ok_or_else(|| SelectionError::UnknownService(name.clone()))?;
            let mut pairs = Vec::new();
            for item in &service.features {
                let all: Vec<String> = if let Some(view) = definitions.feature_view(&item.view) {
                    view.features.iter().map(|f| f.name.clone()).collect()
                } else if let Some(view) = definitions.on_demand_feature_view(&item.view) {
                    view.features.iter().map(|f| f.name.clone()).collect()
                } else {
                    return Err(SelectionError::UnknownView(item.view.clone()));
                };
                let names = item.features.clone().unwrap_or(all);
                pairs.extend(names.into_iter().map(|n| (item.view.clone(), n)));
            }
            Ok(pairs)
        }
    }
}

/// Looks up `request` for `entities` as of `now` (nanoseconds).
#[allow(clippy::too_many_arguments)]
pub(crate) fn get_online_features<'t>(
    definitions: &Definitions,
    store: &dyn OnlineStore,
    transforms: impl FnOnce() -> Result<&'t Transforms, Error>,
    project: &str,
    request: &FeatureRequest,
    full_feature_names: bool,
    entities: &EntityRows,
    now: i64,
) -> Result<OnlineResponse, Error> {
    let pairs = requested_pairs(definitions, request)?;
    let is_on_demand = |view: &str| definitions.on_demand_feature_view(view).is_some();
    if !pairs.iter().any(|(view, _)| is_on_demand(view)) {
        let selection = match request {
            FeatureRequest::Features(references) => {
                FeatureSelection::from_references(definitions, references, full_feature_names)?
            }
            FeatureRequest::Service(name) => {
                FeatureSelection::from_service(definitions, name, full_feature_names)?
            }
        };
        return Ok(online::lookup::get_online_features(
            store, project, &selection, entities, now,
        )?);
    }

    // Which on-demand views run, and the stored features they read.
    let mut seen = HashSet::new();
    let mut on_demand: Vec<&OnDemandFeatureView> = Vec::new();
    for (view, feature) in &pairs {
        if !seen.insert((view.as_str(), feature.as_str())) {
            return Err(SelectionError::Duplicate(format!("{view}:{feature}")).into());
        }
        if let Some(odfv) = definitions.on_demand_feature_view(view) {
            if odfv.features.iter().all(|f| &f.name != feature) {
                return Err(SelectionError::UnknownFeature {
                    view: view.clone(),
                    feature: feature.clone(),
                }
                .into());
            }
            if !on_demand.iter().any(|o| o.name == odfv.name) {
                on_demand.push(odfv);
            }
        }
    }
    let transforms = transforms()?;
    let mut lookups: Vec<String> = pairs
        .iter()
        .filter(|(view, _)| !is_on_demand(view))
        .map(|(view, feature)| format!("{view}:{feature}"))
        .collect();
    let mut compiled = Vec::with_capacity(on_demand.len());
    for odfv in &on_demand {
        let transform = transforms
            .resolve(&odfv.transform)
            .map_err(|source| on_demand_error(odfv, source))?;
        for input in &transform.schema().inputs {
            if let Some(view) = source_view_of(definitions, odfv, &input.name) {
                let reference = format!("{view}:{}", input.name);
                if !lookups.contains(&reference) {
                    lookups.push(reference);
                }
            }
        }
        compiled.push(transform);
    }

    let rows = entities.len()?;
    // Internal columns are named `view__feature`, so inputs never collide.
    let looked_up = if lookups.is_empty() {
        OnlineResponse {
            join_keys: 0,
            feature_names: Vec::new(),
            results: Vec::new(),
        }
    } else {
        let selection = FeatureSelection::from_references(definitions, &lookups, true)?;
        online::lookup::get_online_features(store, project, &selection, entities, now)?
    };
    let column = |name: &str| {
        looked_up
            .feature_names
            .iter()
            .position(|n| n == name)
            .map(|i| &looked_up.results[i])
    };

    let mut computed: Vec<(String, FeatureColumn)> = Vec::new();
    for (odfv, transform) in on_demand.iter().zip(&compiled) {
        let schema = transform.schema();
        let mut inputs: Vec<ArrayRef> = Vec::with_capacity(schema.inputs.len());
        for input in &schema.inputs {
            let values: Vec<Value> = match source_view_of(definitions, odfv, &input.name) {
                Some(view) => column(&format!("{view}__{}", input.name))
                    .map(|c| c.values.clone())
                    .unwrap_or_else(|| vec![Value::Null; rows]),
                None => request_values(entities, odfv, &input.name, &input.value_type)?,
            };
            let array = array_from_values(&values, &input.value_type)
                .map_err(|e| OnlineError::InvalidInput(format!("input '{}': {e}", input.name)))?;
            inputs.push(array);
        }
        let outputs = transform
            .run(&inputs)
            .map_err(|source| on_demand_error(odfv, source))?;
        for feature in &odfv.features {
            let Some(index) = schema.outputs.iter().position(|o| o.name == feature.name) else {
                continue;
            };
            let mut array = outputs[index].clone();
            if matches!(array.data_type(), DataType::Timestamp(..)) {
                // Stored timestamps are nanoseconds.
                array = arrow::compute::cast(
                    &array,
                    &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                )
                .map_err(|e| on_demand_error(odfv, TransformError::BadOutput(e.to_string())))?;
            }
            let values: Vec<Value> = (0..rows)
                .map(|row| value_at(&array, &feature.value_type, row))
                .collect();
            let statuses = values
                .iter()
                .map(|v| {
                    if v.is_null() {
                        FieldStatus::NullValue
                    } else {
                        FieldStatus::Present
                    }
                })
                .collect();
            computed.push((
                format!("{}__{}", odfv.name, feature.name),
                FeatureColumn {
                    values,
                    statuses,
                    event_timestamps: vec![None; rows],
                },
            ));
        }
    }

    // Join keys first, then the features in the order requested.
    let mut response = OnlineResponse {
        join_keys: looked_up.join_keys,
        feature_names: looked_up.feature_names[..looked_up.join_keys].to_vec(),
        results: looked_up.results[..looked_up.join_keys].to_vec(),
    };
    for (view, feature) in &pairs {
        let internal = format!("{view}__{feature}");
        let result = computed
            .iter()
            .find(|(name, _)| *name == internal)
            .map(|(_, c)| c)
            .or_else(|| column(&internal))
            .cloned()
            .unwrap_or_else(|| FeatureColumn {
                values: vec![Value::Null; rows],
                statuses: vec![FieldStatus::NotFound; rows],
                event_timestamps: vec![None; rows],
            });
        let name = if full_feature_names {
            internal
        } else {
            feature.clone()
        };
        if let Some(first) = response.feature_names[response.join_keys..]
            .iter()
            .position(|n| *n == name)
        {
            let (first_view, _) = &pairs[first];
            return Err(SelectionError::NameCollision {
                name,
                first: format!("{first_view}:{feature}"),
                second: format!("{view}:{feature}"),
            }
            .into());
        }
        response.feature_names.push(name);
        response.results.push(result);
    }
    Ok(response)
}

/// The feature view among the on-demand view's sources that provides
/// `input`, or `None` when a request source does (apply checked that
/// exactly one source provides each input).
fn source_view_of<'d>(
    definitions: &'d Definitions,
    odfv: &OnDemandFeatureView,
    input: &str,
) -> Option<&'d str> {
    odfv.sources.iter().find_map(|name| {
        definitions
            .feature_view(name)
            .filter(|view| view.feature(input).is_some())
            .map(|view| view.name.as_str())
    })
}

/// A request field's values from the entity columns, typed.
fn request_values(
    entities: &EntityRows,
    odfv: &OnDemandFeatureView,
    field: &str,
    value_type: &crate::registry::ValueType,
) -> Result<Vec<Value>, OnlineError> {
    let column: &[Json] = entities
        .columns
        .iter()
        .find(|(name, _)| name == field)
        .map(|(_, values)| values.as_slice())
        .ok_or_else(|| {
            OnlineError::InvalidInput(format!(
                "missing request data '{field}' for on-demand feature view '{}': send it in entities",
                odfv.name
            ))
        })?;
    column
        .iter()
        .enumerate()
        .map(|(row, json)| {
            Value::from_json(json, value_type).map_err(|e| {
                OnlineError::InvalidInput(format!("request data '{field}', row {row}: {e}"))
            })
        })
        .collect()
}

fn on_demand_error(odfv: &OnDemandFeatureView, source: TransformError) -> Error {
    Error::OnDemand {
        view: odfv.name.clone(),
        source,
    }
}
