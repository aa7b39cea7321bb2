//! The value types a feature or join key can have, and how they map onto
//! Arrow (Parquet files) and DuckDB.

use std::fmt;
use std::str::FromStr;

use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

/// A feature's declared type. Lists hold scalars only (an embedding is
/// `list<float32>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ValueType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Bytes,
    Timestamp,
    List(ScalarType),
}

/// The element type of a list: every [`ValueType`] but a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Bytes,
    Timestamp,
}

impl ScalarType {
    fn name(self) -> &'static str {
        match self {
            ScalarType::Bool => "bool",
            ScalarType::Int32 => "int32",
            ScalarType::Int64 => "int64",
            ScalarType::Float32 => "float32",
            ScalarType::Float64 => "float64",
            ScalarType::String => "string",
            ScalarType::Bytes => "bytes",
            ScalarType::Timestamp => "timestamp",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bool" => ScalarType::Bool,
            "int32" => ScalarType::Int32,
            "int64" => ScalarType::Int64,
            "float32" => ScalarType::Float32,
            "float64" => ScalarType::Float64,
            "string" => ScalarType::String,
            "bytes" => ScalarType::Bytes,
            "timestamp" => ScalarType::Timestamp,
            _ => return None,
        })
    }

    fn from_arrow(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Boolean => ScalarType::Bool,
            DataType::Int32 => ScalarType::Int32,
            DataType::Int64 => ScalarType::Int64,
            DataType::Float32 => ScalarType::Float32,
            DataType::Float64 => ScalarType::Float64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ScalarType::String,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ScalarType::Bytes,
            DataType::Timestamp(_, _) => ScalarType::Timestamp,
            _ => return None,
        })
    }

    fn duckdb(self) -> &'static str {
        match self {
            ScalarType::Bool => "BOOLEAN",
            ScalarType::Int32 => "INTEGER",
            ScalarType::Int64 => "BIGINT",
            ScalarType::Float32 => "FLOAT",
            ScalarType::Float64 => "DOUBLE",
            ScalarType::String => "VARCHAR",
            ScalarType::Bytes => "BLOB",
            ScalarType::Timestamp => "TIMESTAMPTZ",
        }
    }
}

impl ValueType {
    pub(crate) fn scalar(&self) -> Option<ScalarType> {
        Some(match self {
            ValueType::Bool => ScalarType::Bool,
            ValueType::Int32 => ScalarType::Int32,
            ValueType::Int64 => ScalarType::Int64,
            ValueType::Float32 => ScalarType::Float32,
            ValueType::Float64 => ScalarType::Float64,
            ValueType::String => ScalarType::String,
            ValueType::Bytes => ScalarType::Bytes,
            ValueType::Timestamp => ScalarType::Timestamp,
            ValueType::List(_) => return None,
        })
    }

    /// The plain type of a list's elements.
    pub fn from_scalar_type(scalar: ScalarType) -> Self {
        match scalar {
            ScalarType::Bool => ValueType::Bool,
            ScalarType::Int32 => ValueType::Int32,
            ScalarType::Int64 => ValueType::Int64,
            ScalarType::Float32 => ValueType::Float32,
            ScalarType::Float64 => ValueType::Float64,
            ScalarType::String => ValueType::String,
            ScalarType::Bytes => ValueType::Bytes,
            ScalarType::Timestamp => ValueType::Timestamp,
        }
    }

    /// The Arrow type that carries this type, timestamps as `timestamp`
    /// (whose unit and zone differ between the online store and the
    /// transform ABI); list items are named `item`.
    pub fn to_arrow(&self, timestamp: &DataType) -> DataType {
        match self {
            ValueType::Bool => DataType::Boolean,
            ValueType::Int32 => DataType::Int32,
            ValueType::Int64 => DataType::Int64,
            ValueType::Float32 => DataType::Float32,
            ValueType::Float64 => DataType::Float64,
            ValueType::String => DataType::Utf8,
            ValueType::Bytes => DataType::Binary,
            ValueType::Timestamp => timestamp.clone(),
            ValueType::List(item) => DataType::List(std::sync::Arc::new(
                arrow::datatypes::Field::new_list_field(
                    ValueType::from_scalar_type(*item).to_arrow(timestamp),
                    true,
                ),
            )),
        }
    }

    /// The Wafer type of a Parquet/Arrow column, if it has one. Timestamps of
    /// any unit, with or without a zone, are all `timestamp`.
    pub fn from_arrow(data_type: &DataType) -> Option<Self> {
        match data_type {
            DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
                ScalarType::from_arrow(item.data_type()).map(ValueType::List)
            }
            other => ScalarType::from_arrow(other).map(Self::from_scalar_type),
        }
    }

    /// Whether this type may identify an entity (floats and lists may not:
    /// equality on them is not a sound key).
    pub fn is_valid_join_key(&self) -> bool {
        !matches!(
            self,
            ValueType::Float32 | ValueType::Float64 | ValueType::List(_)
        )
    }

    /// The DuckDB SQL type values of this type are cast to.
    pub fn duckdb_type(&self) -> String {
        match self {
            ValueType::List(item) => format!("{}[]", item.duckdb()),
            other => other
                .scalar()
                .map(ScalarType::duckdb)
                .unwrap_or("VARCHAR")
                .to_string(),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::List(item) => write!(f, "list<{}>", item.name()),
            other => f.write_str(other.scalar().map(ScalarType::name).unwrap_or("?")),
        }
    }
}

/// An unknown type name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown type '{0}' (expected bool, int32, int64, float32, float64, string, bytes, timestamp or list<T> of one of those)")]
pub struct UnknownType(pub String);

impl FromStr for ValueType {
    type Err = UnknownType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim().to_ascii_lowercase();
        if let Some(inner) = trimmed
            .strip_prefix("list<")
            .and_then(|rest| rest.strip_suffix('>'))
        {
            return ScalarType::parse(inner.trim())
                .map(ValueType::List)
                .ok_or_else(|| UnknownType(s.to_string()));
        }
        ScalarType::parse(&trimmed)
            .map(Self::from_scalar_type)
            .ok_or_else(|| UnknownType(s.to_string()))
    }
}

impl TryFrom<String> for ValueType {
    type Error = UnknownType;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<ValueType> for String {
    fn from(value: ValueType) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "bool",
            "int32",
            "int64",
            "float32",
            "float64",
            "string",
            "bytes",
            "timestamp",
            "list<float32>",
            "list<string>",
        ] {
            let parsed: ValueType = name.parse().unwrap();
            assert_eq!(parsed.to_string(), name);
        }
        assert!("list<list<int32>>".parse::<ValueType>().is_err());
        assert!("float".parse::<ValueType>().is_err());
    }

    #[test]
    fn arrow_timestamps_of_every_unit_are_timestamps() {
        use arrow::datatypes::TimeUnit;
        for unit in [
            TimeUnit::Second,
            TimeUnit::Millisecond,
            TimeUnit::Microsecond,
            TimeUnit::Nanosecond,
        ] {
            for tz in [None, Some("UTC".into())] {
                assert_eq!(
                    ValueType::from_arrow(&DataType::Timestamp(unit, tz)),
                    Some(ValueType::Timestamp)
                );
            }
        }
    }
}
