//! Scheduled materialization (`wafer serve --materialize-every 15m`, or
//! `server.materialize_every`): incremental materialization of every view
//! on a timer, with no outside scheduler.
//!
//! Ticks fall on multiples of the interval since the epoch, so every
//! replica agrees on their numbers; at each, the replica that takes the
//! tick (interval and number) in the shared online store runs it
//! ([`crate::FeatureStore::materialize_scheduled`]) and the others skip
//! it. Runs are recorded in the registry as any materialization is, and
//! counted in /metrics by outcome.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::{Metrics, ScheduledOutcome};
use crate::FeatureStore;

/// Runs scheduled materialization every `every` until the task is dropped.
pub(super) async fn materialize_every(
    store: Arc<FeatureStore>,
    metrics: Arc<Metrics>,
    every: Duration,
) {
    // At most a year (the configuration's check), so these never overflow.
    let every_ms = every.as_millis().clamp(1, i64::MAX as u128) as i64;
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let tick = now.div_euclid(every_ms) + 1;
        let at = tick * every_ms;
        tokio::time::sleep(Duration::from_millis((at - now).max(0) as u64)).await;
        let Some(end) = chrono::DateTime::from_timestamp_millis(at) else {
            tracing::error!(at, "scheduled materialization: the tick is out of range");
            return;
        };
        let store = store.clone();
        let run = tokio::task::spawn_blocking(move || {
            store.materialize_scheduled(every_ms as u64, tick as u64, end)
        });
        let outcome = match run.await {
            Ok(Ok(Some(records))) => {
                for record in &records {
                    metrics.observe_materialization(record);
                }
                tracing::info!(%end, views = records.len(), "scheduled materialization done");
                ScheduledOutcome::Ran
            }
            Ok(Ok(None)) => ScheduledOutcome::OtherReplica,
            Ok(Err(crate::Error::Busy(views))) => {
                tracing::warn!(%end, ?views, "scheduled materialization skipped: another run holds these views");
                ScheduledOutcome::Busy
            }
            Ok(Err(error)) => {
                tracing::error!(%end, %error, "scheduled materialization failed");
                ScheduledOutcome::Failed
            }
            Err(error) => {
                tracing::error!(%end, %error, "scheduled materialization task failed");
                ScheduledOutcome::Failed
            }
        };
        metrics.observe_scheduled(outcome);
    }
}
