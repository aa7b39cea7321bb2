//! What a module declares, read without running any of its code: imports,
//! exports and the `wafer.schema` custom section (`sdk/ABI.md`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use wasmparser::{Encoding, ExternalKind, Parser, Payload, TypeRef};

use super::TransformError;
use crate::types::{ScalarType, ValueType};

pub const SCHEMA_SECTION: &str = "wafer.schema";
pub const ABI_MARKER: &str = "wafer_abi_v1";
pub const ALLOC_EXPORT: &str = "wafer_alloc";
pub const TRANSFORM_EXPORT: &str = "wafer_transform";
pub const ERROR_IMPORT: (&str, &str) = ("wafer", "error");

/// A module's inputs and outputs, as its schema section declares them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleSchema {
    pub abi: u32,
    /// The transform's name in its source (informative).
    pub name: String,
    /// Which SDK built it (informative), e.g. `rust/0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
    pub inputs: Vec<SchemaField>,
    pub outputs: Vec<SchemaField>,
}

/// One input or output column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaField {
    pub name: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    /// Inputs: whether the transform accepts nulls (otherwise a null input
    /// makes the row's outputs null). Outputs: whether it may return null.
    #[serde(default)]
    pub nullable: bool,
}

/// Whether ABI v1 can carry a column of this type.
pub fn supported(value_type: &ValueType) -> bool {
    match value_type {
        ValueType::List(item) => matches!(
            item,
            ScalarType::Int32 | ScalarType::Int64 | ScalarType::Float32 | ScalarType::Float64
        ),
        _ => true,
    }
}

/// Checks the module's structure and returns its schema. Nothing runs.
pub fn inspect(bytes: &[u8]) -> Result<ModuleSchema, TransformError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(TransformError::NotWasm(
            "missing the WebAssembly magic number (`\\0asm`)".to_string(),
        ));
    }
    let mut exports: Vec<(String, ExternalKind)> = Vec::new();
    let mut schema_sections: Vec<&[u8]> = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| TransformError::NotWasm(e.to_string()))?;
        match payload {
            Payload::Version {
                encoding: Encoding::Component,
                ..
            } => return Err(TransformError::Component),
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| TransformError::NotWasm(e.to_string()))?;
                    let allowed = (import.module, import.name) == ERROR_IMPORT
                        && matches!(import.ty, TypeRef::Func(_));
                    if !allowed {
                        return Err(TransformError::ForbiddenImport {
                            module: import.module.to_string(),
                            name: import.name.to_string(),
                        });
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| TransformError::NotWasm(e.to_string()))?;
                    exports.push((export.name.to_string(), export.kind));
                }
            }
            Payload::CustomSection(section) if section.name() == SCHEMA_SECTION => {
                schema_sections.push(section.data());
            }
            _ => {}
        }
    }

    let has = |name: &str, kind: ExternalKind| exports.iter().any(|(n, k)| n == name && *k == kind);
    if !has(ABI_MARKER, ExternalKind::Func) {
        if let Some((other, _)) = exports.iter().find(|(n, _)| n.starts_with("wafer_abi_v")) {
            return Err(TransformError::WrongAbi {
                found: format!("`{other}`"),
            });
        }
        return Err(TransformError::MissingExport(ABI_MARKER.to_string()));
    }
    if !has("memory", ExternalKind::Memory) {
        return Err(TransformError::MissingExport("memory".to_string()));
    }
    for name in [ALLOC_EXPORT, TRANSFORM_EXPORT] {
        if !has(name, ExternalKind::Func) {
            return Err(TransformError::MissingExport(name.to_string()));
        }
    }

    let section = match schema_sections.as_slice() {
        [] => {
            return Err(TransformError::Schema(
                "missing (is the function marked #[wafer_sdk::transform]?)".to_string(),
            ))
        }
        [one] => *one,
        _ => {
            return Err(TransformError::Schema(
                "found more than once: a module holds exactly one transform".to_string(),
            ))
        }
    };
    parse_schema(section)
}

fn parse_schema(section: &[u8]) -> Result<ModuleSchema, TransformError> {
    // Linkers may pad sections; trailing NULs are not part of the JSON.
    let end = section.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let schema: ModuleSchema = serde_json::from_slice(&section[..end])
        .map_err(|e| TransformError::Schema(format!("not the expected JSON: {e}")))?;
    if schema.abi != 1 {
        return Err(TransformError::WrongAbi {
            found: format!("ABI {} in its schema", schema.abi),
        });
    }
    if schema.outputs.is_empty() {
        return Err(TransformError::Schema("declares no outputs".to_string()));
    }
    for (kind, fields) in [("input", &schema.inputs), ("output", &schema.outputs)] {
        let mut seen = HashSet::new();
        for field in fields {
            if field.name.is_empty() {
                return Err(TransformError::Schema(format!(
                    "an {kind} has an empty name"
                )));
            }
            if !seen.insert(field.name.as_str()) {
                return Err(TransformError::Schema(format!(
                    "{kind} `{}` is declared twice",
                    field.name
                )));
            }
            if !supported(&field.value_type) {
                return Err(TransformError::Schema(format!(
                    "{kind} `{}` has type {}, which ABI v1 cannot carry (lists hold int32, int64, float32 or float64)",
                    field.name, field.value_type
                )));
            }
        }
    }
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_json_is_checked() {
        let good = br#"{"abi":1,"name":"f","inputs":[{"name":"a","type":"float64","nullable":false}],"outputs":[{"name":"b","type":"list<float32>","nullable":true}]}"#;
        let schema = parse_schema(good).unwrap();
        assert_eq!(schema.inputs[0].value_type, ValueType::Float64);
        assert!(schema.outputs[0].nullable);

        let twice = br#"{"abi":1,"name":"f","inputs":[{"name":"a","type":"int64"},{"name":"a","type":"int64"}],"outputs":[{"name":"b","type":"int64"}]}"#;
        assert!(parse_schema(twice)
            .unwrap_err()
            .to_string()
            .contains("`a` is declared twice"));
        let strings =
            br#"{"abi":1,"name":"f","inputs":[],"outputs":[{"name":"b","type":"list<string>"}]}"#;
        assert!(parse_schema(strings)
            .unwrap_err()
            .to_string()
            .contains("cannot carry"));
        let abi2 = br#"{"abi":2,"name":"f","inputs":[],"outputs":[{"name":"b","type":"int64"}]}"#;
        assert!(matches!(
            parse_schema(abi2),
            Err(TransformError::WrongAbi { .. })
        ));
    }
}
