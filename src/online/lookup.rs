//! Online lookups: entity rows in, one column per feature out, each value
//! with a status. The view's TTL is enforced on read.

use serde::Serialize;
use serde_json::Value as Json;

use super::record::{encode_key, Record};
use super::{OnlineError, OnlineStore};
use crate::codec::Value;
use crate::registry::FeatureSelection;

/// Entity rows in columns, as Feast's HTTP API sends them: join key (and
/// request field) name to one value per row.
#[derive(Debug, Clone, Default)]
pub struct EntityRows {
    pub columns: Vec<(String, Vec<Json>)>,
}

impl EntityRows {
    /// The number of rows, checking that every column has it.
    pub fn len(&self) -> Result<usize, OnlineError> {
        let mut lengths = self
            .columns
            .iter()
            .map(|(name, values)| (name, values.len()));
        let Some((first_name, first)) = lengths.next() else {
            return Ok(0);
        };
        for (name, length) in lengths {
            if length != first {
                return Err(OnlineError::Malformed(format!(
                    "entity columns differ in length: '{first_name}' has {first} values, '{name}' has {length}"
                )));
            }
        }
        Ok(first)
    }

    pub fn is_empty(&self) -> bool {
        self.len().map(|n| n == 0).unwrap_or(false)
    }

    pub fn column(&self, name: &str) -> Option<&[Json]> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Feast's per-value status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FieldStatus {
    Present,
    /// The store holds a null for this feature.
    NullValue,
    /// No value for this entity.
    NotFound,
    /// The stored value is older than the view's TTL.
    OutsideMaxAge,
}

impl FieldStatus {
    /// The status of a value that is there: `NULL_VALUE` when it is null.
    pub fn of_present(value: &Value) -> Self {
        if value.is_null() {
            FieldStatus::NullValue
        } else {
            FieldStatus::Present
        }
    }

    /// Feast's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldStatus::Present => "PRESENT",
            FieldStatus::NullValue => "NULL_VALUE",
            FieldStatus::NotFound => "NOT_FOUND",
            FieldStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
        }
    }
}

/// One output column: a value, status and event time per entity row.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureColumn {
    pub values: Vec<Value>,
    pub statuses: Vec<FieldStatus>,
    /// Nanoseconds; `None` for join keys and values not found.
    pub event_timestamps: Vec<Option<i64>>,
}

/// The columnar result of a lookup: join keys first, then the requested
/// features in the order asked; `results[i]` belongs to `feature_names[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineResponse {
    /// How many leading columns are join keys.
    pub join_keys: usize,
    pub feature_names: Vec<String>,
    pub results: Vec<FeatureColumn>,
    /// The on-demand transforms this lookup ran, for metrics.
    pub on_demand_runs: Vec<OnDemandRun>,
}

/// One run of an on-demand view's transform during a lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandRun {
    pub view: String,
    pub rows: usize,
    pub elapsed: std::time::Duration,
}

/// Looks up `selection` for every entity row, as of `now` (nanoseconds).
pub fn get_online_features(
    store: &dyn OnlineStore,
    project: &str,
    selection: &FeatureSelection,
    entities: &EntityRows,
    now: i64,
) -> Result<OnlineResponse, OnlineError> {
    let rows = entities.len()?;
    let mut response = OnlineResponse {
        join_keys: selection.join_keys().len(),
        feature_names: Vec::new(),
        results: Vec::new(),
        on_demand_runs: Vec::new(),
    };
    // Join keys, coerced to their declared types.
    let mut key_values: Vec<(String, Vec<Value>)> = Vec::new();
    for key in selection.join_keys() {
        let column = entities.column(&key.name).ok_or_else(|| {
            OnlineError::InvalidInput(format!("missing join key '{}' in entities", key.name))
        })?;
        let values = column
            .iter()
            .enumerate()
            .map(|(row, json)| {
                Value::from_json(json, &key.value_type).map_err(|e| {
                    OnlineError::InvalidInput(format!("join key '{}', row {row}: {e}", key.name))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        response.feature_names.push(key.name.clone());
        response.results.push(FeatureColumn {
            statuses: values.iter().map(FieldStatus::of_present).collect(),
            event_timestamps: vec![None; rows],
            values: values.clone(),
        });
        key_values.push((key.name.clone(), values));
    }

    // One read for every (view, row): a single round trip.
    let mut keys = Vec::with_capacity(selection.views.len() * rows);
    let mut readable = Vec::with_capacity(selection.views.len() * rows);
    for view in &selection.views {
        for row in 0..rows {
            let values: Vec<Value> = view
                .join_keys
                .iter()
                .map(|k| {
                    key_values
                        .iter()
                        .find(|(name, _)| *name == k.name)
                        .map(|(_, v)| v[row].clone())
                        .unwrap_or(Value::Null)
                })
                .collect();
            readable.push(!values.iter().any(Value::is_null));
            keys.push(encode_key(project, &view.view.name, &values));
        }
    }
    let stored = store.read(&keys)?;
    let records: Vec<Option<Record>> = stored
        .into_iter()
        .zip(readable)
        .map(|(bytes, readable)| bytes.filter(|_| readable).and_then(|b| Record::decode(&b)))
        .collect();

    for feature in &selection.features {
        let view = &selection.views[feature.view].view;
        let ttl =
            (!view.ttl.is_unbounded()).then(|| view.ttl.0.as_nanos().min(i64::MAX as u128) as i64);
        let mut column = FeatureColumn {
            values: Vec::with_capacity(rows),
            statuses: Vec::with_capacity(rows),
            event_timestamps: Vec::with_capacity(rows),
        };
        for row in 0..rows {
            let record = records[feature.view * rows + row].as_ref();
            let (value, status, time) = match record {
                None => (Value::Null, FieldStatus::NotFound, None),
                Some(record) => {
                    let time = Some(record.event_timestamp);
                    let stale =
                        ttl.is_some_and(|ttl| record.event_timestamp < now.saturating_sub(ttl));
                    match record
                        .features
                        .iter()
                        .find(|(name, _)| *name == feature.field.name)
                    {
                        _ if stale => (Value::Null, FieldStatus::OutsideMaxAge, time),
                        None => (Value::Null, FieldStatus::NotFound, time),
                        Some((_, Value::Null)) => (Value::Null, FieldStatus::NullValue, time),
                        Some((_, value)) => (value.clone(), FieldStatus::Present, time),
                    }
                }
            };
            column.values.push(value);
            column.statuses.push(status);
            column.event_timestamps.push(time);
        }
        response.feature_names.push(feature.output_name.clone());
        response.results.push(column);
    }
    Ok(response)
}
