//! Online lookups with on-demand features. Ordinary features come from the
//! online store; an on-demand view's transform runs once per request, as one
//! batch over all entity rows, on the looked-up features it needs (read even
//! when not requested) and on request fields taken from the entity columns,
//! as in Feast. Requests without on-demand features take the plain lookup.

use std::collections::HashSet;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde_json::Value as Json;

use crate::online::{
    self, array_from_values, value_at, EntityRows, FeatureColumn, FieldStatus, OnDemandRun,
    OnlineError, OnlineResponse, OnlineStore, Value,
};
use crate::registry::{
    parse_reference, Definitions, FeatureSelection, FeatureView, OnDemandFeatureView,
    SelectionError, ViewSelection,
};
use crate::transform::{CompiledTransform, TransformError, Transforms};
use crate::{Error, FeatureRequest};

/// The write-time on-demand views over one feature view: their modules run
/// on that view's rows as they are written online (materialization, push),
/// and their outputs are stored as records of their own, keyed and timed
/// like the rows they came from.
pub(crate) struct WriteTimeTransforms {
    views: Vec<WriteTimeView>,
}

struct WriteTimeView {
    name: String,
    stored: ViewSelection,
    transform: CompiledTransform,
    /// For each module input, its index among the source view's features.
    inputs: Vec<usize>,
    /// For each stored feature, its index among the module's outputs.
    outputs: Vec<usize>,
}

impl WriteTimeTransforms {
    /// Those over `view`; the module store is opened only if there are any.
    pub fn over<'t>(
        definitions: &Definitions,
        view: &FeatureView,
        transforms: impl FnOnce() -> Result<&'t Transforms, Error>,
    ) -> Result<Self, Error> {
        let odfvs: Vec<&OnDemandFeatureView> = definitions
            .on_demand_feature_views
            .iter()
            .filter(|o| o.write_to_online_store && o.sources == [view.name.as_str()])
            .collect();
        let mut views = Vec::with_capacity(odfvs.len());
        if let Some(transforms) = (!odfvs.is_empty()).then(transforms).transpose()? {
            for odfv in odfvs {
                let transform = transforms
                    .resolve(&odfv.transform)
                    .map_err(|source| on_demand_error(odfv, source))?;
                let broken =
                    |message: String| on_demand_error(odfv, TransformError::Schema(message));
                let schema = transform.schema();
                let inputs = schema
                    .inputs
                    .iter()
                    .map(|input| {
                        view.features
                            .iter()
                            .position(|f| f.name == input.name)
                            .ok_or_else(|| {
                                broken(format!(
                                    "view '{}' has no feature '{}'",
                                    view.name, input.name
                                ))
                            })
                    })
                    .collect::<Result<_, _>>()?;
                let outputs = odfv
                    .features
                    .iter()
                    .map(|feature| {
                        schema
                            .outputs
                            .iter()
                            .position(|o| o.name == feature.name)
                            .ok_or_else(|| {
                                broken(format!("the module has no output '{}'", feature.name))
                            })
                    })
                    .collect::<Result<_, _>>()?;
                let stored = ViewSelection::for_written(definitions, odfv)
                    .ok_or_else(|| broken("it is not a write-time view".to_string()))?;
                views.push(WriteTimeView {
                    name: odfv.name.clone(),
                    stored,
                    transform,
                    inputs,
                    outputs,
                });
            }
        }
        Ok(WriteTimeTransforms { views })
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// The records of every write-time view for `batch`, which holds the
    /// source view's rows as they are written: join keys, event and created
    /// time, then its features in declared order.
    pub fn records(
        &self,
        project: &str,
        batch: &RecordBatch,
    ) -> Result<Vec<online::KeyedRecord>, Error> {
        let mut records = Vec::new();
        for view in &self.views {
            let keys = view.stored.join_keys.len() + 2;
            let features = batch.columns().get(keys..).unwrap_or_default();
            let inputs: Vec<ArrayRef> = view
                .inputs
                .iter()
                .filter_map(|&i| features.get(i).cloned())
                .collect();
            let outputs = view
                .transform
                .run(&inputs)
                .map_err(|source| Error::OnDemand {
                    view: view.name.clone(),
                    source,
                })?;
            let mut columns = batch.columns()[..keys.min(batch.num_columns())].to_vec();
            columns.extend(view.outputs.iter().filter_map(|&i| outputs.get(i).cloned()));
            let written =
                online::batch_of(columns).map_err(|e| OnlineError::Data(e.to_string()))?;
            records.extend(online::records_from_batch(project, &view.stored, &written)?);
        }
        Ok(records)
    }
}

/// `(view, feature)` pairs a request asks for, in order.
fn requested_pairs(
    definitions: &Definitions,
    request: &FeatureRequest,
) -> Result<Vec<(String, String)>, SelectionError> {
    match request {
        FeatureRequest::Features(references) => references.iter().map(parse_reference).collect(),
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

    let plan = OnDemandPlan::new(definitions, pairs, transforms, true)?;
    let (pairs, on_demand, lookups) = (&plan.pairs, &plan.on_demand, &plan.lookups);
    let rows = entities.len()?;
    // Internal columns are named `view__feature`, so inputs never collide.
    let looked_up = if lookups.is_empty() {
        OnlineResponse {
            join_keys: 0,
            feature_names: Vec::new(),
            results: Vec::new(),
            on_demand_runs: Vec::new(),
        }
    } else {
        let selection = FeatureSelection::for_lookup(definitions, lookups, true)?;
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
    let mut runs = Vec::with_capacity(on_demand.len());
    for (odfv, transform) in on_demand {
        let schema = transform.schema();
        let mut inputs: Vec<ArrayRef> = Vec::with_capacity(schema.inputs.len());
        for input in &schema.inputs {
            // Stored features keep their own type (the module's run widens
            // int32 and float32 where the input is wider).
            let (values, value_type) = match source_view_of(definitions, odfv, &input.name) {
                Some(view) => {
                    let stored_type = definitions
                        .feature_view(view)
                        .and_then(|v| v.feature(&input.name))
                        .map(|f| f.value_type.clone())
                        .unwrap_or_else(|| input.value_type.clone());
                    let values = column(&format!("{view}__{}", input.name))
                        .map(|c| c.values.clone())
                        .unwrap_or_else(|| vec![Value::Null; rows]);
                    (values, stored_type)
                }
                None => (
                    request_values(entities, odfv, &input.name, &input.value_type)?,
                    input.value_type.clone(),
                ),
            };
            let array = array_from_values(&values, &value_type)
                .map_err(|e| OnlineError::InvalidInput(format!("input '{}': {e}", input.name)))?;
            inputs.push(array);
        }
        let started = std::time::Instant::now();
        let outputs = transform
            .run(&inputs)
            .map_err(|source| on_demand_error(odfv, source))?;
        runs.push(OnDemandRun {
            view: odfv.name.clone(),
            rows,
            elapsed: started.elapsed(),
        });
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
            let statuses = values.iter().map(FieldStatus::of_present).collect();
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
    let names = plan.output_names(full_feature_names)?;
    let mut response = OnlineResponse {
        join_keys: looked_up.join_keys,
        feature_names: looked_up.feature_names[..looked_up.join_keys].to_vec(),
        results: looked_up.results[..looked_up.join_keys].to_vec(),
        on_demand_runs: runs,
    };
    for ((view, feature), name) in pairs.iter().zip(names) {
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
        response.feature_names.push(name);
        response.results.push(result);
    }
    Ok(response)
}

/// What a request with on-demand features needs: the views to run with
/// their modules, and the stored features to read (requested ones first,
/// then inputs of the transforms), as `view:feature` references. Outputs of
/// write-time views are stored features online (`read_written`) and
/// computed like the others in training sets.
struct OnDemandPlan<'d> {
    pairs: Vec<(String, String)>,
    on_demand: Vec<(&'d OnDemandFeatureView, CompiledTransform)>,
    lookups: Vec<String>,
}

impl<'d> OnDemandPlan<'d> {
    fn new<'t>(
        definitions: &'d Definitions,
        pairs: Vec<(String, String)>,
        transforms: impl FnOnce() -> Result<&'t Transforms, Error>,
        read_written: bool,
    ) -> Result<Self, Error> {
        let is_read = |odfv: &OnDemandFeatureView| read_written && odfv.write_to_online_store;
        let mut seen = HashSet::new();
        let mut views: Vec<&'d OnDemandFeatureView> = Vec::new();
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
                if !is_read(odfv) && !views.iter().any(|o| o.name == odfv.name) {
                    views.push(odfv);
                }
            }
        }
        let mut lookups: Vec<String> = pairs
            .iter()
            .filter(|(view, _)| definitions.on_demand_feature_view(view).is_none_or(is_read))
            .map(|(view, feature)| format!("{view}:{feature}"))
            .collect();
        let mut on_demand = Vec::with_capacity(views.len());
        // Only computed views need the module store.
        if let Some(transforms) = (!views.is_empty()).then(transforms).transpose()? {
            for odfv in views {
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
                on_demand.push((odfv, transform));
            }
        }
        Ok(OnDemandPlan {
            pairs,
            on_demand,
            lookups,
        })
    }

    /// The output name of each requested feature, checked for collisions.
    fn output_names(&self, full_feature_names: bool) -> Result<Vec<String>, SelectionError> {
        let mut names: Vec<String> = Vec::with_capacity(self.pairs.len());
        for (view, feature) in &self.pairs {
            let name = if full_feature_names {
                format!("{view}__{feature}")
            } else {
                feature.clone()
            };
            if let Some(first) = names.iter().position(|n| *n == name) {
                return Err(SelectionError::NameCollision {
                    name,
                    first: format!("{}:{}", self.pairs[first].0, self.pairs[first].1),
                    second: format!("{view}:{feature}"),
                });
            }
            names.push(name);
        }
        Ok(names)
    }
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

/// A training set with on-demand features: the point-in-time join reads the
/// stored features (requested ones and the transforms' inputs), then each
/// joined batch, as it streams out of DuckDB, runs through the same modules
/// that serve lookups, with request fields taken from the entity file's
/// columns.
#[cfg(feature = "offline")]
pub(crate) fn historical_to_file<'t>(
    definitions: &Definitions,
    offline: &crate::offline::OfflineStore,
    transforms: impl FnOnce() -> Result<&'t Transforms, Error>,
    entity_file: &std::path::Path,
    request: &FeatureRequest,
    full_feature_names: bool,
    output: &std::path::Path,
) -> Result<crate::offline::RetrievalSummary, Error> {
    let pairs = requested_pairs(definitions, request)?;
    if !pairs
        .iter()
        .any(|(view, _)| definitions.on_demand_feature_view(view).is_some())
    {
        let selection = match request {
            FeatureRequest::Features(references) => {
                FeatureSelection::from_references(definitions, references, full_feature_names)?
            }
            FeatureRequest::Service(name) => {
                FeatureSelection::from_service(definitions, name, full_feature_names)?
            }
        };
        return Ok(offline.historical_to_file(&selection, entity_file, output)?);
    }
    let plan = OnDemandPlan::new(definitions, pairs, transforms, false)?;
    let names = plan.output_names(full_feature_names)?;
    if plan.lookups.is_empty() {
        return Err(Error::Materialize(
            "a training set needs at least one feature of a feature view (the point-in-time join is keyed by its entities)".to_string(),
        ));
    }
    let selection = FeatureSelection::from_references(definitions, &plan.lookups, true)?;
    crate::offline::FileFormat::of(output)?;
    let mut sink = training::TransformingSink {
        definitions,
        plan: &plan,
        names,
        stored_features: selection.features.len(),
        path: output.to_path_buf(),
        file: None,
        entity_columns: 0,
        error: None,
    };
    let result = offline.historical(&selection, entity_file, &mut sink);
    match (result, sink.error.take()) {
        (Ok(summary), None) => {
            if let Some(file) = sink.file.take() {
                file.finish()?;
            }
            Ok(summary)
        }
        (result, error) => {
            if let Some(file) = sink.file.take() {
                file.abandon();
            }
            Err(error.unwrap_or_else(|| match result {
                Err(e) => e.into(),
                Ok(_) => Error::Materialize("training set failed".to_string()),
            }))
        }
    }
}

#[cfg(feature = "offline")]
mod training {
    use std::path::PathBuf;
    use std::sync::Arc;

    use arrow::array::ArrayRef;
    use arrow::datatypes::{Field, Schema, SchemaRef};
    use arrow::record_batch::RecordBatch;

    use super::{on_demand_error, source_view_of, OnDemandPlan};
    use crate::offline::{BatchSink, OfflineError, OutputFile};
    use crate::registry::Definitions;
    use crate::transform::TransformError;
    use crate::Error;

    pub(super) struct TransformingSink<'a, 'd> {
        pub definitions: &'d Definitions,
        pub plan: &'a OnDemandPlan<'d>,
        pub names: Vec<String>,
        /// The join's feature columns (named `view__feature`) after the
        /// entity file's columns.
        pub stored_features: usize,
        pub path: PathBuf,
        pub file: Option<OutputFile>,
        pub entity_columns: usize,
        /// The real failure, when a batch could not be transformed.
        pub error: Option<Error>,
    }

    impl TransformingSink<'_, '_> {
        fn fail(&mut self, error: Error) -> OfflineError {
            let message = error.to_string();
            self.error = Some(error);
            OfflineError::Write(message)
        }

        /// Output columns of every on-demand view for `batch`, as
        /// `view__feature` names.
        fn compute(&self, batch: &RecordBatch) -> Result<Vec<(String, ArrayRef)>, Error> {
            let mut out = Vec::new();
            for (odfv, transform) in &self.plan.on_demand {
                let schema = transform.schema();
                let mut inputs = Vec::with_capacity(schema.inputs.len());
                for input in &schema.inputs {
                    let column = match source_view_of(self.definitions, odfv, &input.name) {
                        Some(view) => format!("{view}__{}", input.name),
                        None => input.name.clone(),
                    };
                    let array = batch.column_by_name(&column).ok_or_else(|| {
                        on_demand_error(
                            odfv,
                            TransformError::Input {
                                name: input.name.clone(),
                                message: "the entity file has no such column (request data)"
                                    .to_string(),
                            },
                        )
                    })?;
                    inputs.push(array.clone());
                }
                let outputs = transform
                    .run(&inputs)
                    .map_err(|source| on_demand_error(odfv, source))?;
                for (field, array) in schema.outputs.iter().zip(outputs) {
                    out.push((format!("{}__{}", odfv.name, field.name), array));
                }
            }
            Ok(out)
        }

        fn assemble(
            &self,
            batch: &RecordBatch,
            computed: &[(String, ArrayRef)],
        ) -> Result<(SchemaRef, Vec<ArrayRef>), Error> {
            let mut fields: Vec<Field> = batch.schema().fields()[..self.entity_columns]
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            let mut columns: Vec<ArrayRef> = batch.columns()[..self.entity_columns].to_vec();
            for ((view, feature), name) in self.plan.pairs.iter().zip(&self.names) {
                let internal = format!("{view}__{feature}");
                let array = computed
                    .iter()
                    .find(|(n, _)| *n == internal)
                    .map(|(_, a)| a.clone())
                    .or_else(|| batch.column_by_name(&internal).cloned())
                    .ok_or_else(|| Error::Materialize(format!("no column for {view}:{feature}")))?;
                fields.push(Field::new(name, array.data_type().clone(), true));
                columns.push(array);
            }
            Ok((Arc::new(Schema::new(fields)), columns))
        }
    }

    impl BatchSink for TransformingSink<'_, '_> {
        fn start(&mut self, schema: SchemaRef) -> Result<(), OfflineError> {
            self.entity_columns = schema.fields().len().saturating_sub(self.stored_features);
            // Request data must be in the entity file: say which column is
            // missing before any work.
            for (odfv, transform) in &self.plan.on_demand {
                for input in &transform.schema().inputs {
                    if source_view_of(self.definitions, odfv, &input.name).is_none()
                        && schema.field_with_name(&input.name).is_err()
                    {
                        let error = on_demand_error(
                            odfv,
                            TransformError::Input {
                                name: input.name.clone(),
                                message: "missing from the entity file (request data travels as a column of it)".to_string(),
                            },
                        );
                        return Err(self.fail(error));
                    }
                }
            }
            // The output schema comes from an empty batch run through the
            // modules, so it matches what later batches produce.
            let empty = RecordBatch::new_empty(schema);
            let prepared = self
                .compute(&empty)
                .and_then(|computed| self.assemble(&empty, &computed));
            match prepared {
                Ok((out_schema, _)) => {
                    self.file = Some(OutputFile::create(&self.path, out_schema)?);
                    Ok(())
                }
                Err(e) => Err(self.fail(e)),
            }
        }

        fn write(&mut self, batch: &RecordBatch) -> Result<(), OfflineError> {
            let prepared = self
                .compute(batch)
                .and_then(|computed| self.assemble(batch, &computed))
                .and_then(|(schema, columns)| {
                    RecordBatch::try_new(schema, columns)
                        .map_err(|e| Error::Materialize(e.to_string()))
                });
            let out = match prepared {
                Ok(out) => out,
                Err(e) => return Err(self.fail(e)),
            };
            match &mut self.file {
                Some(file) => file.write(&out),
                None => Err(OfflineError::Write("batch before schema".into())),
            }
        }
    }
}
