//! Request plumbing shared by the handlers: JSON bodies into typed requests
//! (entity columns streamed in order, size and row limits enforced), and
//! store work run off the event loop when it may block.

use std::fmt;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json_;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::online::EntityRows;

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
                let mut columns: Vec<(String, Vec<Json_>)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let values = match map.next_value::<Json_>()? {
                        Json_::Array(values) => values,
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "column '{name}' must be a list of values, got {other}"
                            )))
                        }
                    };
                    if columns.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "column '{name}' appears twice"
                        )));
                    }
                    columns.push((name, values));
                }
                Ok(Columns(columns))
            }
        }
        deserializer.deserialize_map(ColumnsVisitor)
    }
}

impl Columns {
    pub(super) fn into_rows(self) -> EntityRows {
        EntityRows { columns: self.0 }
    }
}

/// Parses a JSON body, answering 400 (malformed) or 413 (too large) with a
/// message naming the problem.
pub(super) fn parse<T: DeserializeOwned>(
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
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
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
