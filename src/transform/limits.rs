//! [`TransformLimits`]: what one call of a transform may use.

use serde::{Deserialize, Serialize};

/// Per-call limits. They trip the same way for one row online and for a
/// batch offline: fuel scales with the rows, and a limit hit fails only the
/// call that hit it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransformLimits {
    /// Largest module accepted at upload.
    pub max_module_bytes: usize,
    /// Compiling a module at upload may take this long.
    pub compile_timeout_ms: u64,
    /// Fuel (about one unit per WebAssembly instruction) for a call, plus
    /// `fuel_per_row` for each row.
    pub fuel_base: u64,
    pub fuel_per_row: u64,
    /// Wall-clock backstop per call.
    pub max_call_ms: u64,
    /// Linear memory a module may grow to.
    pub max_memory_bytes: usize,
    /// Native stack for WebAssembly frames.
    pub max_stack_bytes: usize,
    /// Variable-width output data (strings, bytes, lists) per call.
    pub max_output_bytes: usize,
    /// Rows per call when running large batches.
    pub batch_rows: usize,
    /// Instances that may run at the same time (the pooling allocator's
    /// slots).
    pub max_concurrent_instances: u32,
}

/// The largest `max_stack_bytes` accepted: wasm runs on the calling
/// thread's native stack, and server threads have 2 MiB.
pub const MAX_STACK_BYTES: usize = 1 << 20;

impl Default for TransformLimits {
    fn default() -> Self {
        TransformLimits {
            max_module_bytes: 10 << 20,
            compile_timeout_ms: 30_000,
            fuel_base: 10_000_000,
            fuel_per_row: 1_000_000,
            max_call_ms: 5_000,
            max_memory_bytes: 64 << 20,
            max_stack_bytes: 512 << 10,
            max_output_bytes: 64 << 20,
            batch_rows: 65_536,
            max_concurrent_instances: 128,
        }
    }
}
