//! The redb store's own parts: its change log and its writes in key order.

use super::*;
use rand::{Rng, SeedableRng};

/// Front-coded entries give back the keys written, in order, whatever
/// they share; an entry cut short never gives back all of its keys.
#[test]
fn logged_keys_round_trip() {
    for seed in 0..50 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let keys: Vec<Vec<u8>> = (0..rng.random_range(1..200))
            .map(|_| {
                let len = rng.random_range(0..300);
                (0..len).map(|_| rng.random_range(0..3u8)).collect()
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        for keys in [keys, sorted] {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
            let txn = store.db.begin_write().unwrap();
            let mut changed = ChangedKeys::default();
            for key in &keys {
                changed.push(key);
            }
            changed.log(&txn).unwrap();
            txn.commit().unwrap();
            let txn = store.db.begin_read().unwrap();
            let table = txn.open_table(CHANGES).unwrap();
            let (_, list) = table.first().unwrap().unwrap();
            let list = list.value().to_vec();
            let mut read = Vec::new();
            logged_keys(&list, |key| read.push(key.to_vec())).unwrap();
            assert_eq!(read, keys, "seed {seed}");
            let cut = rng.random_range(0..list.len());
            let mut keys_read = 0;
            let whole = logged_keys(&list[..cut], |_| keys_read += 1);
            assert!(whole.is_none() || keys_read < keys.len(), "seed {seed}");
        }
    }
}

/// One write of more records than a transaction takes logs each part
/// as an entry of its own, each starting with a whole key: what
/// changed since before it gives back every key written.
#[test]
fn a_write_in_several_parts_logs_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb"), 64 << 20).unwrap();
    store.write(&[(b"wf/0".to_vec(), vec![1])]).unwrap();
    let before = log_position(&store.db.begin_read().unwrap())
        .unwrap()
        .unwrap();
    let records: Vec<KeyedRecord> = (0..2 * TRANSACTION_RECORDS + 1_000)
        .map(|i| (format!("wf/view/{i:08}").into_bytes(), vec![2]))
        .collect();
    store.write(&records).unwrap();
    let now = log_position(&store.db.begin_read().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(now.at, before.at + 3, "an entry per part");
    let (changed, _) = store
        .changed_since(before, &[b"wf/".to_vec()])
        .unwrap()
        .expect("every entry since decodes");
    let mut keys: Vec<Vec<u8>> = changed.into_iter().map(|(key, _)| key).collect();
    keys.sort();
    keys.dedup();
    let expected: Vec<Vec<u8>> = records.into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys, expected);
}

/// A file whose change log has the first layout: opening it starts an
/// empty log of another identity, so a position in the old one asks
/// for everything once, and a position in the new one for what was
/// written since, before and after the next write.
#[test]
fn the_first_log_layout_is_replaced_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut old = txn.open_table(CHANGES_V1).unwrap();
            old.insert(1, [3u8, 0, 0, 0, b'a', b'b', b'c'].as_slice())
                .unwrap();
            let mut meta = txn.open_table(LOG_META).unwrap();
            meta.insert("id", 7).unwrap();
            meta.insert("at", 1).unwrap();
            meta.insert("bytes", 7).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path, 1 << 20).unwrap();
    let old = LogPosition { log: 7, at: 1 };
    assert!(store.changed_since(old, &[Vec::new()]).unwrap().is_none());
    let now = {
        let txn = store.db.begin_read().unwrap();
        assert!(matches!(
            txn.open_table(CHANGES_V1),
            Err(redb::TableError::TableDoesNotExist(_))
        ));
        log_position(&txn).unwrap().unwrap()
    };
    assert_ne!(now.log, 7);
    assert_eq!(now.at, 1);
    let (records, at) = store.changed_since(now, &[Vec::new()]).unwrap().unwrap();
    assert!(records.is_empty());
    assert_eq!(at, now);
    store
        .write(&[(b"key".to_vec(), b"value".to_vec())])
        .unwrap();
    assert!(store.changed_since(old, &[Vec::new()]).unwrap().is_none());
    let (records, _) = store.changed_since(now, &[Vec::new()]).unwrap().unwrap();
    assert_eq!(records, vec![(b"key".to_vec(), b"value".to_vec())]);
    // Opened again: nothing left to replace, the log stays.
    drop(store);
    let store = RedbStore::open(&path, 1 << 20).unwrap();
    let (records, _) = store.changed_since(now, &[Vec::new()]).unwrap().unwrap();
    assert_eq!(records.len(), 1);
}

/// A record of `key` at (`event`, `created`) whose bytes follow from the
/// three, so records of equal times are equal whichever one a tie keeps.
/// Some keys' records carry up to 600 bytes more, so a run of them passes
/// the bytes after which redb splices a cursor's pending inserts.
fn timed_record(key: u64, event: i64, created: Option<i64>) -> KeyedRecord {
    use crate::codec::Value;
    let record = crate::online::record::Record {
        event_timestamp: event,
        created_timestamp: created,
        features: vec![
            (
                "x".into(),
                Value::Int64(key as i64 * 100 + event * 10 + created.unwrap_or(-1)),
            ),
            (
                "pad".into(),
                Value::String("p".repeat(key as usize % 5 * 150)),
            ),
        ],
    };
    (format!("k{key:08}").into_bytes(), record.encode())
}

/// Every record of the store's table, in its order.
fn stored_records(store: &RedbStore) -> Vec<KeyedRecord> {
    let txn = store.db.begin_read().unwrap();
    let table = txn.open_table(TABLE).unwrap();
    table
        .iter()
        .unwrap()
        .map(|entry| {
            let (key, value) = entry.unwrap();
            (key.value().to_vec(), value.value().to_vec())
        })
        .collect()
}

/// Runs against stored keys 10, 20, 30 and 20,000 (event time 1): those
/// that fall wholly into one gap (before, between, past; one of more than
/// the 1 MiB redb splices at) are spliced in; those that start or end on a
/// stored key, or span one (whether or not they write it), go key by key.
/// Either way the table then holds the newest record per key: a run's
/// record at event 2 replaces a stored one, at event 0 it does not.
#[test]
fn a_run_is_spliced_in_exactly_when_no_stored_key_lies_within_it() {
    use std::collections::BTreeMap;
    use RunWritten::{KeyByKey, Spliced};
    let cases: Vec<(Vec<u64>, RunWritten)> = vec![
        ((5..=9).collect(), Spliced),
        ((11..=19).collect(), Spliced),
        (vec![21, 29], Spliced),
        ((31..=40).collect(), Spliced),
        ((20_001..=20_010).collect(), Spliced),
        (vec![0], Spliced),
        ((10..=15).collect(), KeyByKey),
        ((15..=20).collect(), KeyByKey),
        (vec![20], KeyByKey),
        (vec![12, 20, 25], KeyByKey),
        (vec![15, 25], KeyByKey),
        (vec![5, 35], KeyByKey),
        ((0..=40).collect(), KeyByKey),
        // More than 1 MiB of records between two stored keys: redb
        // splices part of the run before the cursor closes.
        ((11_000..15_096).collect(), Spliced),
    ];
    for (keys, how) in cases {
        for event in [0, 2] {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
            let stored: Vec<KeyedRecord> = [10, 20, 30, 20_000]
                .iter()
                .map(|&key| timed_record(key, 1, None))
                .collect();
            store.write(&stored).unwrap();
            let run: Vec<KeyedRecord> = keys
                .iter()
                .map(|&key| timed_record(key, event, None))
                .collect();
            let pairs: Vec<(&[u8], &[u8])> = run
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            let txn = store.db.begin_write().unwrap();
            {
                let mut table = txn.open_table(TABLE).unwrap();
                let mut changed = ChangedKeys::default();
                let written = write_run(&mut table, &pairs, &mut changed).unwrap();
                assert_eq!(written, how, "keys {keys:?}");
            }
            txn.commit().unwrap();
            let mut expected: BTreeMap<u64, i64> = [(10, 1), (20, 1), (30, 1), (20_000, 1)].into();
            for &key in &keys {
                let kept = expected.entry(key).or_insert(event);
                *kept = (*kept).max(event);
            }
            let expected: Vec<KeyedRecord> = expected
                .into_iter()
                .map(|(key, event)| timed_record(key, event, None))
                .collect();
            assert!(
                stored_records(&store) == expected,
                "keys {keys:?}, event {event}"
            );
        }
    }
}

/// Writes (blocks of keys in key order, or keys at random with repeats)
/// whose runs fall into the gaps between stored keys, past the last one,
/// start or end on a stored key, or hold some: the store then holds
/// exactly the newest record written per key (a plain map's), each key
/// once, in key order; the change log lists each write's keys, each once,
/// in key order, write after write.
#[test]
fn runs_written_between_stored_keys_keep_the_newest_record_per_key() {
    use std::collections::{BTreeMap, BTreeSet};
    for seed in 0..24 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), 8 << 20).unwrap();
        let mut newest: BTreeMap<u64, (i64, Option<i64>)> = BTreeMap::new();
        let mut logged: Vec<Vec<u8>> = Vec::new();
        for _ in 0..rng.random_range(2..10) {
            // A block of keys from a random start (every key, every other
            // one or sparser, so the block passes stored keys or falls
            // between them), or keys at random over the whole space.
            let len = if rng.random_bool(0.5) {
                rng.random_range(1..300)
            } else {
                rng.random_range(1..3 * GAP_RUN as u64)
            };
            let space = [40_000, 400_000][rng.random_range(0..2)];
            let keys: Vec<u64> = if rng.random_bool(0.7) {
                let start = rng.random_range(0..space);
                let step = rng.random_range(1..4);
                (0..len).map(|i| start + i * step).collect()
            } else {
                (0..len).map(|_| rng.random_range(0..space)).collect()
            };
            let records: Vec<KeyedRecord> = keys
                .iter()
                .map(|&key| {
                    let event = rng.random_range(0..3);
                    let created = [None, Some(0), Some(1)][rng.random_range(0..3)];
                    let best = newest.entry(key).or_insert((event, created));
                    *best = (*best).max((event, created));
                    timed_record(key, event, created)
                })
                .collect();
            store.write(&records).unwrap();
            let written: BTreeSet<Vec<u8>> = records.into_iter().map(|(key, _)| key).collect();
            logged.extend(written);
        }
        let expected: Vec<KeyedRecord> = newest
            .iter()
            .map(|(&key, &(event, created))| timed_record(key, event, created))
            .collect();
        let stored = stored_records(&store);
        assert_eq!(stored.len(), expected.len(), "seed {seed}");
        assert!(stored == expected, "seed {seed}: records differ");
        let txn = store.db.begin_read().unwrap();
        let mut keys = Vec::new();
        for entry in txn.open_table(CHANGES).unwrap().iter().unwrap() {
            let (_, list) = entry.unwrap();
            logged_keys(list.value(), |key| keys.push(key.to_vec())).unwrap();
        }
        assert!(keys == logged, "seed {seed}: keys logged");
    }
}
