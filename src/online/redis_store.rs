//! The shared online store: a Redis server or a Redis Cluster, one string
//! key per (project, view, entity) holding the record. Connections are
//! pooled; a pooled connection found dead (Redis restarted while it was
//! idle) is replaced and the call run once more (see
//! [`RedisPool::with_connection`]). On a cluster every call here touches
//! one key per command (the newer-wins script included), so commands
//! route by key, pipelined per node. Claims on views being materialized
//! are in [`super::redis_claim`].

use std::time::Duration;

use super::{ClaimOutcome, KeyedRecord, OnlineError, OnlineStore};
use crate::redis_client::{Conn, Connector, RedisPool, RedisTarget};

/// Compares the (event, created) prefix byte by byte (not with Lua's `<`,
/// which follows the server's collation locale) and writes only if newer.
const WRITE_IF_NEWER: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  for i = 2, 17 do
    local new, old = string.byte(ARGV[1], i), string.byte(current, i)
    if new ~= old then
      if new < old then return 0 end
      break
    end
  end
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"#;

/// Records written per pipeline round trip.
const PIPELINE_BATCH: usize = 2_000;

/// Writes of at least this many records try `SET NX` first (see
/// [`RedisStore::write`]).
const NEW_KEYS_FIRST: usize = 256;

/// The shortest claim TTL accepted: renewals run every third of it.
const MIN_CLAIM_TTL: Duration = Duration::from_millis(300);

pub struct RedisStore {
    pool: RedisPool,
    script: redis::Script,
    key_ttl_seconds: Option<u64>,
    /// How long a materialization claim lives unless renewed.
    claim_ttl: Duration,
}

impl RedisStore {
    pub fn open(
        target: &RedisTarget,
        key_ttl_seconds: Option<u64>,
        claim_ttl: Duration,
    ) -> Result<Self, OnlineError> {
        if claim_ttl < MIN_CLAIM_TTL {
            return Err(OnlineError::Config(format!(
                "online_store.claim_ttl_ms: at least {} ms",
                MIN_CLAIM_TTL.as_millis()
            )));
        }
        Ok(RedisStore {
            pool: RedisPool::new(target).map_err(OnlineError::Config)?,
            script: redis::Script::new(WRITE_IF_NEWER),
            key_ttl_seconds,
            claim_ttl,
        })
    }

    /// Runs `f` on a pooled connection (see [`RedisPool::with_connection`]:
    /// `f` must be safe to run twice; every call here is: reads, `SET NX`
    /// followed by the newer-wins write script, the claim scripts).
    pub(super) fn with_connection<T>(
        &self,
        f: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, OnlineError> {
        self.pool.with_connection(f).map_err(unavailable)
    }

    /// Runs the newer-wins script for each record, pipelined (loading the
    /// script first if the server, or a cluster node, has lost it).
    fn write_if_newer(
        &self,
        connection: &mut Conn,
        records: &[&KeyedRecord],
        ttl: &str,
    ) -> redis::RedisResult<()> {
        let run = |connection: &mut Conn| {
            let commands = records
                .iter()
                .map(|(key, value)| {
                    let mut eval = redis::cmd("EVALSHA");
                    eval.arg(self.script.get_hash())
                        .arg(1)
                        .arg(key)
                        .arg(value)
                        .arg(ttl);
                    eval
                })
                .collect();
            connection.pipeline(commands).map(drop)
        };
        match run(connection) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.prepare_invoke().load(connection.like())?;
                run(connection)
            }
            other => other,
        }
    }

    pub(super) fn connector(&self) -> &Connector {
        self.pool.connector()
    }

    pub(super) fn claim_ttl(&self) -> Duration {
        self.claim_ttl
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> OnlineError {
    OnlineError::Unavailable(e.to_string())
}

impl OnlineStore for RedisStore {
    /// Large writes (a materialization's batches) first try `SET NX` per
    /// chunk of records, pipelined: every key not stored yet is written
    /// without a script (a new key costs what a plain `SET` does), and the
    /// newer-wins script then runs only for the keys that were there. Once a
    /// chunk finds most keys already stored (an incremental run), the rest
    /// of the write goes to the script directly, as small writes (pushes)
    /// always do: one round trip per chunk instead of two. A key deleted or
    /// expired between the passes is written by the script, which treats
    /// an absent key as older.
    ///
    /// Safe to run again after a dropped connection (see
    /// [`RedisStore::with_connection`]): a replayed `SET NX` finds the key
    /// it wrote and hands it to the script, which writes a record only if
    /// it is not older than the stored one; so a chunk replayed in full or
    /// in part rewrites identical records (a no-op, but for restarting
    /// their `key_ttl_seconds`) and never overwrites a newer one another
    /// writer stored meanwhile. A replay is indistinguishable from the
    /// first attempt arriving late, which can always happen.
    fn write(&self, records: &[KeyedRecord]) -> Result<(), OnlineError> {
        let ttl = self
            .key_ttl_seconds
            .map(|t| t.to_string())
            .unwrap_or_default();
        let mut new_keys_first = records.len() >= NEW_KEYS_FIRST;
        for chunk in records.chunks(PIPELINE_BATCH) {
            let new_keys = self.with_connection(|connection| {
                let (stored, new_keys) = if new_keys_first {
                    let commands = chunk
                        .iter()
                        .map(|(key, value)| {
                            let mut set = redis::cmd("SET");
                            set.arg(key).arg(value).arg("NX");
                            if !ttl.is_empty() {
                                set.arg("EX").arg(&ttl);
                            }
                            set
                        })
                        .collect();
                    let replies = connection.pipeline(commands)?;
                    // `SET NX` answers nil where the key was already stored.
                    let stored: Vec<&KeyedRecord> = chunk
                        .iter()
                        .zip(&replies)
                        .filter(|(_, reply)| matches!(reply, redis::Value::Nil))
                        .map(|(record, _)| record)
                        .collect();
                    let new_keys = chunk.len() - stored.len();
                    (stored, new_keys)
                } else {
                    (chunk.iter().collect(), 0)
                };
                if !stored.is_empty() {
                    self.write_if_newer(connection, &stored, &ttl)?;
                }
                Ok(new_keys)
            })?;
            if new_keys * 2 < chunk.len() {
                new_keys_first = false;
            }
        }
        Ok(())
    }

    fn read(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // A read: safe to run again.
        self.with_connection(|connection| connection.get_many(keys))
    }

    fn flush(&self) -> Result<(), OnlineError> {
        Ok(())
    }

    fn ping(&self) -> Result<(), OnlineError> {
        // A read: safe to run again.
        self.with_connection(|connection| match connection {
            Conn::Server(c) => redis::cmd("PING").query::<String>(c).map(drop),
            // Every master answers, or the ping fails.
            Conn::Cluster(c) => c
                .route_command(
                    &redis::cmd("PING"),
                    redis::cluster_routing::RoutingInfo::MultiNode((
                        redis::cluster_routing::MultipleNodeRoutingInfo::AllMasters,
                        Some(redis::cluster_routing::ResponsePolicy::AllSucceeded),
                    )),
                )
                .map(drop),
        })
    }

    fn blocks_on_network(&self) -> bool {
        true
    }

    /// See [`super::redis_claim`].
    fn claim(&self, project: &str, views: &[String]) -> Result<ClaimOutcome, OnlineError> {
        self.claim_views(project, views)
    }

    /// See [`super::redis_claim`].
    fn claim_tick(&self, project: &str, every_ms: u64, tick: u64) -> Result<bool, OnlineError> {
        self.take_tick(project, every_ms, tick)
    }
}
