//! Registry versions and materialization records in Redis (a server or a
//! cluster), shared by several servers: `registry: {type: redis, url}`.
//!
//! Keys, all under the project's hash tag `T` = `{wafer:registry:LEN:PROJECT}`
//! (one cluster slot, so one script may touch them together):
//! - `T:latest`: the newest version's number;
//! - `T:v:N`: version N as JSON ([`RegistryVersion`]);
//! - `T:materializations`: a list of completed runs as JSON, oldest first,
//!   and `T:append_ids`, the ids of appends made (so a retried append adds
//!   nothing).
//!
//! A commit is one script that checks `T:latest` against the parent and
//! writes the version and the new number together: Redis runs it
//! atomically, so two processes applying at once cannot both build on one
//! parent, and a crash leaves the previous version. Durability is Redis's
//! own (`appendonly yes`; `appendfsync always` for every acknowledged apply
//! to survive a power loss).

use std::sync::{Arc, Mutex};

use super::storage::{
    MaterializationRecord, MaterializationSummary, RegistryBackend, RegistryVersion,
};
use super::RegistryError;
use crate::redis_client::{append_once, hash_tag, RedisPool, RedisUnavailable};

/// KEYS: latest, the new version's key. ARGV: the parent number ('' for
/// none), the new number, the version's JSON. 1 if stored (or stored
/// already by this very call, retried), 0 if the parent is no longer the
/// newest.
const COMMIT: &str = r#"
local latest = redis.call('GET', KEYS[1])
if latest == ARGV[2] and redis.call('GET', KEYS[2]) == ARGV[3] then return 1 end
if (latest or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#;

pub struct RedisRegistry {
    pool: Arc<RedisPool>,
    tag: String,
    commit: redis::Script,
    /// Records read so far and their summary: each call reads only the
    /// records appended since.
    summary: Mutex<(usize, MaterializationSummary)>,
}

impl RedisRegistry {
    pub fn new(pool: Arc<RedisPool>, project: &str) -> Self {
        RedisRegistry {
            pool,
            tag: hash_tag("registry", project),
            commit: redis::Script::new(COMMIT),
            summary: Mutex::default(),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.tag)
    }

    fn call<T>(
        &self,
        f: impl FnMut(&mut crate::redis_client::Conn) -> redis::RedisResult<T>,
    ) -> Result<T, RegistryError> {
        self.pool
            .with_connection(f)
            .map_err(|RedisUnavailable(e)| RegistryError::Unavailable(e))
    }

    fn corrupt(&self, key: &str, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Corrupt {
            path: format!("redis key {key}").into(),
            message: e.to_string(),
        }
    }

    /// Records `from` onwards, parsed.
    fn records_from(&self, from: usize) -> Result<Vec<MaterializationRecord>, RegistryError> {
        let key = self.key("materializations");
        let lines: Vec<Vec<u8>> = self.call(|c| {
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(from)
                .arg(-1)
                .query(c.like())
        })?;
        lines
            .iter()
            .map(|line| serde_json::from_slice(line).map_err(|e| self.corrupt(&key, e)))
            .collect()
    }
}

impl RegistryBackend for RedisRegistry {
    fn latest(&self) -> Result<Option<RegistryVersion>, RegistryError> {
        match self.latest_number()? {
            Some(number) => self.version(number),
            None => Ok(None),
        }
    }

    fn version(&self, number: u64) -> Result<Option<RegistryVersion>, RegistryError> {
        let key = self.key(&format!("v:{number}"));
        // A read: safe to run again.
        let bytes: Option<Vec<u8>> = self.call(|c| redis::cmd("GET").arg(&key).query(c.like()))?;
        bytes
            .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| self.corrupt(&key, e)))
            .transpose()
    }

    /// Versions are numbered from 1 without gaps (each commit stores
    /// parent + 1).
    fn versions(&self) -> Result<Vec<u64>, RegistryError> {
        Ok(self
            .latest_number()?
            .map_or(Vec::new(), |n| (1..=n).collect()))
    }

    fn latest_number(&self) -> Result<Option<u64>, RegistryError> {
        let key = self.key("latest");
        self.call(|c| redis::cmd("GET").arg(&key).query(c.like()))
    }

    /// Safe to run again after a dropped connection: a retry of a commit
    /// that reached Redis finds its own version stored (same number, same
    /// bytes, which include the creation time) and reports success.
    fn commit(&self, parent: Option<u64>, next: &RegistryVersion) -> Result<(), RegistryError> {
        if next.version != parent.unwrap_or(0) + 1 {
            return Err(RegistryError::Conflict);
        }
        let key = self.key(&format!("v:{}", next.version));
        let json = serde_json::to_vec(next).map_err(|e| self.corrupt(&key, e))?;
        let parent = parent.map(|p| p.to_string()).unwrap_or_default();
        let stored: u64 = self.call(|c| {
            self.commit
                .key(self.key("latest"))
                .key(&key)
                .arg(&parent)
                .arg(next.version)
                .arg(&json)
                .invoke(c.like())
        })?;
        if stored == 1 {
            Ok(())
        } else {
            Err(RegistryError::Conflict)
        }
    }

    /// Safe to run again after a dropped connection ([`append_once`]).
    fn record_materialization(&self, record: &MaterializationRecord) -> Result<(), RegistryError> {
        let key = self.key("materializations");
        let json = serde_json::to_vec(record).map_err(|e| self.corrupt(&key, e))?;
        append_once(&self.pool, &key, &self.key("append_ids"), &json, None)
            .map_err(|RedisUnavailable(e)| RegistryError::Unavailable(e))
    }

    fn materializations(&self) -> Result<Vec<MaterializationRecord>, RegistryError> {
        self.records_from(0)
    }

    fn materialization_summary(&self) -> Result<MaterializationSummary, RegistryError> {
        let mut guard = self.summary.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = Default::default();
            guard
        });
        let (read, summary) = &mut *guard;
        let key = self.key("materializations");
        let length: usize = self.call(|c| redis::cmd("LLEN").arg(&key).query(c.like()))?;
        if length < *read {
            // The list was replaced (a restored backup): start over.
            *read = 0;
            *summary = MaterializationSummary::default();
        }
        if length > *read {
            let records = self.records_from(*read)?;
            *read += records.len();
            for record in records {
                summary.add(record);
            }
        }
        Ok(summary.clone())
    }
}
