//! The online store's binary layouts.
//!
//! **Key** (one per project, feature view and entity):
//! `b"wf1"`, u16 LE length + project name, u16 LE length + view name, u8
//! number of join key values, then each value in the view's declared key
//! order, encoded as [`Value::encode`] after coercion to the entity's
//! declared type (so an int32 key is always 4 bytes, whatever the request
//! sent).
//!
//! **Record** (all features of one view for one entity): u8 version (1),
//! event timestamp and created timestamp as u64 big-endian of the i64
//! nanoseconds with the sign bit flipped (so byte order is time order;
//! no created timestamp is `i64::MIN`), u16 LE feature count, then per
//! feature a u8 name length, the name, and the encoded value.

use std::ops::Range;

use crate::codec::Value;

const KEY_MAGIC: &[u8] = b"wf1";
const RECORD_VERSION: u8 = 1;
/// Bytes of a record's header that order records: version, event, created.
pub const ORDER_PREFIX: usize = 17;

/// Builds the key of one entity in one view.
pub fn encode_key(project: &str, view: &str, key_values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + project.len() + view.len() + 12 * key_values.len());
    push_view_prefix(&mut out, project, view);
    out.push(key_values.len() as u8);
    for value in key_values {
        value.encode(&mut out);
    }
    out
}

/// The bytes every key of one view of one project starts with: a scan of
/// this prefix reads the view's records (bundles, edge sync).
pub fn view_prefix(project: &str, view: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + project.len() + view.len());
    push_view_prefix(&mut out, project, view);
    out
}

fn push_view_prefix(out: &mut Vec<u8>, project: &str, view: &str) {
    out.extend(KEY_MAGIC);
    out.extend((project.len() as u16).to_le_bytes());
    out.extend(project.as_bytes());
    out.extend((view.len() as u16).to_le_bytes());
    out.extend(view.as_bytes());
}

/// Every feature of a view for one entity, with its timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub event_timestamp: i64,
    pub created_timestamp: Option<i64>,
    pub features: Vec<(String, Value)>,
}

fn ordered(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn unordered(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        encode_record(
            self.event_timestamp,
            self.created_timestamp,
            self.features
                .iter()
                .map(|(name, value)| (name.as_str(), value)),
        )
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        if bytes.len() < ORDER_PREFIX + 2 || bytes[0] != RECORD_VERSION {
            return None;
        }
        let event_timestamp = unordered(bytes[1..9].try_into().ok()?);
        let created = unordered(bytes[9..17].try_into().ok()?);
        let count = u16::from_le_bytes(bytes[17..19].try_into().ok()?) as usize;
        let mut input = &bytes[19..];
        let mut features = Vec::with_capacity(count);
        for _ in 0..count {
            let len = *input.first()? as usize;
            let name = std::str::from_utf8(input.get(1..1 + len)?)
                .ok()?
                .to_string();
            input = &input[1 + len..];
            features.push((name, Value::decode(&mut input)?));
        }
        Some(Record {
            event_timestamp,
            created_timestamp: (created != i64::MIN).then_some(created),
            features,
        })
    }
}

/// The bytes of a record with these times and features, as
/// [`Record::encode`] writes them, without building a [`Record`] (one
/// allocation: materialization encodes millions).
pub fn encode_record<'a>(
    event_timestamp: i64,
    created_timestamp: Option<i64>,
    features: impl ExactSizeIterator<Item = (&'a str, &'a Value)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + features.len() * 16);
    out.push(RECORD_VERSION);
    out.extend(ordered(event_timestamp));
    out.extend(ordered(created_timestamp.unwrap_or(i64::MIN)));
    out.extend((features.len() as u16).to_le_bytes());
    for (name, value) in features {
        out.push(name.len() as u8);
        out.extend(name.as_bytes());
        value.encode(&mut out);
    }
    out
}

/// Whether an encoded record `candidate` should replace `current`: only a
/// newer (event, created) time may, so late or replayed writes never
/// regress what is stored. Equal times replace (a rewrite of the same row).
pub fn supersedes(candidate: &[u8], current: &[u8]) -> bool {
    match (candidate.get(..ORDER_PREFIX), current.get(..ORDER_PREFIX)) {
        (Some(new), Some(old)) => new[1..] >= old[1..],
        (Some(_), None) => true,
        _ => false,
    }
}

/// The newest record per key among `records` (as [`supersedes`] orders
/// them; of equal times, the later in `records`), in key order: embedded
/// stores then visit their tree pages sequentially rather than at random.
pub fn newest_per_key(records: &[(Vec<u8>, Vec<u8>)]) -> Newest<'_> {
    // A materialization's batches usually arrive in key order, each key
    // once: one comparison per record instead of a sort, and nothing
    // copied.
    if records.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return Newest::InOrder(records);
    }
    let mut newest: Vec<(&[u8], &[u8])> = Vec::with_capacity(records.len());
    for i in key_order(records) {
        let (key, value) = (&records[i].0, &records[i].1);
        match newest.last_mut() {
            Some((last, kept)) if *last == key.as_slice() => {
                if supersedes(value, kept) {
                    *kept = value;
                }
            }
            _ => newest.push((key, value)),
        }
    }
    Newest::Picked(newest)
}

/// The newest record per key of a write, in key order
/// ([`newest_per_key`]).
pub enum Newest<'a> {
    /// The records written, already in key order, each key once.
    InOrder(&'a [(Vec<u8>, Vec<u8>)]),
    /// Picked from them and ordered.
    Picked(Vec<(&'a [u8], &'a [u8])>),
}

impl<'a> Newest<'a> {
    pub fn len(&self) -> usize {
        match self {
            Newest::InOrder(records) => records.len(),
            Newest::Picked(records) => records.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every (key, record), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        self.part(0..self.len())
    }

    /// The (key, record)s at `range`.
    fn part(&self, range: Range<usize>) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        // One of the two is empty.
        let in_order: &'a [(Vec<u8>, Vec<u8>)] = match self {
            Newest::InOrder(records) => &records[range.clone()],
            Newest::Picked(_) => &[],
        };
        let picked: &[(&'a [u8], &'a [u8])] = match self {
            Newest::Picked(records) => &records[range],
            Newest::InOrder(_) => &[],
        };
        in_order
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
            .chain(picked.iter().copied())
    }

    /// Them in parts of `size` (the last one shorter).
    pub fn parts(
        &self,
        size: usize,
    ) -> impl Iterator<Item = impl Iterator<Item = (&'a [u8], &'a [u8])> + '_> + '_ {
        let (len, size) = (self.len(), size.max(1));
        (0..len)
            .step_by(size)
            .map(move |start| self.part(start..(start + size).min(len)))
    }
}

/// The positions of `records` in key order, equal keys by position.
///
/// Keys of one write share a long prefix (project and view), so they are
/// sorted by the 16 bytes after it, held inline, with the full key compared
/// only where those are equal: a million keys sort in a fraction of the time
/// chasing each key's heap allocation takes.
fn key_order(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<usize> {
    let first = records
        .first()
        .map(|(key, _)| key.as_slice())
        .unwrap_or(&[]);
    let mut common = first.len();
    for (key, _) in records {
        common = common.min(crate::codec::shared_prefix(first, key));
    }
    let head = |key: &[u8]| {
        let tail = &key[common..];
        let mut bytes = [0u8; 16];
        let n = tail.len().min(16);
        bytes[..n].copy_from_slice(&tail[..n]);
        u128::from_be_bytes(bytes)
    };
    let mut order: Vec<(u128, usize)> = records
        .iter()
        .enumerate()
        .map(|(i, (key, _))| (head(key), i))
        .collect();
    // Equal heads: the keys decide (zero padding never misorders them: a
    // padded byte differs from a real one only where the shorter key ends),
    // then the position.
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| records[a.1].0[common..].cmp(&records[b.1].0[common..]))
            .then(a.1.cmp(&b.1))
    });
    order.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_time_order() {
        let record = |event, created| {
            Record {
                event_timestamp: event,
                created_timestamp: created,
                features: vec![],
            }
            .encode()
        };
        assert!(supersedes(&record(5, None), &record(-5, Some(100))));
        assert!(!supersedes(&record(-5, Some(100)), &record(5, None)));
        assert!(supersedes(&record(5, Some(2)), &record(5, Some(1))));
        assert!(!supersedes(&record(5, None), &record(5, Some(1))));
        assert!(supersedes(&record(5, Some(1)), &record(5, Some(1))));
    }

    /// Against a plain reference: a stable sort by key, then the last
    /// record of each key among those with the greatest time.
    #[test]
    fn newest_per_key_agrees_with_a_plain_sort() {
        use rand::{Rng, SeedableRng};
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let records: Vec<(Vec<u8>, Vec<u8>)> = (0..rng.random_range(0..300))
                .map(|i| {
                    // Shared prefixes of several lengths, keys that are
                    // prefixes of others, tails past 16 bytes, zero bytes.
                    let prefix = if seed % 2 == 0 {
                        // One long prefix shared by every key (the real case).
                        &b"wf1\x0e\0driver_ranking\x13\0driver_hourly_stats\x01"[..]
                    } else {
                        [&b"wf1"[..], b"wf1\0", b""][rng.random_range(0..3)]
                    };
                    let mut key = prefix.to_vec();
                    for _ in 0..rng.random_range(0..20) {
                        key.push([0u8, 1, 255][rng.random_range(0..3)]);
                    }
                    let event = rng.random_range(0..3);
                    let mut value = Record {
                        event_timestamp: event,
                        created_timestamp: None,
                        features: vec![],
                    }
                    .encode();
                    value.push(i as u8);
                    (key, value)
                })
                .collect();
            let mut plain = records.clone();
            plain.sort_by(|a, b| a.0.cmp(&b.0));
            let mut expected: Vec<(&[u8], &[u8])> = Vec::new();
            for (key, value) in &plain {
                match expected.last_mut() {
                    Some((k, v)) if *k == key.as_slice() => {
                        if value[1..17] >= v[1..17] {
                            *v = value;
                        }
                    }
                    _ => expected.push((key, value)),
                }
            }
            let got: Vec<(&[u8], &[u8])> = newest_per_key(&records).iter().collect();
            assert_eq!(got, expected, "seed {seed}");
            // Parts are the same records, in the same order.
            let parts: Vec<(&[u8], &[u8])> = newest_per_key(&records).parts(7).flatten().collect();
            assert_eq!(parts, expected, "seed {seed} in parts");
        }
    }

    #[test]
    fn records_round_trip() {
        let record = Record {
            event_timestamp: -1,
            created_timestamp: None,
            features: vec![("a".into(), Value::Float32(0.5)), ("b".into(), Value::Null)],
        };
        assert_eq!(Record::decode(&record.encode()), Some(record));
    }
}
