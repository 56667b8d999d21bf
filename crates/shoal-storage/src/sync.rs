//! Group commit: many writers, few fsyncs.
//!
//! Each committed (but not yet durable) batch takes a [`Ticket`](crate::Ticket) — a
//! position in the node's commit order. [`GroupSync::sync`] returns once an fsync that
//! started *after* the ticket's batch was committed has finished. While one fsync runs,
//! later callers queue on the mutex; the first of them then fsyncs once for all of
//! them. Throughput grows with concurrency instead of being capped at one write per
//! fsync.
//!
//! Each fsync is counted (`shoal_storage_fsyncs_total`) and timed
//! (`shoal_storage_fsync_seconds`) through the `metrics` facade; with no exporter
//! installed that costs nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Tracks committed and durable positions of one database.
#[derive(Debug, Default)]
pub struct GroupSync {
    /// Tickets handed out: every batch with a ticket `<= committed` is committed.
    committed: AtomicU64,
    /// Highest ticket known durable. The mutex also serialises fsyncs.
    durable: Mutex<u64>,
    /// Number of fsyncs performed (for metrics and tests).
    fsyncs: AtomicU64,
    /// True while the latest fsync failed (readiness, `Store::check_writable`).
    failing: std::sync::atomic::AtomicBool,
}

impl GroupSync {
    /// Records that a batch has been committed to the engine; returns its ticket.
    pub fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Makes every batch up to `ticket` durable, calling `fsync` at most once.
    pub fn sync<E>(&self, ticket: u64, fsync: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        let mut durable = self.durable.lock();
        if *durable >= ticket {
            return Ok(());
        }
        // Every ticket <= target belongs to a batch already committed to the engine,
        // so this one fsync covers them all.
        let target = self.committed.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        if let Err(e) = fsync() {
            self.failing.store(true, Ordering::Relaxed);
            metrics::counter!("shoal_storage_fsync_errors_total").increment(1);
            return Err(e);
        }
        self.failing.store(false, Ordering::Relaxed);
        metrics::histogram!("shoal_storage_fsync_seconds").record(started.elapsed());
        metrics::counter!("shoal_storage_fsyncs_total").increment(1);
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        *durable = target;
        Ok(())
    }

    /// True if the latest fsync failed.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// How many fsyncs have run.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_fsync_covers_earlier_tickets() {
        let g = GroupSync::default();
        let a = g.committed();
        let b = g.committed();
        g.sync::<()>(b, || Ok(())).unwrap();
        assert_eq!(g.fsyncs(), 1);
        g.sync::<()>(a, || panic!("already durable")).unwrap();
        let c = g.committed();
        g.sync::<()>(c, || Ok(())).unwrap();
        assert_eq!(g.fsyncs(), 2);
    }

    #[test]
    fn failed_fsync_leaves_ticket_not_durable() {
        let g = GroupSync::default();
        let a = g.committed();
        assert!(g.sync(a, || Err("disk")).is_err());
        assert!(g.failing());
        g.sync::<()>(a, || Ok(())).unwrap();
        assert!(!g.failing());
        assert_eq!(g.fsyncs(), 1);
    }

    #[test]
    fn writers_queued_behind_an_fsync_share_the_next_one() {
        let g = Arc::new(GroupSync::default());
        let first = g.committed();
        let (inside_tx, inside_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let a = {
            let g = g.clone();
            std::thread::spawn(move || {
                g.sync::<()>(first, || {
                    inside_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    Ok(())
                })
                .unwrap()
            })
        };
        inside_rx.recv().unwrap();
        // Eight batches commit while the first fsync is in flight: not covered by it.
        let tickets: Vec<u64> = (0..8).map(|_| g.committed()).collect();
        let waiters: Vec<_> = tickets
            .into_iter()
            .map(|t| {
                let g = g.clone();
                std::thread::spawn(move || g.sync::<()>(t, || Ok(())).unwrap())
            })
            .collect();
        release_tx.send(()).unwrap();
        a.join().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        // One fsync for the first batch, exactly one more for the eight queued ones.
        assert_eq!(g.fsyncs(), 2);
    }
}
