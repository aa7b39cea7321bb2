//! The training-set use case: every row of an entity file joined with the
//! requested features as of its `event_timestamp`. The request is resolved
//! into a plan ([`crate::registry::request`]); the point-in-time join reads
//! its stored features (requested ones and the on-demand views' inputs),
//! and each joined batch, as it streams out of DuckDB, runs through the
//! same modules that serve lookups, with request data from the entity
//! file's columns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::offline::{
    BatchSink, FileFormat, OfflineError, OfflineStore, OutputFile, RetrievalSummary,
};
use crate::on_demand::{self, Step};
use crate::registry::{FeatureRequest, Origin, PlannedOutput, StepInput, Target};
use crate::transform::TransformError;
use crate::{Error, FeatureStore};

impl FeatureStore {
    /// The offline store of this project.
    pub fn offline_store(&self) -> OfflineStore {
        OfflineStore::new(self.project_dir(), &self.config().offline_store)
    }

    /// Builds a training set: every row of `entity_file` joined with the
    /// requested features as of its `event_timestamp`, written to `output`
    /// (Parquet or CSV by extension), which appears only once complete.
    pub fn get_historical_features(
        &self,
        entity_file: &Path,
        request: &FeatureRequest,
        full_feature_names: bool,
        output: &Path,
    ) -> Result<RetrievalSummary, Error> {
        self.historical_features_with(
            &self.offline_store(),
            entity_file,
            request,
            full_feature_names,
            output,
        )
    }

    /// [`FeatureStore::get_historical_features`] on `offline` (a report
    /// runs it with DuckDB settings of its own).
    pub(crate) fn historical_features_with(
        &self,
        offline: &OfflineStore,
        entity_file: &Path,
        request: &FeatureRequest,
        full_feature_names: bool,
        output: &Path,
    ) -> Result<RetrievalSummary, Error> {
        let applied = self.applied()?;
        let plan = on_demand::plan(
            self,
            &applied.definitions,
            request,
            full_feature_names,
            Target::Offline,
        )?;
        let Some(stored) = &plan.stored else {
            return Err(Error::Training(
                "a training set needs at least one feature of a feature view (the point-in-time join is keyed by its entities)".to_string(),
            ));
        };
        if plan.is_plain() {
            return Ok(offline.historical_to_file(stored, entity_file, output)?);
        }
        FileFormat::of(output)?;
        let mut sink = TransformingSink {
            steps: &plan.on_demand,
            outputs: &plan.outputs,
            stored_features: stored.features.len(),
            path: output.to_path_buf(),
            file: None,
            entity_columns: 0,
        };
        let result = offline.historical(stored, entity_file, &mut sink);
        OutputFile::settle(sink.file.take(), result)
    }
}

/// Runs the plan's on-demand steps over each joined batch and writes the
/// entity columns and the requested features, in order, to the output file.
struct TransformingSink<'p> {
    steps: &'p [Step],
    outputs: &'p [PlannedOutput],
    /// The join's stored feature columns, after the entity file's columns.
    stored_features: usize,
    path: PathBuf,
    file: Option<OutputFile>,
    entity_columns: usize,
}

impl TransformingSink<'_> {
    /// Each step's outputs for `batch`, in module order.
    fn compute(&self, batch: &RecordBatch) -> Result<Vec<Vec<ArrayRef>>, Error> {
        let mut computed = Vec::with_capacity(self.steps.len());
        for step in self.steps {
            let mut inputs = Vec::with_capacity(step.inputs.len());
            for input in &step.inputs {
                let array = match input {
                    StepInput::Stored { feature, .. } => {
                        batch.column(self.entity_columns + feature).clone()
                    }
                    StepInput::Request { name, .. } => batch
                        .column_by_name(name)
                        .ok_or_else(|| {
                            missing_request_data(
                                step,
                                name,
                                "the entity file has no such column (request data)",
                            )
                        })?
                        .clone(),
                };
                inputs.push(array);
            }
            computed.push(on_demand::run(step, &inputs)?);
        }
        Ok(computed)
    }

    fn assemble(
        &self,
        batch: &RecordBatch,
        computed: &[Vec<ArrayRef>],
    ) -> Result<(SchemaRef, Vec<ArrayRef>), Error> {
        let entity = self.entity_columns;
        let mut fields: Vec<Field> = batch.schema().fields()[..entity]
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns: Vec<ArrayRef> = batch.columns()[..entity].to_vec();
        for output in self.outputs {
            let array = match output.origin {
                Origin::Stored(feature) => Some(batch.column(entity + feature).clone()),
                Origin::Computed {
                    step,
                    output: Some(index),
                } => computed[step].get(index).cloned(),
                Origin::Computed { output: None, .. } => None,
            }
            .ok_or_else(|| {
                Error::Training(format!("no column for {}:{}", output.view, output.feature))
            })?;
            fields.push(Field::new(&output.name, array.data_type().clone(), true));
            columns.push(array);
        }
        Ok((Arc::new(Schema::new(fields)), columns))
    }
}

fn missing_request_data(step: &Step, name: &str, message: &str) -> Error {
    on_demand::failure(
        &step.view.name,
        TransformError::Input {
            name: name.to_string(),
            message: message.to_string(),
        },
    )
}

impl BatchSink for TransformingSink<'_> {
    type Error = Error;

    fn start(&mut self, schema: SchemaRef) -> Result<(), Error> {
        self.entity_columns = schema.fields().len().saturating_sub(self.stored_features);
        // Request data must be in the entity file: say which column is
        // missing before any work.
        for step in self.steps {
            for input in &step.inputs {
                if let StepInput::Request { name, .. } = input {
                    if schema.field_with_name(name).is_err() {
                        return Err(missing_request_data(
                            step,
                            name,
                            "missing from the entity file (request data travels as a column of it)",
                        ));
                    }
                }
            }
        }
        // The output schema comes from an empty batch run through the
        // modules, so it matches what later batches produce.
        let empty = RecordBatch::new_empty(schema);
        let computed = self.compute(&empty)?;
        let (out_schema, _) = self.assemble(&empty, &computed)?;
        self.file = Some(OutputFile::create(&self.path, out_schema)?);
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        let computed = self.compute(batch)?;
        let (schema, columns) = self.assemble(batch, &computed)?;
        let out =
            RecordBatch::try_new(schema, columns).map_err(|e| Error::Training(e.to_string()))?;
        match &mut self.file {
            Some(file) => Ok(file.write(&out)?),
            None => Err(OfflineError::Write("batch before schema".into()).into()),
        }
    }
}
