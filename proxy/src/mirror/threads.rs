//! Where mirror tasks run: threads of their own, apart from the sessions'.
//!
//! A mirror task's work (sending the copy, reading, hashing and comparing
//! the mirror's answer) done on its session's thread sits in the primary
//! path whenever the mirror's answer arrives just before the primary's,
//! which with both backends running the same statement is most of the
//! time. On threads of its own it costs the session one wake-up of a
//! mirror thread per batch it queues, and the kernel can run it on another
//! CPU. The threads start with the first mirror, so a pass-through pgshift
//! has none.

use std::future::Future;
use std::sync::OnceLock;

use tokio_util::task::TaskTracker;

use crate::workers::Workers;

pub struct MirrorTasks {
    tracker: TaskTracker,
    threads: OnceLock<Option<Workers>>,
}

impl Default for MirrorTasks {
    fn default() -> Self {
        MirrorTasks {
            tracker: TaskTracker::new(),
            threads: OnceLock::new(),
        }
    }
}

impl MirrorTasks {
    /// Runs a mirror task on the next mirror thread (`PGSHIFT_MIRROR_THREADS`
    /// of them, one per CPU by default). Should the threads fail to start,
    /// on the caller's own runtime instead.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let threads = self.threads.get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            Workers::from_env("pgshift-mirror", "PGSHIFT_MIRROR_THREADS", cpus)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot start the mirror threads: mirrors run on their sessions' threads"))
                .ok()
        });
        match threads {
            Some(threads) => threads.spawn(self.tracker.track_future(task)),
            None => drop(self.tracker.spawn(task)),
        }
    }

    /// Tasks still running (or queued to).
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// No more tasks are expected: [`Self::wait`] can end.
    pub fn close(&self) {
        self.tracker.close();
    }

    /// Until every task has ended, once closed.
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }

    /// Ends the threads, dropping any task still on them. Blocks until
    /// they have ended.
    pub fn stop(&self) {
        if let Some(Some(threads)) = self.threads.get() {
            threads.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_mirror_threads_and_are_tracked() {
        let tasks = MirrorTasks::default();
        let (tx, rx) = std::sync::mpsc::channel();
        tasks.spawn(async move {
            let name = std::thread::current().name().map(str::to_owned);
            tx.send(name).unwrap();
        });
        let name = rx.recv().unwrap().unwrap();
        assert!(name.starts_with("pgshift-mirror-"), "{name}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        tasks.close();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), tasks.wait())
                .await
                .expect("the task ended and was counted off");
        });
        assert!(tasks.is_empty());
        tasks.stop();
    }
}
