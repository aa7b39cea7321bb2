//! JSON in and out of a transform, for `wafer transform test` and the HTTP
//! API: an object of input name to a value (one row) or to an array (a
//! column), and output rows as objects.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use serde_json::{Map, Value};

use super::schema::{ModuleSchema, SchemaField};
use super::TransformError;
use crate::registry::{ScalarType, ValueType};

fn wrong(field: &SchemaField, row: usize, value: &Value) -> TransformError {
    TransformError::Input {
        name: field.name.clone(),
        message: format!(
            "row {row}: {value} is not a {} (null is allowed)",
            field.value_type
        ),
    }
}

/// Input columns in schema order from `{"name": value}` (one row) or
/// `{"name": [values]}` (columns of equal length).
pub fn input_columns(
    schema: &ModuleSchema,
    input: &Value,
) -> Result<Vec<ArrayRef>, TransformError> {
    let Value::Object(object) = input else {
        return Err(TransformError::Input {
            name: "input".to_string(),
            message: "expected a JSON object of input names to values".to_string(),
        });
    };
    for key in object.keys() {
        if !schema.inputs.iter().any(|f| &f.name == key) {
            return Err(TransformError::Input {
                name: key.clone(),
                message: format!(
                    "is not an input of this transform (inputs: {})",
                    schema
                        .inputs
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    // Columns when any input is an array of the row count; a list input's
    // single value is an array too, so decide by the first non-list input.
    let columnar = schema.inputs.iter().any(|f| {
        !matches!(f.value_type, ValueType::List(_))
            && object.get(&f.name).is_some_and(Value::is_array)
    }) || (schema
        .inputs
        .iter()
        .all(|f| matches!(f.value_type, ValueType::List(_)))
        && object.values().all(|v| {
            v.as_array()
                .is_some_and(|a| a.iter().all(|x| x.is_array() || x.is_null()))
        }));
    let mut columns = Vec::new();
    let mut rows: Option<usize> = None;
    for field in &schema.inputs {
        let value = object
            .get(&field.name)
            .ok_or_else(|| TransformError::Input {
                name: field.name.clone(),
                message: "is missing".to_string(),
            })?;
        let values: Vec<&Value> = if columnar {
            value
                .as_array()
                .ok_or_else(|| TransformError::Input {
                    name: field.name.clone(),
                    message: "expected an array, as the other inputs are columns".to_string(),
                })?
                .iter()
                .collect()
        } else {
            vec![value]
        };
        if *rows.get_or_insert(values.len()) != values.len() {
            return Err(TransformError::Input {
                name: field.name.clone(),
                message: "columns have unequal lengths".to_string(),
            });
        }
        columns.push(column(field, &values)?);
    }
    Ok(columns)
}

fn column(field: &SchemaField, values: &[&Value]) -> Result<ArrayRef, TransformError> {
    let float = |row: usize, v: &Value| -> Result<f64, TransformError> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| wrong(field, row, v)),
            Value::String(s) => match s.as_str() {
                "NaN" | "nan" => Ok(f64::NAN),
                "inf" | "Infinity" => Ok(f64::INFINITY),
                "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => Err(wrong(field, row, v)),
            },
            _ => Err(wrong(field, row, v)),
        }
    };
    let int = |row: usize, v: &Value| v.as_i64().ok_or_else(|| wrong(field, row, v));
    macro_rules! build {
        ($builder:expr, |$row:ident, $v:ident| $convert:expr) => {{
            let mut builder = $builder;
            for (row, value) in values.iter().enumerate() {
                if value.is_null() {
                    builder.append_null();
                } else {
                    let ($row, $v) = (row, *value);
                    builder.append_value($convert);
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    Ok(match &field.value_type {
        ValueType::Bool => build!(BooleanBuilder::new(), |r, v| v
            .as_bool()
            .ok_or_else(|| wrong(field, r, v))?),
        ValueType::Int32 => build!(Int32Builder::new(), |r, v| i32::try_from(int(r, v)?)
            .map_err(|_| wrong(field, r, v))?),
        ValueType::Int64 => build!(Int64Builder::new(), |r, v| int(r, v)?),
        ValueType::Float32 => build!(Float32Builder::new(), |r, v| float(r, v)? as f32),
        ValueType::Float64 => build!(Float64Builder::new(), |r, v| float(r, v)?),
        ValueType::Timestamp => {
            let array = build!(TimestampMicrosecondBuilder::new(), |r, v| match v {
                Value::String(s) => crate::online::parse_timestamp(s)
                    .map(|nanos| nanos.div_euclid(1000))
                    .ok_or_else(|| wrong(field, r, v))?,
                _ => int(r, v)?,
            });
            Arc::new(
                array
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone()
                    .with_timezone("UTC"),
            )
        }
        ValueType::String => build!(StringBuilder::new(), |r, v| v
            .as_str()
            .ok_or_else(|| wrong(field, r, v))?),
        ValueType::Bytes => build!(BinaryBuilder::new(), |r, v| v
            .as_str()
            .ok_or_else(|| wrong(field, r, v))?
            .as_bytes()),
        ValueType::List(item) => {
            fn items<'v>(
                field: &SchemaField,
                r: usize,
                v: &'v Value,
            ) -> Result<&'v [Value], TransformError> {
                v.as_array()
                    .map(Vec::as_slice)
                    .ok_or_else(|| wrong(field, r, v))
            }
            macro_rules! list {
                ($builder:expr, $convert:expr) => {{
                    let mut builder = ListBuilder::new($builder);
                    for (row, value) in values.iter().enumerate() {
                        if value.is_null() {
                            builder.append_null();
                            continue;
                        }
                        for item in items(field, row, value)? {
                            builder.values().append_value($convert(row, item)?);
                        }
                        builder.append(true);
                    }
                    Arc::new(builder.finish()) as ArrayRef
                }};
            }
            match item {
                ScalarType::Float32 => {
                    list!(Float32Builder::new(), |r, v| float(r, v).map(|x| x as f32))
                }
                ScalarType::Float64 => list!(Float64Builder::new(), float),
                ScalarType::Int32 => list!(Int32Builder::new(), |r, v| int(r, v)
                    .and_then(|x| i32::try_from(x).map_err(|_| wrong(field, r, v)))),
                _ => list!(Int64Builder::new(), int),
            }
        }
    })
}

fn float_json(value: f64) -> Value {
    // JSON has no NaN or infinities: spell them as protobuf's JSON mapping
    // does, as lookups' responses do.
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or_else(|| {
            let name = if value.is_nan() {
                "NaN"
            } else if value > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            Value::String(name.to_string())
        })
}

fn value_json(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    use arrow::datatypes::DataType as D;
    match array.data_type() {
        D::Boolean => Value::Bool(array.as_boolean().value(row)),
        D::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        D::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        D::Float32 => float_json(array.as_primitive::<Float32Type>().value(row) as f64),
        D::Float64 => float_json(array.as_primitive::<Float64Type>().value(row)),
        D::Timestamp(..) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| Value::String(t.to_rfc3339()))
                .unwrap_or_else(|| micros.into())
        }
        D::Utf8 => array.as_string::<i32>().value(row).into(),
        D::Binary => String::from_utf8_lossy(array.as_binary::<i32>().value(row)).into(),
        D::List(_) => {
            let items = array.as_list::<i32>().value(row);
            Value::Array((0..items.len()).map(|i| value_json(&items, i)).collect())
        }
        _ => Value::Null,
    }
}

/// One JSON object per row, output names to values.
pub fn output_rows(schema: &ModuleSchema, outputs: &[ArrayRef]) -> Vec<Value> {
    let rows = outputs.first().map_or(0, |a| a.len());
    (0..rows)
        .map(|row| {
            let mut object = Map::new();
            for (field, array) in schema.outputs.iter().zip(outputs) {
                object.insert(field.name.clone(), value_json(array, row));
            }
            Value::Object(object)
        })
        .collect()
}
