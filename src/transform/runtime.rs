//! [`TransformRuntime`]: one wasmtime engine per runtime, with its pooled
//! instance allocator, host linker and epoch ticker. Modules compile once
//! (with a timeout, a few compilations at a time) into a
//! [`CompiledTransform`], whose calls are in [`super::call`].
//!
//! The compiled form is cached on disk by content hash and engine
//! compatibility, for modules that passed their checks only. Loading native
//! code is trusting it, so each cache file ends with an HMAC-SHA256 tag over
//! the module's hash, the engine's compatibility hash and the code, keyed by
//! a random key kept beside the cache (`compiled.key`, owner-only): a file
//! copied from another module, another installation or a tampered backup
//! fails the check and the module is compiled again from its verified
//! `.wasm`.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Caller, Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
    ResourceLimiter,
};

use super::cache_key;
use super::call::{CompiledTransform, Exports, Shared};
use super::schema::{self, ModuleSchema};
use super::{sha256_hex, TransformError, TransformLimits};

/// How often the epoch advances: the granularity of `max_call_ms`.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(5);
/// The start of each pooled memory is zeroed in place between instances
/// instead of being returned to the kernel: a small call touches only a few
/// pages there (stack, data, heap start, with the 64 KiB stack that
/// `wafer transform build` links), and faulting them in afresh plus the
/// `madvise` with its TLB shootdowns cost more than the memset. Measured on
/// a 1-row call: 13.7 us p50 without, 9.6 us with 128 KiB, 11.4 us with
/// 256 KiB.
const KEEP_RESIDENT_BYTES: usize = 128 << 10;
/// Longest message kept from `wafer.error`.
const MAX_ERROR_MESSAGE: usize = 4096;
/// Compilations that may run at once, counting ones whose caller gave up
/// at the timeout (compilation cannot be interrupted).
const MAX_COMPILATIONS: usize = 2;
/// Bytes of the tag that ends a compiled cache file.
const TAG_BYTES: usize = 32;
/// Largest compiled cache file read: bigger ones are not ours.
const MAX_CACHE_FILE_BYTES: u64 = 512 << 20;

/// A regular file's bytes, at most `limit`: not following a symlink, not
/// waiting on a FIFO or a device, not reading past the limit, whatever was
/// put in the cache directory under the expected name.
fn read_regular_file(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::File::options();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if metadata.len() > limit {
        return Err(std::io::Error::other(format!(
            "{} bytes, over the limit of {limit}",
            metadata.len()
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Compiles and runs transform modules.
pub struct TransformRuntime {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    limits: TransformLimits,
    cache_dir: Option<PathBuf>,
    /// The compiled cache's key, read or created on first use.
    cache_key: OnceLock<Option<[u8; 32]>>,
    /// Shared with every compiled transform: calls must stay interruptible
    /// after the runtime that compiled them is gone.
    ticker: Arc<EpochTicker>,
    /// Instances kept warm across all modules.
    warm: Arc<WarmBudget>,
    /// Compilations running now.
    compiling: Arc<AtomicUsize>,
    /// Modules compiled and modules loaded from the compiled cache.
    compiled: AtomicU64,
    from_cache: AtomicU64,
}

/// How a runtime got its modules since it started: compiled from
/// WebAssembly (uploads included), or loaded from the verified cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModuleLoads {
    pub compiled: u64,
    pub from_cache: u64,
}

/// How many idle (warm) instances all of a runtime's modules may hold
/// together: half the pool, so the pool's size limits calls running at
/// once, never how many modules exist.
pub(super) struct WarmBudget {
    held: AtomicUsize,
    max: usize,
}

impl WarmBudget {
    /// Reserves room for one more warm instance.
    pub(super) fn reserve(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .is_ok()
    }

    pub(super) fn release(&self, count: usize) {
        self.held.fetch_sub(count, Ordering::AcqRel);
    }
}

/// Advances the engine's epoch until dropped.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Per-call host state.
pub(super) struct CallState {
    pub(super) limiter: MemoryLimiter,
    pub(super) error: Option<(String, u32)>,
}

pub(super) struct MemoryLimiter {
    pub(super) limit: usize,
    pub(super) tripped: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.tripped = true;
            // An error (not `false`) traps, so a module cannot carry on
            // after a failed grow and behave differently per batch size.
            return Err(wasmtime::Error::msg("memory limit"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

pub(super) fn runtime_error(error: impl std::fmt::Display) -> TransformError {
    TransformError::Runtime(error.to_string())
}

impl TransformRuntime {
    /// A runtime with `limits`; compiled modules are cached in `cache_dir`.
    pub fn new(
        limits: TransformLimits,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, TransformError> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false)
            .max_wasm_stack(limits.max_stack_bytes)
            .memory_init_cow(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(limits.max_concurrent_instances)
            .total_memories(limits.max_concurrent_instances)
            .total_tables(limits.max_concurrent_instances)
            .max_memory_size(limits.max_memory_bytes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(runtime_error)?;

        let mut linker = Linker::new(&engine);
        linker
            .func_wrap(
                schema::ERROR_IMPORT.0,
                schema::ERROR_IMPORT.1,
                |mut caller: Caller<'_, CallState>, ptr: i32, len: i32, row: i32| {
                    let message = caller
                        .get_export("memory")
                        .and_then(|export| export.into_memory())
                        .map(|memory| {
                            let data = memory.data(&caller);
                            let start = (ptr as u32 as usize).min(data.len());
                            let end = start
                                .saturating_add((len as u32 as usize).min(MAX_ERROR_MESSAGE))
                                .min(data.len());
                            String::from_utf8_lossy(&data[start..end]).into_owned()
                        })
                        .unwrap_or_default();
                    let state = caller.data_mut();
                    if state.error.is_none() {
                        state.error = Some((message, row as u32));
                    }
                },
            )
            .map_err(runtime_error)?;

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wafer-wasm-epoch".to_string())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(runtime_error)?
        };
        let warm = Arc::new(WarmBudget {
            held: AtomicUsize::new(0),
            max: (limits.max_concurrent_instances as usize / 2).max(1),
        });
        Ok(TransformRuntime {
            engine,
            linker: Arc::new(linker),
            limits,
            cache_dir,
            cache_key: OnceLock::new(),
            ticker: Arc::new(EpochTicker {
                stop,
                thread: Some(thread),
            }),
            warm,
            compiling: Arc::new(AtomicUsize::new(0)),
            compiled: AtomicU64::new(0),
            from_cache: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> &TransformLimits {
        &self.limits
    }

    /// Modules compiled and loaded from the cache since the runtime started.
    pub fn loads(&self) -> ModuleLoads {
        ModuleLoads {
            compiled: self.compiled.load(Ordering::Relaxed),
            from_cache: self.from_cache.load(Ordering::Relaxed),
        }
    }

    /// Checks and compiles new bytes: size, structure, imports, exports,
    /// schema, then compilation under `compile_timeout_ms`. Nothing is
    /// stored or cached: [`TransformRuntime::cache`] it once it passed every
    /// check.
    pub fn compile_checked(&self, bytes: &[u8]) -> Result<CompiledTransform, TransformError> {
        if bytes.len() > self.limits.max_module_bytes {
            return Err(TransformError::ModuleTooLarge {
                size: bytes.len(),
                limit: self.limits.max_module_bytes,
            });
        }
        let schema = schema::inspect(bytes)?;
        let sha256 = sha256_hex(bytes);
        let module = self.compile_with_timeout(bytes)?;
        self.prepare(module, schema, sha256)
    }

    /// Keeps the compiled form of an accepted module in the cache.
    pub fn cache(&self, compiled: &CompiledTransform) {
        self.write_cache(compiled.sha256(), compiled.module());
    }

    /// Removes cache files of modules not in `keep` (by hash) and of other
    /// engines, and stray temporary files; returns how many were removed.
    pub fn prune_cache(&self, keep: &std::collections::HashSet<String>) -> usize {
        let Some(dir) = &self.cache_dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let engine = self.engine_hash();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = name
                .strip_suffix(".cwasm")
                .and_then(|stem| stem.split_once('-'))
                .is_some_and(|(sha256, hash)| {
                    keep.contains(sha256) && hash == format!("{engine:016x}")
                });
            if !wanted && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// A stored module by hash: from the compiled cache when present and
    /// verified, else compiled from `bytes()` (and cached).
    pub fn load_stored(
        &self,
        sha256: &str,
        bytes: impl FnOnce() -> Result<Vec<u8>, TransformError>,
    ) -> Result<CompiledTransform, TransformError> {
        let bytes = bytes()?;
        if sha256_hex(&bytes) != sha256 {
            return Err(TransformError::Corrupt {
                path: PathBuf::from(format!("sha256:{sha256}")),
                message: "stored module does not match its hash".to_string(),
            });
        }
        let schema = schema::inspect(&bytes)?;
        let module = match self.read_cache(sha256) {
            Some(module) => module,
            None => {
                // Stored modules passed their checks when uploaded.
                let module = self.compile_with_timeout(&bytes)?;
                self.write_cache(sha256, &module);
                module
            }
        };
        self.prepare(module, schema, sha256.to_string())
    }

    fn compile_with_timeout(&self, bytes: &[u8]) -> Result<Module, TransformError> {
        let timeout = Duration::from_millis(self.limits.compile_timeout_ms);
        let reserved =
            self.compiling
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                    (running < MAX_COMPILATIONS).then_some(running + 1)
                });
        if reserved.is_err() {
            return Err(TransformError::CompilerBusy(MAX_COMPILATIONS));
        }
        let (sender, receiver) = mpsc::channel();
        let engine = self.engine.clone();
        let owned = bytes.to_vec();
        let compiling = self.compiling.clone();
        // Compilation cannot be interrupted; on timeout the thread finishes
        // in the background and its result is dropped. It keeps its place
        // among the compilations until then.
        let spawned = std::thread::Builder::new()
            .name("wafer-wasm-compile".to_string())
            .spawn(move || {
                // Gives the place back however compilation ends (a panic
                // included).
                struct Release(Arc<AtomicUsize>);
                impl Drop for Release {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                let release = Release(compiling);
                let module = Module::new(&engine, &owned);
                // Given back before the result is sent: a caller that gets
                // it and compiles again at once must find the place free
                // (a thread descheduled between the two made a second
                // upload fail "compiler busy" under load).
                drop(release);
                let _ = sender.send(module);
            });
        if let Err(error) = spawned {
            self.compiling.fetch_sub(1, Ordering::AcqRel);
            return Err(runtime_error(error));
        }
        // A request waiting for this compile gives up at its own deadline.
        let wait = super::call::time_left().map_or(timeout, |left| left.min(timeout));
        match receiver.recv_timeout(wait) {
            Ok(Ok(module)) => {
                self.compiled.fetch_add(1, Ordering::Relaxed);
                Ok(module)
            }
            Ok(Err(e)) => Err(TransformError::Compile(format!("{e:#}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(TransformError::CompileTimeout(wait)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(TransformError::Compile(
                "the compiler failed without an error".to_string(),
            )),
        }
    }

    fn engine_hash(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        hasher.finish()
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", self.engine_hash())))
    }

    /// The cache's key: `compiled.key` beside the cache directory, created
    /// (random, owner-only) on first use. `None` disables the cache.
    fn cache_key(&self) -> Option<&[u8; 32]> {
        self.cache_key
            .get_or_init(|| {
                let path = self.cache_dir.as_ref()?.with_file_name("compiled.key");
                match cache_key::read_or_create(&path) {
                    Ok(key) => Some(key),
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "compiled cache disabled");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The tag binding compiled `code` to a module and this engine.
    fn tag(&self, key: &[u8; 32], sha256: &str, code: &[u8]) -> [u8; TAG_BYTES] {
        cache_key::hmac_sha256(
            key,
            &[sha256.as_bytes(), &self.engine_hash().to_le_bytes(), code],
        )
    }

    fn read_cache(&self, sha256: &str) -> Option<Module> {
        let path = self.cache_path(sha256)?;
        if !path.exists() {
            return None;
        }
        let key = self.cache_key()?;
        let bytes = match read_regular_file(&path, MAX_CACHE_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "unreadable compiled module: compiling again");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        let verified = bytes.len() > TAG_BYTES && {
            let (code, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
            subtle::ConstantTimeEq::ct_eq(&self.tag(key, sha256, code)[..], tag).into()
        };
        if !verified {
            tracing::warn!(path = %path.display(), "compiled module fails its check: compiling again");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        // SAFETY: the code carries a tag only this installation's key makes,
        // over this module's hash and this engine's compatibility hash, and
        // only accepted modules are cached; a file that still fails to load
        // is recompiled.
        match unsafe { Module::deserialize(&self.engine, &bytes[..bytes.len() - TAG_BYTES]) } {
            Ok(module) => {
                self.from_cache.fetch_add(1, Ordering::Relaxed);
                Some(module)
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring unusable compiled module");
                None
            }
        }
    }

    fn write_cache(&self, sha256: &str, module: &Module) {
        let Some(path) = self.cache_path(sha256) else {
            return;
        };
        let Some(key) = self.cache_key() else {
            return;
        };
        if path.exists() {
            return;
        }
        let result = module
            .serialize()
            .map_err(runtime_error)
            .and_then(|mut bytes| {
                let tag = self.tag(key, sha256, &bytes);
                bytes.extend_from_slice(&tag);
                crate::durable::write_atomic(&path, &bytes).map_err(|source| TransformError::Io {
                    path: path.clone(),
                    source,
                })
            });
        if let Err(error) = result {
            // The cache only saves time: a failure to write it is not fatal.
            tracing::warn!(%error, "could not cache a compiled module");
        }
    }

    fn prepare(
        &self,
        module: Module,
        schema: ModuleSchema,
        sha256: String,
    ) -> Result<CompiledTransform, TransformError> {
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| TransformError::Compile(format!("{e:#}")))?;
        let export = |name: &str| {
            module
                .get_export_index(name)
                .ok_or_else(|| TransformError::MissingExport(name.to_string()))
        };
        let exports = Exports {
            memory: export("memory")?,
            transform: export(schema::TRANSFORM_EXPORT)?,
        };
        let shared = Shared {
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            ticker: self.ticker.clone(),
            budget: self.warm.clone(),
        };
        Ok(CompiledTransform::new(shared, pre, exports, schema, sha256))
    }
}
