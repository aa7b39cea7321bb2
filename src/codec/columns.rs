//! Typed columns to and from JSON, for running a transform by hand
//! (`wafer transform test`): an object of field name to one value (a row)
//! or to an array of values (columns of equal length) in, one object per
//! row out. Values read and print as [`Value`] does everywhere else.

use arrow::array::ArrayRef;
use serde_json::{Map, Value as Json};

use super::arrow::{array_from_values, Column};
use super::value::Value;
use crate::types::ValueType;

/// A field of the input that cannot be read, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ColumnError {
    pub name: String,
    pub message: String,
}

fn error(name: &str, message: impl Into<String>) -> ColumnError {
    ColumnError {
        name: name.to_string(),
        message: message.into(),
    }
}

/// Arrays in `fields` order from `{"name": value}` (one row) or
/// `{"name": [values]}` (columns).
pub fn columns_from_json(
    fields: &[(&str, &ValueType)],
    input: &Json,
) -> Result<Vec<ArrayRef>, ColumnError> {
    let Json::Object(object) = input else {
        return Err(error(
            "input",
            "expected a JSON object of input names to values",
        ));
    };
    if let Some(key) = object.keys().find(|k| !fields.iter().any(|(n, _)| n == k)) {
        let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        return Err(error(
            key,
            format!(
                "is not an input of this transform (inputs: {})",
                names.join(", ")
            ),
        ));
    }
    let is_list = |ty: &ValueType| matches!(ty, ValueType::List(_));
    // Columns when any input is an array of the row count; a list input's
    // single value is an array too, so decide by the first non-list input.
    let columnar = fields
        .iter()
        .any(|(name, ty)| !is_list(ty) && object.get(*name).is_some_and(Json::is_array))
        || (fields.iter().all(|(_, ty)| is_list(ty))
            && object.values().all(|v| {
                v.as_array()
                    .is_some_and(|a| a.iter().all(|x| x.is_array() || x.is_null()))
            }));
    let mut columns = Vec::with_capacity(fields.len());
    let mut rows: Option<usize> = None;
    for (name, ty) in fields {
        let value = object.get(*name).ok_or_else(|| error(name, "is missing"))?;
        let json: Vec<&Json> = if columnar {
            value
                .as_array()
                .ok_or_else(|| error(name, "expected an array, as the other inputs are columns"))?
                .iter()
                .collect()
        } else {
            vec![value]
        };
        if *rows.get_or_insert(json.len()) != json.len() {
            return Err(error(name, "columns have unequal lengths"));
        }
        let values = json
            .iter()
            .enumerate()
            .map(|(row, json)| {
                Value::from_json(json, ty).map_err(|e| error(name, format!("row {row}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        columns.push(array_from_values(&values, ty).map_err(|e| error(name, e))?);
    }
    Ok(columns)
}

/// One JSON object per row: field name to value.
pub fn rows_to_json(
    fields: &[(&str, &ValueType)],
    columns: &[ArrayRef],
) -> Result<Vec<Json>, ColumnError> {
    let columns = fields
        .iter()
        .zip(columns)
        .map(|((name, ty), array)| Column::new(array, ty).map_err(|e| error(name, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = columns.first().map_or(0, Column::len);
    Ok((0..rows)
        .map(|row| {
            let mut object = Map::new();
            for ((name, _), column) in fields.iter().zip(&columns) {
                object.insert(name.to_string(), column.value(row).to_json());
            }
            Json::Object(object)
        })
        .collect())
}
