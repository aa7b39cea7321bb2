//! A window's newest row per key, ordered in this process (for wide
//! windows, and deep ones whose read finished before the probe): DuckDB
//! scans the window unsorted (about 0.06 s for a million rows, against
//! about 0.2 s before the first row of its sort, which also keeps both
//! cores busy while the store's writer waits), and the rows are kept as
//! Arrow batches, radix-sorted by their encoded online keys (a single
//! integer join key by its little-endian bytes read as one number, without
//! encoding it), and each key's
//! newest is picked as batches of them are gathered and handed on
//! ([`Sorted::batches`]), so the first batch waits for the sort only.
//!
//! The rows are held in memory under a budget ([`Sorted::read`] gives up
//! once they would pass it, and DuckDB reads the window instead). The
//! order is exact for every key type: it is the bytes of the keys
//! themselves (`Value::encode`), not an approximation in SQL.

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array, PrimitiveArray, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{ArrowPrimitiveType, Int32Type, Int64Type};
use arrow::error::ArrowError;
use duckdb::Connection;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::codec::arrow::Column;
use crate::codec::Value;
use crate::registry::ViewSelection;
use crate::types::ValueType;

use super::super::OfflineError;

/// Bytes a row costs besides its batch's and its key's once sorted: its
/// entry in the sort (twice while sorting). Where it is and where its key
/// ends are counted as allocated.
const SORT_BYTES: usize = 2 * 16;

/// The least a row of the window costs while sorted: [`SORT_BYTES`], where
/// it is, where its key ends (or, for one integer join key, the key
/// itself), and 8 bytes of each of its event and created times.
pub const MIN_ROW_BYTES: usize = SORT_BYTES + 8 + 8 + 16;

/// Every row of a window, in the byte order of its key.
pub struct Sorted {
    rows: Rows,
    /// Every row, in the byte order of its key.
    order: Vec<Entry>,
    /// Each batch's event and created times.
    times: Vec<(Int64Array, Int64Array)>,
}

/// How a read in the process ended ([`Sorted::read`]).
pub enum Read {
    Sorted(Sorted),
    /// Its rows would have held more than the budget.
    PastBudget,
    /// Stopped from outside: the window is read another way.
    Stopped,
}

impl Sorted {
    /// Runs `query` (every row of the window with a full key, laid out as
    /// [`ViewRows`](crate::view_rows::ViewRows), in any order) and orders
    /// its rows; [`Read::PastBudget`] once they would hold more than
    /// `budget` bytes, [`Read::Stopped`] once `stop` is set (the rest of
    /// the query is then dropped unread).
    pub fn read(
        connection: &Connection,
        query: &str,
        view: &ViewSelection,
        budget: usize,
        stop: &AtomicBool,
    ) -> Result<Read, OfflineError> {
        let mut rows = Rows::default();
        let mut batch_bytes = 0;
        let mut statement = connection.prepare(query)?;
        for batch in statement.stream_arrow([])? {
            if stop.load(Ordering::Acquire) {
                return Ok(Read::Stopped);
            }
            let batch = batch?;
            batch_bytes += batch.get_array_memory_size();
            rows.add(batch, view)?;
            let held = batch_bytes + rows.held_bytes();
            if held > budget {
                tracing::debug!(held, budget, "latest rows: past the in-process sort budget");
                return Ok(Read::PastBudget);
            }
        }
        let join_keys = view.join_keys.len();
        let times = rows
            .batches
            .iter()
            .map(|batch| {
                let time = |i: usize| {
                    batch
                        .column(i)
                        .as_primitive_opt::<Int64Type>()
                        .cloned()
                        .ok_or_else(|| {
                            ArrowError::CastError("the latest rows' times are not BIGINT".into())
                        })
                };
                Ok((time(join_keys)?, time(join_keys + 1)?))
            })
            .collect::<Result<Vec<_>, ArrowError>>()?;
        if stop.load(Ordering::Acquire) {
            return Ok(Read::Stopped);
        }
        let order = rows.ordered();
        Ok(Read::Sorted(Sorted { rows, order, times }))
    }

    /// Rows read (keys repeated as often as they were).
    pub fn rows(&self) -> usize {
        self.order.len()
    }

    /// Each key's newest row, in key order, in batches of `rows` rows. The
    /// newest are picked as the batches are gathered: a writer waiting for
    /// the first one does not wait for all of them.
    pub fn batches(
        &self,
        rows: usize,
    ) -> impl Iterator<Item = Result<RecordBatch, ArrowError>> + '_ {
        let sources: Vec<&RecordBatch> = self.rows.batches.iter().collect();
        let mut newest = self.newest();
        std::iter::from_fn(move || {
            let chunk: Vec<(usize, usize)> = newest.by_ref().take(rows.max(1)).collect();
            (!chunk.is_empty()).then(|| interleave_record_batch(&sources, &chunk))
        })
    }

    /// (batch, row) of each key's newest row (greatest event time, then
    /// created time, a null created time below any), in the byte order of
    /// the keys; of rows tied on both, any one.
    fn newest(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut order = self.order.iter().peekable();
        std::iter::from_fn(move || {
            let mut kept = *order.next()?;
            // The same key (prefixes differ for most keys: their bytes are
            // compared only when the prefixes do not).
            while let Some(&&next) = order.peek() {
                if next.0 != kept.0 || !self.rows.same_key(next.1, kept.1) {
                    break;
                }
                if self.newness(next.1) > self.newness(kept.1) {
                    kept = next;
                }
                order.next();
            }
            Some(self.rows.place(kept.1))
        })
    }

    /// The event and created times of `row`, in the order of newness.
    fn newness(&self, row: u32) -> (i64, Option<i64>) {
        let (batch, i) = self.rows.place(row);
        let (event, created) = &self.times[batch];
        (
            event.value(i),
            created.is_valid(i).then(|| created.value(i)),
        )
    }
}

/// A row's place in the sort: 8 bytes of its key after those every key
/// starts with, and the row (its number in reading order).
type Entry = (u64, u32);

/// A window's rows as read, with each row's key.
#[derive(Default)]
struct Rows {
    batches: Vec<RecordBatch>,
    /// Row -> (batch, row in it).
    at: Vec<(u32, u32)>,
    /// The rows' encoded join keys (`Value::encode` of each, as an online
    /// key holds them after its view's prefix), one after another; empty
    /// with [`Rows::integers`].
    keys: Vec<u8>,
    /// Row -> where its key ends in `keys`.
    key_ends: Vec<usize>,
    /// How many bytes every key read so far starts with (at least the
    /// first column's type tag, as rows with a null key are not read). The
    /// sort's prefixes start after them.
    shared: Option<usize>,
    /// With one integer join key: each row's key as [`integer_order`] gives
    /// it, which is the whole key (`keys` then stays empty).
    integers: Option<Vec<u64>>,
}

/// An integer key's place in the byte order of its encoding
/// (`Value::encode`: its type tag, then its bytes little-endian): those
/// bytes read big-endian. One type's keys share their tag, so two keys are
/// in the order of these numbers, and equal exactly when they are.
fn integer_order(column: &KeyColumn, row: usize) -> Option<u64> {
    match column {
        KeyColumn::Int64(a) if a.is_valid(row) => {
            Some(u64::from_be_bytes(a.value(row).to_le_bytes()))
        }
        KeyColumn::Int32(a) if a.is_valid(row) => {
            Some(u64::from(u32::from_be_bytes(a.value(row).to_le_bytes())) << 32)
        }
        _ => None,
    }
}

/// `column`'s array as the primitive array its type makes it.
fn primitive<T: ArrowPrimitiveType>(column: &Column) -> Result<PrimitiveArray<T>, ArrowError> {
    column
        .array()
        .as_primitive_opt::<T>()
        .cloned()
        .ok_or_else(|| ArrowError::CastError(format!("a join key is not {}", T::DATA_TYPE)))
}

/// A join key column; integers are read without a type check per row.
enum KeyColumn {
    Int64(Int64Array),
    Int32(Int32Array),
    Other(Column),
}

impl KeyColumn {
    fn new(array: &ArrayRef, ty: &ValueType) -> Result<Self, ArrowError> {
        let column = Column::new(array, ty).map_err(ArrowError::CastError)?;
        Ok(match ty {
            ValueType::Int64 => KeyColumn::Int64(primitive::<Int64Type>(&column)?),
            ValueType::Int32 => KeyColumn::Int32(primitive::<Int32Type>(&column)?),
            _ => KeyColumn::Other(column),
        })
    }

    /// `Value::encode` of the value at `row`.
    fn encode(&self, row: usize, out: &mut Vec<u8>) {
        match self {
            KeyColumn::Int64(a) if a.is_valid(row) => Value::Int64(a.value(row)).encode(out),
            KeyColumn::Int32(a) if a.is_valid(row) => Value::Int32(a.value(row)).encode(out),
            KeyColumn::Int64(_) | KeyColumn::Int32(_) => Value::Null.encode(out),
            KeyColumn::Other(column) => column.value(row).encode(out),
        }
    }
}

impl Rows {
    fn add(&mut self, batch: RecordBatch, view: &ViewSelection) -> Result<(), OfflineError> {
        let columns = view
            .join_keys
            .iter()
            .enumerate()
            .map(|(k, key)| KeyColumn::new(batch.column(k), &key.value_type))
            .collect::<Result<Vec<_>, _>>()?;
        let index = u32::try_from(self.batches.len())
            .map_err(|_| ArrowError::ComputeError("too many batches to sort".into()))?;
        let rows = batch.num_rows();
        // Rows are numbered in a u32 (`Entry`).
        if self.at.len() + rows > u32::MAX as usize {
            return Err(ArrowError::ComputeError("too many rows to sort".into()).into());
        }
        if self.batches.is_empty()
            && matches!(
                columns.as_slice(),
                [KeyColumn::Int64(_) | KeyColumn::Int32(_)]
            )
        {
            self.integers = Some(Vec::new());
        }
        if let Some(integers) = &mut self.integers {
            integers.reserve(rows);
            self.at.reserve(rows);
            for row in 0..rows {
                // The read holds rows with a full key only.
                let key = integer_order(&columns[0], row).ok_or_else(|| {
                    ArrowError::ComputeError("a null or non-integer key to sort".into())
                })?;
                integers.push(key);
                self.at.push((index, row as u32));
            }
            self.batches.push(batch);
            return Ok(());
        }
        self.at.reserve(rows);
        self.key_ends.reserve(rows);
        for row in 0..rows {
            for column in &columns {
                column.encode(row, &mut self.keys);
            }
            self.key_written((index, row as u32));
        }
        self.batches.push(batch);
        Ok(())
    }

    /// Records the row at `at`, whose key is the bytes of `keys` after the
    /// last row's.
    fn key_written(&mut self, at: (u32, u32)) {
        let start = self.key_ends.last().copied().unwrap_or(0);
        self.key_ends.push(self.keys.len());
        self.at.push(at);
        let shared = self
            .shared
            .unwrap_or(self.key_ends[0])
            .min(self.keys.len() - start);
        let (first, key) = (&self.keys[..shared], &self.keys[start..start + shared]);
        self.shared = Some(crate::codec::shared_prefix(first, key));
    }

    /// Bytes held besides the batches, as allocated, and what sorting the
    /// rows read will take.
    fn held_bytes(&self) -> usize {
        self.keys.capacity()
            + self.integers.as_ref().map_or(0, |i| i.capacity() * 8)
            + self.at.capacity() * std::mem::size_of::<(u32, u32)>()
            + self.key_ends.capacity() * std::mem::size_of::<usize>()
            + self.at.len() * SORT_BYTES
    }

    /// Every row, in the byte order of its key.
    fn ordered(&self) -> Vec<Entry> {
        if let Some(integers) = &self.integers {
            // At most u32::MAX rows (`Rows::add`).
            let mut entries: Vec<Entry> = (0..integers.len() as u32)
                .zip(integers)
                .map(|(row, &key)| (key, row))
                .collect();
            radix_sort(&mut entries);
            return entries;
        }
        let shared = self.shared.unwrap_or(0);
        let mut entries: Vec<Entry> = (0..self.key_ends.len() as u32)
            .map(|row| (prefix(&self.key(row)[shared..]), row))
            .collect();
        key_order(self, &mut entries);
        entries
    }

    /// Whether two rows whose sort prefixes are equal have the same key.
    fn same_key(&self, a: u32, b: u32) -> bool {
        self.integers.is_some() || self.key(a) == self.key(b)
    }

    fn key(&self, row: u32) -> &[u8] {
        let row = row as usize;
        let start = if row == 0 { 0 } else { self.key_ends[row - 1] };
        &self.keys[start..self.key_ends[row]]
    }

    fn place(&self, row: u32) -> (usize, usize) {
        let (batch, i) = self.at[row as usize];
        (batch as usize, i as usize)
    }
}

/// Puts `entries` in the byte order of their rows' keys: radix-sorted by
/// prefix (every key starts with the bytes skipped, and a prefix smaller
/// means a key smaller), then each run of equal prefixes sorted by the
/// keys' bytes.
fn key_order(rows: &Rows, entries: &mut Vec<Entry>) {
    radix_sort(entries);
    let mut start = 0;
    while start < entries.len() {
        let end = start
            + entries[start..]
                .iter()
                .take_while(|e| e.0 == entries[start].0)
                .count();
        if end - start > 1 {
            entries[start..end].sort_by(|a, b| rows.key(a.1).cmp(rows.key(b.1)));
        }
        start = end;
    }
}

/// Sorts `entries` by their prefixes, least significant byte first,
/// skipping bytes every prefix has alike (the high bytes of small
/// integers).
fn radix_sort(entries: &mut Vec<Entry>) {
    let mut counts = [[0usize; 256]; 8];
    for &(prefix, _) in entries.iter() {
        for (digit, count) in counts.iter_mut().enumerate() {
            count[((prefix >> (8 * digit)) & 0xff) as usize] += 1;
        }
    }
    let mut sorted = vec![(0, 0); entries.len()];
    for (digit, count) in counts.iter().enumerate() {
        if count.contains(&entries.len()) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut at = 0;
        for (byte, &c) in count.iter().enumerate() {
            next[byte] = at;
            at += c;
        }
        for &entry in entries.iter() {
            let byte = ((entry.0 >> (8 * digit)) & 0xff) as usize;
            sorted[next[byte]] = entry;
            next[byte] += 1;
        }
        std::mem::swap(entries, &mut sorted);
    }
}

/// The first 8 bytes of `key` read big-endian, zeros after a shorter key:
/// a key whose prefix is smaller is smaller.
fn prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests;
