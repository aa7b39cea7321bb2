//! [`Value`]: one feature or join key value, typed by the registry's
//! [`ValueType`]; its JSON form (requests, pushes, request data, responses)
//! and the binary encoding the online store's layouts use.

use serde_json::Value as Json;

use super::time::{format_timestamp, from_epoch_seconds, parse_timestamp};
use crate::types::{ScalarType, ValueType};

/// One feature or join key value. Timestamps are UTC nanoseconds since the
/// epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    String(String),
    Bytes(Vec<u8>),
    Timestamp(i64),
    List(Vec<Value>),
}

const NULL: u8 = 0;
const BOOL: u8 = 1;
const INT32: u8 = 2;
const INT64: u8 = 3;
const FLOAT32: u8 = 4;
const FLOAT64: u8 = 5;
const STRING: u8 = 6;
const BYTES: u8 = 7;
const TIMESTAMP: u8 = 8;
const LIST: u8 = 9;

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Appends the value: a type tag, then a fixed-width little-endian
    /// payload, or a u32 length and the bytes (strings, bytes), or a u32
    /// count and the elements (lists).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(NULL),
            Value::Bool(v) => out.extend([BOOL, u8::from(*v)]),
            Value::Int32(v) => {
                out.push(INT32);
                out.extend(v.to_le_bytes());
            }
            Value::Int64(v) => {
                out.push(INT64);
                out.extend(v.to_le_bytes());
            }
            Value::Float32(v) => {
                out.push(FLOAT32);
                out.extend(v.to_bits().to_le_bytes());
            }
            Value::Float64(v) => {
                out.push(FLOAT64);
                out.extend(v.to_bits().to_le_bytes());
            }
            Value::String(v) => {
                out.push(STRING);
                out.extend((v.len() as u32).to_le_bytes());
                out.extend(v.as_bytes());
            }
            Value::Bytes(v) => {
                out.push(BYTES);
                out.extend((v.len() as u32).to_le_bytes());
                out.extend(v);
            }
            Value::Timestamp(v) => {
                out.push(TIMESTAMP);
                out.extend(v.to_le_bytes());
            }
            Value::List(items) => {
                out.push(LIST);
                out.extend((items.len() as u32).to_le_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }

    /// Reads one value from the front of `input`, advancing it.
    pub fn decode(input: &mut &[u8]) -> Option<Value> {
        let tag = take(input, 1)?[0];
        Some(match tag {
            NULL => Value::Null,
            BOOL => Value::Bool(take(input, 1)?[0] != 0),
            INT32 => Value::Int32(i32::from_le_bytes(take(input, 4)?.try_into().ok()?)),
            INT64 => Value::Int64(i64::from_le_bytes(take(input, 8)?.try_into().ok()?)),
            FLOAT32 => Value::Float32(f32::from_bits(u32::from_le_bytes(
                take(input, 4)?.try_into().ok()?,
            ))),
            FLOAT64 => Value::Float64(f64::from_bits(u64::from_le_bytes(
                take(input, 8)?.try_into().ok()?,
            ))),
            STRING => {
                let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
                Value::String(String::from_utf8(take(input, len)?.to_vec()).ok()?)
            }
            BYTES => {
                let len = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
                Value::Bytes(take(input, len)?.to_vec())
            }
            TIMESTAMP => Value::Timestamp(i64::from_le_bytes(take(input, 8)?.try_into().ok()?)),
            LIST => {
                let count = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
                let mut items = Vec::with_capacity(count.min(input.len()));
                for _ in 0..count {
                    items.push(Value::decode(input)?);
                }
                Value::List(items)
            }
            _ => return None,
        })
    }

    /// Converts a JSON value (an HTTP request, a CLI argument) to `ty`.
    /// Integers and numeric strings coerce to the declared integer width, so
    /// `1001` finds the same row whether it arrives as text or a number.
    pub fn from_json(json: &Json, ty: &ValueType) -> Result<Value, String> {
        if json.is_null() {
            return Ok(Value::Null);
        }
        let wrong = || format!("expected {ty}, got {}", super::excerpt(json));
        Ok(match ty {
            ValueType::List(item) => match json {
                Json::Array(items) => Value::List(
                    items
                        .iter()
                        .map(|v| Value::from_json(v, &scalar_type(*item)))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(wrong()),
            },
            ValueType::Bool => match json {
                Json::Bool(v) => Value::Bool(*v),
                Json::String(s) if s == "true" || s == "false" => Value::Bool(s == "true"),
                _ => return Err(wrong()),
            },
            ValueType::Int32 => {
                let v = integer(json).ok_or_else(wrong)?;
                Value::Int32(i32::try_from(v).map_err(|_| format!("{v} does not fit int32"))?)
            }
            ValueType::Int64 => Value::Int64(integer(json).ok_or_else(wrong)?),
            ValueType::Timestamp => match json {
                Json::String(s) => Value::Timestamp(parse_timestamp(s).ok_or_else(|| {
                    format!(
                        "expected an RFC 3339 timestamp or epoch seconds, got {}",
                        super::excerpt(json)
                    )
                })?),
                _ => Value::Timestamp(from_epoch_seconds(integer(json).ok_or_else(wrong)?)),
            },
            ValueType::Float32 => Value::Float32(float(json).ok_or_else(wrong)? as f32),
            ValueType::Float64 => Value::Float64(float(json).ok_or_else(wrong)?),
            ValueType::String => match json {
                Json::String(s) => Value::String(s.clone()),
                _ => return Err(wrong()),
            },
            ValueType::Bytes => match json {
                Json::String(s) => Value::Bytes(s.as_bytes().to_vec()),
                _ => return Err(wrong()),
            },
        })
    }

    /// The JSON form of a value, as responses carry it.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(v) => Json::Bool(*v),
            Value::Int32(v) => Json::from(*v),
            Value::Int64(v) => Json::from(*v),
            // The shortest decimal that reads back as the same f32, not the
            // widened f64's digits (0.1f32 prints 0.1, not 0.10000000149).
            Value::Float32(v) => match non_finite_name(f64::from(*v)) {
                Some(name) => Json::String(name.to_string()),
                None => v
                    .to_string()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Json::Null, Json::Number),
            },
            Value::Float64(v) => match non_finite_name(*v) {
                Some(name) => Json::String(name.to_string()),
                None => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
            },
            Value::String(v) => Json::String(v.clone()),
            Value::Bytes(v) => Json::String(String::from_utf8_lossy(v).into_owned()),
            Value::Timestamp(v) => Json::String(format_timestamp(*v)),
            Value::List(items) => Json::Array(items.iter().map(Value::to_json).collect()),
        }
    }
}

/// Serializes as [`Value::to_json`] does, without building JSON values
/// first (responses are written straight from looked-up values).
impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_none(),
            Value::Bool(v) => serializer.serialize_bool(*v),
            Value::Int32(v) => serializer.serialize_i32(*v),
            Value::Int64(v) => serializer.serialize_i64(*v),
            // serde_json prints the shortest digits that read back as the
            // same f32 (or f64); it would print null for NaN and infinities.
            Value::Float32(v) => match non_finite_name(f64::from(*v)) {
                Some(name) => serializer.serialize_str(name),
                None => serializer.serialize_f32(*v),
            },
            Value::Float64(v) => match non_finite_name(*v) {
                Some(name) => serializer.serialize_str(name),
                None => serializer.serialize_f64(*v),
            },
            Value::String(v) => serializer.serialize_str(v),
            Value::Bytes(v) => serializer.serialize_str(&String::from_utf8_lossy(v)),
            Value::Timestamp(v) => serializer.serialize_str(&format_timestamp(*v)),
            Value::List(items) => serializer.collect_seq(items),
        }
    }
}

/// JSON has no NaN or infinities: they travel as the strings protobuf's JSON
/// mapping (and so Feast) uses, which requests accept back.
fn non_finite_name(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("Infinity")
    } else if v == f64::NEG_INFINITY {
        Some("-Infinity")
    } else {
        None
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

fn scalar_type(scalar: ScalarType) -> ValueType {
    // A list's element type is the scalar type of the same name.
    ValueType::from_scalar_type(scalar)
}

fn integer(json: &Json) -> Option<i64> {
    match json {
        Json::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                .map(|f| f as i64)
        }),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn float(json: &Json) -> Option<f64> {
    match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal as stored: floats by their bits (NaN payloads and -0.0 count).
    fn same_bits(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits(),
            (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
            (Value::List(x), Value::List(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_bits(a, b))
            }
            _ => a == b,
        }
    }

    fn random_value(rng: &mut impl rand::Rng, depth: u32) -> Value {
        match rng.random_range(0..if depth == 0 { 10 } else { 9 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => Value::Int32(rng.random()),
            3 => Value::Int64(rng.random()),
            // Any bit pattern: NaNs with payloads, subnormals, -0.0.
            4 => Value::Float32(f32::from_bits(rng.random())),
            5 => Value::Float64(f64::from_bits(rng.random())),
            6 => {
                let n = rng.random_range(0..12);
                Value::String((0..n).map(|_| rng.random::<char>()).collect())
            }
            7 => {
                let n = rng.random_range(0..12);
                Value::Bytes((0..n).map(|_| rng.random()).collect())
            }
            8 => Value::Timestamp(rng.random()),
            _ => {
                let n = rng.random_range(0..6);
                Value::List((0..n).map(|_| random_value(rng, depth + 1)).collect())
            }
        }
    }

    #[test]
    fn values_round_trip_bit_for_bit() {
        use rand::SeedableRng;
        let mut values = vec![
            Value::Float32(f32::from_bits(0x7fc0_1234)),
            Value::Float64(f64::from_bits(0xfff0_0000_dead_beef)),
            Value::Float64(-0.0),
            Value::String("héllo".into()),
            Value::List(vec![]),
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x7a1e);
        values.extend((0..2000).map(|_| random_value(&mut rng, 0)));
        let mut stream = Vec::new();
        for value in &values {
            let mut bytes = Vec::new();
            value.encode(&mut bytes);
            let mut input = bytes.as_slice();
            let back = Value::decode(&mut input).unwrap();
            assert!(input.is_empty(), "{value:?} left bytes unread");
            assert!(same_bits(&back, value), "{value:?} came back as {back:?}");
            stream.extend(bytes);
        }
        // Concatenated, they read back one after another.
        let mut input = stream.as_slice();
        for value in &values {
            assert!(same_bits(&Value::decode(&mut input).unwrap(), value));
        }
        assert!(input.is_empty());
        // Every strict prefix of an encoding is refused, never misread.
        for value in values.iter().take(300) {
            let mut bytes = Vec::new();
            value.encode(&mut bytes);
            for cut in 0..bytes.len() {
                assert_eq!(
                    Value::decode(&mut &bytes[..cut]),
                    None,
                    "{value:?} cut at {cut}"
                );
            }
        }
    }

    /// The stored format, written out by hand: records already on disk must
    /// keep reading as they were written.
    #[test]
    fn the_stored_format_is_pinned() {
        let cases: Vec<(Value, Vec<u8>)> = vec![
            (Value::Null, vec![0]),
            (Value::Bool(true), vec![1, 1]),
            (Value::Int32(-2), vec![2, 0xfe, 0xff, 0xff, 0xff]),
            (Value::Int64(1001), vec![3, 0xe9, 0x03, 0, 0, 0, 0, 0, 0]),
            (Value::Float32(1.5), vec![4, 0, 0, 0xc0, 0x3f]),
            (Value::Float64(-2.0), vec![5, 0, 0, 0, 0, 0, 0, 0, 0xc0]),
            (
                Value::String("hé".into()),
                vec![6, 3, 0, 0, 0, b'h', 0xc3, 0xa9],
            ),
            (Value::Bytes(vec![0, 255]), vec![7, 2, 0, 0, 0, 0, 255]),
            (Value::Timestamp(256), vec![8, 0, 1, 0, 0, 0, 0, 0, 0]),
            (
                Value::List(vec![Value::Bool(false), Value::Null]),
                vec![9, 2, 0, 0, 0, 1, 0, 0],
            ),
        ];
        for (value, bytes) in cases {
            let mut encoded = Vec::new();
            value.encode(&mut encoded);
            assert_eq!(encoded, bytes, "{value:?}");
            assert_eq!(Value::decode(&mut bytes.as_slice()), Some(value));
        }
    }

    #[test]
    fn float32_prints_its_own_shortest_digits() {
        assert_eq!(Value::Float32(0.1).to_json().to_string(), "0.1");
        let json = Value::Float32(0.276_191_47).to_json();
        assert_eq!(
            Value::from_json(&json, &ValueType::Float32),
            Ok(Value::Float32(0.276_191_47))
        );
    }

    #[test]
    fn non_finite_floats_travel_as_strings_and_read_back() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let json = Value::Float64(v).to_json();
            assert!(json.is_string(), "{json}");
            assert_eq!(serde_json::to_value(Value::Float64(v)).unwrap(), json);
            let back = Value::from_json(&json, &ValueType::Float64).unwrap();
            assert_eq!(back.to_json(), json, "{v} must read back as itself");
            let json32 = serde_json::to_value(Value::Float32(v as f32)).unwrap();
            assert_eq!(json32, json);
            assert!(matches!(
                Value::from_json(&json32, &ValueType::Float32),
                Ok(Value::Float32(x)) if x.to_bits() == (v as f32).to_bits() || (x.is_nan() && v.is_nan())
            ));
        }
    }

    #[test]
    fn keys_coerce_to_the_declared_width() {
        let json: Json = serde_json::from_str("1001").unwrap();
        assert_eq!(
            Value::from_json(&json, &ValueType::Int32),
            Ok(Value::Int32(1001))
        );
        assert_eq!(
            Value::from_json(&json, &ValueType::Int64),
            Ok(Value::Int64(1001))
        );
        assert_eq!(
            Value::from_json(&Json::String("1001".into()), &ValueType::Int64),
            Ok(Value::Int64(1001))
        );
        // Keys typed by hand or read from CSV carry spaces.
        for (text, ty, expected) in [
            (" 1001 ", ValueType::Int64, Value::Int64(1001)),
            ("\t-7\n", ValueType::Int32, Value::Int32(-7)),
            (" 2.5 ", ValueType::Float64, Value::Float64(2.5)),
            (" 0.25", ValueType::Float32, Value::Float32(0.25)),
        ] {
            assert_eq!(
                Value::from_json(&Json::String(text.into()), &ty),
                Ok(expected),
                "{text:?}"
            );
        }
        assert!(
            Value::from_json(&Json::String("abc".into()), &ValueType::Int64)
                .unwrap_err()
                .contains("expected int64")
        );
        assert!(Value::from_json(&serde_json::json!(5_000_000_000i64), &ValueType::Int32).is_err());
    }
}
