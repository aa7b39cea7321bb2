//! The shared online store: a plain Redis server, one string key per
//! (project, view, entity) holding the record.

use std::sync::Mutex;
use std::time::Duration;

use super::{KeyedRecord, OnlineError, OnlineStore};

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

/// Idle connections kept for reuse; more are opened under load.
const MAX_IDLE_CONNECTIONS: usize = 32;

pub struct RedisStore {
    client: redis::Client,
    /// Idle connections: a caller takes one, so concurrent requests do not
    /// queue behind a single connection.
    idle: Mutex<Vec<redis::Connection>>,
    script: redis::Script,
    key_ttl_seconds: Option<u64>,
    timeout: Duration,
}

impl RedisStore {
    pub fn open(url: &str, key_ttl_seconds: Option<u64>) -> Result<Self, OnlineError> {
        let client = redis::Client::open(url)
            .map_err(|e| OnlineError::Config(format!("invalid Redis url '{url}': {e}")))?;
        Ok(RedisStore {
            client,
            idle: Mutex::new(Vec::new()),
            script: redis::Script::new(WRITE_IF_NEWER),
            key_ttl_seconds,
            timeout: Duration::from_secs(2),
        })
    }

    /// Runs `f` on an idle connection, or a new one; a connection whose call
    /// failed is dropped, so the next call reconnects.
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, OnlineError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self.connect()?,
        };
        let result = f(&mut connection);
        if result.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(connection);
            }
        }
        result.map_err(unavailable)
    }

    fn connect(&self) -> Result<redis::Connection, OnlineError> {
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

fn unavailable(e: redis::RedisError) -> OnlineError {
    OnlineError::Unavailable(format!("Redis: {e}"))
}

impl OnlineStore for RedisStore {
    fn write(&self, records: &[KeyedRecord]) -> Result<(), OnlineError> {
        let ttl = self
            .key_ttl_seconds
            .map(|t| t.to_string())
            .unwrap_or_default();
        for chunk in records.chunks(PIPELINE_BATCH) {
            self.with_connection(|connection| {
                let run = |connection: &mut redis::Connection| {
                    let mut pipe = redis::pipe();
                    for (key, value) in chunk {
                        pipe.cmd("EVALSHA")
                            .arg(self.script.get_hash())
                            .arg(1)
                            .arg(key)
                            .arg(value)
                            .arg(&ttl)
                            .ignore();
                    }
                    pipe.query::<()>(connection)
                };
                match run(connection) {
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        self.script.prepare_invoke().load(connection)?;
                        run(connection)
                    }
                    other => other,
                }
            })?;
        }
        Ok(())
    }

    fn read(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.with_connection(|connection| redis::cmd("MGET").arg(keys).query(connection))
    }

    fn flush(&self) -> Result<(), OnlineError> {
        Ok(())
    }

    fn ping(&self) -> Result<(), OnlineError> {
        self.with_connection(|connection| redis::cmd("PING").query::<String>(connection))
            .map(drop)
    }

    fn blocks_on_network(&self) -> bool {
        true
    }
}
