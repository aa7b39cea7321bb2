//! Offline pushes: the pushed rows as a new Parquet file in the source's
//! directory, in the schema of the files already there, named by its
//! content, staged until the online write (if any) succeeded, then
//! published atomically (replacing an identical file from an earlier try).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;

use arrow::array::ArrayRef;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use super::rows::convert;
use super::{PushError, PushPlan};
use crate::codec::arrow::array_from_values;
use crate::codec::Value;
use crate::durable::Staged;
use crate::files::ParquetSchemaError;
use crate::online::EntityRows;
use crate::registry::{Definitions, SourcePathError};
use crate::types::ValueType;

/// The schema each push directory's files share, with the file it was read
/// from: a push reads it once, not by listing the directory (which grows by
/// a file per push) every time. An entry is used while its file exists.
#[derive(Default)]
pub struct SchemaCache(Mutex<HashMap<PathBuf, (PathBuf, SchemaRef)>>);

impl SchemaCache {
    fn get(&self, directory: &Path) -> Option<SchemaRef> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (file, schema) = cache.get(directory)?;
        file.exists().then(|| schema.clone())
    }

    fn put(&self, directory: &Path, file: &Path, schema: SchemaRef) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(directory.to_path_buf(), (file.to_path_buf(), schema));
    }
}

/// Writes the pushed rows as a new Parquet file in the source's directory,
/// in the schema of the files already there, without publishing it yet.
pub fn stage(
    project_dir: &Path,
    schemas: &SchemaCache,
    definitions: &Definitions,
    push_name: &str,
    plan: &PushPlan,
    df: &EntityRows,
) -> Result<Staged, PushError> {
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
    let schema = match schemas.get(&directory) {
        Some(schema) => schema,
        None => match source.resolve_files(project_dir) {
            Ok(files) => {
                let schema = crate::files::parquet_schema(&files[0]).map_err(|e| {
                    fail(match e {
                        ParquetSchemaError::Open(e) => {
                            format!("cannot open {}: {e}", files[0].display())
                        }
                        ParquetSchemaError::Unreadable(e) => {
                            format!("{} is not readable Parquet: {e}", files[0].display())
                        }
                    })
                })?;
                schemas.put(&directory, &files[0], schema.clone());
                schema
            }
            Err(SourcePathError::NoFiles(_)) => schema_from_definitions(definitions, plan),
            Err(e) => return Err(fail(e.to_string())),
        },
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
    let mut bytes = Vec::new();
    let encode = || -> Result<(), parquet::errors::ParquetError> {
        let mut writer = ArrowWriter::try_new(&mut bytes, schema, None)?;
        writer.write(&batch)?;
        writer.close()?;
        Ok(())
    };
    encode().map_err(|e| fail(format!("cannot encode the pushed rows as Parquet: {e}")))?;
    let target = directory.join(content_file_name(&bytes));
    let write = || -> std::io::Result<Staged> {
        let staged = Staged::new(&target)?;
        std::io::Write::write_all(&mut staged.file(), &bytes)?;
        Ok(staged)
    };
    write().map_err(|e| fail(format!("cannot write {}: {e}", target.display())))
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

/// `push-<sha256 of the file>.parquet`: the same rows pushed again (a
/// retry) name the same file, which is then already there; different rows
/// never share a name.
fn content_file_name(bytes: &[u8]) -> String {
    format!("push-{}.parquet", crate::transform::sha256_hex(bytes))
}
