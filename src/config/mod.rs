//! `wafer.yaml`: the project's settings, each overridable by an environment
//! variable named after its path (`server.port` is `WAFER_SERVER_PORT`).
//! Loading and the checks across sections are here; the sections are in
//! `stores.rs` (online store, registry, offline store) and `server.rs`
//! (server, auth, push).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod server;
mod stores;

pub use server::{
    parse_interval, AuthConfig, FeatureLoggingConfig, PushConfig, Secret, ServerConfig,
};
use stores::check_redis_target;
pub use stores::{
    OfflineStoreConfig, OnlineStoreConfig, OnlineStoreKind, RegistryConfig, RegistryKind,
};

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
