//! The lookup use case: features for entity rows, now. The request is
//! resolved into a plan ([`crate::registry::request`]); its stored features
//! are read from the online store in one go, each on-demand view's module
//! runs once over all entity rows (on looked-up inputs and request data
//! from the entity columns), and the response lists join keys, then the
//! features in the order requested. A lookup of a feature service with
//! `logging:` then hands its sampled rows to the [`crate::feature_log`].
//! Plans that compute nothing are kept per registry version ([`plans`]).

mod plans;

pub use plans::PlanCache;

use std::sync::Arc;

use arrow::array::ArrayRef;
use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use crate::codec::arrow::{array_from_values, Column};
use crate::codec::time::nanos;
use crate::codec::Value;
use crate::on_demand::{self, Step};
use crate::online::{
    self, EntityRows, FeatureColumn, FieldStatus, OnDemandRun, OnlineError, OnlineResponse,
};
use crate::registry::{FeatureRequest, Origin, StepInput, Target};
use crate::transform::TransformError;
use crate::types::ValueType;
use crate::{Error, FeatureStore};

impl FeatureStore {
    /// Whether looking up `request` runs a transform (it names an on-demand
    /// view computed at lookup time), judged from the applied registry
    /// without resolving the request. A server sends such lookups to its
    /// transform pool; an unresolvable request answers `false` and fails on
    /// its own.
    pub fn lookup_runs_transforms(&self, request: &FeatureRequest) -> bool {
        let Ok(applied) = self.applied() else {
            return false;
        };
        let definitions = &applied.definitions;
        let computed = |view: &str| {
            definitions
                .on_demand_feature_view(view)
                .is_some_and(|odfv| !odfv.write_to_online_store)
        };
        if definitions.on_demand_feature_views.is_empty() {
            return false;
        }
        match request {
            FeatureRequest::Features(references) => references.iter().any(|reference| {
                reference
                    .split_once(':')
                    .is_some_and(|(view, _)| computed(view.trim()))
            }),
            FeatureRequest::Service(name) => definitions
                .feature_service(name)
                .is_some_and(|service| service.features.iter().any(|item| computed(&item.view))),
        }
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
        let plans = self.plan_cache();
        let plan = match plans.get(&applied, request, full_feature_names) {
            Some(plan) => plan,
            None => {
                let plan = Arc::new(on_demand::plan(
                    self,
                    &applied.definitions,
                    request,
                    full_feature_names,
                    Target::Online,
                )?);
                plans.keep(&applied, request, full_feature_names, &plan);
                plan
            }
        };
        let now = nanos(now);
        let response = self.look_up(&plan, entities, now)?;
        if let (FeatureRequest::Service(name), Some(log)) = (request, self.feature_log()) {
            if let Some(service) = applied.definitions.feature_service(name) {
                log.record(&applied, service, &plan, entities, &response, now);
            }
        }
        Ok(response)
    }

    /// Runs a lookup's plan: its stored features read, its on-demand views
    /// computed, the outputs in order.
    fn look_up(
        &self,
        plan: &on_demand::Plan,
        entities: &EntityRows,
        now: i64,
    ) -> Result<OnlineResponse, Error> {
        let store = self.online_store()?;
        let project = &self.config().project;
        if plan.is_plain() {
            // Named as requested: the store's answer is the response.
            if let Some(stored) = &plan.stored {
                return Ok(online::lookup::get_online_features(
                    store, project, stored, entities, now,
                )?);
            }
        }
        let rows = entities.len()?;
        let looked_up = match &plan.stored {
            Some(stored) => {
                online::lookup::get_online_features(store, project, stored, entities, now)?
            }
            None => OnlineResponse {
                join_keys: 0,
                feature_names: Vec::new(),
                results: Vec::new(),
                on_demand_runs: Vec::new(),
            },
        };
        let keys = looked_up.join_keys;
        let stored_column = |feature: usize| &looked_up.results[keys + feature];

        let mut outputs: Vec<Vec<ArrayRef>> = Vec::with_capacity(plan.on_demand.len());
        let mut runs = Vec::with_capacity(plan.on_demand.len());
        for step in &plan.on_demand {
            let schema = step.module.schema();
            let mut inputs = Vec::with_capacity(step.inputs.len());
            for (input, field) in step.inputs.iter().zip(&schema.inputs) {
                // Stored features keep their own type (the module widens
                // int32 and float32 where its input is wider).
                let (values, value_type) = match input {
                    StepInput::Stored {
                        feature,
                        value_type,
                    } => (stored_column(*feature).values.clone(), value_type),
                    StepInput::Request { name, value_type } => (
                        request_values(entities, step, name, value_type)?,
                        value_type,
                    ),
                };
                let array = array_from_values(&values, value_type).map_err(|e| {
                    OnlineError::InvalidInput(format!("input '{}': {e}", field.name))
                })?;
                inputs.push(array);
            }
            let started = std::time::Instant::now();
            outputs.push(on_demand::run(step, &inputs)?);
            runs.push(OnDemandRun {
                view: step.view.name.clone(),
                rows,
                elapsed: started.elapsed(),
            });
        }

        let mut response = OnlineResponse {
            join_keys: keys,
            feature_names: looked_up.feature_names[..keys].to_vec(),
            results: looked_up.results[..keys].to_vec(),
            on_demand_runs: runs,
        };
        for output in &plan.outputs {
            let column = match output.origin {
                Origin::Stored(feature) => stored_column(feature).clone(),
                Origin::Computed {
                    step,
                    output: Some(index),
                } => match outputs[step].get(index) {
                    Some(array) => {
                        computed_column(&plan.on_demand[step], array, &output.value_type)?
                    }
                    None => not_found(rows),
                },
                Origin::Computed { output: None, .. } => not_found(rows),
            };
            response.feature_names.push(output.name.clone());
            response.results.push(column);
        }
        Ok(response)
    }
}

/// A computed output as a response column: every value is there, so its
/// status is `PRESENT`, or `NULL_VALUE` where the module returned null.
fn computed_column(
    step: &Step,
    array: &ArrayRef,
    value_type: &ValueType,
) -> Result<FeatureColumn, Error> {
    let column = Column::new(array, value_type)
        .map_err(|e| on_demand::failure(&step.view.name, TransformError::BadOutput(e)))?;
    let values = column.values();
    Ok(FeatureColumn {
        statuses: values.iter().map(FieldStatus::of_present).collect(),
        event_timestamps: vec![None; values.len()],
        values,
    })
}

fn not_found(rows: usize) -> FeatureColumn {
    FeatureColumn {
        values: vec![Value::Null; rows],
        statuses: vec![FieldStatus::NotFound; rows],
        event_timestamps: vec![None; rows],
    }
}

/// A request field's values from the entity columns, typed.
fn request_values(
    entities: &EntityRows,
    step: &Step,
    field: &str,
    value_type: &ValueType,
) -> Result<Vec<Value>, OnlineError> {
    let column: &[Json] = entities
        .columns
        .iter()
        .find(|(name, _)| name == field)
        .map(|(_, values)| values.as_slice())
        .ok_or_else(|| {
            OnlineError::MissingRequestData(format!(
                "missing request data '{field}' for on-demand feature view '{}': send it in entities",
                step.view.name
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
