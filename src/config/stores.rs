//! Where state lives: the online store, the registry and the offline
//! store's settings.

use std::path::Path;

use serde::{Deserialize, Serialize};

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
    /// redb: memory for its page cache (reads and pending writes), in MiB,
    /// and up to half as much again (at most 32 MiB, twice that while a
    /// write-out is under way) for written pages on their way to the file.
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
pub(super) fn check_redis_target(
    what: &str,
    url: Option<&String>,
    cluster: &[String],
) -> Result<(), String> {
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

/// DuckDB settings for historical retrieval and materialization reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineStoreConfig {
    /// DuckDB's memory limit, e.g. `4GB`; DuckDB's default when unset.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Worker threads; all cores when unset.
    #[serde(default)]
    pub threads: Option<u32>,
    /// Memory, in MiB, a materialization may hold (besides DuckDB's own,
    /// per view being materialized) to order a wide window (about one row
    /// per key) in the process instead of having DuckDB sort it, which
    /// holds back its first row until it has sorted all; a larger window
    /// is sorted by DuckDB. A window whose first rows do not show it deep
    /// is read so while the probe samples it; an unfinished read is
    /// dropped if the sample picks another plan or says the rows cannot
    /// fit. 0: DuckDB sorts every window.
    #[serde(default = "default_sort_mb")]
    pub sort_mb: u64,
}

fn default_sort_mb() -> u64 {
    512
}

impl Default for OfflineStoreConfig {
    fn default() -> Self {
        OfflineStoreConfig {
            memory_limit: None,
            threads: None,
            sort_mb: default_sort_mb(),
        }
    }
}
