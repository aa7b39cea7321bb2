//! Checks a set of definitions for consistency and against the Parquet data
//! it points at, collecting every problem rather than stopping at the first.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::definitions::{
    Definitions, FeatureView, OnDemandFeatureView, PushSource, RequestSource, Source,
};
use super::types::ValueType;
use crate::transform::ModuleSchema;

/// One problem in the definitions, located by file, object and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub file: PathBuf,
    /// E.g. `feature view 'driver_hourly_stats'`.
    pub object: String,
    /// E.g. `features[1].type`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}: {}",
            self.file.display(),
            self.object,
            self.field,
            self.message
        )
    }
}

/// Every problem found, in definition order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the definitions:", self.0.len())?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

struct Collector {
    errors: Vec<ValidationError>,
}

impl Collector {
    fn push(
        &mut self,
        file: &Path,
        object: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ValidationError {
            file: file.to_path_buf(),
            object: object.to_string(),
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Validates `definitions`, reading the schemas of the Parquet files their
/// sources point at (paths relative to `project_dir`).
pub fn validate(
    definitions: &Definitions,
    project_dir: &Path,
    transforms: &dyn TransformSchemas,
) -> Result<(), ValidationErrors> {
    let mut errors = Collector { errors: Vec::new() };
    check_names(definitions, &mut errors);
    for source in &definitions.request_sources {
        check_request_source(source, &mut errors);
    }
    for view in &definitions.on_demand_feature_views {
        check_on_demand_view(definitions, view, transforms, &mut errors);
    }
    for entity in &definitions.entities {
        let object = format!("entity '{}'", entity.name);
        if entity.join_keys.is_empty() {
            errors.push(
                &entity.defined_in,
                &object,
                "join_keys",
                "an entity needs at least one join key",
            );
        }
        let mut seen = HashSet::new();
        for (i, key) in entity.join_keys.iter().enumerate() {
            if !seen.insert(key.name.as_str()) {
                errors.push(
                    &entity.defined_in,
                    &object,
                    format!("join_keys[{i}].name"),
                    format!("duplicate join key '{}'", key.name),
                );
            }
            if !is_identifier(&key.name) {
                errors.push(&entity.defined_in, &object, format!("join_keys[{i}].name"), format!("'{}' is not a valid name (letters, digits and _; not starting with a digit)", key.name));
            }
            if !key.value_type.is_valid_join_key() {
                errors.push(&entity.defined_in, &object, format!("join_keys[{i}].type"), format!("{} cannot be a join key (use an integer, string, bytes, bool or timestamp)", key.value_type));
            }
        }
    }
    let schemas: BTreeMap<&str, SchemaRef> = definitions
        .sources
        .iter()
        .filter_map(|source| {
            check_source(source, project_dir, &mut errors)
                .map(|schema| (source.name.as_str(), schema))
        })
        .collect();
    for view in &definitions.feature_views {
        check_view(definitions, view, &schemas, &mut errors);
    }
    for service in &definitions.feature_services {
        let object = format!("feature service '{}'", service.name);
        let mut seen = HashSet::new();
        if service.features.is_empty() {
            errors.push(
                &service.defined_in,
                &object,
                "features",
                "a feature service needs at least one view",
            );
        }
        for (i, item) in service.features.iter().enumerate() {
            // A service may list on-demand views next to ordinary ones.
            let available: &[super::definitions::Field] =
                if let Some(view) = definitions.feature_view(&item.view) {
                    &view.features
                } else if let Some(view) = definitions.on_demand_feature_view(&item.view) {
                    &view.features
                } else {
                    errors.push(
                        &service.defined_in,
                        &object,
                        format!("features[{i}]"),
                        format!("unknown feature view '{}'", item.view),
                    );
                    continue;
                };
            let names: Vec<&str> = match &item.features {
                Some(names) => names.iter().map(String::as_str).collect(),
                None => available.iter().map(|f| f.name.as_str()).collect(),
            };
            if names.is_empty() {
                errors.push(
                    &service.defined_in,
                    &object,
                    format!("features[{i}]"),
                    format!("no features selected from '{}'", item.view),
                );
            }
            for name in names {
                if !available.iter().any(|f| f.name == name) {
                    errors.push(
                        &service.defined_in,
                        &object,
                        format!("features[{i}].{}", item.view),
                        format!("feature view '{}' has no feature '{name}'", item.view),
                    );
                } else if !seen.insert((item.view.as_str(), name)) {
                    errors.push(
                        &service.defined_in,
                        &object,
                        format!("features[{i}].{}", item.view),
                        format!("feature '{}:{name}' is listed twice", item.view),
                    );
                }
            }
        }
    }
    for push in &definitions.push_sources {
        check_push_source(definitions, push, &mut errors);
    }
    if errors.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors.errors))
    }
}

/// Names must be unique within their kind and usable as column names.
fn check_names(definitions: &Definitions, errors: &mut Collector) {
    fn check<'a>(
        kind: &str,
        items: impl Iterator<Item = (&'a str, &'a Path)>,
        errors: &mut Collector,
    ) {
        let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
        for (name, file) in items {
            let object = format!("{kind} '{name}'");
            if !is_identifier(name) {
                errors.push(file, &object, "name", format!("'{name}' is not a valid name (letters, digits and _; not starting with a digit)"));
            }
            if let Some(first) = seen.insert(name, file) {
                errors.push(
                    file,
                    &object,
                    "name",
                    format!(
                        "duplicate {kind} name '{name}' (first defined in {})",
                        first.display()
                    ),
                );
            }
        }
    }
    check(
        "entity",
        definitions
            .entities
            .iter()
            .map(|e| (e.name.as_str(), e.defined_in.as_path())),
        errors,
    );
    check(
        "source",
        definitions
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.defined_in.as_path())),
        errors,
    );
    check(
        "feature view",
        definitions
            .feature_views
            .iter()
            .map(|v| (v.name.as_str(), v.defined_in.as_path())),
        errors,
    );
    check(
        "feature service",
        definitions
            .feature_services
            .iter()
            .map(|s| (s.name.as_str(), s.defined_in.as_path())),
        errors,
    );
    check(
        "push source",
        definitions
            .push_sources
            .iter()
            .map(|s| (s.name.as_str(), s.defined_in.as_path())),
        errors,
    );
    check(
        "request source",
        definitions
            .request_sources
            .iter()
            .map(|s| (s.name.as_str(), s.defined_in.as_path())),
        errors,
    );
    // Feature references (`view:feature`) name either kind of view, so the
    // two share one namespace.
    check(
        "feature view",
        definitions
            .feature_views
            .iter()
            .map(|v| (v.name.as_str(), v.defined_in.as_path()))
            .chain(
                definitions
                    .on_demand_feature_views
                    .iter()
                    .map(|v| (v.name.as_str(), v.defined_in.as_path())),
            )
            .filter(|(name, _)| definitions.on_demand_feature_view(name).is_some()),
        errors,
    );
}

/// Whether a value of type `from` can feed a transform input of type `to`
/// without loss: the same type, or int32 to int64, or float32 to float64.
pub fn widens_to(from: &ValueType, to: &ValueType) -> bool {
    from == to
        || matches!(
            (from, to),
            (ValueType::Int32, ValueType::Int64) | (ValueType::Float32, ValueType::Float64)
        )
}

/// Looks up the schema of the transform module a reference
/// (`name` or `name@sha256:HEX`) names, for checking on-demand views.
pub trait TransformSchemas {
    fn schema(&self, reference: &str) -> Result<ModuleSchema, String>;
}

fn check_request_source(source: &RequestSource, errors: &mut Collector) {
    let object = format!("request source '{}'", source.name);
    if source.fields.is_empty() {
        errors.push(
            &source.defined_in,
            &object,
            "fields",
            "a request source needs at least one field",
        );
    }
    let mut seen = HashSet::new();
    for (i, field) in source.fields.iter().enumerate() {
        if !is_identifier(&field.name) {
            errors.push(
                &source.defined_in,
                &object,
                format!("fields[{i}].name"),
                format!("'{}' is not a valid name", field.name),
            );
        }
        if !seen.insert(field.name.as_str()) {
            errors.push(
                &source.defined_in,
                &object,
                format!("fields[{i}].name"),
                format!("duplicate field '{}'", field.name),
            );
        }
    }
}

/// Sources must exist, and the module must take inputs the sources provide
/// (by name, with the same type) and produce every declared feature.
fn check_on_demand_view(
    definitions: &Definitions,
    view: &OnDemandFeatureView,
    transforms: &dyn TransformSchemas,
    errors: &mut Collector,
) {
    let object = format!("on-demand feature view '{}'", view.name);
    let file = &view.defined_in;
    // Every input the sources offer: name -> (type, where from).
    let mut offered: Vec<(&str, &ValueType, String)> = Vec::new();
    if view.sources.is_empty() {
        errors.push(
            file,
            &object,
            "sources",
            "name at least one feature view or request source",
        );
    }
    for (i, name) in view.sources.iter().enumerate() {
        if let Some(source_view) = definitions.feature_view(name) {
            for f in &source_view.features {
                offered.push((&f.name, &f.value_type, format!("feature view '{name}'")));
            }
        } else if let Some(request) = definitions.request_source(name) {
            for f in &request.fields {
                offered.push((&f.name, &f.value_type, format!("request source '{name}'")));
            }
        } else {
            errors.push(
                file,
                &object,
                format!("sources[{i}]"),
                format!("unknown feature view or request source '{name}'"),
            );
        }
    }
    if view.write_to_online_store {
        // The transform runs where the source view's rows are written, so
        // it can read nothing else: no request data, no second view.
        let views: Vec<&String> = view
            .sources
            .iter()
            .filter(|name| definitions.feature_view(name).is_some())
            .collect();
        for name in &view.sources {
            if definitions.request_source(name).is_some() {
                errors.push(
                    file,
                    &object,
                    "write_to_online_store",
                    format!("request source '{name}' cannot feed a view computed when rows are written (request data only exists at lookup): drop write_to_online_store or the request source"),
                );
            }
        }
        match views.as_slice() {
            [name] if definitions.feature_view(name).is_some_and(|v| !v.online) => errors.push(
                file,
                &object,
                "write_to_online_store",
                format!("its source view '{name}' is not online (online: false), so nothing would be written"),
            ),
            [_] => {}
            _ if view.sources.iter().any(|n| definitions.request_source(n).is_some()) => {}
            _ => errors.push(
                file,
                &object,
                "write_to_online_store",
                format!(
                    "needs exactly one feature view as its source (has {}): the transform runs on that view's rows as they are written",
                    views.len()
                ),
            ),
        }
    }
    let mut seen = HashSet::new();
    for (i, feature) in view.features.iter().enumerate() {
        if !is_identifier(&feature.name) {
            errors.push(
                file,
                &object,
                format!("features[{i}].name"),
                format!("'{}' is not a valid name", feature.name),
            );
        }
        if !seen.insert(feature.name.as_str()) {
            errors.push(
                file,
                &object,
                format!("features[{i}].name"),
                format!("duplicate feature '{}'", feature.name),
            );
        }
    }
    if view.features.is_empty() {
        errors.push(
            file,
            &object,
            "features",
            "declare at least one output feature",
        );
    }
    let schema = match transforms.schema(&view.transform) {
        Ok(schema) => schema,
        Err(message) => {
            errors.push(file, &object, "transform", message);
            return;
        }
    };
    for input in &schema.inputs {
        let providers: Vec<_> = offered
            .iter()
            .filter(|(name, _, _)| *name == input.name)
            .collect();
        match providers.as_slice() {
            [] => errors.push(
                file,
                &object,
                "sources",
                format!(
                    "transform '{}' takes input '{}' ({}), which none of the sources provides",
                    view.transform, input.name, input.value_type
                ),
            ),
            [(_, value_type, from)] if !widens_to(value_type, &input.value_type) => errors.push(
                file,
                &object,
                "sources",
                format!(
                    "input '{}' is {} in {from} but transform '{}' takes {}",
                    input.name, value_type, view.transform, input.value_type
                ),
            ),
            [_] => {}
            [(_, _, first), (_, _, second), ..] => errors.push(
                file,
                &object,
                "sources",
                format!(
                    "input '{}' is provided by both {first} and {second}",
                    input.name
                ),
            ),
        }
    }
    for (i, feature) in view.features.iter().enumerate() {
        match schema.outputs.iter().find(|o| o.name == feature.name) {
            None => errors.push(
                file,
                &object,
                format!("features[{i}]"),
                format!(
                    "transform '{}' produces no output '{}' (its outputs: {})",
                    view.transform,
                    feature.name,
                    schema
                        .outputs
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(output) if output.value_type != feature.value_type => errors.push(
                file,
                &object,
                format!("features[{i}].type"),
                format!(
                    "declared {} but transform '{}' produces {}",
                    feature.value_type, view.transform, output.value_type
                ),
            ),
            Some(_) => {}
        }
    }
}

/// A push source feeds exactly one existing source or online view.
fn check_push_source(definitions: &Definitions, push: &PushSource, errors: &mut Collector) {
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

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks that a source's files exist and agree on a schema with usable
/// timestamp columns; returns the schema of its first file.
fn check_source(source: &Source, project_dir: &Path, errors: &mut Collector) -> Option<SchemaRef> {
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
    let file = File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    Ok(builder.schema().clone())
}

fn check_view(
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
                    "'{}' is not a valid name (letters, digits and _; not starting with a digit)",
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
