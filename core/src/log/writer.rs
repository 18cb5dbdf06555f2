//! The writer thread: the only owner of write transactions. It drains whatever producers have queued
//! (up to the batch limit), seals each record into the hash chain, writes events, index, blobs and
//! checkpoints in one transaction, commits with full durability, and only then completes the
//! waiting handles and publishes the new head. One fsync carries the whole batch (group commit).
//!
//! When a commit fails (disk full, I/O error) the batch's handles fail and the log is marked
//! failing. redb refuses every later transaction on that handle, so the writer drops the database
//! and reopens it with backoff, failing whatever arrives meanwhile (those events were never
//! written, so nothing reported as failed is committed later). Once reopened it re-reads the head
//! from the file, so seqs stay gapless and the chain continues from what is really committed.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use redb::{Database, Durability, ReadableTable};

use super::notify::{Shared, Slot};
use super::store::{Backoff, Current, Opener};
use super::{BLOBS, CHECKPOINTS, EVENTS, META, META_HEAD_HASH, META_HEAD_SEQ, REQUEST_INDEX};
use crate::record;

/// An encoded event waiting for its seq.
pub(crate) struct Pending {
    pub(crate) bytes: Vec<u8>,
    pub(crate) request: Option<u128>,
    pub(crate) slot: Arc<Slot>,
}

pub(crate) enum Msg {
    Append(Pending),
    Blob {
        hash: [u8; 32],
        bytes: Vec<u8>,
        slot: Arc<Slot>,
    },
    Checkpoint {
        name: String,
        bytes: Vec<u8>,
        slot: Arc<Slot>,
    },
    /// Completes once everything queued before it is committed.
    Barrier(Arc<Slot>),
    Shutdown,
}

pub(crate) struct Writer {
    /// `None` only while reopening after a failed commit.
    pub(crate) db: Option<Arc<Database>>,
    /// The handle readers use, swapped together with `db`.
    pub(crate) current: Arc<Current>,
    pub(crate) opener: Opener,
    pub(crate) backoff: Backoff,
    pub(crate) rx: Receiver<Msg>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) batch_limit: usize,
    pub(crate) window: std::time::Duration,
    pub(crate) head_seq: u64,
    pub(crate) head_hash: [u8; 32],
    /// Reused buffer for the batch's `request_index` keys.
    pub(crate) index_keys: Vec<(u128, u64)>,
}

impl Writer {
    pub(crate) fn run(mut self) {
        self.shared.register_writer();
        let mut batch: Vec<Msg> = Vec::with_capacity(self.batch_limit);
        let mut stop = false;
        while !stop {
            let Ok(first) = self.rx.recv() else { break };
            let deadline = Instant::now() + self.window;
            batch.push(first);
            self.drain(&mut batch);
            // Batch window: wait a little so more events gather and one fsync carries them,
            // unless someone waits (a barrier, a shutdown, or a waiter that marked the writer
            // urgent and unparked it). Parking (rather than blocking on the channel) means
            // producers that do not wait never wake this thread per event.
            let urgent = |b: &[Msg]| {
                b.iter()
                    .any(|m| matches!(m, Msg::Barrier(_) | Msg::Shutdown))
            };
            if !self.window.is_zero() && batch.len() < self.batch_limit && !urgent(&batch) {
                loop {
                    let now = Instant::now();
                    if now >= deadline || self.shared.urgent.load(Ordering::Acquire) {
                        break;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            }
            // Consume the urgency before the last drain: a waiter marks it after its event was
            // queued, so that event is in this batch (or, if the batch is full, the flag is set
            // again below and the next batch does not wait either).
            let hurried = self.shared.urgent.swap(false, Ordering::AcqRel);
            self.drain(&mut batch);
            if hurried && batch.len() >= self.batch_limit && !self.rx.is_empty() {
                self.shared.urgent.store(true, Ordering::Release);
            }
            if batch.iter().any(|m| matches!(m, Msg::Shutdown)) {
                // Commit what came with the shutdown, then anything queued behind it.
                stop = true;
                batch.extend(self.rx.try_iter());
            }
            let ok = self.commit(&mut batch);
            batch.clear();
            if !ok && !stop && !self.recover() {
                stop = true;
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.notify();
    }

    /// Takes what is queued, up to the batch limit.
    fn drain(&self, batch: &mut Vec<Msg>) {
        while batch.len() < self.batch_limit {
            match self.rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
    }

    /// Commits one batch and completes its handles; false if the commit failed.
    fn commit(&mut self, batch: &mut [Msg]) -> bool {
        let (seq0, hash0) = (self.head_seq, self.head_hash);
        // A redb panic on a damaged file is contained (and treated as a failed commit) instead of
        // killing the writer thread.
        let path = self.opener.path.clone();
        let written = super::guard::contain(&path, None, || {
            self.write(batch)
                .map_err(|e| super::LogError::WriteFailed(e.to_string()))
        });
        let ok = match written {
            Ok(()) => {
                let mut seq = seq0;
                for m in batch.iter() {
                    match m {
                        Msg::Append(p) => {
                            seq += 1;
                            p.slot.complete(seq);
                        }
                        Msg::Blob { slot, .. }
                        | Msg::Checkpoint { slot, .. }
                        | Msg::Barrier(slot) => slot.complete(self.head_seq),
                        Msg::Shutdown => {}
                    }
                }
                self.shared
                    .committed
                    .store(self.head_seq, Ordering::Release);
                if self.shared.failing.swap(false, Ordering::AcqRel) {
                    self.shared.recoveries.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Err(e) => {
                // The transaction was not committed: roll the chain head back so seqs stay gapless.
                self.head_seq = seq0;
                self.head_hash = hash0;
                let reason = match e {
                    super::LogError::WriteFailed(m) => m,
                    other => other.to_string(),
                };
                self.shared.set_error(format!(
                    "commit to {} failed: {reason}",
                    self.opener.path.display()
                ));
                self.shared.failing.store(true, Ordering::Release);
                self.shared.failed_batches.fetch_add(1, Ordering::Relaxed);
                for m in batch.iter_mut() {
                    self.fail(m);
                }
                false
            }
        };
        self.shared.notify();
        ok
    }

    /// Completes one message's handle with an error (counting failed events).
    fn fail(&self, m: &Msg) {
        match m {
            Msg::Append(Pending { slot, .. }) => {
                self.shared.failed_events.fetch_add(1, Ordering::Relaxed);
                slot.fail();
            }
            Msg::Blob { slot, .. } | Msg::Checkpoint { slot, .. } | Msg::Barrier(slot) => {
                slot.fail()
            }
            Msg::Shutdown => {}
        }
    }

    /// After a failed commit: drops the database (readers get a named error meanwhile) and
    /// reopens it with backoff, failing every message that arrives before it is back. Returns
    /// false if the log was shut down (or every sender dropped) first.
    fn recover(&mut self) -> bool {
        // The failed handle answers "Previous I/O error" forever; it must be closed (releasing
        // the file lock) before the file can be opened again.
        self.current.set(None);
        // Closing a redb handle on a damaged file can panic: inside the storage boundary.
        if let Some(db) = self.db.take() {
            super::guard::drop_contained(&self.opener.path, db);
        }
        let mut attempt: u32 = 0;
        let mut last = Instant::now();
        let mut next = last + self.backoff.delay(attempt);
        loop {
            match self.rx.recv_deadline(next) {
                Ok(Msg::Shutdown) => {
                    for m in self.rx.try_iter() {
                        self.fail(&m);
                    }
                    self.shared.notify();
                    return false;
                }
                Ok(Msg::Barrier(slot)) if Instant::now() >= last + self.backoff.first => {
                    // Someone asks whether the log is writable (a sync, e.g. before shutdown):
                    // try now rather than at the next tick, so a disk that came back is seen.
                    last = Instant::now();
                    self.shared.reopen_attempts.fetch_add(1, Ordering::Relaxed);
                    match self.reopen() {
                        Ok(()) => {
                            slot.complete(self.head_seq);
                            self.shared.notify();
                            return true;
                        }
                        Err(e) => {
                            self.shared.set_error(e);
                            slot.fail();
                            self.shared.notify();
                        }
                    }
                    continue;
                }
                Ok(m) => {
                    // Fail at once: the disk refused the last attempt, and a producer that
                    // waits must learn it now, not after the disk comes back.
                    self.fail(&m);
                    self.shared.notify();
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return false,
            }
            last = Instant::now();
            self.shared.reopen_attempts.fetch_add(1, Ordering::Relaxed);
            match self.reopen() {
                Ok(()) => return true,
                Err(e) => {
                    self.shared.set_error(e);
                    attempt = attempt.saturating_add(1);
                    next = Instant::now() + self.backoff.delay(attempt);
                }
            }
        }
    }

    /// One reopen attempt: open, prepare (which commits a transaction, so success means the
    /// disk takes writes again), re-read the head, and hand the new handle to readers.
    fn reopen(&mut self) -> Result<(), String> {
        let path = self.opener.path.display().to_string();
        let (db, head) = self
            .opener
            .open()
            .map_err(|e| format!("reopening {path} after a failed commit: {e}"))?;
        if head.seq < self.head_seq {
            // Committed events are gone: appending now would reuse their seqs. Never do that.
            return Err(format!(
                "reopening {path} after a failed commit: the head went back from seq {} to {}",
                self.head_seq, head.seq
            ));
        }
        // A failed fsync's batch may have reached the file after all; it is committed now, so
        // the chain continues after it.
        let found = head.seq - self.head_seq;
        self.shared
            .failed_events_found
            .fetch_add(found, Ordering::Relaxed);
        self.head_seq = head.seq;
        self.head_hash = head.hash.0;
        let db = Arc::new(db);
        self.current.set(Some(Arc::clone(&db)));
        self.db = Some(db);
        self.shared.committed.store(head.seq, Ordering::Release);
        self.shared.failing.store(false, Ordering::Release);
        self.shared.recoveries.fetch_add(1, Ordering::Relaxed);
        self.shared.notify();
        Ok(())
    }

    fn write(&mut self, batch: &mut [Msg]) -> Result<(), redb::Error> {
        let Some(db) = &self.db else {
            return Err(redb::Error::DatabaseClosed);
        };
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let before = self.head_seq;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut cursor = events.upper_bound_mut(Bound::<u64>::Unbounded)?;
            for m in batch.iter_mut() {
                if let Msg::Append(p) = m {
                    let seq = self.head_seq + 1;
                    let hash = record::seal(&mut p.bytes, seq, &self.head_hash)
                        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
                    cursor.insert_before(seq, p.bytes.as_slice())?;
                    self.head_seq = seq;
                    self.head_hash = hash;
                }
            }
            cursor.close()?;
        }
        {
            // Request ids are ULIDs, so most new index keys sort after every existing one: those
            // go through one buffered cursor run (pages packed once), the rest are plain inserts.
            let keys = &mut self.index_keys;
            keys.clear();
            let mut seq = before;
            for m in batch.iter() {
                if let Msg::Append(p) = m {
                    seq += 1;
                    if let Some(rid) = p.request {
                        keys.push((rid, seq));
                    }
                }
            }
            keys.sort_unstable();
            let mut index = txn.open_table(REQUEST_INDEX)?;
            let max = index.last()?.map(|(k, _)| k.value());
            let split = keys.partition_point(|k| Some(*k) <= max);
            for k in &keys[..split] {
                index.insert(k, ())?;
            }
            let mut cursor = index.upper_bound_mut(Bound::<(u128, u64)>::Unbounded)?;
            for k in &keys[split..] {
                cursor.insert_before(k, ())?;
            }
            cursor.close()?;
        }
        for m in batch.iter() {
            match m {
                Msg::Blob { hash, bytes, .. } => {
                    txn.open_table(BLOBS)?.insert(hash, bytes.as_slice())?;
                }
                Msg::Checkpoint { name, bytes, .. } => {
                    txn.open_table(CHECKPOINTS)?
                        .insert(name.as_str(), bytes.as_slice())?;
                }
                Msg::Append(_) | Msg::Barrier(_) | Msg::Shutdown => {}
            }
        }
        if self.head_seq != before {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_HEAD_SEQ, self.head_seq.to_le_bytes().as_slice())?;
            meta.insert(META_HEAD_HASH, self.head_hash.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }
}
