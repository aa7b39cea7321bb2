//! The shared online store: a plain Redis server, one string key per
//! (project, view, entity) holding the record. Connections are pooled; a
//! pooled connection found dead (Redis restarted while it was idle) is
//! replaced and the call run once more (see
//! [`RedisStore::with_connection`]). Claims on views being materialized
//! are in [`super::redis_claim`].

use std::sync::Mutex;
use std::time::Duration;

use super::{ClaimOutcome, KeyedRecord, OnlineError, OnlineStore};

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

/// Idle connections kept for reuse; more are opened under load.
const MAX_IDLE_CONNECTIONS: usize = 32;

/// The shortest claim TTL accepted: renewals run every third of it.
const MIN_CLAIM_TTL: Duration = Duration::from_millis(300);

pub struct RedisStore {
    connector: Connector,
    /// Idle connections: a caller takes one, so concurrent requests do not
    /// queue behind a single connection.
    idle: Mutex<Vec<redis::Connection>>,
    script: redis::Script,
    key_ttl_seconds: Option<u64>,
    /// How long a materialization claim lives unless renewed.
    claim_ttl: Duration,
}

/// Opens connections with read and write timeouts, so a dead server fails
/// calls instead of hanging them.
#[derive(Clone)]
pub(super) struct Connector {
    client: redis::Client,
    timeout: Duration,
}

impl Connector {
    pub(super) fn connect(&self) -> Result<redis::Connection, OnlineError> {
        let connection = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(unavailable)?;
        connection
            .set_read_timeout(Some(self.timeout))
            .map_err(unavailable)?;
        connection
            .set_write_timeout(Some(self.timeout))
            .map_err(unavailable)?;
        Ok(connection)
    }
}

impl RedisStore {
    pub fn open(
        url: &str,
        key_ttl_seconds: Option<u64>,
        claim_ttl: Duration,
    ) -> Result<Self, OnlineError> {
        let client = redis::Client::open(url)
            .map_err(|e| OnlineError::Config(format!("invalid Redis url '{url}': {e}")))?;
        if claim_ttl < MIN_CLAIM_TTL {
            return Err(OnlineError::Config(format!(
                "online_store.claim_ttl_ms: at least {} ms",
                MIN_CLAIM_TTL.as_millis()
            )));
        }
        Ok(RedisStore {
            connector: Connector {
                client,
                timeout: Duration::from_secs(2),
            },
            idle: Mutex::new(Vec::new()),
            script: redis::Script::new(WRITE_IF_NEWER),
            key_ttl_seconds,
            claim_ttl,
        })
    }

    /// Runs `f` on an idle connection, or a new one; a connection whose call
    /// failed is dropped, so the next call reconnects.
    ///
    /// An idle connection may have died while it waited (Redis restarted,
    /// or closed it on its side): a call on it fails with the connection
    /// dropped before Redis saw the command, or with its outcome unknown.
    /// Then every idle connection is discarded (they are as old) and `f`
    /// runs once more on a fresh connection. So `f` must be safe to run
    /// twice: every call here is (reads, `SET NX` followed by the newer-wins
    /// write script, the claim scripts; see each). A failure on a fresh connection is not
    /// retried: Redis is down, and the caller hears so at once.
    pub(super) fn with_connection<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, OnlineError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let result = match idle {
            Some(mut connection) => match f(&mut connection) {
                Err(e) if e.is_connection_dropped() => {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
                    tracing::debug!(error = %e, "idle Redis connection was dead; retrying on a new one");
                    self.run_on(self.connector.connect()?, f)
                }
                other => self.keep_if_ok(connection, other),
            },
            None => self.run_on(self.connector.connect()?, f),
        };
        result.map_err(unavailable)
    }

    fn run_on<T>(
        &self,
        mut connection: redis::Connection,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let result = f(&mut connection);
        self.keep_if_ok(connection, result)
    }

    /// Returns the connection to the idle ones if its call succeeded.
    fn keep_if_ok<T>(
        &self,
        connection: redis::Connection,
        result: redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(connection);
            }
        }
        result
    }

    /// Runs the newer-wins script for each record, pipelined (loading the
    /// script first if the server has lost it).
    fn write_if_newer(
        &self,
        connection: &mut redis::Connection,
        records: &[&KeyedRecord],
        ttl: &str,
    ) -> redis::RedisResult<()> {
        let run = |connection: &mut redis::Connection| {
            let mut pipe = redis::pipe();
            for (key, value) in records {
                pipe.cmd("EVALSHA")
                    .arg(self.script.get_hash())
                    .arg(1)
                    .arg(key)
                    .arg(value)
                    .arg(ttl)
                    .ignore();
            }
            pipe.query::<()>(connection)
        };
        match run(connection) {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.prepare_invoke().load(connection)?;
                run(connection)
            }
            other => other,
        }
    }

    pub(super) fn connector(&self) -> &Connector {
        &self.connector
    }

    pub(super) fn claim_ttl(&self) -> Duration {
        self.claim_ttl
    }
}

pub(super) fn unavailable(e: redis::RedisError) -> OnlineError {
    OnlineError::Unavailable(format!("Redis: {e}"))
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
                    let mut pipe = redis::pipe();
                    for (key, value) in chunk {
                        let set = pipe.cmd("SET").arg(key).arg(value).arg("NX");
                        if !ttl.is_empty() {
                            set.arg("EX").arg(&ttl);
                        }
                    }
                    let replies: Vec<redis::Value> = pipe.query(connection)?;
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
        self.with_connection(|connection| redis::cmd("MGET").arg(keys).query(connection))
    }

    fn flush(&self) -> Result<(), OnlineError> {
        Ok(())
    }

    fn ping(&self) -> Result<(), OnlineError> {
        // A read: safe to run again.
        self.with_connection(|connection| redis::cmd("PING").query::<String>(connection))
            .map(drop)
    }

    fn blocks_on_network(&self) -> bool {
        true
    }

    /// See [`super::redis_claim`].
    fn claim(&self, project: &str, views: &[String]) -> Result<ClaimOutcome, OnlineError> {
        self.claim_views(project, views)
    }
}
