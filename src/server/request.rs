//! Request plumbing shared by the handlers: JSON bodies into typed requests
//! (entity columns streamed in order; rows, columns, values and name
//! lengths counted while parsing), and store work run off the event loop
//! when it may block or run transforms.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json_;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::online::EntityRows;

/// Most bytes in a column name or feature reference: longer ones are
/// refused while parsing (registry names are at most 255 bytes).
pub(super) const MAX_NAME_BYTES: usize = 1024;

/// Bodies up to this size are parsed on the event loop (it takes
/// microseconds); larger ones on the blocking pool.
const INLINE_PARSE_BYTES: usize = 64 << 10;

/// What one request may carry, checked while its body is parsed, so a body
/// over a limit is refused before it is held in memory as values.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    /// Values per column (`server.max_entities_per_request`).
    pub rows: usize,
    /// Columns, and feature references (`server.max_columns_per_request`).
    pub columns: usize,
    /// JSON values in all columns together, nested ones included
    /// (`server.max_values_per_request`).
    pub values: usize,
}

thread_local! {
    /// The limits of the body being parsed on this thread: serde's derive
    /// gives a field's deserializer no arguments, so [`parse`] sets them
    /// here for the duration of one `from_slice`, and the visitors below
    /// read them.
    static LIMITS: Cell<Option<BodyLimits>> = const { Cell::new(None) };
    /// Set by a visitor that refused a body for a limit: the answer is 413,
    /// not 400.
    static OVER_LIMIT: Cell<bool> = const { Cell::new(false) };
    /// Values the body being parsed may still hold.
    static VALUES_LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn limits() -> BodyLimits {
    LIMITS.with(Cell::get).unwrap_or(BodyLimits {
        rows: usize::MAX,
        columns: usize::MAX,
        values: usize::MAX,
    })
}

/// Counts one JSON value against the body's budget.
fn count_value<E: serde::de::Error>() -> Result<(), E> {
    let left = VALUES_LEFT.with(Cell::get);
    if left == 0 {
        return Err(over_limit(format!(
            "more than {} values in one request (server.max_values_per_request)",
            limits().values
        )));
    }
    VALUES_LEFT.with(|cell| cell.set(left - 1));
    Ok(())
}

/// A JSON value of a column, nested values included, each counted against
/// the body's budget as it is read.
struct CountedJson;

impl<'de> DeserializeSeed<'de> for CountedJson {
    type Value = Json_;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json_, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CountedJson {
    type Value = Json_;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Json_, E> {
        count_value()?;
        Ok(Json_::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Json_, E> {
        count_value()?;
        Ok(Json_::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Json_, E> {
        count_value()?;
        Ok(Json_::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json_, E> {
        count_value()?;
        Ok(serde_json::Number::from_f64(v).map_or(Json_::Null, Json_::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Json_, E> {
        count_value()?;
        Ok(Json_::String(v.to_string()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Json_, E> {
        count_value()?;
        Ok(Json_::String(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Json_, E> {
        count_value()?;
        Ok(Json_::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Json_, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json_, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json_, A::Error> {
        count_value::<A::Error>()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(CountedJson)? {
            items.push(item);
        }
        Ok(Json_::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json_, A::Error> {
        count_value::<A::Error>()?;
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            count_value::<A::Error>()?;
            let value = map.next_value_seed(CountedJson)?;
            object.insert(key, value);
        }
        Ok(Json_::Object(object))
    }
}

fn over_limit<E: serde::de::Error>(message: String) -> E {
    OVER_LIMIT.with(|flag| flag.set(true));
    E::custom(message)
}

/// Entity (or pushed) columns: name to one value per row, in the order sent.
#[derive(Debug, Default, ToSchema)]
#[schema(value_type = Object, example = json!({"driver_id": [1001, 1002]}))]
pub struct Columns(pub Vec<(String, Vec<Json_>)>);

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ColumnsVisitor;
        impl<'de> Visitor<'de> for ColumnsVisitor {
            type Value = Columns;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of columns: {\"name\": [value, ...]}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Columns, A::Error> {
                let limits = limits();
                let mut columns: Vec<(String, Vec<Json_>)> = Vec::new();
                let mut seen: HashSet<String> = HashSet::new();
                while let Some(name) = map.next_key::<String>()? {
                    check_name::<A::Error>(&name)?;
                    if columns.len() == limits.columns {
                        return Err(over_limit(format!(
                            "more than {} columns in one request (server.max_columns_per_request)",
                            limits.columns
                        )));
                    }
                    if !seen.insert(name.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "column '{name}' appears twice"
                        )));
                    }
                    let values = map.next_value_seed(ColumnValues {
                        name: &name,
                        rows: limits.rows,
                    })?;
                    columns.push((name, values));
                }
                Ok(Columns(columns))
            }
        }
        deserializer.deserialize_map(ColumnsVisitor)
    }
}

/// One column's values, counted as they are read.
struct ColumnValues<'a> {
    name: &'a str,
    rows: usize,
}

impl<'de> DeserializeSeed<'de> for ColumnValues<'_> {
    type Value = Vec<Json_>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Json_>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ColumnValues<'_> {
    type Value = Vec<Json_>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "column '{}' to be a list of values", self.name)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Json_>, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.rows));
        while let Some(value) = seq.next_element_seed(CountedJson)? {
            if values.len() == self.rows {
                return Err(over_limit(format!(
                    "column '{}' has more than {} rows; the limit is {} (server.max_entities_per_request)",
                    self.name, self.rows, self.rows
                )));
            }
            values.push(value);
        }
        Ok(values)
    }
}

/// Feature references of a lookup, counted and length-checked as read.
#[derive(Debug, Default, ToSchema)]
#[schema(value_type = Vec<String>, example = json!(["driver_hourly_stats:conv_rate"]))]
pub struct References(pub Vec<String>);

impl<'de> Deserialize<'de> for References {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReferencesVisitor;
        impl<'de> Visitor<'de> for ReferencesVisitor {
            type Value = References;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of feature references")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<References, A::Error> {
                let limit = limits().columns;
                let mut references = Vec::new();
                while let Some(reference) = seq.next_element::<String>()? {
                    check_name::<A::Error>(&reference)?;
                    if references.len() == limit {
                        return Err(over_limit(format!(
                            "more than {limit} features in one request (server.max_columns_per_request)"
                        )));
                    }
                    references.push(reference);
                }
                Ok(References(references))
            }
        }
        deserializer.deserialize_seq(ReferencesVisitor)
    }
}

fn check_name<E: serde::de::Error>(name: &str) -> Result<(), E> {
    if name.len() > MAX_NAME_BYTES {
        return Err(E::custom(format!(
            "a name of {} bytes ('{}'); names are at most {MAX_NAME_BYTES} bytes",
            name.len(),
            crate::codec::excerpt(&name)
        )));
    }
    Ok(())
}

impl Columns {
    pub(super) fn into_rows(self) -> EntityRows {
        EntityRows { columns: self.0 }
    }
}

/// Parses a JSON body within the server's limits, answering 400
/// (malformed) or 413 (body, rows or columns over a limit) with a message
/// naming the problem. A large body is parsed on the blocking pool.
pub(super) async fn parse<T: DeserializeOwned + Send + 'static>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "PayloadTooLarge", "request body is too large")
        } else {
            ApiError::new(status, "BadRequest", rejection.body_text())
        }
    })?;
    let limits = BodyLimits {
        rows: state.limits.max_entities_per_request,
        columns: state.limits.max_columns_per_request,
        values: state.limits.max_values_per_request,
    };
    if body.len() <= INLINE_PARSE_BYTES {
        return parse_within(&body, limits);
    }
    // Few large bodies are parsed at once: each may hold up to its values
    // budget in memory while parsed.
    let _permit = state
        .large_parses
        .acquire()
        .await
        .map_err(|_| ApiError::internal("the parser has stopped"))?;
    tokio::task::spawn_blocking(move || parse_within(&body, limits))
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?
}

fn parse_within<T: DeserializeOwned>(body: &[u8], limits: BodyLimits) -> Result<T, ApiError> {
    LIMITS.with(|cell| cell.set(Some(limits)));
    VALUES_LEFT.with(|cell| cell.set(limits.values));
    OVER_LIMIT.with(|flag| flag.set(false));
    let parsed = serde_json::from_slice(body);
    LIMITS.with(|cell| cell.set(None));
    VALUES_LEFT.with(|cell| cell.set(usize::MAX));
    parsed.map_err(|e| {
        if OVER_LIMIT.with(|flag| flag.replace(false)) {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                e.to_string(),
            )
        } else {
            ApiError::bad_request(format!("invalid request body: {e}"))
        }
    })
}

/// Counts the rows of a request, answering 400 (columns of unequal length)
/// or 413 (over `server.max_entities_per_request`).
pub(super) fn check_rows(state: &AppState, rows: &EntityRows) -> Result<usize, ApiError> {
    let count = rows
        .len()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let cap = state.limits.max_entities_per_request;
    if count > cap {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!(
                "{count} rows in one request; the limit is {cap} (server.max_entities_per_request)"
            ),
        ));
    }
    Ok(count)
}

/// Runs blocking store work on the blocking pool, or inline when the
/// store answers in microseconds (moving it would cost more than it takes).
pub(super) async fn run_store<T: Send + 'static>(
    state: &AppState,
    inline: bool,
    work: impl FnOnce(&crate::FeatureStore) -> Result<T, crate::Error> + Send + 'static,
) -> Result<T, ApiError> {
    if inline {
        return work(&state.store).map_err(ApiError::from);
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?
        .map_err(ApiError::from)
}

/// Runs store work that runs transforms on the transform pool (503 when
/// its queue is full); with `deadline`, its transform calls end then.
pub(super) async fn run_transforming<T: Send + 'static>(
    state: &AppState,
    deadline: Option<std::time::Instant>,
    work: impl FnOnce(&crate::FeatureStore) -> Result<T, crate::Error> + Send + 'static,
) -> Result<T, ApiError> {
    run_on(&state.transforms, state, deadline, work).await
}

/// Runs a module upload on the upload pool (one at a time), its
/// self-check ending by `deadline`.
pub(super) async fn run_upload<T: Send + 'static>(
    state: &AppState,
    deadline: std::time::Instant,
    work: impl FnOnce(&crate::FeatureStore) -> Result<T, crate::Error> + Send + 'static,
) -> Result<T, ApiError> {
    run_on(&state.uploads, state, Some(deadline), work).await
}

async fn run_on<T: Send + 'static>(
    pool: &super::pool::TransformPool,
    state: &AppState,
    deadline: Option<std::time::Instant>,
    work: impl FnOnce(&crate::FeatureStore) -> Result<T, crate::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    let result = pool.run(deadline, move || work(&store)).await?;
    match result {
        Ok(value) => Ok(value),
        // The request's time ran out inside a transform: the same answer
        // the request timeout gives.
        Err(_) if deadline.is_some_and(|d| std::time::Instant::now() >= d) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Timeout",
            format!(
                "the request took longer than {} ms (server.request_timeout_ms)",
                state.limits.request_timeout.as_millis()
            ),
        )),
        Err(error) => Err(ApiError::from(error)),
    }
}

/// When a request received now must be answered: its transforms stop then.
pub(super) fn deadline(state: &AppState) -> std::time::Instant {
    std::time::Instant::now() + state.limits.request_timeout
}

/// A time field of a request: RFC 3339, a naive date-time (UTC), a date or
/// `now`; 422 when missing or unreadable.
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub(super) fn timestamp(
    field: &str,
    value: Option<&str>,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let value = value.ok_or_else(|| ApiError::unprocessable(format!("missing field '{field}'")))?;
    crate::codec::time::parse_instant(value.trim()).ok_or_else(|| {
        ApiError::unprocessable(format!(
            "field '{field}': expected an RFC 3339 timestamp, got '{value}'"
        ))
    })
}
