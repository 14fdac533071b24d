//! Bounded waits on the statement path that do not register a timer each.
//!
//! `tokio::time::timeout` registers a fresh timer per call, and registering
//! a timer wakes the runtime's IO driver (an eventfd write, then an extra
//! `epoll_wait`) even while the runtime is busy rather than parked (tokio
//! issue 5207). A wait bounded once per statement paid that on every
//! statement. A [`Bound`] keeps one timer and moves its deadline later for
//! each wait, which tokio does with an atomic store while the timer is
//! still registered.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct Bound {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

/// The wait's limit passed first.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

impl Bound {
    pub fn new(limit: Duration) -> Self {
        Bound { limit, timer: None }
    }

    /// `fut`'s output, or `Elapsed` once `limit` has passed since the call.
    /// Must run inside a tokio runtime with time enabled.
    pub async fn wait<F: Future>(&mut self, fut: F) -> Result<F::Output, Elapsed> {
        let deadline = Instant::now() + self.limit;
        let timer = match &mut self.timer {
            Some(t) => {
                t.as_mut().reset(deadline);
                t
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        tokio::select! {
            biased;
            out = fut => Ok(out),
            _ = timer.as_mut() => Err(Elapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_wait_is_bounded_from_its_own_start() {
        let mut b = Bound::new(Duration::from_secs(60));
        assert_eq!(b.wait(async { 7 }).await, Ok(7));

        // Later waits get the whole limit again, not what the first left.
        tokio::time::advance(Duration::from_secs(50)).await;
        let started = Instant::now();
        let r = b.wait(tokio::time::sleep(Duration::from_secs(59))).await;
        assert_eq!(r, Ok(()));
        assert_eq!(started.elapsed(), Duration::from_secs(59));

        let started = Instant::now();
        let r = b.wait(std::future::pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(started.elapsed(), Duration::from_secs(60));

        // A fired timer is armed again.
        let started = Instant::now();
        let r = b.wait(std::future::pending::<()>()).await;
        assert_eq!(r, Err(Elapsed));
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert_eq!(b.wait(async { 1 }).await, Ok(1));
    }
}
