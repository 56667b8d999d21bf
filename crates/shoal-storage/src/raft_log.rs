//! Raft logs: for every Raft group of the node, its log entries, vote, committed and
//! purged pointers — all in one keyspace, so every group's appends go through one
//! journal and share fsyncs.
//!
//! Entries and pointers are opaque bytes here (the Raft crate encodes them); this
//! module knows only indexes and keys. Keys: `group (u64 BE) ++ tag ++ [index u64 BE]`,
//! so one group's entries are contiguous and in index order.
//!
//! Durability: [`RaftLog::append`], [`RaftLog::truncate_from`] and
//! [`RaftLog::purge_upto`] commit atomically but return before fsync; pass the ticket
//! to [`crate::Store::sync`] (blocking) or [`crate::Store::sync_then`] (a callback from
//! the node's flusher thread, which covers every waiting group with one fsync).
//! [`RaftLog::save_vote`] is durable on return.

use std::ops::{Bound, RangeBounds};

use fjall::Keyspace;

use crate::StorageError;
use crate::store::{Inner, Ticket};

const TAG_ENTRY: u8 = 1;
const TAG_VOTE: u8 = 2;
const TAG_COMMITTED: u8 = 3;
const TAG_PURGED: u8 = 4;

/// The log of one Raft group.
#[derive(Clone)]
pub struct RaftLog {
    pub(crate) inner: std::sync::Arc<Inner>,
    pub(crate) ks: Keyspace,
    pub(crate) group: u64,
}

fn key(group: u64, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.extend_from_slice(&group.to_be_bytes());
    k.push(tag);
    k
}

fn entry_key(group: u64, index: u64) -> Vec<u8> {
    let mut k = key(group, TAG_ENTRY);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn index_of(k: &[u8]) -> Result<u64, StorageError> {
    k.get(9..17)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Corrupt {
            what: "raft log key".into(),
            reason: format!("{} bytes", k.len()),
        })
}

impl RaftLog {
    /// The group this log belongs to.
    pub fn group(&self) -> u64 {
        self.group
    }

    /// Appends (or overwrites) entries atomically. Not durable until synced.
    pub fn append(&self, entries: &[(u64, &[u8])]) -> Result<Ticket, StorageError> {
        let mut batch = self.inner.db.batch();
        for (index, bytes) in entries {
            batch.insert(&self.ks, entry_key(self.group, *index), *bytes);
        }
        self.inner.check(batch.commit())?;
        Ok(self.inner.ticket())
    }

    /// Waits until `ticket` is durable (see [`crate::Store::sync`]).
    pub fn sync(&self, ticket: Ticket) -> Result<(), StorageError> {
        self.inner.sync(ticket)
    }

    /// Calls `callback` from the flusher once `ticket` is durable (see
    /// [`crate::Store::sync_then`]).
    pub fn sync_then(&self, ticket: Ticket, callback: crate::SyncCallback) {
        self.inner.sync_then(ticket, callback)
    }

    /// Entries with index in `range`, in index order.
    pub fn entries(
        &self,
        range: impl RangeBounds<u64>,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Some(*i),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(i) => Some(i - 1),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e < start) {
            return Ok(Vec::new());
        }
        let lo = entry_key(self.group, start);
        let hi = entry_key(self.group, end.unwrap_or(u64::MAX));
        self.ks
            .range(lo..=hi)
            .map(|kv| {
                let (k, v) = kv.into_inner()?;
                Ok((index_of(&k)?, v.to_vec()))
            })
            .collect()
    }

    /// The entry with the highest index, if any.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let lo = entry_key(self.group, 0);
        let hi = entry_key(self.group, u64::MAX);
        match self.ks.range(lo..=hi).next_back() {
            Some(kv) => {
                let (k, v) = kv.into_inner()?;
                Ok(Some((index_of(&k)?, v.to_vec())))
            }
            None => Ok(None),
        }
    }

    fn remove_range(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        lo: u64,
        hi: u64,
    ) -> Result<(), StorageError> {
        for kv in self
            .ks
            .range(entry_key(self.group, lo)..=entry_key(self.group, hi))
        {
            batch.remove(&self.ks, kv.key()?);
        }
        Ok(())
    }

    /// Removes every entry with index `>= index` (a follower's conflicting suffix).
    pub fn truncate_from(&self, index: u64) -> Result<Ticket, StorageError> {
        let mut batch = self.inner.db.batch();
        self.remove_range(&mut batch, index, u64::MAX)?;
        self.inner.check(batch.commit())?;
        Ok(self.inner.ticket())
    }

    /// Removes every entry with index `<= index` and records `purged` (the caller's
    /// encoding of the last purged log id) in the same atomic batch.
    pub fn purge_upto(&self, index: u64, purged: &[u8]) -> Result<Ticket, StorageError> {
        let mut batch = self.inner.db.batch();
        self.remove_range(&mut batch, 0, index)?;
        batch.insert(&self.ks, key(self.group, TAG_PURGED), purged);
        self.inner.check(batch.commit())?;
        Ok(self.inner.ticket())
    }

    fn get(&self, tag: u8) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.ks.get(key(self.group, tag))?.map(|v| v.to_vec()))
    }

    /// The last purged log id recorded by [`RaftLog::purge_upto`].
    pub fn purged(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(TAG_PURGED)
    }

    /// Saves the vote durably (fsynced on return).
    pub fn save_vote(&self, vote: &[u8]) -> Result<(), StorageError> {
        self.inner
            .check(self.ks.insert(key(self.group, TAG_VOTE), vote))?;
        let t = self.inner.ticket();
        self.inner.sync(t)
    }

    /// The saved vote.
    pub fn vote(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(TAG_VOTE)
    }

    /// Records the committed log id (not fsynced: losing it only delays re-applying).
    pub fn save_committed(&self, committed: &[u8]) -> Result<(), StorageError> {
        self.inner
            .check(self.ks.insert(key(self.group, TAG_COMMITTED), committed))
    }

    /// The recorded committed log id.
    pub fn committed(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.get(TAG_COMMITTED)
    }

    /// Removes the whole group: entries, vote and pointers (durably).
    pub fn destroy(&self) -> Result<(), StorageError> {
        let mut batch = self.inner.db.batch();
        for kv in self.ks.prefix(self.group.to_be_bytes()) {
            batch.remove(&self.ks, kv.key()?);
        }
        self.inner.check(batch.commit())?;
        let t = self.inner.ticket();
        self.inner.sync(t)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use crate::Store;

    fn append(log: &crate::RaftLog, range: std::ops::Range<u64>, tag: &str) {
        let bodies: Vec<(u64, Vec<u8>)> = range
            .map(|i| (i, format!("{tag}{i}").into_bytes()))
            .collect();
        let refs: Vec<(u64, &[u8])> = bodies.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        let t = log.append(&refs).unwrap();
        log.inner.sync(t).unwrap();
    }

    fn indexes(log: &crate::RaftLog, range: impl std::ops::RangeBounds<u64>) -> Vec<u64> {
        log.entries(range)
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn destroying_a_range_of_groups_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let logs: Vec<crate::RaftLog> = [9, 10, 11, 12, u64::MAX]
            .into_iter()
            .map(|g| store.raft_log(g))
            .collect();
        for log in &logs {
            append(log, 1..4, "x");
            log.save_vote(b"v").unwrap();
        }
        store.destroy_raft_logs(10..=11).unwrap();
        let left: Vec<usize> = logs.iter().map(|l| indexes(l, ..).len()).collect();
        assert_eq!(left, vec![3, 0, 0, 3, 3]);
        assert_eq!(logs[1].vote().unwrap(), None);
        assert_eq!(logs[0].vote().unwrap(), Some(b"v".to_vec()));
        store.destroy_raft_logs(12..=u64::MAX).unwrap();
        assert_eq!(indexes(&logs[4], ..).len(), 0);
        assert_eq!(indexes(&logs[0], ..).len(), 3);
    }

    #[test]
    fn append_read_truncate_purge_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let (a, b) = (store.raft_log(1), store.raft_log(2));
            append(&a, 1..11, "a");
            append(&b, 1..4, "b");
            assert_eq!(indexes(&a, ..), (1..11).collect::<Vec<_>>());
            assert_eq!(indexes(&a, 3..5), vec![3, 4]);
            assert_eq!(indexes(&a, 3..=5), vec![3, 4, 5]);
            assert_eq!(indexes(&a, ..0), Vec::<u64>::new());
            let (lo, hi) = (7, 3);
            assert_eq!(
                indexes(&a, lo..hi),
                Vec::<u64>::new(),
                "a reversed range is empty"
            );
            assert_eq!(a.entries(2..3).unwrap(), vec![(2, b"a2".to_vec())]);
            assert_eq!(a.last().unwrap(), Some((10, b"a10".to_vec())));
            assert_eq!(b.last().unwrap(), Some((3, b"b3".to_vec())));

            // A follower's conflicting suffix, then the leader's version of it.
            a.inner.sync(a.truncate_from(8).unwrap()).unwrap();
            assert_eq!(a.last().unwrap().map(|e| e.0), Some(7));
            append(&a, 8..9, "new");
            assert_eq!(a.last().unwrap(), Some((8, b"new8".to_vec())));

            a.inner.sync(a.purge_upto(4, b"purged-4").unwrap()).unwrap();
            assert_eq!(indexes(&a, ..), vec![5, 6, 7, 8]);
            assert_eq!(indexes(&b, ..), vec![1, 2, 3], "groups are separate");

            a.save_vote(b"vote-a").unwrap();
            a.save_committed(b"committed-7").unwrap();
            // An empty log after purging everything still knows what it purged.
            b.inner.sync(b.purge_upto(3, b"purged-3").unwrap()).unwrap();
            assert_eq!(b.last().unwrap(), None);
        }
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (store.raft_log(1), store.raft_log(2));
        assert_eq!(indexes(&a, ..), vec![5, 6, 7, 8]);
        assert_eq!(a.entries(8..).unwrap(), vec![(8, b"new8".to_vec())]);
        assert_eq!(a.vote().unwrap().as_deref(), Some(&b"vote-a"[..]));
        assert_eq!(a.purged().unwrap().as_deref(), Some(&b"purged-4"[..]));
        assert_eq!(b.purged().unwrap().as_deref(), Some(&b"purged-3"[..]));
        assert_eq!(b.vote().unwrap(), None);
        a.destroy().unwrap();
        assert_eq!(
            (a.last().unwrap(), a.vote().unwrap(), a.purged().unwrap()),
            (None, None, None)
        );
        assert_eq!(b.purged().unwrap().as_deref(), Some(&b"purged-3"[..]));
    }

    #[test]
    fn flusher_calls_back_once_durable_and_shares_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (tx, rx) = mpsc::channel();
        let before = store.fsyncs();
        // Many groups append; each asks to be called back when durable.
        for g in 0..50u64 {
            let log = store.raft_log(g);
            let t = log.append(&[(1, b"x".as_slice())]).unwrap();
            let tx = tx.clone();
            store.sync_then(t, Box::new(move |r| tx.send((g, r.is_ok())).unwrap()));
        }
        let mut done: Vec<(u64, bool)> = (0..50).map(|_| rx.recv().unwrap()).collect();
        done.sort();
        assert_eq!(done, (0..50).map(|g| (g, true)).collect::<Vec<_>>());
        let fsyncs = store.fsyncs() - before;
        assert!((1..=50).contains(&fsyncs), "fsyncs: {fsyncs}");
        drop(store);
        // What was acknowledged is there after reopening.
        let store = Store::open(dir.path()).unwrap();
        for g in 0..50u64 {
            assert_eq!(store.raft_log(g).last().unwrap(), Some((1, b"x".to_vec())));
        }
    }
}
