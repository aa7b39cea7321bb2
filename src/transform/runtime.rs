//! One wasmtime engine per runtime; modules compile once (the compiled form
//! is cached on disk by content hash and engine compatibility), and every
//! call runs in a fresh pooled instance under fuel, epoch, memory and stack
//! limits, so no state leaks between calls and a runaway call fails alone.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::array::{Array, ArrayRef};
use arrow::compute::cast;
use wasmtime::{
    Caller, Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, TypedFunc,
};

use super::abi;
use super::schema::{self, ModuleSchema};
use super::{sha256_hex, TransformError, TransformLimits};

/// How often the epoch advances: the granularity of `max_call_ms`.
const EPOCH_TICK: Duration = Duration::from_millis(5);
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

/// Compiles and runs transform modules.
pub struct TransformRuntime {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    limits: TransformLimits,
    cache_dir: Option<PathBuf>,
    /// Shared with every compiled transform: calls must stay interruptible
    /// after the runtime that compiled them is gone.
    ticker: Arc<EpochTicker>,
}

/// Advances the engine's epoch until dropped.
struct EpochTicker {
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
struct CallState {
    limiter: MemoryLimiter,
    error: Option<(String, u32)>,
}

struct MemoryLimiter {
    limit: usize,
    tripped: bool,
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

fn runtime_error(error: impl std::fmt::Display) -> TransformError {
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
        Ok(TransformRuntime {
            engine,
            linker: Arc::new(linker),
            limits,
            cache_dir,
            ticker: Arc::new(EpochTicker {
                stop,
                thread: Some(thread),
            }),
        })
    }

    pub fn limits(&self) -> &TransformLimits {
        &self.limits
    }

    /// Checks and compiles new bytes: size, structure, imports, exports,
    /// schema, then compilation under `compile_timeout_ms`. Nothing is
    /// stored.
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
        self.write_cache(&sha256, &module);
        self.prepare(module, schema, sha256)
    }

    /// A stored module by hash: from the compiled cache when present, else
    /// compiled from `bytes()` (and cached).
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
                let module = Module::new(&self.engine, &bytes)
                    .map_err(|e| TransformError::Compile(format!("{e:#}")))?;
                self.write_cache(sha256, &module);
                module
            }
        };
        self.prepare(module, schema, sha256.to_string())
    }

    fn compile_with_timeout(&self, bytes: &[u8]) -> Result<Module, TransformError> {
        let timeout = Duration::from_millis(self.limits.compile_timeout_ms);
        let (sender, receiver) = mpsc::channel();
        let engine = self.engine.clone();
        let owned = bytes.to_vec();
        // Compilation cannot be interrupted; on timeout the thread finishes
        // in the background and its result is dropped.
        std::thread::Builder::new()
            .name("wafer-wasm-compile".to_string())
            .spawn(move || {
                let _ = sender.send(Module::new(&engine, &owned));
            })
            .map_err(runtime_error)?;
        match receiver.recv_timeout(timeout) {
            Ok(Ok(module)) => Ok(module),
            Ok(Err(e)) => Err(TransformError::Compile(format!("{e:#}"))),
            Err(_) => Err(TransformError::CompileTimeout(timeout)),
        }
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish())))
    }

    fn read_cache(&self, sha256: &str) -> Option<Module> {
        let path = self.cache_path(sha256)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: only this runtime writes the cache directory, and the file
        // name carries the engine's compatibility hash; a file that still
        // fails to load is recompiled.
        match unsafe { Module::deserialize_file(&self.engine, &path) } {
            Ok(module) => Some(module),
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
        if path.exists() {
            return;
        }
        let result = module.serialize().map_err(runtime_error).and_then(|bytes| {
            write_atomically(&path, &bytes).map_err(|source| TransformError::Io {
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
        Ok(CompiledTransform {
            inner: Arc::new(Compiled {
                exports,
                engine: self.engine.clone(),
                pre,
                schema,
                sha256,
                limits: self.limits.clone(),
                warm: (0..warm_sessions(&self.limits))
                    .map(|_| Mutex::new(None))
                    .collect(),
                _ticker: self.ticker.clone(),
            }),
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

/// A compiled, validated module, ready to run. Cheap to clone.
#[derive(Clone)]
pub struct CompiledTransform {
    inner: Arc<Compiled>,
}

struct Compiled {
    engine: Engine,
    pre: InstancePre<CallState>,
    schema: ModuleSchema,
    sha256: String,
    limits: TransformLimits,
    exports: Exports,
    /// Instances that finished a call cleanly, kept to serve the next small
    /// call (see [`CompiledTransform::run`]). Slots are only ever
    /// `try_lock`ed: a busy slot is skipped, so no call waits on another.
    warm: Box<[Mutex<Option<Session>>]>,
    _ticker: Arc<EpochTicker>,
}

impl std::fmt::Debug for CompiledTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTransform")
            .field("name", &self.inner.schema.name)
            .field("sha256", &self.inner.sha256)
            .finish()
    }
}

impl CompiledTransform {
    pub fn schema(&self) -> &ModuleSchema {
        &self.inner.schema
    }

    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Runs the transform over columns given in the schema's input order
    /// (cast to the declared types where Arrow can), in calls of at most
    /// `batch_rows` rows. Returns the outputs in the schema's order.
    pub fn run(&self, inputs: &[ArrayRef]) -> Result<Vec<ArrayRef>, TransformError> {
        let schema = &self.inner.schema;
        if inputs.len() != schema.inputs.len() {
            return Err(TransformError::Input {
                name: schema.name.clone(),
                message: format!(
                    "expects {} input columns, got {}",
                    schema.inputs.len(),
                    inputs.len()
                ),
            });
        }
        let rows = inputs.first().map_or(0, |a| a.len());
        let mut typed = Vec::with_capacity(inputs.len());
        for (field, array) in schema.inputs.iter().zip(inputs) {
            if array.len() != rows {
                return Err(TransformError::Input {
                    name: field.name.clone(),
                    message: format!("has {} rows where the first input has {rows}", array.len()),
                });
            }
            let wanted = abi::arrow_type(&field.value_type);
            let array = if array.data_type() == &wanted {
                array.clone()
            } else {
                cast(array, &wanted).map_err(|e| TransformError::Input {
                    name: field.name.clone(),
                    message: format!(
                        "{} does not convert to {}: {e}",
                        array.data_type(),
                        field.value_type
                    ),
                })?
            };
            typed.push(array);
        }
        if rows == 0 {
            return Ok(schema
                .outputs
                .iter()
                .map(|f| arrow::array::new_empty_array(&abi::arrow_type(&f.value_type)))
                .collect());
        }
        let limits = &self.inner.limits;
        let chunk = limits.batch_rows.max(1);
        if rows <= chunk {
            // A warm instance: a fresh one per call costs a memory reset
            // whose madvise and mprotect flush the TLB of every core running
            // this process (measured: a 1-row lookup went from 18 to 68 us
            // with two threads). Rows cannot see each other in SDK-built
            // modules, and the upload self-check runs its single rows one
            // after another on the same instances, so a module keeping
            // state between calls is refused before it serves.
            let mut session = match self.take_warm() {
                Some(session) => session,
                None => self.new_session()?,
            };
            let outputs = self.call(&mut session, &typed, rows)?;
            self.put_warm(session);
            return Ok(outputs);
        }
        let mut session = self.new_session()?;
        // One instance serves the chunks of this batch (rows cannot see each
        // other in SDK-built modules; the upload self-check tests that) until
        // its memory is half used.
        let mut parts: Vec<Vec<ArrayRef>> = Vec::new();
        let mut start = 0;
        while start < rows {
            let len = chunk.min(rows - start);
            let slice: Vec<ArrayRef> = typed.iter().map(|a| a.slice(start, len)).collect();
            if session.worn(limits) {
                session = self.new_session()?;
            }
            parts.push(self.call(&mut session, &slice, len)?);
            start += len;
        }
        (0..schema.outputs.len())
            .map(|j| {
                let pieces: Vec<&dyn Array> = parts.iter().map(|p| p[j].as_ref()).collect();
                arrow::compute::concat(&pieces).map_err(runtime_error)
            })
            .collect()
    }

    fn take_warm(&self) -> Option<Session> {
        self.inner
            .warm
            .iter()
            .find_map(|slot| slot.try_lock().ok().and_then(|mut slot| slot.take()))
    }

    /// Keeps a session that ended its call cleanly for the next call, unless
    /// it has served long or grown (a module leaking memory is recycled
    /// before it reaches its limit) or every slot is taken.
    fn put_warm(&self, session: Session) {
        if session.calls >= WARM_CALLS || session.worn(&self.inner.limits) {
            return;
        }
        let mut session = Some(session);
        for slot in self.inner.warm.iter() {
            if let Ok(mut slot) = slot.try_lock() {
                if slot.is_none() {
                    *slot = session.take();
                    return;
                }
            }
        }
    }

    fn new_session(&self) -> Result<Session, TransformError> {
        let inner = &*self.inner;
        let limits = &inner.limits;
        let mut store = Store::new(
            &inner.engine,
            CallState {
                limiter: MemoryLimiter {
                    limit: limits.max_memory_bytes,
                    tripped: false,
                },
                error: None,
            },
        );
        store.limiter(|state| &mut state.limiter);
        // Instantiation runs the module's start function: bound it too.
        store.set_fuel(limits.fuel_base).map_err(runtime_error)?;
        store.set_epoch_deadline(epoch_ticks(limits));
        store.epoch_deadline_trap();
        let instance = inner
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&store, e, limits.fuel_base, 0, limits))?;
        let memory = match instance.get_module_export(&mut store, &inner.exports.memory) {
            Some(wasmtime::Extern::Memory(memory)) => memory,
            _ => return Err(TransformError::MissingExport("memory".to_string())),
        };
        let transform = match instance.get_module_export(&mut store, &inner.exports.transform) {
            Some(wasmtime::Extern::Func(func)) => func.typed::<i32, i32>(&store).map_err(|e| {
                TransformError::BadOutput(format!("`wafer_transform` has the wrong type: {e}"))
            })?,
            _ => {
                return Err(TransformError::MissingExport(
                    schema::TRANSFORM_EXPORT.to_string(),
                ))
            }
        };
        Ok(Session {
            store,
            memory,
            transform,
            arena: None,
            calls: 0,
        })
    }

    /// Runs one chunk in `session`, a fresh instance or one that ran only
    /// earlier chunks of the same batch.
    fn call(
        &self,
        session: &mut Session,
        inputs: &[ArrayRef],
        rows: usize,
    ) -> Result<Vec<ArrayRef>, TransformError> {
        let inner = &*self.inner;
        let limits = &inner.limits;
        let arena = abi::plan(&inner.schema, inputs, rows)?;
        if arena.size > limits.max_memory_bytes {
            return Err(TransformError::MemoryLimit {
                limit: limits.max_memory_bytes,
            });
        }
        let fuel = limits
            .fuel_base
            .saturating_add(limits.fuel_per_row.saturating_mul(rows as u64));
        session.calls += 1;
        let store = &mut session.store;
        store.set_fuel(fuel).map_err(runtime_error)?;
        store.set_epoch_deadline(epoch_ticks(limits));
        store.data_mut().error = None;

        // The arena lives in pages the host adds with `memory.grow`: no
        // guest code runs to place the inputs (measured about 3 us faster per
        // call than `wafer_alloc`), and the guest allocator, which grows
        // memory itself, never hands those pages out.
        let base = match session.arena {
            Some((base, capacity)) if capacity >= arena.size => base,
            _ => {
                let pages = (arena.size as u64).div_ceil(WASM_PAGE);
                let old = session
                    .memory
                    .grow(&mut *store, pages)
                    .map_err(|e| classify(store, e, fuel, rows, limits))?;
                let base = (old * WASM_PAGE) as usize;
                session.arena = Some((base, (pages * WASM_PAGE) as usize));
                base
            }
        };
        abi::write(
            &arena,
            &inner.schema,
            session.memory.data_mut(&mut *store),
            base,
        );

        let status = session
            .transform
            .call(&mut *store, base as i32)
            .map_err(|e| classify(store, e, fuel, rows, limits))?;
        if status != 0 {
            let (message, row) = match store.data().error.clone() {
                Some((message, row)) => (message, (row != u32::MAX).then_some(row)),
                None => (format!("returned status {status} without a message"), None),
            };
            return Err(TransformError::Failed { message, row });
        }
        abi::read_outputs(
            &arena,
            &inner.schema,
            session.memory.data(&*store),
            base,
            limits.max_output_bytes,
        )
    }
}

const WASM_PAGE: u64 = 65_536;

/// A warm instance serves at most this many calls before a fresh one.
const WARM_CALLS: u32 = 10_000;

/// Warm instances kept per module: enough for the threads serving lookups
/// at once, few enough that many modules leave room in the instance pool.
fn warm_sessions(limits: &TransformLimits) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores)
        .min(limits.max_concurrent_instances as usize / 8)
        .max(1)
}

fn epoch_ticks(limits: &TransformLimits) -> u64 {
    (limits.max_call_ms / EPOCH_TICK.as_millis() as u64).max(1) + 1
}

/// An instance serving the chunks of one batch.
struct Session {
    store: Store<CallState>,
    memory: wasmtime::Memory,
    transform: TypedFunc<i32, i32>,
    /// Where the arena is and how large: reused by later chunks.
    arena: Option<(usize, usize)>,
    /// Calls made so far.
    calls: u32,
}

impl Session {
    /// Whether the instance has grown enough (variable-width outputs stay
    /// allocated in it) that the next chunk should start afresh.
    fn worn(&self, limits: &TransformLimits) -> bool {
        self.memory.data_size(&self.store) > limits.max_memory_bytes / 2
    }
}

/// Export handles resolved once per module, so a call does no name lookups.
struct Exports {
    memory: wasmtime::ModuleExport,
    transform: wasmtime::ModuleExport,
}

/// Names the limit or fault behind a failed call.
fn classify(
    store: &Store<CallState>,
    error: wasmtime::Error,
    fuel: u64,
    rows: usize,
    limits: &TransformLimits,
) -> TransformError {
    let state = store.data();
    if state.limiter.tripped {
        return TransformError::MemoryLimit {
            limit: limits.max_memory_bytes,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => TransformError::FuelExhausted { fuel, rows },
        Some(Trap::Interrupt) => TransformError::Timeout(Duration::from_millis(limits.max_call_ms)),
        Some(Trap::StackOverflow) => TransformError::StackOverflow {
            limit: limits.max_stack_bytes,
        },
        Some(trap) => match &state.error {
            // The SDK's panic hook reports the message, then aborts.
            Some((message, row)) => TransformError::Failed {
                message: message.clone(),
                row: (*row != u32::MAX).then_some(*row),
            },
            None => TransformError::Trap(trap.to_string()),
        },
        None => TransformError::Trap(format!("{error:#}")),
    }
}
