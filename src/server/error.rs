//! HTTP errors: a status and a JSON body naming what is wrong.
//!
//! The body has Feast's error keys (`module`, `class`, `message`) as a JSON
//! object. Feast encodes that object once more as a JSON string; Wafer does
//! not, so clients can read `message` directly.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::online::OnlineError;
use crate::push::PushError;
use crate::registry::{RegistryError, SelectionError};
use crate::transform::TransformError;
use crate::Error;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Feast's exception class name where Feast has one.
    pub class: &'static str,
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always `wafer`.
    module: &'static str,
    /// The kind of error, e.g. `FeatureViewNotFoundException`.
    class: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, class: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            class,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", message)
    }

    pub fn not_found(class: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, class, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            module: "wafer",
            class: self.class,
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        // Lets the metrics layer count errors by kind.
        response.extensions_mut().insert(ErrorClass(self.class));
        response
    }
}

/// The class of an error response, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorClass(pub &'static str);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Selection(e) => match e {
                SelectionError::UnknownView(_) => {
                    ApiError::not_found("FeatureViewNotFoundException", message)
                }
                SelectionError::UnknownFeature { .. } => {
                    ApiError::not_found("FeatureNotFoundException", message)
                }
                SelectionError::UnknownService(_) => {
                    ApiError::not_found("FeatureServiceNotFoundException", message)
                }
                SelectionError::NameCollision { .. } => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "FeatureNameCollisionError",
                    message,
                ),
                SelectionError::MalformedReference(_)
                | SelectionError::Duplicate(_)
                | SelectionError::Empty
                | SelectionError::OnDemandOffline(_) => ApiError::bad_request(message),
            },
            Error::Online(e) => match e {
                OnlineError::Malformed(_) => ApiError::bad_request(message),
                OnlineError::InvalidInput(_) => ApiError::unprocessable(message),
                OnlineError::Unavailable(_) => ApiError::unavailable(message),
                OnlineError::Config(_) | OnlineError::Data(_) => ApiError::internal(message),
            },
            Error::Push(e) => match e {
                // Feast answers an unknown push source with 422.
                PushError::UnknownPushSource(_) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "PushSourceNotFoundException",
                    message,
                ),
                PushError::Malformed(_) => ApiError::bad_request(message),
                PushError::InvalidInput(_) | PushError::Offline { .. } => {
                    ApiError::unprocessable(message)
                }
            },
            Error::Registry(RegistryError::Empty) => ApiError::unavailable(message),
            Error::Registry(RegistryError::NoSuchVersion(_)) => {
                ApiError::not_found("RegistryVersionNotFound", message)
            }
            Error::Materialize(_) => ApiError::unprocessable(message),
            Error::OnDemand { source, .. } => match source {
                TransformError::Input { .. } => ApiError::unprocessable(message),
                _ => {
                    tracing::warn!(error = %message, "on-demand transform failed");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "OnDemandTransformError",
                        message,
                    )
                }
            },
            Error::Transform(e) => match e {
                TransformError::ModuleTooLarge { .. } => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", message)
                }
                TransformError::UnknownTransform(_) | TransformError::UnknownVersion { .. } => {
                    ApiError::not_found("TransformNotFound", message)
                }
                TransformError::InvalidName(_) => ApiError::bad_request(message),
                TransformError::Input { .. } => ApiError::unprocessable(message),
                TransformError::Io { .. }
                | TransformError::Corrupt { .. }
                | TransformError::Runtime(_) => {
                    tracing::error!(error = %e, "transform storage failed");
                    ApiError::internal(message)
                }
                // Everything else is a module that failed validation or its
                // self-check.
                _ => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "InvalidTransformModule",
                    message,
                ),
            },
            Error::Busy(_) => ApiError::new(StatusCode::CONFLICT, "Conflict", message),
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::internal(other.to_string())
            }
        }
    }
}
