//! The newest row per entity of one view in a window: what a
//! materialization writes, in the byte order of the entities' online keys
//! (exactly when sorted in the process; from DuckDB, integer, string and
//! bool keys, bytes and timestamp keys by value).
//!
//! Two plans ([`ReadPlan`]), each the faster for one shape of window:
//! reducing the window to each key's newest row with a hash aggregate and
//! sorting what is left costs little when keys have many rows each (deep),
//! but a wide window (about one row per key) is read 2-3 times sooner by
//! sorting every row by key, newest first, and keeping each key's first
//! ([`FirstPerKey`]); DuckDB returns no row of either before it has sorted,
//! and the store's writer waits for the first, so a wide window whose rows
//! fit the offline store's `sort_mb` is read unsorted and ordered in the
//! process instead ([`Sorted`]), beside the probe's sample
//! ([`sample_beside_read`]), and the read is interrupted when the sample
//! picks another plan or says the rows cannot fit, unless it already
//! finished (it is then used: its order is exact). Sorting every row of a
//! deep window costs about twice what reducing it does, so a probe decides
//! ([`read_plan`], in [`probe`]):
//! - the window's first [`HEAD_ROWS`](probe::HEAD_ROWS) rows: when they
//!   repeat keys (more than [`MAX_ROWS_PER_KEY`](probe::MAX_ROWS_PER_KEY)
//!   rows per key) or are all of it, reduce;
//! - else the keys of one entity in [`SAMPLE_SHARE`](probe::SAMPLE_SHARE)
//!   (by hash) over the whole window, which stops as soon as they repeat
//!   as much: exact rows per key for that sample, where the first rows of
//!   a window ordered by time would show each key once however deep it is.
//!
//! The probe reads the join keys and event times only: 0.06 s over a wide
//! window of a million rows, 0.11 s over 5 million rows of a deep one in
//! time order (where it stops after about three hours of fifty; a few keys
//! stop it within the head) (benches/README.md).

mod in_memory;
mod probe;

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::compute::kernels::boolean::or;
use arrow::compute::kernels::cmp::distinct;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::sql::{ident, SourceInput, I64_MIN, TWO_POW_63, TWO_POW_64};
use crate::registry::ViewSelection;
use crate::types::{ScalarType, ValueType};

pub use in_memory::{Read, Sorted, MIN_ROW_BYTES};
pub use probe::{head_plan, read_plan, sample_beside_read, sample_plan, Window};

/// How a window is read: one query either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPlan {
    /// The newest row per key, found by a hash aggregate, then sorted.
    Reduce,
    /// Every row sorted by key then newest first, of which the reader keeps
    /// each key's first ([`FirstPerKey`]).
    SortAll,
}

/// The window's rows with an event time in `[start, end]` (nanoseconds,
/// inclusive), laid out as [`ViewRows`](crate::view_rows::ViewRows): the
/// join keys `k0..`, `ts` and `created` as BIGINT nanoseconds, then the
/// features `f0..` in declared order.
fn window_rows(view: &ViewSelection, input: &SourceInput, start: i64, end: i64) -> String {
    let source = &view.source;
    let mut select = Vec::new();
    for (k, key) in view.join_keys.iter().enumerate() {
        let column = source.column_for(&key.name).unwrap_or(&key.name);
        select.push(format!(
            "CAST({} AS {}) AS k{k}",
            ident(column),
            key.value_type.duckdb_type()
        ));
    }
    select.push(format!("{} AS ts", input.instant(&source.timestamp_field)));
    select.push(match &source.created_timestamp_column {
        Some(created) => format!("{} AS created", input.instant(created)),
        None => "CAST(NULL AS BIGINT) AS created".to_string(),
    });
    for (i, feature) in view.view.features.iter().enumerate() {
        let column = source.column_for(&feature.name).unwrap_or(&feature.name);
        select.push(format!("{} AS f{i}", ident(column)));
    }
    format!(
        "SELECT * FROM (SELECT {} FROM {} WHERE {} IS NOT NULL) WHERE ts BETWEEN {start} AND {end}",
        select.join(", "),
        input.scan(),
        ident(&source.timestamp_field),
    )
}

/// Every row of the window with a full key, in any order, laid out as
/// [`window_rows`]: what [`Sorted`] orders.
pub fn keyed_rows_query(view: &ViewSelection, input: &SourceInput, start: i64, end: i64) -> String {
    format!(
        "SELECT * FROM ({}) WHERE {}",
        window_rows(view, input, start, end),
        keys_present(view)
    )
}

/// A condition on [`window_rows`]: every join key is set.
fn keys_present(view: &ViewSelection) -> String {
    (0..view.join_keys.len())
        .map(|k| format!("k{k} IS NOT NULL"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The newest row per entity of one view with an event time in
/// `[start, end]` (nanoseconds, inclusive), ties on event time going to the
/// newest created time, laid out as [`window_rows`], in the byte order of
/// the entities' online keys (as far as [`encoded_key_order`] goes); with
/// [`ReadPlan::SortAll`], every row, each key's newest first.
pub fn latest_query(
    view: &ViewSelection,
    input: &SourceInput,
    start: i64,
    end: i64,
    plan: ReadPlan,
) -> String {
    let keys: Vec<String> = (0..view.join_keys.len()).map(|k| format!("k{k}")).collect();
    let window = window_rows(view, input, start, end);
    let mut out: Vec<String> = keys.iter().map(|k| format!("w.{k}")).collect();
    out.extend(["w.ts".to_string(), "w.created".to_string()]);
    out.extend((0..view.view.features.len()).map(|i| format!("w.f{i}")));
    let key_order = view
        .join_keys
        .iter()
        .enumerate()
        .flat_map(|(k, key)| encoded_key_order(&format!("w.k{k}"), &key.value_type))
        .collect::<Vec<_>>()
        .join(", ");
    if plan == ReadPlan::SortAll {
        return format!(
            "SELECT {} FROM ({window}) w ORDER BY {key_order}, w.ts DESC, w.created DESC NULLS LAST",
            out.join(", ")
        );
    }
    // The newest (event, created) per key is found by a hash aggregate over
    // one packed order key, then the winning rows are joined back: no sort
    // of the window, which costs most when few keys have many rows.
    let order = format!(
        "(CAST(ts AS HUGEINT) * {TWO_POW_64} + (CAST(coalesce(created, {I64_MIN}) AS HUGEINT) + {TWO_POW_63}))"
    );
    let join = keys
        .iter()
        .map(|k| format!("w.{k} = n.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "WITH w AS (SELECT *, {order} AS o FROM ({window})), \
         n AS (SELECT {}, max(o) AS o FROM w GROUP BY ALL) \
         SELECT {} FROM w JOIN n ON {join} AND w.o = n.o ORDER BY {key_order}",
        keys.join(", "),
        out.join(", ")
    )
}

/// Keeps the first row of each run of equal join keys, across batches: the
/// newest, as [`ReadPlan::SortAll`] returns each key's rows newest first.
#[derive(Default)]
pub struct FirstPerKey {
    /// The join keys of the last row seen.
    last: Option<Vec<ArrayRef>>,
}

impl FirstPerKey {
    /// `batch` (join keys first, `keys` of them) without the rows whose
    /// keys equal the row before.
    pub fn filter(&mut self, batch: &RecordBatch, keys: usize) -> Result<RecordBatch, ArrowError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(batch.clone());
        }
        let mut first_differs = self.last.is_none();
        if let Some(last) = &self.last {
            for (k, last) in last.iter().enumerate() {
                first_differs |= distinct(&batch.column(k).slice(0, 1), last)?.value(0);
            }
        }
        // Row i + 1 against row i.
        let mut rest: Option<BooleanArray> = None;
        for k in 0..keys {
            let column = batch.column(k);
            let differs = distinct(&column.slice(1, rows - 1), &column.slice(0, rows - 1))?;
            rest = Some(match rest {
                Some(rest) => or(&rest, &differs)?,
                None => differs,
            });
        }
        self.last = Some(
            (0..keys)
                .map(|k| batch.column(k).slice(rows - 1, 1))
                .collect(),
        );
        let rest_kept = rest.as_ref().map_or(0, BooleanArray::true_count);
        if first_differs && rest_kept == rows - 1 {
            return Ok(batch.clone());
        }
        let keep: BooleanArray = std::iter::once(Some(first_differs))
            .chain(rest.iter().flat_map(BooleanArray::iter))
            .collect();
        filter_record_batch(batch, &keep)
    }
}

/// Sort terms that put rows in the byte order of their encoded online keys
/// (`Value::encode`: integers little-endian, strings after their u32
/// little-endian length), so a materialization writes each store in key
/// order as the rows arrive: a B-tree then fills page after page instead of
/// touching every page per batch. Other types sort by value, which is not
/// their byte order; the writer sorts each batch anyway, so an order that
/// is off costs time, never correctness, as long as each term tells
/// different keys apart (`FirstPerKey` needs equal keys adjacent).
fn encoded_key_order(column: &str, value_type: &ValueType) -> Vec<String> {
    match value_type.scalar() {
        Some(ScalarType::Int32) => vec![swap32(&format!("CAST({column} AS BIGINT)"))],
        Some(ScalarType::Int64) => vec![swap64(column)],
        Some(ScalarType::String) => vec![
            swap32(&format!("CAST(octet_length(encode({column})) AS BIGINT)")),
            format!("encode({column})"),
        ],
        _ => vec![column.to_string()],
    }
}

// One unsigned integer whose big-endian bytes are the little-endian bytes of
// a BIGINT expression: a fixed-width sort key DuckDB radix-sorts (an ORDER
// BY term per byte made it compare wide rows with memcmp). Swapped by
// halves under masks (no shift overflows: DuckDB checks them), which costs
// less than OR-ing 8 shifted bytes: 1M rows sorted 0.19 s against 0.30 s
// (benches/README.md).

/// The low 4 bytes of the BIGINT `expression`, swapped.
fn swap32(expression: &str) -> String {
    let x = format!("CAST(({expression}) & 4294967295 AS UBIGINT)");
    let bytes = swap_halves(&x, 8, 0x00ff_00ff);
    swap_halves(&bytes, 16, 0x0000_ffff)
}

/// The 8 bytes of the BIGINT `expression`, swapped (its bits as an
/// unsigned integer first: a cast alone refuses negatives).
fn swap64(expression: &str) -> String {
    let x = format!(
        "(CAST(({expression}) & 9223372036854775807 AS UBIGINT) | (CAST((({expression}) >> 63) & 1 AS UBIGINT) << 63))"
    );
    let bytes = swap_halves(&x, 8, 0x00ff_00ff_00ff_00ff);
    let pairs = swap_halves(&bytes, 16, 0x0000_ffff_0000_ffff);
    swap_halves(&pairs, 32, 0x0000_0000_ffff_ffff)
}

/// Swaps each pair of adjacent `bits`-wide fields of the UBIGINT `x`, the
/// lower field of each pair selected by `mask`.
fn swap_halves(x: &str, bits: u32, mask: u64) -> String {
    format!("(((({x}) & {mask}::UBIGINT) << {bits}) | ((({x}) >> {bits}) & {mask}::UBIGINT))")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use rand::{Rng, SeedableRng};

    use super::*;

    /// In DuckDB itself, the swapped sort keys are the encoded
    /// (little-endian) bytes read big-endian, for edge and random values.
    #[test]
    fn swapped_keys_are_the_encoded_bytes_read_big_endian() {
        let connection = duckdb::Connection::open_in_memory().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut values = vec![
            i64::MIN,
            i64::MIN + 1,
            -1,
            0,
            1,
            i64::MAX,
            255,
            256,
            -256,
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            1 << 32,
            (1 << 32) - 1,
        ];
        values.extend((0..500).map(|_| rng.random::<i64>()));
        values.extend((0..500).map(|_| i64::from(rng.random::<i32>())));
        for v in values {
            let x = format!("CAST('{v}' AS BIGINT)");
            let (wide, narrow): (u64, u64) = connection
                .query_row(
                    &format!("SELECT {}, {}", swap64(&x), swap32(&x)),
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap();
            assert_eq!(wide, u64::from_be_bytes(v.to_le_bytes()), "{v}");
            let low = (v as i32).to_le_bytes();
            assert_eq!(narrow, u64::from(u32::from_be_bytes(low)), "{v}");
        }
    }

    /// Runs of equal keys (nulls included, two key columns) split across
    /// batches of 1 to 7 rows: the first row of each run is kept, as a
    /// plain pass over all rows keeps it.
    #[test]
    fn first_per_key_keeps_the_first_row_of_each_run_across_batches() {
        for seed in 0..100 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut keys: Vec<(Option<i32>, Option<String>)> = Vec::new();
            for _ in 0..rng.random_range(0..60) {
                let key = (
                    (rng.random_range(0..5) != 0).then(|| rng.random_range(0..3)),
                    (rng.random_range(0..5) != 0)
                        .then(|| ["", "a", "b"][rng.random_range(0..3)].to_string()),
                );
                for _ in 0..rng.random_range(1..4) {
                    keys.push(key.clone());
                }
            }
            let expected: Vec<i64> = (0..keys.len())
                .filter(|&i| i == 0 || keys[i] != keys[i - 1])
                .map(|i| i as i64)
                .collect();
            let schema = Arc::new(Schema::new(vec![
                Field::new("k0", DataType::Int32, true),
                Field::new("k1", DataType::Utf8, true),
                Field::new("row", DataType::Int64, false),
            ]));
            let mut first = FirstPerKey::default();
            let mut kept = Vec::new();
            let mut at = 0;
            while at < keys.len() {
                let n = rng.random_range(1..8).min(keys.len() - at);
                let part = &keys[at..at + n];
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int32Array::from(
                            part.iter().map(|k| k.0).collect::<Vec<_>>(),
                        )),
                        Arc::new(StringArray::from(
                            part.iter().map(|k| k.1.clone()).collect::<Vec<_>>(),
                        )),
                        Arc::new(Int64Array::from(
                            (at as i64..(at + n) as i64).collect::<Vec<_>>(),
                        )),
                    ],
                )
                .unwrap();
                let out = first.filter(&batch, 2).unwrap();
                let rows = out.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
                kept.extend(rows.values().iter().copied());
                at += n;
            }
            assert_eq!(kept, expected, "seed {seed}");
        }
    }
}
