//! `wafer.yaml`: the project's settings, each overridable by an environment
//! variable named after its path (`server.port` is `WAFER_SERVER_PORT`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const CONFIG_FILE: &str = "wafer.yaml";

/// Project settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub project: String,
    /// Registry, embedded stores and caches, relative to the project directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Definition files or globs, relative to the project directory.
    #[serde(default = "default_definitions")]
    pub definitions: Vec<String>,
    /// Where registry versions, materialization records and transform
    /// modules are kept: the data directory by default.
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub online_store: OnlineStoreConfig,
    #[serde(default)]
    pub offline_store: OfflineStoreConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub push: PushConfig,
    /// Limits for WebAssembly transforms (see `sdk/ABI.md`).
    #[serde(default)]
    pub transforms: crate::transform::TransformLimits,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".wafer")
}

fn default_definitions() -> Vec<String> {
    vec!["definitions.yaml".to_string()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineStoreKind {
    /// Embedded in the data directory (`online/`).
    Sled,
    /// Embedded in the data directory, one file (`online.redb`); the
    /// default.
    Redb,
    /// A shared Redis server.
    Redis,
}

/// Where online features live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineStoreConfig {
    /// `None` (no `type`): the default embedded store, see
    /// [`OnlineStoreConfig::kind_in`].
    #[serde(rename = "type", default)]
    pub kind: Option<OnlineStoreKind>,
    /// `redis://host:port/db` for one Redis server.
    #[serde(default)]
    pub url: Option<String>,
    /// Some nodes of a Redis Cluster (`redis://host:port` each; the rest
    /// are discovered), instead of `url`.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// Redis keys also expire after this long, when set.
    #[serde(default)]
    pub key_ttl_seconds: Option<u64>,
    /// The embedded store syncs every push to disk before it is
    /// acknowledged (a 200 survives kill -9). `false` acknowledges once the
    /// write is in memory: faster, and a crash loses the pushes since the
    /// last sync (sled syncs about every 500 ms; redb at every large write,
    /// e.g. a materialization's batches, and at a clean shutdown). Redis
    /// durability is Redis's own (`appendonly`, `appendfsync`).
    #[serde(default = "default_true")]
    pub sync_writes: bool,
    /// Redis: how long a claim on a view being materialized outlives its
    /// holder (renewed every third of it while the run lasts): a run killed
    /// before releasing it keeps others from materializing its views that
    /// long. At least 300.
    #[serde(default = "default_claim_ttl_ms")]
    pub claim_ttl_ms: u64,
    /// redb: memory for its page cache (reads and pending writes), in MiB.
    /// Pages beyond it are read from the file (the OS page cache) when
    /// needed, so it bounds the server's memory, not what it can serve.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
}

fn default_cache_mb() -> u64 {
    64
}

impl OnlineStoreConfig {
    /// The store to open over `data_dir`: the configured type, else redb
    /// (the default embedded store), except in a data directory that holds
    /// a sled store and no redb file, made while sled was the default: it
    /// keeps its data and its store. A directory holding both, with no type
    /// set, is refused: either could be the one in use.
    pub fn kind_in(&self, data_dir: &Path) -> Result<OnlineStoreKind, String> {
        const MOVE: &str = "to move to redb (the default), set `online_store: {type: redb}` and materialize the whole history again (`wafer materialize 1970-01-01T00:00:00Z now`); rows only pushed online are not carried over";
        let sled = data_dir.join("online").is_dir();
        let redb = data_dir.join("online.redb").exists();
        match self.kind {
            Some(kind) => Ok(kind),
            None if sled && redb => Err(format!(
                "online_store.type is not set and {} holds both a sled store (online/) and a redb file (online.redb): set `online_store: {{type: sled}}` or `{{type: redb}}`",
                data_dir.display()
            )),
            None if sled => {
                tracing::warn!(
                    "online_store.type is not set and {} holds a sled store: using sled; set `online_store: {{type: sled}}` to keep it; {MOVE}",
                    data_dir.display()
                );
                Ok(OnlineStoreKind::Sled)
            }
            None => Ok(OnlineStoreKind::Redb),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryKind {
    /// Files in the data directory (`registry/`, `transforms/`).
    #[default]
    File,
    /// A Redis server or Redis Cluster shared by several servers.
    Redis,
}

/// Where the registry and the transform modules live.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(rename = "type", default)]
    pub kind: RegistryKind,
    /// `redis://host:port/db` for one Redis server.
    #[serde(default)]
    pub url: Option<String>,
    /// Some nodes of a Redis Cluster, instead of `url`.
    #[serde(default)]
    pub cluster: Vec<String>,
}

/// For type redis: exactly one of `url` and `cluster`.
fn check_redis_target(what: &str, url: Option<&String>, cluster: &[String]) -> Result<(), String> {
    match (url, cluster.is_empty()) {
        (Some(_), true) | (None, false) => Ok(()),
        (Some(_), false) => Err(format!(
            "{what}: set `url` (one Redis) or `cluster` (a Redis Cluster), not both"
        )),
        (None, true) => Err(format!(
            "{what}.url: required for type redis (e.g. redis://127.0.0.1:6379), or `cluster` with a list of redis:// nodes"
        )),
    }
}

fn default_claim_ttl_ms() -> u64 {
    10_000
}

impl Default for OnlineStoreConfig {
    fn default() -> Self {
        OnlineStoreConfig {
            kind: None,
            url: None,
            cluster: Vec::new(),
            key_ttl_seconds: None,
            sync_writes: true,
            claim_ttl_ms: default_claim_ttl_ms(),
            cache_mb: default_cache_mb(),
        }
    }
}

fn default_true() -> bool {
    true
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

/// DuckDB settings for historical retrieval.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineStoreConfig {
    /// DuckDB's memory limit, e.g. `4GB`; DuckDB's default when unset.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Worker threads; all cores when unset.
    #[serde(default)]
    pub threads: Option<u32>,
}

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

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no {CONFIG_FILE} in {0}: run `wafer init` to create a project")]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Environment { name: String, message: String },
}

impl Config {
    /// Reads `wafer.yaml` in `project_dir` and applies `WAFER_*` overrides
    /// from the process environment.
    pub fn load(project_dir: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(project_dir, std::env::vars())
    }

    /// The configuration of an edge server keeping its state in `dir`:
    /// `dir/wafer.yaml` when present (for server settings: auth, limits),
    /// else the defaults, with `WAFER_*` overrides either way. The project
    /// is the bundle's and the online store the state's redb file.
    pub fn for_edge(dir: &Path, project: &str) -> Result<Self, ConfigError> {
        let mut config = if dir.join(CONFIG_FILE).exists() {
            Self::load(dir)?
        } else {
            let invalid = |message: String| ConfigError::Invalid {
                path: dir.join(CONFIG_FILE),
                message,
            };
            let text = format!(
                "project: {}",
                serde_json::to_string(project).map_err(|e| invalid(e.to_string()))?
            );
            let config: Config =
                serde_saphyr::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            let config = config.with_env_overrides(std::env::vars())?;
            config.check_limits().map_err(invalid)?;
            config
        };
        config.project = project.to_string();
        config.data_dir = PathBuf::from(".");
        config.online_store.kind = Some(OnlineStoreKind::Redb);
        Ok(config)
    }

    /// As [`Config::load`], with the environment given explicitly.
    pub fn load_with_env(
        project_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let path = project_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::Missing(project_dir.to_path_buf()))
            }
            Err(source) => return Err(ConfigError::Io { path, source }),
        };
        let config: Config = serde_saphyr::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut config = config.with_env_overrides(env)?;
        // An empty url (an environment variable set to "") is no url.
        for url in [&mut config.online_store.url, &mut config.registry.url] {
            if url.as_deref().is_some_and(|u| u.trim().is_empty()) {
                *url = None;
            }
        }
        config
            .check()
            .map_err(|message| ConfigError::Invalid { path, message })?;
        Ok(config)
    }

    /// Applies `WAFER_<PATH>` variables: every setting is a leaf of the
    /// configuration tree, and its variable is its path joined by `_`.
    fn with_env_overrides(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree = serde_json::to_value(&self).map_err(|e| ConfigError::Environment {
            name: "WAFER_*".into(),
            message: e.to_string(),
        })?;
        let mut leaves = Vec::new();
        collect_leaves(&tree, &mut Vec::new(), &mut leaves);
        let mut changed = false;
        for (name, value) in env {
            let Some(path) = leaves.iter().find(|path| env_name(path) == name) else {
                continue;
            };
            let pointer = format!("/{}", path.join("/"));
            let slot = tree
                .pointer_mut(&pointer)
                .ok_or_else(|| ConfigError::Environment {
                    name: name.clone(),
                    message: "no such setting".into(),
                })?;
            *slot = parse_env_value(&value, slot);
            // Check each variable on its own so that an error names it.
            serde_json::from_value::<Config>(tree.clone()).map_err(|e| {
                ConfigError::Environment {
                    name: name.clone(),
                    message: format!("'{value}' is not valid here: {e}"),
                }
            })?;
            changed = true;
        }
        if !changed {
            return Ok(self);
        }
        serde_json::from_value(tree).map_err(|e| ConfigError::Environment {
            name: "WAFER_*".into(),
            message: e.to_string(),
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.project.trim().is_empty() {
            return Err("project: must not be empty".into());
        }
        if self.definitions.is_empty() {
            return Err("definitions: list at least one definitions file".into());
        }
        self.check_limits()?;
        // A url or cluster beside another type would be silently unused:
        // each server would keep its own store or registry.
        let unused = |what: &str| {
            format!("{what}: `url` and `cluster` apply to type redis only; set `type: redis` or remove them")
        };
        let online = &self.online_store;
        if online.kind == Some(OnlineStoreKind::Redis) {
            check_redis_target("online_store", online.url.as_ref(), &online.cluster)?;
        } else if online.url.is_some() || !online.cluster.is_empty() {
            return Err(unused("online_store"));
        }
        let registry = &self.registry;
        if registry.kind == RegistryKind::Redis {
            check_redis_target("registry", registry.url.as_ref(), &registry.cluster)?;
        } else if registry.url.is_some() || !registry.cluster.is_empty() {
            return Err(unused("registry"));
        }
        self.server.materialize_every()?;
        Ok(())
    }

    /// The checks that keep a server safe, for every way a configuration
    /// is made (a project's `wafer.yaml`, an edge's defaults with overrides).
    fn check_limits(&self) -> Result<(), String> {
        let auth = &self.server.auth;
        for token in auth
            .read_tokens
            .iter()
            .chain(&auth.edge_tokens)
            .chain(&auth.write_tokens)
            .chain(&auth.admin_tokens)
        {
            if token.expose().trim().len() < 16 {
                return Err("server.auth: every token needs at least 16 characters".into());
            }
        }
        // Wasm runs on the calling thread's stack (2 MiB for server threads):
        // a larger allowance would let a module overflow the thread itself.
        if self.transforms.max_stack_bytes > crate::transform::MAX_STACK_BYTES {
            return Err(format!(
                "transforms.max_stack_bytes: at most {} (1 MiB): transforms run on threads with 2 MiB stacks",
                crate::transform::MAX_STACK_BYTES
            ));
        }
        Ok(())
    }

    /// The definition files, resolved against the project directory (globs
    /// expanded, sorted).
    pub fn definition_files(&self, project_dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
        let mut files = Vec::new();
        for entry in &self.definitions {
            let full = project_dir.join(entry);
            if crate::files::is_glob(entry) {
                files.extend(crate::files::expand_glob(&full).map_err(|e| {
                    ConfigError::Invalid {
                        path: project_dir.join(CONFIG_FILE),
                        message: format!("definitions: invalid glob '{entry}': {e}"),
                    }
                })?);
            } else {
                files.push(full);
            }
        }
        Ok(files)
    }
}

fn collect_leaves(value: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                path.push(key.clone());
                collect_leaves(child, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn env_name(path: &[String]) -> String {
    format!("WAFER_{}", path.join("_").to_ascii_uppercase())
}

/// Reads an environment value in the shape of the setting it replaces:
/// lists are comma-separated, numbers and booleans parsed when they parse.
fn parse_env_value(text: &str, current: &Value) -> Value {
    if current.is_array() {
        return Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        );
    }
    if current.is_string() {
        return Value::String(text.to_string());
    }
    if let Ok(number) = text.parse::<u64>() {
        return Value::from(number);
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), yaml).unwrap();
        dir
    }

    #[test]
    fn defaults_fill_in() {
        let dir = project("project: demo\n");
        let config = Config::load_with_env(dir.path(), Vec::new()).unwrap();
        assert_eq!(config.data_dir, PathBuf::from(".wafer"));
        assert_eq!(config.server.port, 6566);
        assert_eq!(config.online_store.kind, None);
        let data = tempfile::tempdir().unwrap();
        let kind = |config: &Config| config.online_store.kind_in(data.path());
        assert_eq!(kind(&config), Ok(OnlineStoreKind::Redb));
        // A data directory made while sled was the default keeps sled.
        std::fs::create_dir(data.path().join("online")).unwrap();
        assert_eq!(kind(&config), Ok(OnlineStoreKind::Sled));
        // Both: refused unless the type is set.
        std::fs::write(data.path().join("online.redb"), "").unwrap();
        assert!(kind(&config).unwrap_err().contains("holds both"));
        let mut chosen = config.clone();
        chosen.online_store.kind = Some(OnlineStoreKind::Redb);
        assert_eq!(kind(&chosen), Ok(OnlineStoreKind::Redb));
    }

    #[test]
    fn environment_overrides_every_leaf() {
        let dir = project("project: demo\n");
        let env = [
            ("WAFER_SERVER_PORT", "7000"),
            ("WAFER_PROJECT", "other"),
            ("WAFER_DATA_DIR", "/tmp/x"),
            ("WAFER_DEFINITIONS", "a.yaml, b.yaml"),
            ("WAFER_ONLINE_STORE_TYPE", "redis"),
            ("WAFER_ONLINE_STORE_URL", "redis://127.0.0.1:1"),
            ("WAFER_OFFLINE_STORE_MEMORY_LIMIT", "1GB"),
            ("UNRELATED", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let config = Config::load_with_env(dir.path(), env).unwrap();
        assert_eq!(config.server.port, 7000);
        assert_eq!(config.project, "other");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.definitions, vec!["a.yaml", "b.yaml"]);
        assert_eq!(config.online_store.kind, Some(OnlineStoreKind::Redis));
        assert_eq!(config.offline_store.memory_limit.as_deref(), Some("1GB"));
    }

    #[test]
    fn bad_settings_are_named() {
        let dir = project("project: demo\nonline_store: {type: redis}\n");
        let err = Config::load_with_env(dir.path(), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("online_store.url"), "{err}");
        let dir = project("project: demo\nserver: {prt: 1}\n");
        let err = Config::load_with_env(dir.path(), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("prt"), "{err}");
        let dir = project("project: demo\n");
        let env = [("WAFER_SERVER_PORT".to_string(), "lots".to_string())];
        let err = Config::load_with_env(dir.path(), env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("WAFER_") && err.contains("lots"), "{err}");
    }

    #[test]
    fn shared_stores_name_exactly_one_redis() {
        let load = |yaml: &str, env: &[(&str, &str)]| {
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Config::load_with_env(project(yaml).path(), env).map_err(|e| e.to_string())
        };
        let both = "project: p\nregistry: {type: redis, url: redis://a, cluster: [redis://b]}\n";
        assert!(load(both, &[]).unwrap_err().contains("not both"));
        let unused = "project: p\nonline_store: {type: redb, url: redis://a}\n";
        assert!(load(unused, &[]).unwrap_err().contains("type redis only"));
        let unused = "project: p\nregistry: {cluster: [redis://a]}\n";
        assert!(load(unused, &[]).unwrap_err().contains("type redis only"));
        // A cluster from the environment, comma-separated; an empty url
        // from the environment clears the file's.
        let yaml = "project: p\nonline_store: {type: redis, url: redis://a}\n";
        let config = load(
            yaml,
            &[
                ("WAFER_ONLINE_STORE_URL", ""),
                ("WAFER_ONLINE_STORE_CLUSTER", "redis://b:1, redis://c:2"),
                ("WAFER_REGISTRY_TYPE", "redis"),
                ("WAFER_REGISTRY_URL", "redis://r"),
            ],
        )
        .unwrap();
        assert_eq!(config.online_store.url, None);
        assert_eq!(config.online_store.cluster, ["redis://b:1", "redis://c:2"]);
        assert_eq!(config.registry.kind, RegistryKind::Redis);
        let err = load(yaml, &[("WAFER_ONLINE_STORE_URL", " ")]).unwrap_err();
        assert!(err.contains("online_store.url: required"), "{err}");
        // Scheduled materialization: a second to a year.
        for (every, ok) in [
            ("1s", true),
            ("15m", true),
            ("500ms", false),
            ("400d", false),
        ] {
            let yaml = format!("project: p\nserver: {{materialize_every: {every}}}\n");
            assert_eq!(load(&yaml, &[]).is_ok(), ok, "{every}");
        }
    }

    #[test]
    fn limits_that_would_endanger_the_server_are_refused() {
        let load = |yaml: &str| Config::load_with_env(project(yaml).path(), Vec::new());
        let err = load("project: demo\ntransforms: {max_stack_bytes: 1048577}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("transforms.max_stack_bytes"), "{err}");
        load("project: demo\ntransforms: {max_stack_bytes: 1048576}\n").unwrap();
        for role in ["read", "edge", "write", "admin"] {
            let err = load(&format!(
                "project: demo\nserver: {{auth: {{{role}_tokens: [short]}}}}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("16 characters"), "{role}: {err}");
        }
    }
}
