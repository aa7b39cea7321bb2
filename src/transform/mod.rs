//! On-demand transforms: WebAssembly modules built with the SDK in `sdk/`,
//! run on Arrow columns. The ABI they speak is `sdk/ABI.md`.
//!
//! - [`schema`] reads and checks a module without running it.
//! - [`runtime`] compiles modules once (cached on disk); a
//!   [`CompiledTransform`] runs batches in limited instances, kept warm
//!   between clean calls.
//! - [`build`] builds a transform crate for `wasm32-unknown-unknown`.
//! - [`modules`] stores modules by content hash, with named versions.
//! - [`Transforms`] ties them together: upload (validate, self-check,
//!   store), resolve a reference, list, history, rollback.

mod abi;
pub mod build;
mod cache_key;
mod call;
mod check;
pub mod modules;
#[cfg(feature = "redis")]
mod redis_modules;
pub mod runtime;
pub mod schema;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use call::{with_deadline, CompiledTransform};
pub use modules::{FileModuleRepository, ModuleRepository, ModuleVersion, VersionAction};
#[cfg(feature = "redis")]
pub use redis_modules::RedisModuleRepository;
pub use runtime::TransformRuntime;
pub use schema::{ModuleSchema, SchemaField};

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

/// `name` (its active version) or `name@sha256:<hex>` (one version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformRef {
    pub name: String,
    pub sha256: Option<String>,
}

impl TransformRef {
    pub fn parse(reference: &str) -> Result<Self, TransformError> {
        let (name, sha256) = match reference.split_once('@') {
            Some((name, pin)) => {
                let hex = pin.strip_prefix("sha256:").unwrap_or(pin);
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(TransformError::UnknownVersion {
                        name: name.to_string(),
                        version: pin.to_string(),
                    });
                }
                (name, Some(hex.to_ascii_lowercase()))
            }
            None => (reference, None),
        };
        check_name(name)?;
        Ok(TransformRef {
            name: name.to_string(),
            sha256,
        })
    }
}

pub fn check_name(name: &str) -> Result<(), TransformError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TransformError::InvalidName(name.to_string()))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an upload did.
#[derive(Debug, Clone, Serialize)]
pub struct UploadOutcome {
    pub name: String,
    pub sha256: String,
    pub size: usize,
    pub schema: ModuleSchema,
    /// The same bytes were already the active version: nothing recorded.
    pub unchanged: bool,
}

/// A named transform and its active version.
#[derive(Debug, Clone, Serialize)]
pub struct TransformSummary {
    pub name: String,
    pub active: ModuleVersion,
    pub versions: usize,
    pub schema: ModuleSchema,
}

/// The project's transforms: stored modules, named versions, and the
/// runtime that runs them. Compiled modules are kept in memory by hash.
pub struct Transforms {
    repository: Box<dyn ModuleRepository>,
    runtime: TransformRuntime,
    loaded: Mutex<HashMap<String, CompiledTransform>>,
    /// Recent resolutions of references, so a lookup does not read the
    /// history on every request. A name follows uploads and rollbacks
    /// (possibly by another process) within [`RESOLVE_TTL`], or within a
    /// server's registry refresh interval once it refreshes them.
    resolved: Mutex<HashMap<String, (Instant, CompiledTransform)>>,
    /// The active version each name last resolved to: when another process
    /// changes a name, the version it replaced leaves memory here too.
    active: Mutex<HashMap<String, String>>,
    /// Set once a server refreshes resolutions in the background
    /// ([`Transforms::refresh_resolutions`]): they no longer expire.
    kept_fresh: AtomicBool,
    /// Counts [`Transforms::forget_resolutions`] calls.
    generation: AtomicU64,
}

/// How long a resolved reference is reused: the same delay with which a
/// server picks up a new registry version by default.
const RESOLVE_TTL: Duration = Duration::from_secs(1);

impl Transforms {
    pub fn new(repository: Box<dyn ModuleRepository>, runtime: TransformRuntime) -> Transforms {
        Transforms {
            repository,
            runtime,
            loaded: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            kept_fresh: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    /// Transforms stored under `dir` (modules, names, compiled cache).
    pub fn open(dir: impl Into<PathBuf>, limits: TransformLimits) -> Result<Self, TransformError> {
        let dir = dir.into();
        Self::open_with(
            Box::new(FileModuleRepository::new(&dir)),
            dir.join("compiled"),
            limits,
        )
    }

    /// Transforms stored in `repository`, compiled modules cached in
    /// `compiled_dir`. The cache keeps only entries of stored modules for
    /// this engine.
    pub fn open_with(
        repository: Box<dyn ModuleRepository>,
        compiled_dir: PathBuf,
        limits: TransformLimits,
    ) -> Result<Self, TransformError> {
        let runtime = TransformRuntime::new(limits, Some(compiled_dir))?;
        let transforms = Transforms::new(repository, runtime);
        match transforms.repository.hashes() {
            Ok(stored) => {
                let removed = transforms.runtime.prune_cache(&stored);
                if removed > 0 {
                    tracing::info!(removed, "pruned the compiled module cache");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list stored modules"),
        }
        Ok(transforms)
    }

    /// Re-resolves every reference resolved so far, in the background of a
    /// server (its registry refresh): from the first call on, lookups reuse
    /// resolutions however old, and never read module storage for a
    /// reference they resolved before. A reference that cannot be resolved
    /// now (storage unreachable) keeps its previous resolution.
    pub fn refresh_resolutions(&self) {
        self.kept_fresh.store(true, Ordering::Relaxed);
        let references: Vec<String> = self
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for reference in references {
            let generation = self.generation.load(Ordering::Acquire);
            match self.resolve_now(&reference) {
                Ok(compiled) => {
                    let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
                    // An upload or rollback here meanwhile forgot every
                    // resolution: this one may predate it.
                    if self.generation.load(Ordering::Acquire) == generation {
                        resolved.insert(reference, (Instant::now(), compiled));
                    }
                }
                Err(error) => {
                    tracing::warn!(%reference, %error, "cannot refresh a transform reference")
                }
            }
        }
    }

    pub fn runtime(&self) -> &TransformRuntime {
        &self.runtime
    }

    /// Validates `bytes` completely (size, structure, imports, exports,
    /// schema, compilation, a row-wise self-check, then `accept`, which
    /// sees the schema: the caller's check that the applied views still
    /// fit) and only then stores the module, caches its compiled form and
    /// makes it `name`'s active version. A module that fails any check
    /// changes nothing.
    pub fn upload(
        &self,
        name: &str,
        bytes: &[u8],
        by: &str,
        accept: &dyn Fn(&ModuleSchema) -> Result<(), String>,
    ) -> Result<UploadOutcome, TransformError> {
        check_name(name)?;
        let compiled = self.runtime.compile_checked(bytes)?;
        check::row_wise(&compiled)?;
        accept(compiled.schema()).map_err(TransformError::BreaksViews)?;
        let sha256 = compiled.sha256().to_string();
        let history = self.repository.history(name)?;
        let previous = history.last().map(|v| v.sha256.clone());
        let unchanged = previous.as_deref() == Some(sha256.as_str());
        if !unchanged {
            self.repository.put_module(&sha256, bytes)?;
            self.repository.append(
                name,
                &ModuleVersion {
                    sha256: sha256.clone(),
                    at: Utc::now(),
                    by: by.to_string(),
                    action: VersionAction::Upload,
                    size: bytes.len() as u64,
                },
            )?;
        }
        self.runtime.cache(&compiled);
        let schema = compiled.schema().clone();
        self.remember(compiled);
        if let Some(previous) = previous.filter(|p| *p != sha256) {
            self.evict(&previous);
        }
        self.forget_resolutions();
        Ok(UploadOutcome {
            name: name.to_string(),
            sha256,
            size: bytes.len(),
            schema,
            unchanged,
        })
    }

    /// The compiled module a reference names (`name`: the active version as
    /// of at most a second ago; `name@sha256:HEX`: that version).
    pub fn resolve(&self, reference: &str) -> Result<CompiledTransform, TransformError> {
        if let Some((at, compiled)) = self
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(reference)
        {
            if at.elapsed() < RESOLVE_TTL || self.kept_fresh.load(Ordering::Relaxed) {
                return Ok(compiled.clone());
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        let compiled = self.resolve_now(reference)?;
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        // An upload or rollback here meanwhile forgot every resolution:
        // this one may predate it, so it is used once and not kept.
        if self.generation.load(Ordering::Acquire) == generation {
            resolved.insert(reference.to_string(), (Instant::now(), compiled.clone()));
        }
        Ok(compiled)
    }

    fn resolve_now(&self, reference: &str) -> Result<CompiledTransform, TransformError> {
        let reference = TransformRef::parse(reference)?;
        let history = self.repository.history(&reference.name)?;
        let Some(active) = history.last() else {
            return Err(TransformError::UnknownTransform(reference.name));
        };
        let sha256 = match &reference.sha256 {
            None => {
                let replaced = self
                    .active
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(reference.name.clone(), active.sha256.clone());
                if let Some(replaced) = replaced.filter(|r| *r != active.sha256) {
                    self.evict(&replaced);
                }
                active.sha256.clone()
            }
            Some(pin) if history.iter().any(|v| &v.sha256 == pin) => pin.clone(),
            Some(pin) => {
                return Err(TransformError::UnknownVersion {
                    name: reference.name,
                    version: format!("sha256:{pin}"),
                })
            }
        };
        self.load(&sha256)
    }

    fn load(&self, sha256: &str) -> Result<CompiledTransform, TransformError> {
        if let Some(compiled) = self.lock_loaded().get(sha256) {
            return Ok(compiled.clone());
        }
        let compiled = self.runtime.load_stored(sha256, || {
            self.repository
                .module(sha256)?
                .ok_or_else(|| TransformError::Corrupt {
                    path: PathBuf::from(format!("sha256:{sha256}")),
                    message: "module listed in history but missing from storage".to_string(),
                })
        })?;
        self.remember(compiled.clone());
        Ok(compiled)
    }

    /// This process changed a name: later resolutions must see it at once.
    fn forget_resolutions(&self) {
        let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        resolved.clear();
    }

    /// Drops a version that stopped being active from memory, with its warm
    /// instances. A pinned reference to it (`name@sha256:...`) loads it
    /// again from the compiled cache on its next use.
    fn evict(&self, sha256: &str) {
        self.lock_loaded().remove(sha256);
    }

    fn remember(&self, compiled: CompiledTransform) {
        self.lock_loaded()
            .insert(compiled.sha256().to_string(), compiled);
    }

    /// How many compiled modules are held in memory (active versions and
    /// pinned ones in use).
    pub fn loaded_count(&self) -> usize {
        self.lock_loaded().len()
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, CompiledTransform>> {
        // A panic while holding the map cannot leave it half-updated.
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every named transform with its active version and schema.
    pub fn list(&self) -> Result<Vec<TransformSummary>, TransformError> {
        let mut out = Vec::new();
        for name in self.repository.names()? {
            out.push(self.summary(&name)?);
        }
        Ok(out)
    }

    /// One transform's active version and schema.
    pub fn summary(&self, name: &str) -> Result<TransformSummary, TransformError> {
        check_name(name)?;
        let history = self.repository.history(name)?;
        let Some(active) = history.last().cloned() else {
            return Err(TransformError::UnknownTransform(name.to_string()));
        };
        // The schema is read from the stored bytes: browsing compiles nothing.
        let bytes =
            self.repository
                .module(&active.sha256)?
                .ok_or_else(|| TransformError::Corrupt {
                    path: PathBuf::from(format!("sha256:{}", active.sha256)),
                    message: "module listed in history but missing from storage".to_string(),
                })?;
        let schema = schema::inspect(&bytes)?;
        Ok(TransformSummary {
            name: name.to_string(),
            active,
            versions: history.len(),
            schema,
        })
    }

    /// Every version event of `name`, oldest first.
    /// The hashes of every stored module.
    pub fn stored_hashes(&self) -> Result<std::collections::HashSet<String>, TransformError> {
        self.repository.hashes()
    }

    /// A stored module's bytes, checked against their hash.
    pub fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, TransformError> {
        match self.repository.module(sha256)? {
            Some(bytes) if sha256_hex(&bytes) != sha256 => Err(TransformError::Corrupt {
                path: PathBuf::from(format!("sha256:{sha256}")),
                message: "stored bytes do not match their hash".to_string(),
            }),
            found => Ok(found),
        }
    }

    /// Stores `bytes` (which must hash to a version in `name`'s history or
    /// become its active version): for an edge receiving the modules its
    /// registry snapshot pins. Validated and compiled as an upload is, so
    /// the native code is this host's own.
    pub fn install(&self, name: &str, bytes: &[u8], by: &str) -> Result<String, TransformError> {
        let sha256 = sha256_hex(bytes);
        if self
            .repository
            .history(name)?
            .iter()
            .any(|v| v.sha256 == sha256)
        {
            return Ok(sha256);
        }
        Ok(self.upload(name, bytes, by, &|_| Ok(()))?.sha256)
    }

    pub fn history(&self, name: &str) -> Result<Vec<ModuleVersion>, TransformError> {
        check_name(name)?;
        let history = self.repository.history(name)?;
        if history.is_empty() {
            return Err(TransformError::UnknownTransform(name.to_string()));
        }
        Ok(history)
    }

    /// Makes an earlier version active again. `version` is `sha256:<hex>`,
    /// a unique hex prefix of at least 8 digits, or a number from
    /// [`Transforms::history`] (1 is the first upload).
    /// `accept` sees the version's schema first, as in
    /// [`Transforms::upload`].
    pub fn rollback(
        &self,
        name: &str,
        version: &str,
        by: &str,
        accept: &dyn Fn(&ModuleSchema) -> Result<(), String>,
    ) -> Result<ModuleVersion, TransformError> {
        let history = self.history(name)?;
        let unknown = || TransformError::UnknownVersion {
            name: name.to_string(),
            version: version.to_string(),
        };
        let target = if let Ok(number) = version.parse::<usize>() {
            history.get(number.wrapping_sub(1)).ok_or_else(unknown)?
        } else {
            let hex = version
                .strip_prefix("sha256:")
                .unwrap_or(version)
                .to_ascii_lowercase();
            if hex.len() < 8 {
                return Err(unknown());
            }
            let mut matches = history.iter().filter(|v| v.sha256.starts_with(&hex));
            let first = matches.next().ok_or_else(unknown)?;
            if matches.any(|v| v.sha256 != first.sha256) {
                return Err(unknown());
            }
            first
        };
        // Loading proves the stored module is still intact before it
        // becomes active.
        let loaded = self.load(&target.sha256)?;
        accept(loaded.schema()).map_err(TransformError::BreaksViews)?;
        let previous = history.last().map(|v| v.sha256.clone());
        let event = ModuleVersion {
            sha256: target.sha256.clone(),
            at: Utc::now(),
            by: by.to_string(),
            action: VersionAction::Rollback,
            size: target.size,
        };
        self.repository.append(name, &event)?;
        if let Some(previous) = previous.filter(|p| *p != target.sha256) {
            self.evict(&previous);
        }
        self.forget_resolutions();
        Ok(event)
    }
}
