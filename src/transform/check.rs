//! The upload self-check: sample rows must give identical bits as one
//! batch, reversed, in shuffled chunks of random sizes, and one row at a
//! time. The calls follow one another on the same warm instance, as
//! lookups do. A transform whose row depends on its neighbours (batch
//! statistics), on the batch size, or on earlier calls (hidden state) would
//! give different features online (one row) and offline (many rows); this
//! catches the common cases before the module is stored.
//!
//! What it cannot catch: behaviour that only appears for inputs it did not
//! sample (a value that triggers a branch), after more calls than it makes
//! (about a hundred; a warm instance serves up to 10,000), or for batches
//! larger than its largest. The samples are seeded by the module's hash,
//! so a module fails or passes the same way every time.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Float32Array, Float64Array, Int32Array,
    Int64Array, ListBuilder, PrimitiveBuilder, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{ArrowPrimitiveType, Float32Type, Float64Type, Int32Type, Int64Type};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::CompiledTransform;
use super::TransformError;
use crate::types::{ScalarType, ValueType};

/// Rows in the sample; the first batch runs them all at once.
const SAMPLE_ROWS: usize = 512;
/// Rows run alone, one call each.
const SINGLE_ROWS: usize = 64;
/// Largest shuffled chunk.
const MAX_CHUNK: usize = 100;

pub(crate) fn row_wise(transform: &CompiledTransform) -> Result<(), TransformError> {
    let seed = u64::from_str_radix(&transform.sha256()[..16], 16).unwrap_or(0x5afe_cafe);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let inputs = sample_inputs(transform, &mut rng, SAMPLE_ROWS);
    let batch = transform.run(&inputs)?;
    let outputs = &transform.schema().outputs;
    // Each check runs some rows in some arrangement and compares every
    // row's outputs with the whole batch's.
    let compare = |rows: &[usize], got: &[ArrayRef], how: &str| {
        for (position, &row) in rows.iter().enumerate() {
            for (j, field) in outputs.iter().enumerate() {
                if bits(&got[j], position) != bits(&batch[j], row) {
                    return Err(TransformError::NotRowWise(format!(
                        "output `{}` of sample row {row} differs between a batch of {SAMPLE_ROWS} rows and {how}",
                        field.name
                    )));
                }
            }
        }
        Ok(())
    };
    let take = |rows: &[usize]| -> Vec<ArrayRef> {
        let indices = arrow::array::UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
        inputs
            .iter()
            .map(|a| arrow::compute::take(a.as_ref(), &indices, None).unwrap_or_else(|_| a.clone()))
            .collect()
    };

    let reversed: Vec<usize> = (0..SAMPLE_ROWS).rev().collect();
    compare(
        &reversed,
        &transform.run(&take(&reversed))?,
        "the batch reversed",
    )?;

    let mut shuffled: Vec<usize> = (0..SAMPLE_ROWS).collect();
    shuffled.shuffle(&mut rng);
    let mut start = 0;
    while start < shuffled.len() {
        let len = rng.random_range(1..=MAX_CHUNK).min(shuffled.len() - start);
        let chunk = &shuffled[start..start + len];
        compare(
            chunk,
            &transform.run(&take(chunk))?,
            &format!("a shuffled chunk of {len} rows"),
        )?;
        start += len;
    }

    for &row in shuffled.iter().take(SINGLE_ROWS) {
        let single: Vec<ArrayRef> = inputs.iter().map(|a| a.slice(row, 1)).collect();
        compare(&[row], &transform.run(&single)?, "the row alone")?;
    }
    Ok(())
}

/// The exact bytes of one value, `None` for null.
fn bits(array: &ArrayRef, row: usize) -> Option<Vec<u8>> {
    if array.is_null(row) {
        return None;
    }
    fn prim<T: ArrowPrimitiveType>(array: &ArrayRef, row: usize) -> Vec<u8> {
        let value = array.as_primitive::<T>().value(row);
        arrow::datatypes::ToByteSlice::to_byte_slice(&value).to_vec()
    }
    use arrow::datatypes::DataType as D;
    Some(match array.data_type() {
        D::Boolean => vec![array.as_boolean().value(row) as u8],
        D::Int32 => prim::<Int32Type>(array, row),
        D::Int64 => prim::<Int64Type>(array, row),
        D::Float32 => prim::<Float32Type>(array, row),
        D::Float64 => prim::<Float64Type>(array, row),
        D::Timestamp(..) => prim::<arrow::datatypes::TimestampMicrosecondType>(array, row),
        D::Utf8 => array.as_string::<i32>().value(row).as_bytes().to_vec(),
        D::Binary => array.as_binary::<i32>().value(row).to_vec(),
        D::List(_) => {
            let item = array.as_list::<i32>().value(row);
            let mut out = Vec::new();
            for i in 0..item.len() {
                out.extend(bits(&item, i).unwrap_or_default());
            }
            out
        }
        _ => Vec::new(),
    })
}

/// Random but fixed sample inputs: nulls, NaN, infinities, extremes, empty
/// and non-ASCII strings, empty lists.
fn sample_inputs(
    transform: &CompiledTransform,
    rng: &mut ChaCha8Rng,
    rows: usize,
) -> Vec<ArrayRef> {
    transform
        .schema()
        .inputs
        .iter()
        .map(|field| sample_column(rng, &field.value_type, rows))
        .collect()
}

fn maybe<T>(rng: &mut ChaCha8Rng, value: impl FnOnce(&mut ChaCha8Rng) -> T) -> Option<T> {
    if rng.random_bool(0.15) {
        None
    } else {
        Some(value(rng))
    }
}

fn sample_f64(rng: &mut ChaCha8Rng) -> f64 {
    match rng.random_range(0..10) {
        0 => f64::NAN,
        1 => [f64::INFINITY, f64::NEG_INFINITY, -0.0, f64::MAX][rng.random_range(0..4)],
        _ => rng.random_range(-1000.0..1000.0),
    }
}

fn sample_i64(rng: &mut ChaCha8Rng) -> i64 {
    match rng.random_range(0..8) {
        0 => [0, -1, i64::MAX, i64::MIN][rng.random_range(0..4)],
        _ => rng.random_range(-10_000..10_000),
    }
}

fn sample_string(rng: &mut ChaCha8Rng) -> String {
    const WORDS: &[&str] = &[
        "",
        "a",
        "ada@example.com",
        "x@GMAIL.com",
        "héllo wörld",
        "@",
        "日本",
    ];
    let mut out = String::new();
    for _ in 0..rng.random_range(0..3) {
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    out
}

fn sample_column(rng: &mut ChaCha8Rng, value_type: &ValueType, rows: usize) -> ArrayRef {
    match value_type {
        ValueType::Bool => Arc::new(BooleanArray::from_iter(
            (0..rows).map(|_| maybe(rng, |r| r.random_bool(0.5))),
        )),
        ValueType::Int32 => Arc::new(Int32Array::from_iter(
            (0..rows).map(|_| maybe(rng, |r| sample_i64(r) as i32)),
        )),
        ValueType::Int64 => Arc::new(Int64Array::from_iter(
            (0..rows).map(|_| maybe(rng, sample_i64)),
        )),
        ValueType::Float32 => Arc::new(Float32Array::from_iter(
            (0..rows).map(|_| maybe(rng, |r| sample_f64(r) as f32)),
        )),
        ValueType::Float64 => Arc::new(Float64Array::from_iter(
            (0..rows).map(|_| maybe(rng, sample_f64)),
        )),
        ValueType::Timestamp => Arc::new(
            TimestampMicrosecondArray::from_iter(
                (0..rows).map(|_| maybe(rng, |r| r.random_range(0..2_000_000_000_000_000i64))),
            )
            .with_timezone("UTC"),
        ),
        ValueType::String => {
            let mut builder = StringBuilder::new();
            for _ in 0..rows {
                builder.append_option(maybe(rng, sample_string));
            }
            Arc::new(builder.finish())
        }
        ValueType::Bytes => {
            let mut builder = BinaryBuilder::new();
            for _ in 0..rows {
                builder.append_option(maybe(rng, |r| sample_string(r).into_bytes()));
            }
            Arc::new(builder.finish())
        }
        ValueType::List(item) => match item {
            ScalarType::Float32 => list::<Float32Type>(rng, rows, |r| sample_f64(r) as f32),
            ScalarType::Float64 => list::<Float64Type>(rng, rows, sample_f64),
            ScalarType::Int32 => list::<Int32Type>(rng, rows, |r| sample_i64(r) as i32),
            _ => list::<Int64Type>(rng, rows, sample_i64),
        },
    }
}

fn list<T: ArrowPrimitiveType>(
    rng: &mut ChaCha8Rng,
    rows: usize,
    mut value: impl FnMut(&mut ChaCha8Rng) -> T::Native,
) -> ArrayRef {
    let mut builder = ListBuilder::new(PrimitiveBuilder::<T>::new());
    // One length for most rows, so that pairs of lists often match in size.
    let common = rng.random_range(0..6);
    for _ in 0..rows {
        if rng.random_bool(0.15) {
            builder.append_null();
            continue;
        }
        let len = if rng.random_bool(0.8) {
            common
        } else {
            rng.random_range(0..6)
        };
        for _ in 0..len {
            builder.values().append_value(value(rng));
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}
