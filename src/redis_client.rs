//! Connections to one Redis server or a Redis Cluster, pooled, for every
//! part of Wafer that keeps state in Redis: the online store
//! ([`crate::online`]), the registry and the transform modules when several
//! servers share them ([`crate::registry`], [`crate::transform`]).
//!
//! A cluster is reached through the `redis` crate's cluster client, which
//! follows MOVED and ASK redirections and refreshes its slot map itself.
//! [`Conn::pipeline`] sends a cluster pipeline as one pipeline per node
//! touched (all sent before any reply is read): a lookup of N keys costs a
//! round trip per node, not per key; while slots move (a reshard, a
//! failover) it falls back to one routed command at a time. Keys that a
//! script reads together share a hash tag ([`hash_tag`]), so they live in
//! one slot.

use std::sync::Mutex;
use std::time::Duration;

use redis::ConnectionLike;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server: `redis://host:port/db`.
    Server(String),
    /// A Redis Cluster: some of its nodes (the rest are discovered).
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// From a configuration's `url` and `cluster` keys (exactly one set,
    /// as the configuration's own check demands); `what` names the
    /// configuration section in errors.
    pub fn from_config(what: &str, url: Option<&str>, cluster: &[String]) -> Result<Self, String> {
        match (url, cluster) {
            (Some(url), []) => Ok(RedisTarget::Server(url.to_string())),
            (None, [_, ..]) => Ok(RedisTarget::Cluster(cluster.to_vec())),
            (Some(_), [_, ..]) => Err(format!(
                "{what}: set `url` (one Redis) or `cluster` (a Redis Cluster), not both"
            )),
            (None, []) => Err(format!(
                "{what}: `url` (e.g. redis://127.0.0.1:6379) or `cluster` (a list of redis:// nodes) is required for type redis"
            )),
        }
    }
}

/// A failed Redis call, as the caller reports it (503).
#[derive(Debug, thiserror::Error)]
#[error("Redis: {0}")]
pub struct RedisUnavailable(pub String);

impl From<redis::RedisError> for RedisUnavailable {
    fn from(e: redis::RedisError) -> Self {
        RedisUnavailable(e.to_string())
    }
}

/// One connection: to a server, or to every node of a cluster.
pub enum Conn {
    Server(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl Conn {
    /// For single commands and scripts, which route by their keys in a
    /// cluster.
    pub fn like(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            Conn::Server(c) => c,
            Conn::Cluster(c) => c.as_mut(),
        }
    }

    /// Runs `commands` pipelined and returns every reply in order (a cluster
    /// sends one pipeline per node). The first error reply fails the call.
    pub fn pipeline(&mut self, commands: Vec<redis::Cmd>) -> redis::RedisResult<Vec<redis::Value>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Conn::Server(c) => {
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                pipe.query(c)
            }
            Conn::Cluster(c) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for command in &commands {
                    pipe.add_command(command.clone());
                }
                match pipe.query(c) {
                    // The cluster pipeline does not follow redirections
                    // (replies such as MOVED come back as values): a slot
                    // moved or moving (a reshard, a failover) fails it. The
                    // commands then go one by one, each routed, redirected
                    // (MOVED refreshes the slot map, ASK asks the target)
                    // and retried by the cluster client. So every caller's
                    // commands must be safe to run twice, as they are
                    // (reads, `SET NX`, the newer-wins script).
                    Err(e) if e.is_cluster_error() => {
                        tracing::debug!(error = %e, "cluster topology changed; sending commands one by one");
                        commands
                            .iter()
                            .map(|command| c.req_command(command))
                            .collect()
                    }
                    other => other,
                }
            }
        }
    }

    /// The values of `keys`, `None` where absent: one `MGET` on a server,
    /// one `GET` per key pipelined per node on a cluster.
    pub fn get_many(&mut self, keys: &[Vec<u8>]) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Conn::Server(c) => redis::cmd("MGET").arg(keys).query(c),
            Conn::Cluster(_) => {
                let commands = keys
                    .iter()
                    .map(|key| {
                        let mut get = redis::cmd("GET");
                        get.arg(key);
                        get
                    })
                    .collect();
                let replies = self.pipeline(commands)?;
                replies
                    .into_iter()
                    .map(|reply| redis::from_redis_value(reply).map_err(redis::RedisError::from))
                    .collect()
            }
        }
    }
}

/// Opens connections with connect and response timeouts, so a dead server
/// fails calls instead of hanging them.
#[derive(Clone)]
pub struct Connector {
    client: Client,
    timeout: Duration,
}

#[derive(Clone)]
enum Client {
    Server(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// How many times the cluster client follows a redirection or retries a
/// node that does not answer before the call fails: enough for MOVED, ASK
/// and a refreshed slot map; a failover that takes longer fails requests
/// (503) until it completes.
const CLUSTER_RETRIES: u32 = 3;

impl Connector {
    pub fn new(target: &RedisTarget, timeout: Duration) -> Result<Self, String> {
        let client = match target {
            RedisTarget::Server(url) => Client::Server(
                redis::Client::open(url.as_str())
                    .map_err(|e| format!("invalid Redis url '{url}': {e}"))?,
            ),
            RedisTarget::Cluster(nodes) => Client::Cluster(
                redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|e| format!("invalid Redis Cluster nodes {nodes:?}: {e}"))?,
            ),
        };
        Ok(Connector { client, timeout })
    }

    pub fn connect(&self) -> Result<Conn, RedisUnavailable> {
        match &self.client {
            Client::Server(client) => {
                let connection = client.get_connection_with_timeout(self.timeout)?;
                connection.set_read_timeout(Some(self.timeout))?;
                connection.set_write_timeout(Some(self.timeout))?;
                Ok(Conn::Server(connection))
            }
            Client::Cluster(client) => {
                let connection = client.get_connection()?;
                connection.set_read_timeout(Some(self.timeout))?;
                connection.set_write_timeout(Some(self.timeout))?;
                Ok(Conn::Cluster(Box::new(connection)))
            }
        }
    }
}

/// Idle connections kept for reuse; more are opened under load.
const MAX_IDLE_CONNECTIONS: usize = 32;

/// Pooled connections to one target.
pub struct RedisPool {
    connector: Connector,
    /// Idle connections: a caller takes one, so concurrent requests do not
    /// queue behind a single connection.
    idle: Mutex<Vec<Conn>>,
}

impl RedisPool {
    pub fn new(target: &RedisTarget) -> Result<Self, String> {
        Ok(RedisPool {
            connector: Connector::new(target, Duration::from_secs(2))?,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Runs `f` on an idle connection, or a new one; a connection whose call
    /// failed is dropped, so the next call reconnects.
    ///
    /// An idle connection may have died while it waited (Redis restarted,
    /// or closed it on its side): a call on it fails with the connection
    /// dropped before Redis saw the command, or with its outcome unknown.
    /// Then every idle connection is discarded (they are as old) and `f`
    /// runs once more on a fresh connection. So `f` must be safe to run
    /// twice. A failure on a fresh connection is not retried: Redis is
    /// down, and the caller hears so at once.
    pub fn with_connection<T>(
        &self,
        mut f: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> Result<T, RedisUnavailable> {
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
        Ok(result?)
    }

    fn run_on<T>(
        &self,
        mut connection: Conn,
        mut f: impl FnMut(&mut Conn) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let result = f(&mut connection);
        self.keep_if_ok(connection, result)
    }

    /// Returns the connection to the idle ones if its call succeeded.
    fn keep_if_ok<T>(
        &self,
        connection: Conn,
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
}

/// A Redis Cluster hash tag naming `project` under `space`
/// (`{wafer:space:LEN:project}`): keys that share it live in one slot, so
/// one script may read and write them together. The project name's length
/// keeps any two names apart; a `}` in the name ends the tag early, the
/// same way for every key of the project.
pub fn hash_tag(space: &str, project: &str) -> String {
    format!("{{wafer:{space}:{}:{project}}}", project.len())
}

/// KEYS: a list, the set of append ids made to it, and optionally a set to
/// add a member to. ARGV: the append's id, the value, the member. Appends
/// (and adds the member) unless the id was seen before.
const APPEND_ONCE: &str = r#"
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  if KEYS[3] then redis.call('SADD', KEYS[3], ARGV[3]) end
  return 1
end
return 0
"#;

/// Appends `value` to the list `list` once, even if the call is repeated
/// after a dropped connection: a random id, drawn once per call and kept
/// in the set `ids`, makes a repeat a no-op. With `index`, also adds
/// `member` to that set in the same step. Every key must share a hash tag.
pub fn append_once(
    pool: &RedisPool,
    list: &str,
    ids: &str,
    value: &[u8],
    index: Option<(&str, &str)>,
) -> Result<(), RedisUnavailable> {
    let script = redis::Script::new(APPEND_ONCE);
    let id = format!("{:032x}", rand::random::<u128>());
    pool.with_connection(|c| {
        let mut invocation = script.key(list);
        invocation.key(ids).arg(&id).arg(value);
        if let Some((set, member)) = index {
            invocation.key(set).arg(member);
        }
        invocation.invoke::<u64>(c.like())
    })
    .map(drop)
}
