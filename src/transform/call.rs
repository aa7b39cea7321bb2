//! [`CompiledTransform`]: a compiled module and its calls. Each call runs
//! in a pooled instance under fuel, epoch (wall clock), memory, stack and
//! output limits, so a runaway call fails alone with the limit's name.
//! Instances stay warm between clean calls (a fresh one's memory reset
//! costs more than the call) and are dropped after any failure, after
//! `WARM_CALLS` calls, or once grown past half their memory limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef};
use arrow::compute::cast;
use wasmtime::{Engine, InstancePre, Store, Trap, TypedFunc};

use super::abi;
use super::runtime::{
    runtime_error, CallState, EpochTicker, MemoryLimiter, WarmBudget, EPOCH_TICK,
};
use super::schema::{self, ModuleSchema};
use super::{TransformError, TransformLimits};

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
    /// Warm instances across the runtime's modules: a module keeps one
    /// only while the budget allows.
    budget: Arc<WarmBudget>,
    _ticker: Arc<EpochTicker>,
}

impl Drop for Compiled {
    fn drop(&mut self) {
        let held = self
            .warm
            .iter_mut()
            .map(|slot| match slot.get_mut() {
                Ok(session) => session.is_some(),
                Err(poisoned) => poisoned.into_inner().is_some(),
            })
            .filter(|held| *held)
            .count();
        self.budget.release(held);
    }
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
    pub(super) fn new(
        runtime: Shared,
        pre: InstancePre<CallState>,
        exports: Exports,
        schema: ModuleSchema,
        sha256: String,
    ) -> Self {
        let Shared {
            engine,
            limits,
            ticker,
            budget,
        } = runtime;
        CompiledTransform {
            inner: Arc::new(Compiled {
                exports,
                engine,
                pre,
                schema,
                sha256,
                warm: (0..warm_sessions(&limits))
                    .map(|_| Mutex::new(None))
                    .collect(),
                limits,
                budget,
                _ticker: ticker,
            }),
        }
    }

    pub fn schema(&self) -> &ModuleSchema {
        &self.inner.schema
    }

    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    pub(super) fn module(&self) -> &wasmtime::Module {
        self.inner.pre.module()
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
        let session = self
            .inner
            .warm
            .iter()
            .find_map(|slot| slot.try_lock().ok().and_then(|mut slot| slot.take()))?;
        self.inner.budget.release(1);
        Some(session)
    }

    /// Keeps a session that ended its call cleanly for the next call, unless
    /// it has served long or grown (a module leaking memory is recycled
    /// before it reaches its limit) or every slot is taken.
    fn put_warm(&self, session: Session) {
        if session.calls >= WARM_CALLS || session.worn(&self.inner.limits) {
            return;
        }
        if !self.inner.budget.reserve() {
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
        self.inner.budget.release(1);
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

thread_local! {
    /// When the request this thread works for gives up: calls end there
    /// even inside their own `max_call_ms` (see [`with_deadline`]).
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs `work` with every transform call on this thread ending by
/// `deadline` (as a [`TransformError::Timeout`]): the server gives a
/// request's transforms the request's own time, so a request that timed
/// out stops using its worker within an epoch tick, however many rows it
/// carried.
pub fn with_deadline<T>(deadline: Instant, work: impl FnOnce() -> T) -> T {
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            DEADLINE.with(|cell| cell.set(self.0));
        }
    }
    let _reset = Reset(DEADLINE.with(|cell| cell.replace(Some(deadline))));
    work()
}

/// How long this thread's request has left, when it has a deadline.
pub(super) fn time_left() -> Option<Duration> {
    DEADLINE
        .with(|cell| cell.get())
        .map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// Epoch ticks a call may run: `max_call_ms`, or less when this thread's
/// request ends sooner.
fn epoch_ticks(limits: &TransformLimits) -> u64 {
    let mut ms = limits.max_call_ms;
    if let Some(deadline) = DEADLINE.with(|cell| cell.get()) {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        ms = ms.min(left);
    }
    (ms / EPOCH_TICK.as_millis() as u64).max(1) + 1
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

/// What every module compiled by one runtime shares with it.
pub(super) struct Shared {
    pub(super) engine: Engine,
    pub(super) limits: TransformLimits,
    pub(super) ticker: Arc<EpochTicker>,
    pub(super) budget: Arc<WarmBudget>,
}

/// Export handles resolved once per module, so a call does no name lookups.
pub(super) struct Exports {
    pub(super) memory: wasmtime::ModuleExport,
    pub(super) transform: wasmtime::ModuleExport,
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
