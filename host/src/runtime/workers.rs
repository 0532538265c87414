//! Guest threads: where guest instances run.
//!
//! Each instance runs on one thread, and the sockets it opens are registered
//! with that thread's event loop, so a request is read, answered and written
//! on one thread without a hand-off. (On one shared work-stealing runtime a
//! guest's task and its sockets' wake-ups moved between threads: about one
//! context switch per three requests, measured in BENCHMARKS.md.) Instances
//! are spread over a pool of threads, one per core by default, each running
//! a single-threaded tokio runtime; the host's own work (signals, admin,
//! supervision, compiling) stays on the main runtime.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The guest threads of one host: each a single-threaded runtime, with
/// the instances running on it counted.
pub struct GuestThreads {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    /// Instances running on this thread.
    load: Arc<AtomicUsize>,
}

impl GuestThreads {
    /// Starts `threads` guest threads (at least one); they run until the
    /// process exits.
    pub fn start(threads: usize) -> std::io::Result<Arc<Self>> {
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("guest-{i}"))
                // Runs the instances spawned onto it until the process exits.
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
            workers.push(Worker {
                handle,
                load: Arc::default(),
            });
        }
        Ok(Arc::new(GuestThreads { workers }))
    }

    /// No threads of its own: instances run on the caller's runtime (a
    /// tool or test that drives the library in-process).
    pub fn on_caller() -> Arc<Self> {
        Arc::new(GuestThreads {
            workers: Vec::new(),
        })
    }

    /// How many guest threads there are (1 on the caller's runtime). A
    /// tenant's `instances = "auto"` is one per guest thread.
    pub fn count(&self) -> usize {
        self.workers.len().max(1)
    }

    /// Runs `future` (a guest instance) on the least loaded guest thread.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
        else {
            return tokio::spawn(future);
        };
        worker.load.fetch_add(1, Ordering::Relaxed);
        // Moved into the task, so dropped with it even if never polled.
        let running = OnThread(worker.load.clone());
        worker.handle.spawn(async move {
            let _running = running;
            future.await
        })
    }
}

/// Counts an instance on its thread while it lives (also when aborted).
struct OnThread(Arc<AtomicUsize>);

impl Drop for OnThread {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
