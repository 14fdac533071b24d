//! Threads that each drive a single-threaded runtime: where sessions run.
//!
//! A session stays on the thread it was given, so waking it never involves
//! a second thread: on the small hosts a proxy shares with its database,
//! the cross-thread wake-ups of a work-stealing runtime cost more than the
//! balancing they buy. Sessions (and, on threads of their own, mirror
//! tasks) are dealt out in turn.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    joins: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// `n` threads (named `{name}-0`, `{name}-1`, ...), or `var` from the
    /// environment when it holds a positive number.
    pub fn from_env(name: &str, var: &str, n: usize) -> std::io::Result<Self> {
        let n = std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(n);
        Self::start(name, n)
    }

    pub fn start(name: &str, n: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut joins = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            let join = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                // The runtime is dropped on its own thread once stopped,
                // which ends whatever tasks are left.
                .spawn(move || rt.block_on(stop.cancelled()))?;
            joins.push(join);
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
            joins: Mutex::new(joins),
        })
    }

    /// Runs `task` on the next thread in turn. After `stop` it is dropped
    /// unrun.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        drop(self.handles[i].spawn(task));
    }

    /// Ends the threads, dropping any task still on them.
    pub fn stop(&self) {
        self.stop.cancel();
        let joins = std::mem::take(&mut *self.joins.lock().unwrap_or_else(|p| p.into_inner()));
        for j in joins {
            // A thread cannot join itself; dropping its handle detaches it.
            if j.thread().id() != std::thread::current().id() {
                let _ = j.join();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn tasks_run_on_the_workers_in_turn_and_stop_ends_them() {
        let threads = Workers::start("pgshift-session", 2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            threads.spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).unwrap();
            });
        }
        let mut names: Vec<_> = (0..4).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names, ["pgshift-session-0", "pgshift-session-1"]);

        // A task still waiting when the threads stop is dropped, not leaked.
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Flag(Arc::clone(&dropped));
        threads.spawn(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        threads.stop();
        assert!(dropped.load(Ordering::SeqCst));
    }
}
