//! A gate that holds a group's new proposals while its leadership is handed over
//! (see `balance`). A leaf: it knows nothing of nodes or groups.
//!
//! A closed gate never refuses: callers wait until it opens or their own timeout
//! passes, and [`Reopen`] opens it however the transfer that closed it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Holds proposals to one group while its leadership is being handed over.
#[derive(Default)]
pub(crate) struct Gate {
    closed: AtomicBool,
    opened: Notify,
}

impl Gate {
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// Returns when the gate is open, or after `timeout`.
    pub(crate) async fn pass(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return;
            }
        }
    }
}

/// Reopens a gate when a transfer ends, however it ends.
pub(crate) struct Reopen<'a>(pub(crate) &'a Gate);

impl Drop for Reopen<'_> {
    fn drop(&mut self) {
        self.0.open();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_closed_gate_holds_until_opened_or_timeout() {
        let gate = Arc::new(Gate::default());
        // Open: passes at once.
        tokio::time::timeout(
            Duration::from_millis(500),
            gate.pass(Duration::from_secs(60)),
        )
        .await
        .expect("an open gate passes");
        // Closed: holds until opened.
        gate.close();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.pass(Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a closed gate holds");
        gate.open();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("opening releases the waiter")
            .unwrap();
        // Closed and never opened: released by the timeout.
        gate.close();
        tokio::time::timeout(Duration::from_secs(5), gate.pass(Duration::from_millis(20)))
            .await
            .expect("the timeout releases");
    }
}
