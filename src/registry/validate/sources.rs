//! Checks against the data: sources' Parquet files and their schemas, the
//! columns feature views read from them, and push sources.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use arrow::datatypes::{DataType, SchemaRef};

use super::{is_identifier, Collector};
use crate::files::ParquetSchemaError;
use crate::registry::definitions::{Definitions, FeatureView, PushSource, Source};
use crate::types::ValueType;

/// A push source feeds exactly one existing source or online view.
pub(super) fn check_push_source(
    definitions: &Definitions,
    push: &PushSource,
    errors: &mut Collector,
) {
    let object = format!("push source '{}'", push.name);
    let file = &push.defined_in;
    match (&push.source, &push.feature_view) {
        (Some(_), Some(_)) | (None, None) => errors.push(
            file,
            &object,
            "source",
            "name exactly one of `source` (a batch source) or `feature_view`",
        ),
        (Some(source), None) => {
            if definitions.source(source).is_none() {
                errors.push(
                    file,
                    &object,
                    "source",
                    format!("unknown source '{source}'"),
                );
            }
        }
        (None, Some(view)) => match definitions.feature_view(view) {
            None => errors.push(
                file,
                &object,
                "feature_view",
                format!("unknown feature view '{view}'"),
            ),
            Some(v) if !v.online => errors.push(
                file,
                &object,
                "feature_view",
                format!("feature view '{view}' is not online (online: false)"),
            ),
            Some(_) => {}
        },
    }
}

/// Checks that a source's files exist and agree on a schema with usable
/// timestamp columns; returns the schema of its first file.
pub(super) fn check_source(
    source: &Source,
    project_dir: &Path,
    errors: &mut Collector,
) -> Option<SchemaRef> {
    let object = format!("source '{}'", source.name);
    let file = &source.defined_in;
    let files = match source.resolve_files(project_dir) {
        Ok(files) => files,
        Err(e) => {
            errors.push(file, &object, "path", e.to_string());
            return None;
        }
    };
    let mut first: Option<SchemaRef> = None;
    for path in &files {
        let schema = match read_parquet_schema(path) {
            Ok(schema) => schema,
            Err(message) => {
                errors.push(
                    file,
                    &object,
                    "path",
                    format!("{}: {message}", path.display()),
                );
                return None;
            }
        };
        let timestamp_columns = std::iter::once(("timestamp_field", Some(&source.timestamp_field)))
            .chain(std::iter::once((
                "created_timestamp_column",
                source.created_timestamp_column.as_ref(),
            )));
        for (field, column) in timestamp_columns {
            let Some(column) = column else { continue };
            match schema.field_with_name(column) {
                Err(_) => errors.push(
                    file,
                    &object,
                    field,
                    format!("column '{column}' is missing from {}", path.display()),
                ),
                Ok(f) if !matches!(f.data_type(), DataType::Timestamp(_, _)) => errors.push(
                    file,
                    &object,
                    field,
                    format!(
                        "column '{column}' in {} is {}, not a timestamp",
                        path.display(),
                        f.data_type()
                    ),
                ),
                Ok(_) => {}
            }
        }
        match &first {
            None => first = Some(schema),
            Some(first) => {
                // DuckDB reads all files as one table: a column must have one
                // type across them.
                for field in schema.fields() {
                    if let Ok(earlier) = first.field_with_name(field.name()) {
                        if earlier.data_type() != field.data_type() {
                            errors.push(
                                file,
                                &object,
                                "path",
                                format!(
                                    "column '{}' is {} in {} but {} in {}",
                                    field.name(),
                                    field.data_type(),
                                    path.display(),
                                    earlier.data_type(),
                                    files[0].display()
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    first
}

fn read_parquet_schema(path: &Path) -> Result<SchemaRef, String> {
    crate::files::parquet_schema(path).map_err(|e| match e {
        ParquetSchemaError::Open(e) => e.to_string(),
        ParquetSchemaError::Unreadable(e) => format!("not a readable Parquet file: {e}"),
    })
}

pub(super) fn check_view(
    definitions: &Definitions,
    view: &FeatureView,
    schemas: &BTreeMap<&str, SchemaRef>,
    errors: &mut Collector,
) {
    let object = format!("feature view '{}'", view.name);
    let file = &view.defined_in;
    if view.entities.is_empty() {
        errors.push(
            file,
            &object,
            "entities",
            "a feature view needs at least one entity",
        );
    }
    if view.ttl.0 > super::MAX_TTL {
        errors.push(
            file,
            &object,
            "ttl",
            format!(
                "ttl {} is longer than 100 years; use 0 for unbounded",
                view.ttl
            ),
        );
    }
    super::check_feature_count(view.features.len(), file, &object, errors);
    let mut key_names = HashSet::new();
    for (i, name) in view.entities.iter().enumerate() {
        match definitions.entity(name) {
            None => errors.push(
                file,
                &object,
                format!("entities[{i}]"),
                format!("unknown entity '{name}'"),
            ),
            Some(entity) => {
                for key in &entity.join_keys {
                    if !key_names.insert(key.name.as_str()) {
                        errors.push(
                            file,
                            &object,
                            format!("entities[{i}]"),
                            format!(
                                "join key '{}' appears in two of the view's entities",
                                key.name
                            ),
                        );
                    }
                }
            }
        }
    }
    if key_names.len() > u8::MAX as usize {
        errors.push(
            file,
            &object,
            "entities",
            format!("{} join keys; a view has at most 255", key_names.len()),
        );
    }
    if view.features.is_empty() {
        errors.push(
            file,
            &object,
            "features",
            "a feature view needs at least one feature",
        );
    }
    let mut feature_names = HashSet::new();
    for (i, feature) in view.features.iter().enumerate() {
        if !is_identifier(&feature.name) {
            errors.push(
                file,
                &object,
                format!("features[{i}].name"),
                format!(
                    "'{}' is not a valid name (letters, digits and _, at most 255; not starting with a digit)",
                    feature.name
                ),
            );
        }
        if !feature_names.insert(feature.name.as_str()) {
            errors.push(
                file,
                &object,
                format!("features[{i}].name"),
                format!("duplicate feature '{}'", feature.name),
            );
        }
        if key_names.contains(feature.name.as_str()) {
            errors.push(
                file,
                &object,
                format!("features[{i}].name"),
                format!("feature '{}' has the name of a join key", feature.name),
            );
        }
    }
    let Some(source) = definitions.source(&view.source) else {
        errors.push(
            file,
            &object,
            "source",
            format!("unknown source '{}'", view.source),
        );
        return;
    };
    let Some(schema) = schemas.get(source.name.as_str()) else {
        return; // The source's own error is reported already.
    };
    let mut check_column = |field: String, name: &str, declared: &ValueType, what: &str| {
        let Some(column) = source.column_for(name) else {
            let renamed = source
                .field_mapping
                .get(name)
                .map(String::as_str)
                .unwrap_or_default();
            errors.push(file, &object, field, format!("{what} '{name}' is missing from source '{}': field_mapping renames column '{name}' to '{renamed}'", source.name));
            return;
        };
        let mapped = if column == name {
            String::new()
        } else {
            format!(" (mapped from column '{column}')")
        };
        match schema.field_with_name(column) {
            Err(_) => errors.push(file, &object, field, format!("{what} '{name}'{mapped} is missing from source '{}' ({})", source.name, source.path)),
            Ok(actual) => match ValueType::from_arrow(actual.data_type()) {
                Some(found) if &found == declared => {}
                Some(found) => errors.push(file, &object, field, format!("{what} '{name}' is declared {declared} but column '{column}' in source '{}' is {found}", source.name)),
                None => errors.push(file, &object, field, format!("{what} '{name}' is declared {declared} but column '{column}' in source '{}' has unsupported type {}", source.name, actual.data_type())),
            },
        }
    };
    for key in definitions.join_keys(view) {
        check_column(
            format!("join key {}", key.name),
            &key.name,
            &key.value_type,
            "join key",
        );
    }
    for (i, feature) in view.features.iter().enumerate() {
        check_column(
            format!("features[{i}].type"),
            &feature.name,
            &feature.value_type,
            "feature",
        );
    }
}
