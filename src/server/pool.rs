//! The transform pool: a few worker threads, apart from the event loop and
//! from tokio's blocking pool, that run the requests whose cost a client
//! controls (lookups with on-demand views, pushes into write-time views,
//! module uploads). Its queue is bounded: when it is full the request is
//! answered 503 at once instead of waiting, so transforms can slow only
//! each other, never `/health` or plain lookups.
//!
//! Workers run at a lower scheduling priority (nice 10 on Linux), so on a
//! busy machine the event loop gets the cores first; each job's transform
//! calls end at the request's deadline ([`crate::transform::with_deadline`]).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::error::ApiError;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Worker threads and their bounded queue.
pub(super) struct TransformPool {
    jobs: SyncSender<Job>,
    /// What a full pool tells the client (which settings size it).
    full: String,
}

impl TransformPool {
    /// `workers` threads (at least one) behind a queue of `queue` waiting
    /// jobs; `full` is the message when both are taken.
    pub(super) fn new(workers: usize, queue: usize, full: String) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..workers {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("wafer-transform-{index}"))
                .spawn(move || work(&receiver))?;
        }
        Ok(TransformPool { jobs, full })
    }

    /// Runs `job` on a worker with its transform calls ending by
    /// `deadline`; 503 at once when every worker is busy and the queue is
    /// full.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        deadline: Option<Instant>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A job whose request already gave up is not started.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = sender.send(None);
                return;
            }
            let result = match deadline {
                Some(deadline) => crate::transform::with_deadline(deadline, job),
                None => job(),
            };
            let _ = sender.send(Some(result));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Overloaded",
                    self.full.clone(),
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::internal("the transform pool has stopped"))
            }
        }
        match receiver.await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Timeout",
                "the request's time ran out before a transform worker was free",
            )),
            Err(_) => Err(ApiError::internal("a transform worker failed")),
        }
    }
}

/// How long a worker that just finished a job polls for the next one
/// before it sleeps: a client's next request often arrives within it, and
/// waking a sleeping thread costs about 0.1 ms on a VM.
const LINGER: Duration = Duration::from_micros(300);

fn work(receiver: &Mutex<Receiver<Job>>) {
    lower_priority();
    let mut lingering = false;
    loop {
        // The lock is held only while waiting for the next job.
        let receiver = receiver.lock().unwrap_or_else(|e| e.into_inner());
        let mut job = None;
        if lingering {
            let until = Instant::now() + LINGER;
            while job.is_none() && Instant::now() < until {
                match receiver.try_recv() {
                    Ok(next) => job = Some(next),
                    Err(TryRecvError::Empty) => std::thread::yield_now(),
                    Err(TryRecvError::Disconnected) => return,
                }
            }
        }
        let job = match job {
            Some(job) => job,
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        drop(receiver);
        lingering = true;
        // A panicking job loses only its own answer (the handler sees a
        // dropped sender); the worker lives on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Nice 10 for this thread only (Linux schedules threads individually).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority with this thread's id changes only this
        // thread's nice value; failure leaves it unchanged.
        let result = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10)
        };
        if result != 0 {
            tracing::debug!("cannot lower the transform workers' priority");
        }
    }
}
