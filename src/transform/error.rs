//! [`TransformError`]: every way loading or running a transform fails.

use std::path::PathBuf;
use std::time::Duration;

/// Every way loading or running a transform fails. Each names what was
/// wrong; a failure affects only the call that hit it.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error(
        "module is {size} bytes, over the limit of {limit} bytes (`transforms.max_module_bytes`)"
    )]
    ModuleTooLarge { size: usize, limit: usize },
    #[error("not a valid WebAssembly module: {0}")]
    NotWasm(String),
    #[error("module is a WebAssembly component; Wafer runs core modules (ABI v1, see sdk/ABI.md)")]
    Component,
    #[error("module does not export `{0}` (required by ABI v1, see sdk/ABI.md)")]
    MissingExport(String),
    #[error("module speaks {found}; this Wafer runs ABI v1 (export `wafer_abi_v1`)")]
    WrongAbi { found: String },
    #[error("module imports `{module}.{name}`; a transform may import only `wafer.error`")]
    ForbiddenImport { module: String, name: String },
    #[error("schema section `wafer.schema`: {0}")]
    Schema(String),
    #[error("module failed to compile: {0}")]
    Compile(String),
    #[error("module took longer than {0:?} to compile")]
    CompileTimeout(Duration),
    #[error("{0} modules are compiling already: try again shortly")]
    CompilerBusy(usize),
    /// A new version would break applied on-demand views.
    #[error("this version would break applied on-demand views (apply definitions that fit it first):\n{0}")]
    BreaksViews(String),
    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },
    #[error("transform ran out of fuel: the budget for {rows} rows is {fuel} units (limit `fuel_base` + `fuel_per_row` x rows)")]
    FuelExhausted { fuel: u64, rows: usize },
    #[error("transform ran longer than the limit of {0:?} (`max_call_ms`)")]
    Timeout(Duration),
    #[error(
        "transform tried to grow its memory past the limit of {limit} bytes (`max_memory_bytes`)"
    )]
    MemoryLimit { limit: usize },
    #[error("transform overflowed its stack (`max_stack_bytes` = {limit})")]
    StackOverflow { limit: usize },
    #[error("transform failed{}: {message}", row_suffix(*.row))]
    Failed { message: String, row: Option<u32> },
    #[error("transform trapped: {0}")]
    Trap(String),
    #[error("transform output is invalid: {0}")]
    BadOutput(String),
    #[error("transform output is {bytes} bytes, over the limit of {limit} (`max_output_bytes`)")]
    OutputTooLarge { bytes: usize, limit: usize },
    #[error("transform is not row-wise: {0}")]
    NotRowWise(String),
    #[error("invalid transform name `{0}`: use 1 to 64 letters, digits, `_` or `-`")]
    InvalidName(String),
    #[error("unknown transform `{0}`")]
    UnknownTransform(String),
    #[error("transform `{name}` has no version {version}")]
    UnknownVersion { name: String, version: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("wasm runtime: {0}")]
    Runtime(String),
    /// The shared module store (Redis) cannot be reached; retry later.
    #[error("module storage unavailable: {0}")]
    Unavailable(String),
}

impl TransformError {
    /// A short, stable name of what went wrong, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            TransformError::Input { .. } => "input",
            TransformError::FuelExhausted { .. } => "fuel",
            TransformError::Timeout(_) => "timeout",
            TransformError::MemoryLimit { .. } => "memory",
            TransformError::StackOverflow { .. } => "stack",
            TransformError::Failed { .. } => "failed",
            TransformError::Trap(_) => "trap",
            TransformError::BadOutput(_) | TransformError::OutputTooLarge { .. } => "output",
            TransformError::UnknownTransform(_) | TransformError::UnknownVersion { .. } => {
                "unknown_transform"
            }
            _ => "module",
        }
    }
}

fn row_suffix(row: Option<u32>) -> String {
    row.map(|row| format!(" at row {row}")).unwrap_or_default()
}
