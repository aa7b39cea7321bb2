//! Turning materialized Arrow batches into online records.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array,
    Int64Array, ListArray, StringArray, TimestampNanosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::record::{encode_key, Record};
use super::value::Value;
use super::{KeyedRecord, OnlineError};
use crate::registry::{ValueType, ViewSelection};

fn canonical(ty: &ValueType) -> DataType {
    ty.to_arrow(&DataType::Timestamp(TimeUnit::Nanosecond, None))
}

/// A batch of `columns` as [`records_from_batch`] reads them: by
/// position, so the field names are placeholders.
pub fn batch_of(columns: Vec<ArrayRef>) -> Result<RecordBatch, arrow::error::ArrowError> {
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
}

/// A column cast to the one Arrow type Wafer reads for its declared type.
struct Column {
    array: ArrayRef,
    ty: ValueType,
}

impl Column {
    fn new(array: &ArrayRef, ty: &ValueType) -> Result<Self, OnlineError> {
        let target = canonical(ty);
        let array = if array.data_type() == &target {
            array.clone()
        } else {
            cast(array, &target).map_err(|e| {
                OnlineError::Data(format!("cannot read {} as {ty}: {e}", array.data_type()))
            })?
        };
        Ok(Column {
            array,
            ty: ty.clone(),
        })
    }

    fn value(&self, row: usize) -> Value {
        value_at(&self.array, &self.ty, row)
    }
}

/// The value at `row` of an array of `ty` (null when the row is null).
pub fn value_at(array: &ArrayRef, ty: &ValueType, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    let any = array.as_any();
    let value = match ty {
        ValueType::Bool => any
            .downcast_ref::<BooleanArray>()
            .map(|a| Value::Bool(a.value(row))),
        ValueType::Int32 => any
            .downcast_ref::<Int32Array>()
            .map(|a| Value::Int32(a.value(row))),
        ValueType::Int64 => any
            .downcast_ref::<Int64Array>()
            .map(|a| Value::Int64(a.value(row))),
        ValueType::Float32 => any
            .downcast_ref::<Float32Array>()
            .map(|a| Value::Float32(a.value(row))),
        ValueType::Float64 => any
            .downcast_ref::<Float64Array>()
            .map(|a| Value::Float64(a.value(row))),
        ValueType::String => any
            .downcast_ref::<StringArray>()
            .map(|a| Value::String(a.value(row).to_string())),
        ValueType::Bytes => any
            .downcast_ref::<BinaryArray>()
            .map(|a| Value::Bytes(a.value(row).to_vec())),
        ValueType::Timestamp => any
            .downcast_ref::<TimestampNanosecondArray>()
            .map(|a| Value::Timestamp(a.value(row))),
        ValueType::List(item) => any.downcast_ref::<ListArray>().map(|a| {
            let items = a.value(row);
            let item_type = ValueType::from_scalar_type(*item);
            Value::List(
                (0..items.len())
                    .map(|i| value_at(&items, &item_type, i))
                    .collect(),
            )
        }),
    };
    value.unwrap_or(Value::Null)
}

/// Builds an Arrow array of `ty`'s canonical type from values (the inverse
/// of reading one); a value of another type is an error naming it.
pub fn array_from_values(values: &[Value], ty: &ValueType) -> Result<ArrayRef, String> {
    use arrow::array::{
        BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder,
        StringBuilder, TimestampNanosecondBuilder,
    };
    fn mismatch(value: &Value, ty: &ValueType) -> String {
        format!("{value} is not a {ty}")
    }
    macro_rules! build {
        ($builder:expr, $variant:ident, $convert:expr) => {{
            let mut builder = $builder;
            for value in values {
                match value {
                    Value::Null => builder.append_null(),
                    Value::$variant(v) => builder.append_value($convert(v)),
                    other => return Err(mismatch(other, ty)),
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    Ok(match ty {
        ValueType::Bool => build!(BooleanBuilder::new(), Bool, |v: &bool| *v),
        ValueType::Int32 => build!(Int32Builder::new(), Int32, |v: &i32| *v),
        ValueType::Int64 => build!(Int64Builder::new(), Int64, |v: &i64| *v),
        ValueType::Float32 => build!(Float32Builder::new(), Float32, |v: &f32| *v),
        ValueType::Float64 => build!(Float64Builder::new(), Float64, |v: &f64| *v),
        ValueType::String => build!(StringBuilder::new(), String, |v: &String| v.clone()),
        ValueType::Bytes => build!(BinaryBuilder::new(), Bytes, |v: &Vec<u8>| v.clone()),
        ValueType::Timestamp => {
            build!(TimestampNanosecondBuilder::new(), Timestamp, |v: &i64| *v)
        }
        ValueType::List(item) => {
            let item_type = ValueType::from_scalar_type(*item);
            let mut offsets = vec![0i32];
            let mut flat = Vec::new();
            let mut validity = Vec::with_capacity(values.len());
            for value in values {
                match value {
                    Value::Null => validity.push(false),
                    Value::List(items) => {
                        flat.extend(items.iter().cloned());
                        validity.push(true);
                    }
                    other => return Err(mismatch(other, ty)),
                }
                offsets
                    .push(i32::try_from(flat.len()).map_err(|_| "a list column over 2^31 items")?);
            }
            let items = array_from_values(&flat, &item_type)?;
            Arc::new(
                ListArray::try_new(
                    Arc::new(Field::new("item", canonical(&item_type), true)),
                    arrow::buffer::OffsetBuffer::new(offsets.into()),
                    items,
                    Some(validity.into()),
                )
                .map_err(|e| e.to_string())?,
            )
        }
    })
}

/// Converts one batch of the materialization query (join keys, `ts`,
/// `created`, then the view's features in declared order) into encoded
/// (key, record) pairs.
pub fn records_from_batch(
    project: &str,
    view: &ViewSelection,
    batch: &RecordBatch,
) -> Result<Vec<KeyedRecord>, OnlineError> {
    let keys = view.join_keys.len();
    let features = &view.view.features;
    if batch.num_columns() != keys + 2 + features.len() {
        return Err(OnlineError::Data(format!(
            "expected {} columns, got {}",
            keys + 2 + features.len(),
            batch.num_columns()
        )));
    }
    let key_columns = view
        .join_keys
        .iter()
        .enumerate()
        .map(|(i, key)| Column::new(batch.column(i), &key.value_type))
        .collect::<Result<Vec<_>, _>>()?;
    let event = batch
        .column(keys)
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
        .cloned();
    let created = batch
        .column(keys + 1)
        .as_primitive_opt::<arrow::datatypes::Int64Type>()
        .cloned();
    let (Some(event), Some(created)) = (event, created) else {
        return Err(OnlineError::Data(
            "timestamps must be BIGINT nanoseconds".into(),
        ));
    };
    let feature_columns = features
        .iter()
        .enumerate()
        .map(|(i, f)| Column::new(batch.column(keys + 2 + i), &f.value_type))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut key_values = Vec::with_capacity(keys);
    for row in 0..batch.num_rows() {
        key_values.clear();
        key_values.extend(key_columns.iter().map(|c| c.value(row)));
        if key_values.iter().any(Value::is_null) || event.is_null(row) {
            continue; // A row without a full key or time identifies nothing.
        }
        let record = Record {
            event_timestamp: event.value(row),
            created_timestamp: created.is_valid(row).then(|| created.value(row)),
            features: features
                .iter()
                .zip(&feature_columns)
                .map(|(f, c)| (f.name.clone(), c.value(row)))
                .collect(),
        };
        out.push((
            encode_key(project, &view.view.name, &key_values),
            record.encode(),
        ));
    }
    Ok(out)
}
