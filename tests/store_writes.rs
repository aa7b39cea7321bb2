//! Writes to each online store (sled, redb, a real redis-server) against a
//! simple reference: random records written in random batches, with keys
//! repeated within a batch and across batches, equal event times with
//! different created times in both orders, and batches larger than one
//! Redis pipeline; afterwards every key holds the newest record written
//! (the greatest (event, created) time, no created time lowest), and keys
//! never written are absent.

mod common;

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wafer::codec::Value;
use wafer::config::{OnlineStoreConfig, OnlineStoreKind};
use wafer::online::record::{encode_key, Record};
use wafer::online::{self, KeyedRecord, OnlineStore};

const KEYS: i64 = 30_000;
const HOT_KEYS: i64 = 50;

fn record(key: i64, event: i64, created: Option<i64>) -> KeyedRecord {
    // The value is a function of the key and times, so records with equal
    // times are equal and any tie-break stores the same bytes.
    let value = key * 1_000_000 + event * 1_000 + created.unwrap_or(-1);
    let record = Record {
        event_timestamp: event,
        created_timestamp: created,
        features: vec![("x".into(), Value::Int64(value))],
    };
    (encode_key("p", "v", &[Value::Int64(key)]), record.encode())
}

fn open(
    kind: OnlineStoreKind,
    dir: &std::path::Path,
    url: Option<String>,
    ttl: Option<u64>,
) -> Box<dyn OnlineStore> {
    let config = OnlineStoreConfig {
        kind: Some(kind),
        url,
        key_ttl_seconds: ttl,
        ..OnlineStoreConfig::default()
    };
    online::open(&config, dir).unwrap()
}

fn check(kind: OnlineStoreKind, seed: u64, url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    check_store(
        open(kind, dir.path(), url, None),
        &format!("{kind:?}"),
        seed,
    );
}

fn check_store(store: Box<dyn OnlineStore>, kind: &str, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Per key: the newest (event, created) written; `None` sorts lowest.
    let mut newest: HashMap<i64, (i64, Option<i64>)> = HashMap::new();
    let batches = rng.random_range(5..15);
    for b in 0..batches {
        // Small batches over a few hot keys (many repeats); one large batch
        // over many keys: past several Redis pipelines (2,000 records),
        // redb's durable-write size (16,384 distinct keys) and parts, and
        // sled's lock parts, with repeats too.
        let (size, keys) = if b == 2 {
            (40_000, KEYS - 10)
        } else {
            (rng.random_range(1..200), HOT_KEYS)
        };
        let batch: Vec<KeyedRecord> = (0..size)
            .map(|_| {
                // The last ten keys are never written.
                let key = rng.random_range(0..keys);
                let event = rng.random_range(0..4);
                let created = match rng.random_range(0..4) {
                    0 => None,
                    c => Some(c),
                };
                let best = newest.entry(key).or_insert((event, created));
                if (event, created) > *best {
                    *best = (event, created);
                }
                record(key, event, created)
            })
            .collect();
        store.write(&batch).unwrap();
        if rng.random_bool(0.3) {
            store.flush().unwrap();
        }
    }
    store.flush().unwrap();
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|k| encode_key("p", "v", &[Value::Int64(k)]))
        .collect();
    let stored = store.read(&keys).unwrap();
    for (key, got) in (0..KEYS).zip(stored) {
        let expected = newest.get(&key).map(|&(e, c)| record(key, e, c).1);
        assert_eq!(got, expected, "{kind}, seed {seed}, key {key}");
    }
}

#[test]
fn sled_keeps_the_newest_record_per_key() {
    for seed in common::seeds(0, 10) {
        check(OnlineStoreKind::Sled, seed, None);
    }
}

#[test]
fn redb_keeps_the_newest_record_per_key() {
    for seed in common::seeds(0, 10) {
        check(OnlineStoreKind::Redb, seed, None);
    }
}

#[test]
fn redis_keeps_the_newest_record_per_key() {
    let redis = common::RedisServer::start();
    for seed in common::seeds(0, 10) {
        redis.command(&["FLUSHALL"]);
        check(OnlineStoreKind::Redis, seed, Some(redis.url()));
    }
}

/// On a real 3-master Redis Cluster: writes pipelined per node (the
/// newer-wins script loaded on every master when a node lacks it), reads
/// of every key across the nodes.
#[test]
fn a_redis_cluster_keeps_the_newest_record_per_key() {
    let cluster = common::redis_cluster::RedisCluster::start(3);
    for seed in common::seeds(0, 6) {
        for node in 0..3 {
            cluster.command(node, &["FLUSHALL"]);
            cluster.command(node, &["SCRIPT", "FLUSH"]);
        }
        let config = OnlineStoreConfig {
            kind: Some(OnlineStoreKind::Redis),
            cluster: cluster
                .ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
            ..OnlineStoreConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        check_store(online::open(&config, dir.path()).unwrap(), "cluster", seed);
    }
}

/// `key_ttl_seconds` applies to new keys (written without the script) and
/// to replaced ones (written by it) alike.
#[test]
fn redis_key_ttl_applies_to_new_and_replaced_keys() {
    let redis = common::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        OnlineStoreKind::Redis,
        dir.path(),
        Some(redis.url()),
        Some(500),
    );
    store.write(&[record(1, 1, None)]).unwrap();
    // Key 1 replaced by a newer record, key 2 new, key 3 new then kept
    // (an older record does not replace it).
    store.write(&[record(3, 5, None)]).unwrap();
    redis.command(&["PERSIST", &key_text(3)]);
    store
        .write(&[record(1, 2, None), record(2, 1, None), record(3, 1, None)])
        .unwrap();
    // A large write (a materialization's batch) stores new keys with
    // `SET NX`, without the script.
    let bulk: Vec<i64> = (0..300)
        .map(|i| (i % 128) + 256 * (i / 128) + (5 << 16))
        .collect();
    let batch: Vec<KeyedRecord> = bulk.iter().map(|&k| record(k, 1, None)).collect();
    let sets = || set_calls(&redis.command(&["INFO", "commandstats"]));
    let before = sets();
    store.write(&batch).unwrap();
    assert_eq!(sets() - before, 300, "one SET NX per new key");
    for key in [1, 2, bulk[0], bulk[299]] {
        let ttl = redis.command(&["TTL", &key_text(key)]);
        let seconds: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
        assert!((400..=500).contains(&seconds), "key {key}: TTL {ttl:?}");
    }
    // The older record for key 3 was not written, so its TTL stays unset.
    assert_eq!(redis.command(&["TTL", &key_text(3)]).trim(), ":-1");
    let stored = store.read(&[record(3, 0, None).0]).unwrap().pop().flatten();
    assert_eq!(stored, Some(record(3, 5, None).1));
}

/// Keys are binary; the test's raw Redis client sends text, so keys here
/// must be valid UTF-8 (integers whose bytes are all below 0x80).
fn key_text(key: i64) -> String {
    String::from_utf8(record(key, 0, None).0).expect("a UTF-8 key")
}

/// Calls of `SET` in an `INFO commandstats` reply.
fn set_calls(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_set:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
