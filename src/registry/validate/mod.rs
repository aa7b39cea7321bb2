//! Checks a set of definitions for consistency and against the Parquet data
//! it points at, collecting every problem rather than stopping at the first.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;

use super::definitions::Definitions;
use crate::transform::ModuleSchema;
use crate::types::ValueType;

mod monitoring;
mod on_demand;
mod sources;

use on_demand::{check_on_demand_view, check_request_source};
use sources::{check_push_source, check_source, check_view};

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

pub(super) struct Collector {
    errors: Vec<ValidationError>,
}

impl Collector {
    pub(super) fn push(
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

/// Checks the on-demand views of `definitions` that follow `transform`'s
/// active version (not pinned to a hash) against `schema`, the schema of a
/// version about to become active: the problems an upload must not cause,
/// each naming the view and the field.
pub fn check_new_version(
    definitions: &Definitions,
    transform: &str,
    schema: &ModuleSchema,
) -> Result<(), ValidationErrors> {
    struct NewVersion<'a>(&'a ModuleSchema);
    impl TransformSchemas for NewVersion<'_> {
        fn schema(&self, _reference: &str) -> Result<ModuleSchema, String> {
            Ok(self.0.clone())
        }
    }
    let mut errors = Collector { errors: Vec::new() };
    for view in definitions
        .on_demand_feature_views
        .iter()
        .filter(|view| view.transform == transform)
    {
        check_on_demand_view(definitions, view, &NewVersion(schema), &mut errors);
    }
    if errors.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors.errors))
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
                errors.push(&entity.defined_in, &object, format!("join_keys[{i}].name"), format!("'{}' is not a valid name (letters, digits and _, at most 255; not starting with a digit)", key.name));
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
    monitoring::check_services(definitions, &mut errors);
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
                errors.push(file, &object, "name", format!("'{name}' is not a valid name (letters, digits and _, at most 255; not starting with a digit)"));
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

/// Longest name of anything defined: the online record layout stores a
/// feature name's length in one byte.
pub const MAX_NAME_BYTES: usize = 255;

/// A view's features must fit the record layout's u16 count.
pub(super) fn check_feature_count(count: usize, file: &Path, object: &str, errors: &mut Collector) {
    if count > u16::MAX as usize {
        errors.push(
            file,
            object,
            "features",
            format!("{count} features; a view has at most {}", u16::MAX),
        );
    }
}

/// Longest TTL: longer ones overflow date arithmetic (use 0 for unbounded).
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

pub(crate) fn is_identifier(name: &str) -> bool {
    if name.len() > MAX_NAME_BYTES {
        return false;
    }
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
