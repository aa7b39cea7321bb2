//! A view's rows ([`ViewRows`]) as encoded online records ([`super::record`]).

use arrow::array::Array;

use super::record::{encode_key, encode_record};
use super::{KeyedRecord, OnlineError};
use crate::codec::arrow::Column;
use crate::codec::Value;
use crate::registry::ViewSelection;
use crate::view_rows::ViewRows;

/// Encodes `rows` of `view` as (key, record) pairs; rows without a full key
/// or an event time identify nothing and are skipped.
pub fn records_from_rows(
    project: &str,
    view: &ViewSelection,
    rows: &ViewRows,
) -> Result<Vec<KeyedRecord>, OnlineError> {
    let features = &view.view.features;
    if rows.keys().len() != view.join_keys.len() || rows.features().len() != features.len() {
        return Err(OnlineError::Data(format!(
            "view '{}': expected {} join keys and {} features, got {} and {}",
            view.view.name,
            view.join_keys.len(),
            features.len(),
            rows.keys().len(),
            rows.features().len()
        )));
    }
    let column = |array, ty| Column::new(array, ty).map_err(OnlineError::Data);
    let key_columns = view
        .join_keys
        .iter()
        .zip(rows.keys())
        .map(|(key, array)| column(array, &key.value_type))
        .collect::<Result<Vec<_>, _>>()?;
    let feature_columns = features
        .iter()
        .zip(rows.features())
        .map(|(f, array)| column(array, &f.value_type))
        .collect::<Result<Vec<_>, _>>()?;
    let (event, created) = (rows.event_times(), rows.created_times());
    let mut out = Vec::with_capacity(rows.num_rows());
    // Reused from row to row: a record costs its key and its bytes only.
    let mut key_values = Vec::with_capacity(key_columns.len());
    let mut values = Vec::with_capacity(feature_columns.len());
    for row in 0..rows.num_rows() {
        key_values.clear();
        key_values.extend(key_columns.iter().map(|c| c.value(row)));
        if key_values.iter().any(Value::is_null) || event.is_null(row) {
            continue;
        }
        values.clear();
        values.extend(feature_columns.iter().map(|c| c.value(row)));
        let record = encode_record(
            event.value(row),
            created.is_valid(row).then(|| created.value(row)),
            features.iter().map(|f| f.name.as_str()).zip(&values),
        );
        out.push((encode_key(project, &view.view.name, &key_values), record));
    }
    Ok(out)
}
