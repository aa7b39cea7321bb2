//! Checks of request sources and on-demand feature views: their fields, and
//! each view's transform schema against what its sources offer.

use std::collections::HashSet;

use super::{is_identifier, widens_to, Collector, TransformSchemas};
use crate::registry::definitions::{Definitions, OnDemandFeatureView, RequestSource};
use crate::types::ValueType;

pub(super) fn check_request_source(source: &RequestSource, errors: &mut Collector) {
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
pub(super) fn check_on_demand_view(
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
    super::check_feature_count(view.features.len(), file, &object, errors);
    let mut seen = HashSet::new();
    for (i, feature) in view.features.iter().enumerate() {
        if !is_identifier(&feature.name) {
            errors.push(
                file,
                &object,
                format!("features[{i}].name"),
                format!(
                    "'{}' is not a valid name (letters, digits and _, at most 255)",
                    feature.name
                ),
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
