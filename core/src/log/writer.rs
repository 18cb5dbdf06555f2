//! The writer thread: the only owner of write transactions. It drains whatever producers have queued
//! (up to the batch limit), seals each record into the hash chain, writes events, index, blobs and
//! checkpoints in one transaction, commits with full durability, and only then completes the
//! waiting handles and publishes the new head. One fsync carries the whole batch (group commit).

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::Receiver;
use redb::{Database, Durability, ReadableTable};

use super::notify::{Shared, Slot};
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
    pub(crate) db: Arc<Database>,
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
        let mut batch: Vec<Msg> = Vec::with_capacity(self.batch_limit);
        let mut stop = false;
        while !stop {
            let Ok(first) = self.rx.recv() else { break };
            let deadline = std::time::Instant::now() + self.window;
            batch.push(first);
            while batch.len() < self.batch_limit {
                match self.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // Batch window: sleep a little so more events gather and one fsync carries them,
            // unless someone waits on a barrier or the log is shutting down. Sleeping (rather
            // than blocking on the channel) means producers do not wake this thread per event.
            let urgent = |b: &[Msg]| {
                b.iter()
                    .any(|m| matches!(m, Msg::Barrier(_) | Msg::Shutdown))
            };
            if !self.window.is_zero() && batch.len() < self.batch_limit && !urgent(&batch) {
                std::thread::sleep(deadline.saturating_duration_since(std::time::Instant::now()));
                while batch.len() < self.batch_limit {
                    match self.rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
            }
            if batch.iter().any(|m| matches!(m, Msg::Shutdown)) {
                // Commit what came with the shutdown, then anything queued behind it.
                stop = true;
                batch.extend(self.rx.try_iter());
            }
            self.commit(&mut batch);
            batch.clear();
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.notify();
    }

    fn commit(&mut self, batch: &mut [Msg]) {
        let (seq0, hash0) = (self.head_seq, self.head_hash);
        match self.write(batch) {
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
                self.shared.failing.store(false, Ordering::Release);
            }
            Err(e) => {
                // The transaction was not committed: roll the chain head back so seqs stay gapless.
                self.head_seq = seq0;
                self.head_hash = hash0;
                let events = batch.iter().filter(|m| matches!(m, Msg::Append(_))).count();
                self.shared.set_error(e.to_string());
                self.shared.failing.store(true, Ordering::Release);
                self.shared.failed_batches.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .failed_events
                    .fetch_add(events as u64, Ordering::Relaxed);
                for m in batch.iter() {
                    match m {
                        Msg::Append(Pending { slot, .. })
                        | Msg::Blob { slot, .. }
                        | Msg::Checkpoint { slot, .. }
                        | Msg::Barrier(slot) => slot.fail(),
                        Msg::Shutdown => {}
                    }
                }
            }
        }
        self.shared.notify();
    }

    fn write(&mut self, batch: &mut [Msg]) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
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
