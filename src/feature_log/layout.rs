//! The columns of one feature service's log rows, fixed per registry
//! version, and which entities are sampled.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::LogCounters;
use crate::codec::arrow::canonical;
use crate::codec::Value;
use crate::registry::{full_name, FeatureLogging, FeatureService, RegistryVersion, RetrievalPlan};
use crate::types::ValueType;

/// The request's id (one per lookup).
pub const REQUEST_ID: &str = "__request_id";
/// When the lookup was served (UTC nanoseconds, naive).
pub const LOG_TIMESTAMP: &str = "__log_timestamp";
/// The day directory's partition column (`__log_date=YYYY-MM-DD`).
pub const LOG_DATE: &str = "__log_date";
/// A feature's event timestamp: `view__feature__timestamp`.
pub const TIMESTAMP_SUFFIX: &str = "__timestamp";
/// A feature's status (`PRESENT`, `NULL_VALUE`, `NOT_FOUND`,
/// `OUTSIDE_MAX_AGE`): `view__feature__status`.
pub const STATUS_SUFFIX: &str = "__status";

/// One service's log row layout under one registry version.
#[derive(Debug)]
pub struct Layout {
    pub service: String,
    pub version: u64,
    /// The logging directory.
    pub dir: PathBuf,
    /// Rows whose key hash is below this are logged; `u64::MAX` logs all.
    threshold: u64,
    pub keys: Vec<(String, ValueType)>,
    pub request: Vec<(String, ValueType)>,
    /// Logged names (`view__feature`) and types, in the response's order.
    pub features: Vec<(String, ValueType)>,
    pub schema: SchemaRef,
    pub counters: Arc<LogCounters>,
}

fn naive_nanos() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, None)
}

impl Layout {
    pub(super) fn new<M>(
        project_dir: &Path,
        registry: &RegistryVersion,
        service: &FeatureService,
        logging: &FeatureLogging,
        plan: &RetrievalPlan<M>,
        counters: Arc<LogCounters>,
    ) -> Self {
        let keys: Vec<(String, ValueType)> = plan
            .stored
            .as_ref()
            .map(|stored| {
                stored
                    .join_keys()
                    .into_iter()
                    .map(|k| (k.name.clone(), k.value_type.clone()))
                    .collect()
            })
            .unwrap_or_default();
        // Request data named like a join key is that key's column: logged
        // once.
        let request = plan.request_fields();
        let features: Vec<(String, ValueType)> = plan
            .outputs
            .iter()
            .map(|o| (full_name(&o.view, &o.feature), o.value_type.clone()))
            .collect();
        let mut fields = vec![
            Field::new(REQUEST_ID, DataType::Utf8, false),
            Field::new(LOG_TIMESTAMP, naive_nanos(), false),
        ];
        for (name, value_type) in keys.iter().chain(&request) {
            fields.push(Field::new(name, canonical(value_type), true));
        }
        for (name, value_type) in &features {
            fields.push(Field::new(name, canonical(value_type), true));
            fields.push(Field::new(
                format!("{name}{TIMESTAMP_SUFFIX}"),
                naive_nanos(),
                true,
            ));
            fields.push(Field::new(
                format!("{name}{STATUS_SUFFIX}"),
                DataType::Utf8,
                false,
            ));
        }
        let threshold = if logging.sample_rate >= 1.0 {
            u64::MAX
        } else {
            (logging.sample_rate.max(0.0) * u64::MAX as f64) as u64
        };
        Layout {
            service: service.name.clone(),
            version: registry.version,
            dir: project_dir.join(&logging.path),
            threshold,
            keys,
            request,
            features,
            schema: Arc::new(Schema::new(fields)),
            counters,
        }
    }

    /// Whether the row with these join key values is logged. A service
    /// without join keys (only on-demand views over request data) is
    /// sampled per row at random.
    pub fn samples<'v>(&self, key: impl Iterator<Item = &'v Value>) -> bool {
        if self.threshold == u64::MAX {
            return true;
        }
        if self.keys.is_empty() {
            return rand::random::<u64>() < self.threshold;
        }
        key_hash(key) < self.threshold
    }
}

/// A hash of join key values, the same in every process and build: FNV-1a
/// over their encoding, then mixed (splitmix64's finalizer) so that its
/// high bits are uniform.
pub fn key_hash<'v>(key: impl Iterator<Item = &'v Value>) -> u64 {
    let mut bytes = Vec::with_capacity(32);
    for value in key {
        value.encode(&mut bytes);
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_samples_about_the_rate_and_is_stable() {
        let threshold = (0.3 * u64::MAX as f64) as u64;
        let n = 20_000;
        let logged = (0..n)
            .filter(|i| key_hash([Value::Int64(*i)].iter()) < threshold)
            .count();
        // Binomial(20000, 0.3): sd is about 65; 5 sd either way.
        assert!((5_675..=6_325).contains(&logged), "{logged} of {n}");
        assert_eq!(
            key_hash([Value::Int64(7)].iter()),
            key_hash([Value::Int64(7)].iter())
        );
        assert_ne!(
            key_hash([Value::Int64(7)].iter()),
            key_hash([Value::Int32(7)].iter())
        );
    }
}
