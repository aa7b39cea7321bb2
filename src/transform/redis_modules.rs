//! Transform modules in Redis (a server or a cluster), shared by several
//! servers with the registry (`registry: {type: redis}`).
//!
//! Keys, under the registry's hash tag `T` (see
//! [`crate::registry::RedisRegistry`]):
//! - `T:module:SHA256`: a module's bytes, written once; `T:modules`: the
//!   set of stored hashes;
//! - `T:history:NAME`: a name's versions as JSON, oldest first (the last is
//!   active); `T:names`: the set of names.
//!
//! Bytes read back are checked against their hash before anything uses
//! them. An upload stores the bytes, then appends the version: a crash
//! between the two leaves the previous version active.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::modules::{ModuleRepository, ModuleVersion};
use super::{sha256_hex, TransformError};
use crate::redis_client::{append_once, hash_tag, Conn, RedisPool, RedisUnavailable};

/// KEYS: the module key, the set of hashes. ARGV: the bytes, the hash.
const PUT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"#;

pub struct RedisModuleRepository {
    pool: Arc<RedisPool>,
    tag: String,
}

impl RedisModuleRepository {
    pub fn new(pool: Arc<RedisPool>, project: &str) -> Self {
        RedisModuleRepository {
            pool,
            tag: hash_tag("registry", project),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.tag)
    }

    fn call<T>(
        &self,
        f: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, TransformError> {
        self.pool.with_connection(f).map_err(unavailable)
    }

    fn corrupt(key: &str, message: impl std::fmt::Display) -> TransformError {
        TransformError::Corrupt {
            path: PathBuf::from(format!("redis key {key}")),
            message: message.to_string(),
        }
    }

    fn members(&self, set: &str) -> Result<Vec<String>, TransformError> {
        let key = self.key(set);
        self.call(|c| redis::cmd("SMEMBERS").arg(&key).query(c.like()))
    }
}

fn unavailable(RedisUnavailable(e): RedisUnavailable) -> TransformError {
    TransformError::Unavailable(e)
}

impl ModuleRepository for RedisModuleRepository {
    /// Idempotent: safe to run again.
    fn put_module(&self, sha256: &str, bytes: &[u8]) -> Result<(), TransformError> {
        let script = redis::Script::new(PUT);
        let key = self.key(&format!("module:{sha256}"));
        self.call(|c| {
            script
                .key(&key)
                .key(self.key("modules"))
                .arg(bytes)
                .arg(sha256)
                .invoke::<u64>(c.like())
        })
        .map(drop)
    }

    /// The bytes, refused unless they hash to `sha256`.
    fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, TransformError> {
        let key = self.key(&format!("module:{sha256}"));
        let bytes: Option<Vec<u8>> = self.call(|c| redis::cmd("GET").arg(&key).query(c.like()))?;
        match bytes {
            Some(bytes) if sha256_hex(&bytes) != sha256 => {
                Err(Self::corrupt(&key, "stored bytes do not match their hash"))
            }
            found => Ok(found),
        }
    }

    fn append(&self, name: &str, version: &ModuleVersion) -> Result<(), TransformError> {
        let key = self.key(&format!("history:{name}"));
        let json = serde_json::to_vec(version).map_err(|e| Self::corrupt(&key, e))?;
        append_once(
            &self.pool,
            &key,
            &self.key("append_ids"),
            &json,
            Some((&self.key("names"), name)),
        )
        .map_err(unavailable)
    }

    fn history(&self, name: &str) -> Result<Vec<ModuleVersion>, TransformError> {
        let key = self.key(&format!("history:{name}"));
        let lines: Vec<Vec<u8>> = self.call(|c| {
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(c.like())
        })?;
        lines
            .iter()
            .map(|line| serde_json::from_slice(line).map_err(|e| Self::corrupt(&key, e)))
            .collect()
    }

    fn names(&self) -> Result<Vec<String>, TransformError> {
        let mut names = self.members("names")?;
        names.sort();
        Ok(names)
    }

    fn hashes(&self) -> Result<HashSet<String>, TransformError> {
        Ok(self.members("modules")?.into_iter().collect())
    }
}
