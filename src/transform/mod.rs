//! On-demand transforms: WebAssembly modules built with the SDK in `sdk/`,
//! run on Arrow columns. The ABI they speak is `sdk/ABI.md`.
//!
//! - [`schema`] reads and checks a module without running it.
//! - [`runtime`] compiles modules once (cached on disk); a
//!   [`CompiledTransform`] runs batches in limited instances, kept warm
//!   between clean calls.
//! - [`build`] builds a transform crate for `wasm32-unknown-unknown`.
//! - [`modules`] stores modules by content hash, with named versions, in
//!   the data directory (or in Redis beside a shared registry,
//!   `redis_modules.rs`).
//! - [`Transforms`] ties them together: upload (validate, self-check,
//!   store), resolve a reference, list, history, rollback.
//! - [`TransformError`] (`error.rs`) names every failure;
//!   [`TransformLimits`] (`limits.rs`) bounds every call.

mod abi;
pub mod build;
mod cache_key;
mod call;
mod check;
mod error;
mod limits;
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
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use call::{with_deadline, CompiledTransform};
pub use error::TransformError;
pub use limits::{TransformLimits, MAX_STACK_BYTES};
pub use modules::{FileModuleRepository, ModuleRepository, ModuleVersion, VersionAction};
#[cfg(feature = "redis")]
pub use redis_modules::RedisModuleRepository;
pub use runtime::{ModuleLoads, TransformRuntime};
pub use schema::{ModuleSchema, SchemaField};

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
