//! Values in and out of Arrow arrays: each [`ValueType`] has one canonical
//! Arrow type (timestamps as UTC nanoseconds), which any compatible array is
//! cast to before it is read.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
    ListArray, StringArray, TimestampNanosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, TimeUnit};

use super::value::Value;
use crate::types::ValueType;

/// The Arrow type values of `ty` are built as and read from.
pub fn canonical(ty: &ValueType) -> DataType {
    ty.to_arrow(&DataType::Timestamp(TimeUnit::Nanosecond, None))
}

/// An array cast to `ty`'s canonical Arrow type, ready for [`value_at`].
#[derive(Debug, Clone)]
pub struct Column {
    array: ArrayRef,
    ty: ValueType,
}

impl Column {
    /// Casts `array` (of any type Arrow can cast to `ty`'s) or says why not.
    pub fn new(array: &ArrayRef, ty: &ValueType) -> Result<Self, String> {
        let target = canonical(ty);
        let array = if array.data_type() == &target {
            array.clone()
        } else {
            cast(array, &target)
                .map_err(|e| format!("cannot read {} as {ty}: {e}", array.data_type()))?
        };
        Ok(Column {
            array,
            ty: ty.clone(),
        })
    }

    pub fn value(&self, row: usize) -> Value {
        value_at(&self.array, &self.ty, row)
    }

    /// The array, of `ty`'s canonical type.
    pub fn array(&self) -> &ArrayRef {
        &self.array
    }

    pub fn len(&self) -> usize {
        self.array.len()
    }

    pub fn is_empty(&self) -> bool {
        self.array.is_empty()
    }

    /// Every value, in row order.
    pub fn values(&self) -> Vec<Value> {
        (0..self.len()).map(|row| self.value(row)).collect()
    }
}

/// The value at `row` of an array of `ty`'s canonical type (null when the
/// row is null or the array is of another type: see [`Column`]).
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
