//! Claims on views being materialized, shared through Redis by every
//! process using the store (the CLI, several servers), so that one view is
//! materialized by one run at a time.
//!
//! One key per (project, view): `{wafer:materializing:LEN:PROJECT}:VIEW`
//! (LEN, the project name's length in bytes, keeps any pair of names
//! apart; the braces, a Redis Cluster hash tag, put every view of a
//! project in one slot, so one script takes them together), holding the
//! holder's random token, with a TTL
//! (`online_store.claim_ttl_ms`). Taking it is `SET key token NX PX ttl`
//! done in a script over every view of the run at once, so a run holds all
//! its views or none; the script also accepts a key already holding the
//! caller's own token, so a retried or repeated take succeeds. While the run
//! lasts a background thread takes it again every third of the TTL (which
//! renews it, or re-takes it when Redis lost it in a restart). Dropping the
//! claim deletes each key only if it still holds the token (compare and
//! delete), so a holder never releases a claim another run took after its
//! own lapsed. A holder that crashes stops renewing: its claim expires
//! after the TTL and the views are free again.
//!
//! Scheduled materialization (`wafer serve --materialize-every`) also
//! takes each tick here, once across every server ([`RedisStore::take_tick`]).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::redis_store::{unavailable, RedisStore};
use super::{ClaimOutcome, OnlineError, SharedClaim};
use crate::redis_client::{hash_tag, Conn, Connector};

/// KEYS: one per view; ARGV[1]: the token; ARGV[2]: the TTL in ms. Takes
/// every key that is free (SET NX PX) or renews it if already the caller's
/// (PEXPIRE, which Redis allows at its memory limit, unlike SET), if none
/// is held by another token; returns the 1-based indexes of those held by
/// another (empty when all were taken).
const TAKE: &str = r#"
local busy = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] then busy[#busy + 1] = i end
end
if #busy > 0 then return busy end
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  else
    redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2])
  end
end
return busy
"#;

/// KEYS: one per view; ARGV[1]: the token. Deletes the keys that still hold
/// the token; returns how many.
const RELEASE: &str = r#"
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
"#;

fn claim_key(project: &str, view: &str) -> String {
    format!("{}:{view}", hash_tag("materializing", project))
}

/// Runs [`TAKE`]; the views (of `views`) another token holds.
fn take(
    connection: &mut Conn,
    keys: &[String],
    views: &[String],
    token: &str,
    ttl: Duration,
) -> redis::RedisResult<Vec<String>> {
    let busy: Vec<usize> = redis::Script::new(TAKE)
        .key(keys)
        .arg(token)
        .arg(ttl.as_millis() as u64)
        .invoke(connection.like())?;
    Ok(busy
        .into_iter()
        .filter_map(|i| views.get(i.checked_sub(1)?).cloned())
        .collect())
}

impl RedisStore {
    /// Takes the claim on `views` of `project`, or names those another
    /// holder has. Safe to retry on a fresh connection: a take that reached
    /// Redis before the connection dropped left our own token, which the
    /// retry accepts.
    pub(super) fn claim_views(
        &self,
        project: &str,
        views: &[String],
    ) -> Result<ClaimOutcome, OnlineError> {
        let keys: Vec<String> = views.iter().map(|v| claim_key(project, v)).collect();
        let token = format!("{}:{:032x}", std::process::id(), rand::random::<u128>());
        let ttl = self.claim_ttl();
        let busy = self.with_connection(|c| take(c, &keys, views, &token, ttl))?;
        if !busy.is_empty() {
            return Ok(ClaimOutcome::Busy(busy));
        }
        let lost = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = mpsc::channel();
        let renewer = Renewer {
            connector: self.connector().clone(),
            connection: None,
            keys,
            views: views.to_vec(),
            token,
            ttl,
            lost: lost.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("wafer-claim".into())
            .spawn(move || renewer.run(stopped))
            .map_err(|e| {
                OnlineError::Unavailable(format!("cannot start the claim renewal: {e}"))
            })?;
        Ok(ClaimOutcome::Held(Box::new(RedisClaim {
            stop: Some(stop),
            thread: Some(thread),
            lost,
        })))
    }
}

impl RedisStore {
    /// Takes tick `tick` of a schedule running every `every_ms`: one key
    /// per tick, `{wafer:materializing:LEN:PROJECT}#tick:EVERY_MS:TICK`,
    /// set if absent (`SET NX`) to a random token and expiring after two
    /// intervals or an hour, whichever is longer. Ticks of another interval (a rolling update changing it)
    /// or from a replica whose clock runs ahead never block later ones.
    /// Safe to repeat after a dropped connection: a take that reached
    /// Redis left our token, which the retry recognizes.
    pub(super) fn take_tick(
        &self,
        project: &str,
        every_ms: u64,
        tick: u64,
    ) -> Result<bool, OnlineError> {
        // No `:` right after the tag, so no view's claim key can equal it.
        let key = format!(
            "{}#tick:{every_ms}:{tick}",
            hash_tag("materializing", project)
        );
        let token = format!("{}:{:032x}", std::process::id(), rand::random::<u128>());
        // Long enough that a replica arriving late (a stall, a clock
        // behind) finds the tick taken rather than running it again.
        let ttl_ms = every_ms.saturating_mul(2).max(3_600_000);
        let holder: Option<String> = self.with_connection(|c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query::<()>(c.like())?;
            redis::cmd("GET").arg(&key).query(c.like())
        })?;
        Ok(holder.as_deref() == Some(token.as_str()))
    }
}

/// A held claim: renewed by its thread until dropped, then released.
struct RedisClaim {
    /// Dropped to stop the thread, which then releases the claim.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    lost: Arc<Mutex<Vec<String>>>,
}

impl SharedClaim for RedisClaim {
    fn lost(&self) -> Vec<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for RedisClaim {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only renews and releases; a panic there is logged
            // by the runtime and the claim expires by itself.
            let _ = thread.join();
        }
    }
}

/// The renewal thread's state: its own connection, so renewals never wait
/// for (or take) one the run's writes use.
struct Renewer {
    connector: Connector,
    connection: Option<Conn>,
    keys: Vec<String>,
    views: Vec<String>,
    token: String,
    ttl: Duration,
    lost: Arc<Mutex<Vec<String>>>,
}

impl Renewer {
    fn run(mut self, stopped: mpsc::Receiver<()>) {
        // Nothing is ever sent: the claim's drop disconnects the channel.
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(self.ttl / 3) {
            self.renew();
        }
        self.release();
    }

    /// Runs `f` on this thread's connection, opened (again) when needed. A
    /// connection that died between renewals is replaced and `f` run once
    /// more (both scripts are safe to repeat); a failed call drops it.
    fn call<T>(
        &mut self,
        mut f: impl FnMut(&mut Conn, &Self) -> redis::RedisResult<T>,
    ) -> Result<T, OnlineError> {
        if let Some(mut connection) = self.connection.take() {
            match f(&mut connection, self) {
                Ok(value) => {
                    self.connection = Some(connection);
                    return Ok(value);
                }
                Err(e) if e.is_connection_dropped() => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        let mut connection = self.connector.connect().map_err(unavailable)?;
        let value = f(&mut connection, self).map_err(unavailable)?;
        self.connection = Some(connection);
        Ok(value)
    }

    fn renew(&mut self) {
        match self.call(|c, s| take(c, &s.keys, &s.views, &s.token, s.ttl)) {
            Ok(taken_by_another) if taken_by_another.is_empty() => {}
            Ok(taken_by_another) => {
                tracing::warn!(views = ?taken_by_another, "the materialization claim lapsed and another run took it");
                let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
                for view in taken_by_another {
                    if !lost.contains(&view) {
                        lost.push(view);
                    }
                }
            }
            // Tried again at the next interval; the claim holds for its TTL.
            Err(e) => tracing::warn!(error = %e, "cannot renew the materialization claim"),
        }
    }

    fn release(&mut self) {
        let released = self.call(|c, s| {
            redis::Script::new(RELEASE)
                .key(&s.keys)
                .arg(&s.token)
                .invoke::<u64>(c.like())
        });
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot release the materialization claim; it expires on its own");
        }
    }
}
