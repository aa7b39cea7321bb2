//! Pushed JSON columns as typed values and as [`ViewRows`] for the online
//! store; a missing column or a value of the wrong type is named.

use arrow::array::{ArrayRef, Int64Array};
use serde_json::Value as Json;

use super::{PushError, PushPlan};
use crate::codec::arrow::array_from_values;
use crate::codec::time::format_timestamp;
use crate::codec::Value;
use crate::online::EntityRows;
use crate::registry::{Definitions, FeatureView, Source};
use crate::types::ValueType;
use crate::view_rows::ViewRows;

/// The pushed column that carries `name` (a feature, join key or timestamp
/// column): under its own name, or under the source column mapped to it.
pub(super) fn column<'a>(df: &'a EntityRows, source: &Source, name: &str) -> Option<&'a [Json]> {
    let find = |wanted: &str| {
        df.columns
            .iter()
            .find(|(n, _)| n == wanted)
            .map(|(_, v)| v.as_slice())
    };
    find(name).or_else(|| source.column_for(name).and_then(find))
}

pub(super) fn convert(
    values: &[Json],
    ty: &ValueType,
    name: &str,
) -> Result<Vec<Value>, PushError> {
    values
        .iter()
        .enumerate()
        .map(|(row, json)| {
            Value::from_json(json, ty)
                .map_err(|e| PushError::InvalidInput(format!("column '{name}', row {row}: {e}")))
        })
        .collect()
}

/// Refuses event and created times outside `earliest..=latest`
/// (nanoseconds), naming the column and row.
pub(super) fn check_times(
    df: &EntityRows,
    source: &Source,
    earliest: i64,
    latest: i64,
) -> Result<(), PushError> {
    let columns = std::iter::once(&source.timestamp_field).chain(&source.created_timestamp_column);
    for name in columns {
        let Some(values) = column(df, source, name) else {
            continue;
        };
        for (row, value) in convert(values, &ValueType::Timestamp, name)?
            .into_iter()
            .enumerate()
        {
            if let Value::Timestamp(nanos) = value {
                if !(earliest..=latest).contains(&nanos) {
                    return Err(PushError::InvalidInput(format!(
                        "column '{name}', row {row}: {} is outside the accepted range {} to {} (push.max_future_seconds; integers are epoch seconds)",
                        format_timestamp(nanos),
                        format_timestamp(earliest),
                        format_timestamp(latest)
                    )));
                }
            }
        }
    }
    Ok(())
}

fn required<'a>(df: &'a EntityRows, source: &Source, name: &str) -> Result<&'a [Json], PushError> {
    column(df, source, name)
        .ok_or_else(|| PushError::InvalidInput(format!("missing column '{name}' in df")))
}

/// The pushed rows for every online view the push source feeds, laid out
/// as [`ViewRows`] (as materialization writes them). Rows with a null key or
/// event time are refused.
pub fn online_rows<'a>(
    definitions: &Definitions,
    plan: &PushPlan<'a>,
    df: &EntityRows,
) -> Result<Vec<(&'a FeatureView, ViewRows)>, PushError> {
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
    let event = Int64Array::from(event_nanos);
    let created = Int64Array::from(created);
    let mut out = Vec::with_capacity(plan.views.len());
    for view in &plan.views {
        let mut keys = Vec::new();
        for key in definitions.join_keys(view) {
            let values = convert(required(df, source, &key.name)?, &key.value_type, &key.name)?;
            if let Some(row) = values.iter().position(Value::is_null) {
                return Err(PushError::InvalidInput(format!(
                    "column '{}', row {row}: a join key must not be null",
                    key.name
                )));
            }
            keys.push(array(&values, &key.value_type, &key.name)?);
        }
        let mut features = Vec::with_capacity(view.features.len());
        for feature in &view.features {
            let values = convert(
                required(df, source, &feature.name)?,
                &feature.value_type,
                &feature.name,
            )?;
            features.push(array(&values, &feature.value_type, &feature.name)?);
        }
        let rows = ViewRows::new(keys, event.clone(), created.clone(), features)
            .map_err(|e| PushError::Malformed(e.to_string()))?;
        out.push((*view, rows));
    }
    Ok(out)
}

fn array(values: &[Value], ty: &ValueType, name: &str) -> Result<ArrayRef, PushError> {
    array_from_values(values, ty)
        .map_err(|e| PushError::InvalidInput(format!("column '{name}': {e}")))
}
