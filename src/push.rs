//! Pushed rows: a batch of columns sent to a push source, written to the
//! online store, to the offline source as a new Parquet file, or both.
//!
//! The whole batch is converted and checked before anything is written, so
//! a batch with one bad value changes nothing anywhere.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::online::{array_from_values, batch_of, EntityRows, Value};
use crate::registry::{Definitions, FeatureView, Source, SourcePathError, ValueType};

/// Where pushed rows go (Feast's `to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushTarget {
    #[default]
    Online,
    Offline,
    OnlineAndOffline,
}

impl PushTarget {
    pub fn online(self) -> bool {
        self != PushTarget::Offline
    }

    pub fn offline(self) -> bool {
        self != PushTarget::Online
    }
}

/// Why a push was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("unknown push source '{0}'")]
    UnknownPushSource(String),
    #[error("{0}")]
    Malformed(String),
    /// A missing column or a value of the wrong type, named.
    #[error("{0}")]
    InvalidInput(String),
    #[error("push source '{push}': {message}")]
    Offline { push: String, message: String },
}

/// What one push source feeds, resolved against the definitions.
pub struct PushPlan<'a> {
    pub source: &'a Source,
    /// The online views pushed rows reach.
    pub views: Vec<&'a FeatureView>,
}

pub fn plan<'a>(definitions: &'a Definitions, name: &str) -> Result<PushPlan<'a>, PushError> {
    let push = definitions
        .push_source(name)
        .ok_or_else(|| PushError::UnknownPushSource(name.to_string()))?;
    let (source_name, views): (&str, Vec<&FeatureView>) = match (&push.source, &push.feature_view) {
        (Some(source), _) => (
            source,
            definitions
                .feature_views
                .iter()
                .filter(|v| v.online && v.source == *source)
                .collect(),
        ),
        (None, Some(view)) => {
            let view = definitions
                .feature_view(view)
                .ok_or_else(|| PushError::UnknownPushSource(name.to_string()))?;
            (&view.source, vec![view])
        }
        (None, None) => return Err(PushError::UnknownPushSource(name.to_string())),
    };
    let source = definitions
        .source(source_name)
        .ok_or_else(|| PushError::UnknownPushSource(name.to_string()))?;
    Ok(PushPlan { source, views })
}

/// The pushed column that carries `name` (a feature, join key or timestamp
/// column): under its own name, or under the source column mapped to it.
fn column<'a>(df: &'a EntityRows, source: &Source, name: &str) -> Option<&'a [Json]> {
    let find = |wanted: &str| {
        df.columns
            .iter()
            .find(|(n, _)| n == wanted)
            .map(|(_, v)| v.as_slice())
    };
    find(name).or_else(|| source.column_for(name).and_then(find))
}

fn convert(values: &[Json], ty: &ValueType, name: &str) -> Result<Vec<Value>, PushError> {
    values
        .iter()
        .enumerate()
        .map(|(row, json)| {
            Value::from_json(json, ty)
                .map_err(|e| PushError::InvalidInput(format!("column '{name}', row {row}: {e}")))
        })
        .collect()
}

fn required<'a>(df: &'a EntityRows, source: &Source, name: &str) -> Result<&'a [Json], PushError> {
    column(df, source, name)
        .ok_or_else(|| PushError::InvalidInput(format!("missing column '{name}' in df")))
}

/// The pushed rows for every online view the push source feeds, as a
/// batch shaped like materialization's: join keys, event and created time
/// (int64 nanoseconds), then the view's features. Rows with a null key or
/// event time are refused.
pub fn online_batches<'a>(
    definitions: &Definitions,
    plan: &PushPlan<'a>,
    df: &EntityRows,
) -> Result<Vec<(&'a FeatureView, RecordBatch)>, PushError> {
    let rows = df.len().map_err(|e| PushError::Malformed(e.to_string()))?;
    let source = plan.source;
    let event = convert(
        required(df, source, &source.timestamp_field)?,
        &ValueType::Timestamp,
        &source.timestamp_field,
    )?;
    let mut event_nanos = Vec::with_capacity(rows);
    for (row, value) in event.iter().enumerate() {
        let Value::Timestamp(nanos) = value else {
            return Err(PushError::InvalidInput(format!(
                "column '{}', row {row}: the event timestamp must not be null",
                source.timestamp_field
            )));
        };
        event_nanos.push(*nanos);
    }
    let created: Vec<Option<i64>> = match source
        .created_timestamp_column
        .as_ref()
        .and_then(|name| column(df, source, name).map(|values| (name, values)))
    {
        Some((name, values)) => convert(values, &ValueType::Timestamp, name)?
            .into_iter()
            .map(|v| match v {
                Value::Timestamp(t) => Some(t),
                _ => None,
            })
            .collect(),
        None => vec![None; rows],
    };
    let event: ArrayRef = Arc::new(arrow::array::Int64Array::from(event_nanos));
    let created: ArrayRef = Arc::new(arrow::array::Int64Array::from(created));
    let mut out = Vec::with_capacity(plan.views.len());
    for view in &plan.views {
        let mut columns = Vec::new();
        for key in definitions.join_keys(view) {
            let values = convert(required(df, source, &key.name)?, &key.value_type, &key.name)?;
            if let Some(row) = values.iter().position(Value::is_null) {
                return Err(PushError::InvalidInput(format!(
                    "column '{}', row {row}: a join key must not be null",
                    key.name
                )));
            }
            columns.push(array(&values, &key.value_type, &key.name)?);
        }
        columns.push(event.clone());
        columns.push(created.clone());
        for feature in &view.features {
            let values = convert(
                required(df, source, &feature.name)?,
                &feature.value_type,
                &feature.name,
            )?;
            columns.push(array(&values, &feature.value_type, &feature.name)?);
        }
        let batch = batch_of(columns).map_err(|e| PushError::Malformed(e.to_string()))?;
        out.push((*view, batch));
    }
    Ok(out)
}

fn array(values: &[Value], ty: &ValueType, name: &str) -> Result<ArrayRef, PushError> {
    array_from_values(values, ty)
        .map_err(|e| PushError::InvalidInput(format!("column '{name}': {e}")))
}

/// A Parquet file written beside the source's files but not yet visible:
/// [`StagedFile::publish`] renames it into place.
pub struct StagedFile {
    partial: PathBuf,
    target: PathBuf,
}

impl StagedFile {
    /// Makes the file visible to historical retrieval (an atomic rename).
    pub fn publish(self) -> std::io::Result<PathBuf> {
        std::fs::rename(&self.partial, &self.target)?;
        Ok(self.target.clone())
    }

    /// Removes the unpublished file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// Writes the pushed rows as a new Parquet file in the source's directory,
/// in the schema of the files already there, without publishing it yet.
pub fn stage_offline(
    project_dir: &Path,
    definitions: &Definitions,
    push_name: &str,
    plan: &PushPlan,
    df: &EntityRows,
) -> Result<StagedFile, PushError> {
    let source = plan.source;
    let fail = |message: String| PushError::Offline {
        push: push_name.to_string(),
        message,
    };
    let directory = project_dir.join(&source.path);
    if !directory.is_dir() {
        return Err(fail(format!(
            "offline pushes need a directory source, and source '{}' is '{}'",
            source.name, source.path
        )));
    }
    let schema = match source.resolve_files(project_dir) {
        Ok(files) => read_schema(&files[0]).map_err(fail)?,
        Err(SourcePathError::NoFiles(_)) => schema_from_definitions(definitions, plan),
        Err(e) => return Err(fail(e.to_string())),
    };
    let rows = df.len().map_err(|e| PushError::Malformed(e.to_string()))?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name();
        // A source column is pushed under its own name or the name that
        // field_mapping gives it.
        let mapped = source.field_mapping.get(name).map(String::as_str);
        let pushed = df
            .columns
            .iter()
            .find(|(n, _)| n == name || Some(n.as_str()) == mapped)
            .map(|(_, v)| v.as_slice());
        let Some(ty) = ValueType::from_arrow(field.data_type()) else {
            if pushed.is_some() || !field.is_nullable() {
                return Err(fail(format!(
                    "column '{name}' has type {}, which pushes cannot write",
                    field.data_type()
                )));
            }
            columns.push(arrow::array::new_null_array(field.data_type(), rows));
            continue;
        };
        let values = match pushed {
            Some(json) => convert(json, &ty, name)?,
            None if field.is_nullable() => vec![Value::Null; rows],
            None => {
                return Err(PushError::InvalidInput(format!(
                    "missing column '{name}' in df (source '{}' requires it)",
                    source.name
                )))
            }
        };
        if !field.is_nullable() {
            if let Some(row) = values.iter().position(Value::is_null) {
                return Err(PushError::InvalidInput(format!(
                    "column '{name}', row {row}: must not be null"
                )));
            }
        }
        let array = array_from_values(&values, &ty)
            .map_err(|e| PushError::InvalidInput(format!("column '{name}': {e}")))?;
        let array = cast(&array, field.data_type())
            .map_err(|e| PushError::InvalidInput(format!("column '{name}': {e}")))?;
        columns.push(array);
    }
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| fail(e.to_string()))?;
    let name = unique_file_name();
    let partial = directory.join(format!(".{name}.partial"));
    let target = directory.join(name);
    let write = || -> Result<(), String> {
        let file = File::create(&partial).map_err(|e| e.to_string())?;
        let mut writer = ArrowWriter::try_new(file, schema, None).map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        let file = writer.into_inner().map_err(|e| e.to_string())?;
        file.sync_all().map_err(|e| e.to_string())
    };
    if let Err(message) = write() {
        let _ = std::fs::remove_file(&partial);
        return Err(fail(format!(
            "cannot write {}: {message}",
            partial.display()
        )));
    }
    Ok(StagedFile { partial, target })
}

fn read_schema(path: &Path) -> Result<SchemaRef, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("{} is not readable Parquet: {e}", path.display()))?;
    Ok(builder.schema().clone())
}

/// The columns a source must have when it has no file yet to copy from.
fn schema_from_definitions(definitions: &Definitions, plan: &PushPlan) -> SchemaRef {
    let source = plan.source;
    let utc = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    let mut fields = vec![ArrowField::new(&source.timestamp_field, utc.clone(), true)];
    if let Some(created) = &source.created_timestamp_column {
        fields.push(ArrowField::new(created, utc, true));
    }
    for view in &plan.views {
        for field in definitions
            .join_keys(view)
            .into_iter()
            .chain(&view.features)
        {
            let name = source.column_for(&field.name).unwrap_or(&field.name);
            if !fields.iter().any(|f| f.name() == name) {
                let empty = array_from_values(&[], &field.value_type)
                    .map(|a| a.data_type().clone())
                    .unwrap_or(DataType::Null);
                fields.push(ArrowField::new(name, empty, true));
            }
        }
    }
    Arc::new(Schema::new(fields))
}

/// `push-<nanoseconds>-<pid>-<counter>.parquet`: unique across processes and
/// within one, and in time order when listed.
fn unique_file_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!(
        "push-{now:020}-{}-{}.parquet",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
