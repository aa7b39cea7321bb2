//! HTTP errors: a status and a JSON body naming what is wrong, with Feast's
//! keys (`module`, `class`, `message`).
//!
//! An error Feast has a class for ([`FEAST_CLASSES`]) is sent as Feast's
//! server sends it: the object encoded once more as a JSON string, with
//! `module` `feast.errors`, so Feast's SDK re-raises its own exception type
//! with the message. Every other error is the object itself, with `module`
//! `wafer` and Wafer's own class.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::bundle::BundleError;
use crate::config::ConfigError;
use crate::error::{BrowseError, MaterializeError, MonitorError, PushError};
#[cfg(feature = "offline")]
use crate::offline::OfflineError;
use crate::online::OnlineError;
use crate::registry::{ObjectKind, RegistryError, SelectionError};
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
    /// `wafer`; `feast.errors` for a class Feast has, and then the whole
    /// body is this object encoded as a JSON string, as Feast sends it.
    module: &'static str,
    /// The kind of error, e.g. `FeatureViewNotFoundException`.
    class: &'static str,
    message: String,
}

/// Longest message an error body carries: messages quote inputs, and a
/// 10 MB input must not come back as a 10 MB error.
const MAX_MESSAGE_BYTES: usize = 4096;

impl ApiError {
    pub fn new(status: StatusCode, class: &'static str, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE_BYTES {
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...(cut)");
        }
        ApiError {
            status,
            class,
            message,
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

/// The classes of `feast.errors` Wafer answers with; their bodies take
/// Feast's encoding.
pub const FEAST_CLASSES: &[&str] = &[
    "FeatureViewNotFoundException",
    "FeatureServiceNotFoundException",
    "EntityNotFoundException",
    "DataSourceObjectNotFoundException",
    "RequestDataNotFoundInEntityRowsException",
    "PushSourceNotFoundException",
    "FeatureNameCollisionError",
];

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let feast = FEAST_CLASSES.contains(&self.class);
        let body = ErrorBody {
            module: if feast { "feast.errors" } else { "wafer" },
            class: self.class,
            message: self.message,
        };
        let mut response = if feast {
            // Feast's `to_error_detail()`: the object as a JSON string.
            let detail = serde_json::to_string(&body).unwrap_or_default();
            (self.status, axum::Json(detail)).into_response()
        } else {
            (self.status, axum::Json(body)).into_response()
        };
        // Lets the metrics layer count errors by kind.
        response.extensions_mut().insert(ErrorClass(self.class));
        response
    }
}

/// The class of an error response, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorClass(pub &'static str);

/// Every library error to a status, by one exhaustive match per error type
/// (no wildcard arm): a new variant does not compile until it is given a
/// status here.
impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Selection(e) => selection(e, message),
            Error::Online(e) => online(e, message),
            Error::Push(e) => push(e, message),
            Error::Registry(e) => registry(e, message),
            Error::Transform(e) => transform(e, message),
            Error::OnDemand { source, .. } => on_demand(source, message),
            Error::Materialize(e) => match e {
                MaterializeError::StartAfterEnd { .. } | MaterializeError::NotOnline(_) => {
                    ApiError::unprocessable(message)
                }
                MaterializeError::ClaimLost(_) => {
                    ApiError::new(StatusCode::CONFLICT, "Conflict", message)
                }
                MaterializeError::Panicked => internal(message),
            },
            Error::Training(_) => ApiError::unprocessable(message),
            Error::Busy(_) => ApiError::new(StatusCode::CONFLICT, "Conflict", message),
            Error::Browse(e) => browse(e, message),
            Error::Bundle(e) => match e {
                BundleError::Selection(_) => {
                    ApiError::not_found("FeatureServiceNotFoundException", message)
                }
                BundleError::Corrupt(_) | BundleError::Version { .. } => {
                    ApiError::unprocessable(message)
                }
                BundleError::Source(_) | BundleError::State(_) => internal(message),
                BundleError::Sync { .. } => ApiError::unavailable(message),
            },
            Error::Monitor(e) => match e {
                MonitorError::UnknownService(_) => {
                    ApiError::not_found("FeatureServiceNotFoundException", message)
                }
                MonitorError::NotLogged(_) | MonitorError::Input(_) => {
                    ApiError::unprocessable(message)
                }
                MonitorError::NoData(_) => ApiError::not_found("NotFound", message),
                MonitorError::Engine(_) => internal(message),
                MonitorError::Busy => {
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
                }
            },
            Error::Config(e) => match e {
                ConfigError::Missing(_)
                | ConfigError::Io { .. }
                | ConfigError::Invalid { .. }
                | ConfigError::Environment { .. } => internal(message),
            },
            #[cfg(feature = "offline")]
            Error::Offline(e) => match e {
                OfflineError::Io { .. }
                | OfflineError::UnknownFormat(_)
                | OfflineError::EntityFile { .. }
                | OfflineError::Source { .. }
                | OfflineError::Engine(_)
                | OfflineError::Write(_)
                | OfflineError::Layout(_)
                | OfflineError::Rows(_) => internal(message),
            },
        }
    }
}

/// A server-side failure: logged, answered with 500.
fn internal(message: String) -> ApiError {
    tracing::error!(error = %message, "request failed");
    ApiError::internal(message)
}

fn selection(error: SelectionError, message: String) -> ApiError {
    match error {
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
    }
}

fn online(error: OnlineError, message: String) -> ApiError {
    match error {
        OnlineError::Malformed(_) => ApiError::bad_request(message),
        OnlineError::InvalidInput(_) => ApiError::unprocessable(message),
        OnlineError::MissingRequestData(_) => {
            ApiError::not_found("RequestDataNotFoundInEntityRowsException", message)
        }
        OnlineError::Unavailable(_) => ApiError::unavailable(message),
        OnlineError::Config(_) | OnlineError::Data(_) => internal(message),
        OnlineError::Unsupported(_) => {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "Unsupported", message)
        }
    }
}

fn push(error: PushError, message: String) -> ApiError {
    match error {
        // Feast answers an unknown push source with 422.
        PushError::UnknownPushSource(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PushSourceNotFoundException",
            message,
        ),
        PushError::Malformed(_) => ApiError::bad_request(message),
        PushError::InvalidInput(_) | PushError::Offline { .. } => ApiError::unprocessable(message),
        // Retrying is safe (see `push`): say so with a retryable status.
        PushError::Publish { .. } => ApiError::unavailable(message),
    }
}

fn registry(error: RegistryError, message: String) -> ApiError {
    match error {
        RegistryError::Empty | RegistryError::Unavailable(_) => ApiError::unavailable(message),
        RegistryError::NoSuchVersion(_) => ApiError::not_found("RegistryVersionNotFound", message),
        RegistryError::Io { .. }
        | RegistryError::Yaml { .. }
        | RegistryError::Invalid(_)
        | RegistryError::Corrupt { .. }
        | RegistryError::Conflict => internal(message),
        RegistryError::ReadOnly(_) => ApiError::new(StatusCode::CONFLICT, "Conflict", message),
    }
}

/// What a transform failure is about: one exhaustive match over
/// [`TransformError`], shared by both contexts a transform fails in.
enum TransformFailure {
    /// The input handed to the module (request data, `transform test`).
    Input,
    TooLarge,
    NotFound,
    BadName,
    /// The module store or the runtime, not the module.
    Storage,
    /// The runtime is busy (compilations) or the shared module store
    /// (Redis) unreachable: retry shortly.
    Busy,
    /// The module is valid, but applied views do not fit it.
    BreaksViews,
    /// The module: invalid, failing its self-check, or failing a call.
    Module,
}

fn transform_failure(error: &TransformError) -> TransformFailure {
    match error {
        TransformError::Input { .. } => TransformFailure::Input,
        TransformError::ModuleTooLarge { .. } => TransformFailure::TooLarge,
        TransformError::UnknownTransform(_) | TransformError::UnknownVersion { .. } => {
            TransformFailure::NotFound
        }
        TransformError::InvalidName(_) => TransformFailure::BadName,
        TransformError::Io { .. } | TransformError::Corrupt { .. } | TransformError::Runtime(_) => {
            TransformFailure::Storage
        }
        TransformError::CompilerBusy(_) | TransformError::Unavailable(_) => TransformFailure::Busy,
        TransformError::BreaksViews(_) => TransformFailure::BreaksViews,
        TransformError::NotWasm(_)
        | TransformError::Component
        | TransformError::MissingExport(_)
        | TransformError::WrongAbi { .. }
        | TransformError::ForbiddenImport { .. }
        | TransformError::Schema(_)
        | TransformError::Compile(_)
        | TransformError::CompileTimeout(_)
        | TransformError::FuelExhausted { .. }
        | TransformError::Timeout(_)
        | TransformError::MemoryLimit { .. }
        | TransformError::StackOverflow { .. }
        | TransformError::Failed { .. }
        | TransformError::Trap(_)
        | TransformError::BadOutput(_)
        | TransformError::OutputTooLarge { .. }
        | TransformError::NotRowWise(_) => TransformFailure::Module,
    }
}

/// A transform failing while serving a request: 422 for its input, 500
/// (`OnDemandTransformError`) for anything else.
fn on_demand(error: TransformError, message: String) -> ApiError {
    match transform_failure(&error) {
        TransformFailure::Input => ApiError::unprocessable(message),
        TransformFailure::Busy => ApiError::unavailable(message),
        TransformFailure::TooLarge
        | TransformFailure::BreaksViews
        | TransformFailure::NotFound
        | TransformFailure::BadName
        | TransformFailure::Storage
        | TransformFailure::Module => {
            tracing::warn!(error = %message, "on-demand transform failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "OnDemandTransformError",
                message,
            )
        }
    }
}

/// A transform upload, rollback or lookup of a module.
fn transform(error: TransformError, message: String) -> ApiError {
    match transform_failure(&error) {
        TransformFailure::TooLarge => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", message)
        }
        TransformFailure::NotFound => ApiError::not_found("TransformNotFound", message),
        TransformFailure::BadName => ApiError::bad_request(message),
        TransformFailure::Input => ApiError::unprocessable(message),
        TransformFailure::Busy => ApiError::unavailable(message),
        TransformFailure::BreaksViews => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IncompatibleTransform",
            message,
        ),
        TransformFailure::Storage => {
            tracing::error!(error = %message, "transform storage failed");
            ApiError::internal(message)
        }
        // A module that failed validation or its self-check.
        TransformFailure::Module => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidTransformModule",
            message,
        ),
    }
}

fn browse(error: BrowseError, message: String) -> ApiError {
    match error {
        BrowseError::NoObjectNamed { .. } => ApiError::not_found("NotFound", message),
        BrowseError::Encode(_) => internal(message),
        BrowseError::NotFound { kind, .. } => {
            let class = match kind {
                ObjectKind::Entity => "EntityNotFoundException",
                ObjectKind::Source | ObjectKind::RequestSource => {
                    "DataSourceObjectNotFoundException"
                }
                ObjectKind::FeatureView | ObjectKind::OnDemandFeatureView => {
                    "FeatureViewNotFoundException"
                }
                ObjectKind::FeatureService => "FeatureServiceNotFoundException",
                ObjectKind::PushSource => "PushSourceNotFoundException",
            };
            ApiError::not_found(class, message)
        }
    }
}
