//! Printing shared by several commands.

use crate::transform::{ModuleSchema, SchemaField};

/// Prints a transform's inputs and outputs, `name: type` (`?` if nullable).
pub(super) fn print_schema(schema: &ModuleSchema) {
    let fields = |fields: &[SchemaField]| {
        fields
            .iter()
            .map(|f| {
                let null = if f.nullable { "?" } else { "" };
                format!("{}: {}{null}", f.name, f.value_type)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  inputs:  {}", fields(&schema.inputs));
    println!("  outputs: {}", fields(&schema.outputs));
}
