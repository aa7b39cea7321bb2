//! The HTTP server's settings: address, limits, auth, scheduled
//! materialization; and what pushed rows may carry.

use serde::{Deserialize, Serialize};

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Largest accepted request body; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// A request taking longer gets 503 (materialization is exempt).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most entity rows one lookup or push may carry.
    #[serde(default = "default_max_entities")]
    pub max_entities_per_request: usize,
    /// Most columns (entity, request data or pushed) and feature
    /// references one request may carry.
    #[serde(default = "default_max_columns")]
    pub max_columns_per_request: usize,
    /// Most JSON values (nested ones included) in one request's columns:
    /// bounds the memory a request holds while parsed (tens of bytes per
    /// value).
    #[serde(default = "default_max_values")]
    pub max_values_per_request: usize,
    /// Threads running requests that run transforms (lookups of on-demand
    /// views, pushes into write-time views, uploads); the machine's cores
    /// when unset.
    #[serde(default)]
    pub transform_workers: Option<usize>,
    /// Such requests waiting for a worker; more get 503 at once.
    #[serde(default = "default_transform_queue")]
    pub transform_queue: usize,
    /// How often the server checks the registry for a newer version.
    #[serde(default = "default_registry_refresh_ms")]
    pub registry_refresh_ms: u64,
    /// Materialize every view incrementally this often (`15m`, `1h`; at
    /// least `1s`), as `wafer serve --materialize-every` does; with several
    /// servers sharing a Redis online store, one runs each tick.
    #[serde(default)]
    pub materialize_every: Option<String>,
    #[serde(default)]
    pub auth: AuthConfig,
    /// How served rows of services with `logging:` are written.
    #[serde(default)]
    pub feature_logging: FeatureLoggingConfig,
}

/// The feature log writer's batching and queue (`server.feature_logging`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureLoggingConfig {
    /// A service's logged rows are written to a file at least this often:
    /// the most a crash can lose.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// ... and as soon as this many are waiting.
    #[serde(default = "default_flush_rows")]
    pub flush_rows: usize,
    /// Lookups whose rows wait for the writer; rows of more are dropped
    /// (counted in `wafer_feature_log_rows_total{outcome="dropped"}`).
    #[serde(default = "default_log_queue")]
    pub queue: usize,
}

impl Default for FeatureLoggingConfig {
    fn default() -> Self {
        FeatureLoggingConfig {
            flush_interval_ms: default_flush_interval_ms(),
            flush_rows: default_flush_rows(),
            queue: default_log_queue(),
        }
    }
}

impl FeatureLoggingConfig {
    pub fn settings(&self) -> crate::feature_log::LogSettings {
        crate::feature_log::LogSettings {
            flush_interval: std::time::Duration::from_millis(self.flush_interval_ms.max(10)),
            flush_rows: self.flush_rows.max(1),
            queue: self.queue.max(1),
        }
    }
}

fn default_flush_interval_ms() -> u64 {
    10_000
}

fn default_flush_rows() -> usize {
    100_000
}

fn default_log_queue() -> usize {
    10_000
}

impl ServerConfig {
    /// `materialize_every` read as a duration.
    pub fn materialize_every(&self) -> Result<Option<std::time::Duration>, String> {
        self.materialize_every
            .as_deref()
            .map(parse_interval)
            .transpose()
            .map_err(|e| format!("server.materialize_every: {e}"))
    }
}

/// An interval such as `15m` or `1h 30m`, from a second to a year.
pub fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let every = humantime::parse_duration(text.trim())
        .map_err(|e| format!("'{text}' is not a duration such as 15m or 1h: {e}"))?;
    if every < std::time::Duration::from_secs(1) {
        return Err(format!("'{text}' is shorter than 1s"));
    }
    if every > std::time::Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("'{text}' is longer than a year"));
    }
    Ok(every)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: default_host(),
            port: default_port(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
            max_entities_per_request: default_max_entities(),
            max_columns_per_request: default_max_columns(),
            max_values_per_request: default_max_values(),
            transform_workers: None,
            transform_queue: default_transform_queue(),
            registry_refresh_ms: default_registry_refresh_ms(),
            materialize_every: None,
            auth: AuthConfig::default(),
            feature_logging: FeatureLoggingConfig::default(),
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".to_string()
}

fn default_port() -> u16 {
    6566
}

fn default_max_body_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_max_entities() -> usize {
    10_000
}

fn default_max_columns() -> usize {
    1_000
}

fn default_max_values() -> usize {
    1_000_000
}

fn default_transform_queue() -> usize {
    64
}

fn default_registry_refresh_ms() -> u64 {
    1_000
}

/// Bearer tokens by role. Auth is off while all three lists are empty, and
/// on as soon as any token is configured. Each role includes the ones
/// before it: read < write < admin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Lookups and registry browsing.
    #[serde(default)]
    pub read_tokens: Vec<Secret>,
    /// Edge pulls (`GET /edge/bundle`), and everything `read` may do.
    #[serde(default)]
    pub edge_tokens: Vec<Secret>,
    /// Push and materialize, and everything `read` may do.
    #[serde(default)]
    pub write_tokens: Vec<Secret>,
    /// Apply and transform uploads, and everything `write` may do.
    #[serde(default)]
    pub admin_tokens: Vec<Secret>,
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        !(self.read_tokens.is_empty()
            && self.edge_tokens.is_empty()
            && self.write_tokens.is_empty()
            && self.admin_tokens.is_empty())
    }
}

/// A secret string that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What pushed rows may carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Event and created times may be at most this far past now; earlier
    /// than 1970 is refused too. Catches epoch milliseconds sent where
    /// seconds are read (the year 2262, a row no later push would replace).
    #[serde(default = "default_max_future_seconds")]
    pub max_future_seconds: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            max_future_seconds: default_max_future_seconds(),
        }
    }
}

fn default_max_future_seconds() -> u64 {
    86_400
}
