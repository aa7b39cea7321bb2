//! The host side of ABI v1 (`sdk/ABI.md`): Arrow columns are copied into
//! the module's memory buffer by buffer (no per-value encoding), and the
//! outputs are copied back into Arrow arrays after checking every pointer
//! and offset the module wrote.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, ListArray, PrimitiveArray, StringArray,
};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType,
};

use super::schema::{ModuleSchema, SchemaField};
use super::TransformError;
use crate::types::{ScalarType, ValueType};

pub(crate) const HEADER_BYTES: usize = 16;
pub(crate) const COLUMN_BYTES: usize = 16;
const ALIGN: usize = 8;

/// The Arrow type a column of `value_type` travels as.
pub fn arrow_type(value_type: &ValueType) -> DataType {
    value_type.to_arrow(&DataType::Timestamp(
        TimeUnit::Microsecond,
        Some("UTC".into()),
    ))
}

/// Bytes per value of a fixed-width type, per element of a list's items,
/// 1 for strings and bytes; `None` for bool (bit-packed).
fn width(value_type: &ValueType) -> Option<usize> {
    match value_type {
        ValueType::Bool => None,
        ValueType::Int32 | ValueType::Float32 => Some(4),
        ValueType::Int64 | ValueType::Float64 | ValueType::Timestamp => Some(8),
        ValueType::String | ValueType::Bytes => Some(1),
        ValueType::List(ScalarType::Int32 | ScalarType::Float32) => Some(4),
        ValueType::List(_) => Some(8),
    }
}

fn variable_width(value_type: &ValueType) -> bool {
    matches!(
        value_type,
        ValueType::String | ValueType::Bytes | ValueType::List(_)
    )
}

fn bitmap_bytes(rows: usize) -> usize {
    rows.div_ceil(8)
}

/// Where one input column's buffers go, relative to the arena's start.
struct InputPlacement {
    validity: Option<(usize, Buffer)>,
    values: (usize, Buffer),
    offsets: Option<(usize, Vec<i32>)>,
    values_len: u32,
}

/// Where the host places an output column's buffers.
struct OutputPlacement {
    validity: usize,
    /// Fixed width: the values; variable width: the offsets.
    buffer: usize,
    buffer_bytes: usize,
}

/// The arena one call needs: descriptor, inputs, output buffers.
pub(crate) struct Arena {
    pub rows: usize,
    pub size: usize,
    inputs: Vec<InputPlacement>,
    outputs: Vec<OutputPlacement>,
}

fn reserve(cursor: &mut usize, bytes: usize) -> usize {
    let at = cursor.next_multiple_of(ALIGN);
    *cursor = at + bytes;
    at
}

fn input_error(field: &SchemaField, message: impl Into<String>) -> TransformError {
    TransformError::Input {
        name: field.name.clone(),
        message: message.into(),
    }
}

/// Lays out a call for `inputs` (already of the schema's Arrow types).
pub(crate) fn plan(
    schema: &ModuleSchema,
    inputs: &[ArrayRef],
    rows: usize,
) -> Result<Arena, TransformError> {
    let mut cursor = HEADER_BYTES + COLUMN_BYTES * (schema.inputs.len() + schema.outputs.len());
    let mut placed_inputs = Vec::with_capacity(inputs.len());
    for (field, array) in schema.inputs.iter().zip(inputs) {
        let validity = match array.nulls() {
            Some(nulls) if nulls.null_count() > 0 => {
                let bits = nulls.inner().sliced();
                Some((reserve(&mut cursor, bits.len()), bits))
            }
            _ => None,
        };
        let (values, offsets, values_len) = input_buffers(field, array)?;
        let values_at = reserve(&mut cursor, values.len());
        let offsets = offsets.map(|o| (reserve(&mut cursor, o.len() * 4), o));
        placed_inputs.push(InputPlacement {
            validity,
            values: (values_at, values),
            offsets,
            values_len,
        });
    }
    let mut placed_outputs = Vec::with_capacity(schema.outputs.len());
    for field in &schema.outputs {
        let validity = reserve(&mut cursor, bitmap_bytes(rows));
        let buffer_bytes = if variable_width(&field.value_type) {
            (rows + 1) * 4
        } else {
            match width(&field.value_type) {
                Some(w) => rows * w,
                None => bitmap_bytes(rows),
            }
        };
        let buffer = reserve(&mut cursor, buffer_bytes);
        placed_outputs.push(OutputPlacement {
            validity,
            buffer,
            buffer_bytes,
        });
    }
    Ok(Arena {
        rows,
        size: cursor.max(1),
        inputs: placed_inputs,
        outputs: placed_outputs,
    })
}

/// Values buffer, offsets (rebased to start at 0) and the item count.
fn input_buffers(
    field: &SchemaField,
    array: &ArrayRef,
) -> Result<(Buffer, Option<Vec<i32>>, u32), TransformError> {
    let fixed = |w: usize| {
        let data = array.to_data();
        data.buffers()[0].slice_with_length(data.offset() * w, data.len() * w)
    };
    let rebase = |offsets: &[i32]| -> (Vec<i32>, usize, usize) {
        let first = offsets.first().copied().unwrap_or(0);
        let last = offsets.last().copied().unwrap_or(0);
        (
            offsets.iter().map(|o| o - first).collect(),
            first as usize,
            last as usize,
        )
    };
    Ok(match &field.value_type {
        ValueType::Bool => (array.as_boolean().values().sliced(), None, 0),
        ValueType::String => {
            let strings = array.as_string::<i32>();
            let (offsets, first, last) = rebase(strings.value_offsets());
            let data = strings.values().slice_with_length(first, last - first);
            (data, Some(offsets), (last - first) as u32)
        }
        ValueType::Bytes => {
            let bytes = array.as_binary::<i32>();
            let (offsets, first, last) = rebase(bytes.value_offsets());
            let data = bytes.values().slice_with_length(first, last - first);
            (data, Some(offsets), (last - first) as u32)
        }
        ValueType::List(item) => {
            let list = array.as_list::<i32>();
            let (offsets, first, last) = rebase(list.value_offsets());
            let items = list.values().slice(first, last - first);
            if items.null_count() > 0 {
                return Err(input_error(
                    field,
                    "a list holds a null element; lists passed to transforms hold no nulls",
                ));
            }
            let w = width(&ValueType::from_scalar_type(*item)).unwrap_or(8);
            let data = items.to_data();
            let values = data.buffers()[0].slice_with_length(data.offset() * w, data.len() * w);
            (values, Some(offsets), (last - first) as u32)
        }
        other => (fixed(width(other).unwrap_or(8)), None, 0),
    })
}

fn put_u32(memory: &mut [u8], at: usize, value: u32) {
    memory[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn get_u32(memory: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&memory[at..at + 4]);
    u32::from_le_bytes(bytes)
}

/// Writes the descriptor and the inputs at `base` (inside `memory`, checked
/// by the caller), and zeroes the output buffers.
pub(crate) fn write(arena: &Arena, schema: &ModuleSchema, memory: &mut [u8], base: usize) {
    let region = &mut memory[base..base + arena.size];
    let abs = |relative: usize| (base + relative) as u32;
    put_u32(region, 0, 1);
    put_u32(region, 4, arena.rows as u32);
    put_u32(region, 8, schema.inputs.len() as u32);
    put_u32(region, 12, schema.outputs.len() as u32);
    for (i, input) in arena.inputs.iter().enumerate() {
        let descriptor = HEADER_BYTES + i * COLUMN_BYTES;
        let validity = match &input.validity {
            Some((at, bits)) => {
                region[*at..*at + bits.len()].copy_from_slice(bits);
                abs(*at)
            }
            None => 0,
        };
        let (values_at, values) = &input.values;
        region[*values_at..*values_at + values.len()].copy_from_slice(values);
        let offsets = match &input.offsets {
            Some((at, offsets)) => {
                for (k, offset) in offsets.iter().enumerate() {
                    region[at + 4 * k..at + 4 * k + 4].copy_from_slice(&offset.to_le_bytes());
                }
                abs(*at)
            }
            None => 0,
        };
        put_u32(region, descriptor, validity);
        put_u32(region, descriptor + 4, abs(*values_at));
        put_u32(region, descriptor + 8, offsets);
        put_u32(region, descriptor + 12, input.values_len);
    }
    let first_output = HEADER_BYTES + schema.inputs.len() * COLUMN_BYTES;
    for ((j, output), field) in arena.outputs.iter().enumerate().zip(&schema.outputs) {
        let descriptor = first_output + j * COLUMN_BYTES;
        let bitmap = bitmap_bytes(arena.rows);
        region[output.validity..output.validity + bitmap].fill(0);
        region[output.buffer..output.buffer + output.buffer_bytes].fill(0);
        let variable = variable_width(&field.value_type);
        put_u32(region, descriptor, abs(output.validity));
        put_u32(
            region,
            descriptor + 4,
            if variable { 0 } else { abs(output.buffer) },
        );
        put_u32(
            region,
            descriptor + 8,
            if variable { abs(output.buffer) } else { 0 },
        );
        put_u32(region, descriptor + 12, 0);
    }
}

fn bad(field: &SchemaField, message: impl std::fmt::Display) -> TransformError {
    TransformError::BadOutput(format!("output `{}`: {message}", field.name))
}

/// Reads the outputs back, checking everything the module wrote.
pub(crate) fn read_outputs(
    arena: &Arena,
    schema: &ModuleSchema,
    memory: &[u8],
    base: usize,
    max_output_bytes: usize,
) -> Result<Vec<ArrayRef>, TransformError> {
    let rows = arena.rows;
    let region = &memory[base..base + arena.size];
    let first_output = HEADER_BYTES + schema.inputs.len() * COLUMN_BYTES;
    let mut total_variable = 0usize;
    let mut out = Vec::with_capacity(schema.outputs.len());
    for ((j, output), field) in arena.outputs.iter().enumerate().zip(&schema.outputs) {
        let validity = Buffer::from(&region[output.validity..output.validity + bitmap_bytes(rows)]);
        let nulls = NullBuffer::new(BooleanBuffer::new(validity, 0, rows));
        let buffer = &region[output.buffer..output.buffer + output.buffer_bytes];
        let array: ArrayRef = if variable_width(&field.value_type) {
            let descriptor = first_output + j * COLUMN_BYTES;
            let data_ptr = get_u32(region, descriptor + 4) as usize;
            let items = get_u32(region, descriptor + 12) as usize;
            let w = width(&field.value_type).unwrap_or(1);
            let data_bytes = items
                .checked_mul(w)
                .ok_or_else(|| bad(field, "data length overflows"))?;
            total_variable = total_variable.saturating_add(data_bytes);
            if total_variable > max_output_bytes {
                return Err(TransformError::OutputTooLarge {
                    bytes: total_variable,
                    limit: max_output_bytes,
                });
            }
            let end = data_ptr
                .checked_add(data_bytes)
                .filter(|&end| end <= memory.len())
                .ok_or_else(|| {
                    bad(
                        field,
                        format!(
                            "data at {data_ptr} with {items} items runs past the end of memory ({} bytes)",
                            memory.len()
                        ),
                    )
                })?;
            let offsets: Vec<i32> = buffer
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            check_offsets(field, &offsets, items)?;
            let data = Buffer::from(&memory[data_ptr..end]);
            let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
            match &field.value_type {
                ValueType::String => Arc::new(
                    StringArray::try_new(offsets, data, Some(nulls)).map_err(|e| bad(field, e))?,
                ),
                ValueType::Bytes => Arc::new(
                    BinaryArray::try_new(offsets, data, Some(nulls)).map_err(|e| bad(field, e))?,
                ),
                ValueType::List(item) => {
                    let item_type = ValueType::from_scalar_type(*item);
                    let child = fixed_array(&item_type, data, items, None);
                    Arc::new(
                        ListArray::try_new(
                            Arc::new(Field::new_list_field(arrow_type(&item_type), true)),
                            offsets,
                            child,
                            Some(nulls),
                        )
                        .map_err(|e| bad(field, e))?,
                    )
                }
                _ => unreachable!("only strings, bytes and lists are variable width"),
            }
        } else {
            fixed_array(&field.value_type, Buffer::from(buffer), rows, Some(nulls))
        };
        out.push(array);
    }
    Ok(out)
}

fn check_offsets(field: &SchemaField, offsets: &[i32], items: usize) -> Result<(), TransformError> {
    if offsets.first().copied().unwrap_or(0) != 0 {
        return Err(bad(field, "offsets must start at 0"));
    }
    for (row, pair) in offsets.windows(2).enumerate() {
        if pair[1] < pair[0] {
            return Err(bad(field, format!("offsets decrease at row {row}")));
        }
    }
    let last = offsets.last().copied().unwrap_or(0) as usize;
    if last > items {
        return Err(bad(
            field,
            format!("offsets reach {last} but the data holds {items} items"),
        ));
    }
    Ok(())
}

fn primitive<T: ArrowPrimitiveType>(
    data: Buffer,
    len: usize,
    nulls: Option<NullBuffer>,
) -> PrimitiveArray<T> {
    PrimitiveArray::<T>::new(ScalarBuffer::new(data, 0, len), nulls)
}

/// A fixed-width array over `data` (bit-packed for bool).
fn fixed_array(
    value_type: &ValueType,
    data: Buffer,
    len: usize,
    nulls: Option<NullBuffer>,
) -> ArrayRef {
    match value_type {
        ValueType::Bool => Arc::new(BooleanArray::new(BooleanBuffer::new(data, 0, len), nulls)),
        ValueType::Int32 => Arc::new(primitive::<Int32Type>(data, len, nulls)),
        ValueType::Int64 => Arc::new(primitive::<Int64Type>(data, len, nulls)),
        ValueType::Float32 => Arc::new(primitive::<Float32Type>(data, len, nulls)),
        ValueType::Float64 => Arc::new(primitive::<Float64Type>(data, len, nulls)),
        ValueType::Timestamp => {
            Arc::new(primitive::<TimestampMicrosecondType>(data, len, nulls).with_timezone("UTC"))
        }
        _ => unreachable!("not a fixed-width type"),
    }
}
