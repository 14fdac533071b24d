//! A future that is polled only when it asked to be.
//!
//! `select!` polls every branch whenever its task wakes. A session's relay
//! task wakes several times per statement, for its sockets, and its
//! shutdown branches (cancellation tokens) would be polled each time: a
//! `Notified` poll takes the `Notify`'s lock to check its waker, and a
//! token's cancelled state sits behind another lock. That was 924
//! instructions per extended-protocol transaction, 5% of the session's
//! own work (callgrind, one client). [`Gated`] hands its future a waker of
//! its own and polls it again only once that waker has fired, or when the
//! task's waker changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

pub struct Gated<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The inner future's waker, wrapping `flag`.
    waker: Waker,
    /// The task waker last registered in `flag`.
    task: Option<Waker>,
}

struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // Poisoning needs a panic while the lock is held, and nothing here
        // panics; a poisoned lock still holds the waker.
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Gated {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&flag)),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            *this.flag.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(w.clone());
            this.task = Some(w);
            // A wake-up that went to the previous waker is lost: look now.
            this.flag.woken.store(true, Ordering::Release);
        }
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `notify` fired.
    struct Counting<'a> {
        polls: &'a AtomicUsize,
        notified: Pin<Box<tokio::sync::futures::Notified<'a>>>,
    }

    impl Future for Counting<'_> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.notified.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn polls_its_future_only_after_that_future_was_woken() {
        let notify = tokio::sync::Notify::new();
        let polls = AtomicUsize::new(0);
        let mut gated = Gated::new(Counting {
            polls: &polls,
            notified: Box::pin(notify.notified()),
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
        let mut seen = 0;
        // Other branches wake the task many times; the gated one is polled
        // once, to register.
        for i in 0..100 {
            tx.send(i).await.unwrap();
            tokio::select! {
                _ = &mut gated => panic!("ready before it was notified"),
                v = rx.recv() => seen += v.is_some() as u32,
            }
        }
        assert_eq!(seen, 100);
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        notify.notify_waiters();
        tokio::time::timeout(std::time::Duration::from_secs(5), &mut gated)
            .await
            .expect("woken once notified");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_new_task_waker_gets_the_next_wake() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let n = Arc::clone(&notify);
        // Polled first from this task, then moved into another one.
        let mut gated = Box::pin(Gated::new(async move { n.notified().await }));
        assert!(futures_poll_once(gated.as_mut()).is_pending());
        let task = tokio::spawn(gated);
        tokio::task::yield_now().await;
        notify.notify_waiters();
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the moved future was woken")
            .unwrap();
    }

    fn futures_poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let waker = Waker::noop();
        f.poll(&mut Context::from_waker(waker))
    }
}
