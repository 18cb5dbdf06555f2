//! `omniroute log salvage`: puts a damaged log back into service without hand surgery. It reads the
//! old log through a read-only [`Reader`] and writes a new data dir holding the longest valid
//! prefix of the chain: seq 1 up to the last record whose bytes and link verify. Records are
//! copied with their exact stored bytes (timestamps, hashes and links unchanged), so the new log's
//! head hash is the old log's hash at that seq. Blobs that are readable and match their hash are
//! copied; checkpoints are not (read models are rebuilt from the events, and a checkpoint of the
//! old log may describe events that were left behind).

use std::path::{Path, PathBuf};

use redb::{Builder, Database, Durability};

use super::guard::{contain, drop_contained};
use super::readonly::READ_CACHE_BYTES;
use super::verify::check_record;
use super::{
    BLOBS, EVENTS, FORMAT, Head, LOG_FILE, LogError, META, META_HEAD_HASH, META_HEAD_SEQ,
    REQUEST_INDEX, Reader, init,
};
use crate::event::Hash32;
use crate::record;

/// Records copied per write transaction.
const BATCH: usize = 16 * 1024;

/// What [`salvage`] kept and what it left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvageReport {
    /// The new log file.
    pub path: PathBuf,
    /// The new log's head: the last record copied (seq 0 when nothing could be).
    pub head: Head,
    /// The head the old log's `meta` recorded.
    pub source_head: Head,
    /// Set when the chain does not hold to its last stored record.
    pub left_behind: Option<LeftBehind>,
    pub blobs_copied: u64,
    /// Blobs that could not be read, or whose bytes no longer match their hash.
    pub blobs_lost: u64,
}

/// Where the copied prefix ends, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftBehind {
    /// The first seq not copied.
    pub from_seq: u64,
    pub reason: String,
    /// Records stored after `from_seq` that could still be read with their own hash intact
    /// (they are left behind because the chain does not reach them).
    pub readable_after: u64,
    /// Records stored after `from_seq` that could be read but are damaged themselves.
    pub damaged_after: u64,
    /// Why the scan after `from_seq` stopped early, if it did.
    pub scan_error: Option<String>,
}

/// Copies the longest valid prefix of `src`'s chain into a new log in `to_dir` (created if
/// needed; refused if it already holds a log). The new file is written beside its final name and
/// renamed into place once complete, so an interrupted salvage leaves no log behind.
pub fn salvage(src: &Reader, to_dir: &Path) -> Result<SalvageReport, LogError> {
    let target = to_dir.join(LOG_FILE);
    if target.exists() {
        return Err(LogError::SalvageTarget {
            path: to_dir.to_path_buf(),
            reason: format!(
                "{} already exists; salvage writes only into a dir without a log",
                target.display()
            ),
        });
    }
    if src.path() == target || src.path().parent() == Some(to_dir) {
        return Err(LogError::SalvageTarget {
            path: to_dir.to_path_buf(),
            reason: "it is the data dir being salvaged".into(),
        });
    }
    if let Some(found) = src.format()?
        && found != FORMAT
    {
        return Err(LogError::Format {
            path: src.path().to_path_buf(),
            found,
            expected: FORMAT,
        });
    }
    std::fs::create_dir_all(to_dir).map_err(|source| LogError::DataDir {
        dir: to_dir.to_path_buf(),
        source,
    })?;
    let tmp = to_dir.join(format!("{LOG_FILE}.salvage"));
    // A leftover from an interrupted salvage: it was never a log anyone used.
    let _ = std::fs::remove_file(&tmp);
    let db = contain(&tmp, None, || {
        Builder::new()
            .set_cache_size(READ_CACHE_BYTES)
            .create(&tmp)
            .map_err(|e| LogError::storage(&tmp, e))
    })?;
    let copied = contain(&tmp, None, || copy(src, &db, &tmp));
    drop_contained(&tmp, db);
    let mut report = match copied {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &target).map_err(|source| LogError::DataDir {
        dir: target.clone(),
        source,
    })?;
    // Make the rename durable (best effort: not every platform can sync a directory).
    if let Ok(d) = std::fs::File::open(to_dir) {
        let _ = d.sync_all();
    }
    report.path = target;
    Ok(report)
}

/// Writes the new log: format, the valid prefix with its index, the head, the blobs.
fn copy(src: &Reader, db: &Database, tmp: &Path) -> Result<SalvageReport, LogError> {
    init(db, tmp)?;
    let st = |e: redb::Error| LogError::storage(tmp, e);
    let mut expected = 1u64;
    let mut prev = [0u8; 32];
    let mut left_behind = None;
    let mut batch: Vec<(u64, Vec<u8>, Option<u128>)> = Vec::with_capacity(BATCH);
    let mut records = src.range_with_gaps(1..)?;
    loop {
        let stored = match records.next() {
            None => break,
            Some(Err(e)) => {
                left_behind = Some((expected, e.to_string()));
                break;
            }
            Some(Ok(s)) => s,
        };
        if let Some(reason) = check_record(stored.seq, expected, stored.bytes(), Some(&prev)) {
            left_behind = Some((expected.min(stored.seq), reason));
            break;
        }
        let rec = stored.record()?;
        prev = *rec.hash;
        batch.push((
            stored.seq,
            stored.bytes().to_vec(),
            rec.event.request_id().map(|r| r.0),
        ));
        expected += 1;
        if batch.len() == BATCH {
            write_batch(db, &mut batch, None).map_err(st)?;
        }
    }
    drop(records);
    let head = Head {
        seq: expected - 1,
        hash: Hash32(prev),
    };
    write_batch(db, &mut batch, Some(head)).map_err(st)?;
    let (blobs_copied, blobs_lost) = copy_blobs(src, db).map_err(st)?;
    let left_behind = left_behind.map(|(from_seq, reason)| scan_after(src, from_seq, reason));
    Ok(SalvageReport {
        path: tmp.to_path_buf(),
        head,
        source_head: src.head()?,
        left_behind,
        blobs_copied,
        blobs_lost,
    })
}

/// Commits one batch of records (and, with the last batch, the head).
fn write_batch(
    db: &Database,
    batch: &mut Vec<(u64, Vec<u8>, Option<u128>)>,
    head: Option<Head>,
) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut index = txn.open_table(REQUEST_INDEX)?;
        for (seq, bytes, request) in batch.drain(..) {
            events.insert(seq, bytes.as_slice())?;
            if let Some(rid) = request {
                index.insert((rid, seq), ())?;
            }
        }
        if let Some(head) = head
            && head.seq > 0
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_HEAD_SEQ, head.seq.to_le_bytes().as_slice())?;
            meta.insert(META_HEAD_HASH, head.hash.0.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Copies every blob that can be read and still matches its hash; returns (copied, lost).
fn copy_blobs(src: &Reader, db: &Database) -> Result<(u64, u64), redb::Error> {
    let Ok(hashes) = src.blob_hashes() else {
        // The blob table itself is unreadable: nothing can be copied, and how much was lost is
        // unknown (counted as none).
        return Ok((0, 0));
    };
    let (mut copied, mut lost) = (0, 0);
    let txn = db.begin_write()?;
    {
        let mut blobs = txn.open_table(BLOBS)?;
        for h in hashes {
            match src.blob(&Hash32(h)) {
                Ok(Some(bytes)) if Hash32::of(&bytes).0 == h => {
                    blobs.insert(&h, bytes.as_slice())?;
                    copied += 1;
                }
                _ => lost += 1,
            }
        }
    }
    txn.commit()?;
    Ok((copied, lost))
}

/// Counts what is stored after the first seq left behind.
fn scan_after(src: &Reader, from_seq: u64, reason: String) -> LeftBehind {
    let mut out = LeftBehind {
        from_seq,
        reason,
        readable_after: 0,
        damaged_after: 0,
        scan_error: None,
    };
    let records = match src.range_with_gaps(from_seq + 1..) {
        Ok(r) => r,
        Err(e) => {
            out.scan_error = Some(e.to_string());
            return out;
        }
    };
    for item in records {
        match item {
            Ok(s) => {
                if record::check_hash(s.seq, s.bytes()).is_ok()
                    && record::decode(s.seq, s.bytes()).is_ok()
                {
                    out.readable_after += 1;
                } else {
                    out.damaged_after += 1;
                }
            }
            Err(e) => {
                out.scan_error = Some(e.to_string());
                break;
            }
        }
    }
    out
}
