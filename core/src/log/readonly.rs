//! Opening a data dir's log for reading only (DESIGN.md, "Readers never write"): [`open_read_only`]
//! never creates a directory or a file and never changes a byte of the log. The file is opened
//! with a read-only descriptor in both paths below, so even a bug here could not write to it.
//!
//! - A log that was closed cleanly opens as a redb [`ReadOnlyDatabase`] (shared lock: any number
//!   of readers, refused while a writer holds the file).
//! - A log whose writer stopped without closing it (kill -9, power loss) has no saved allocator
//!   state, and redb refuses it read-only ("repair aborted"). Such a file is opened through
//!   [`Overlay`], a storage backend that reads the file and keeps every write in memory: redb's
//!   repair then runs against the overlay and the file stays as it was.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, Builder, Database, DatabaseError, ReadOnlyDatabase, StorageBackend};

use super::guard::{contain, drop_contained};
use super::{LOG_FILE, LogError, OWNER_FILE, Reader};

/// redb's page cache for a reader. Readers scan the log once, so a large cache buys nothing and
/// would make a reader's memory follow the file (redb's default is 1 GiB).
pub const READ_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// A log opened read-only; see [`open_read_only`].
pub struct ReadOnlyLog {
    dir: PathBuf,
    path: Arc<PathBuf>,
    db: Option<Handle>,
}

enum Handle {
    Clean(ReadOnlyDatabase),
    /// Repaired in memory over [`Overlay`]; the file itself is untouched.
    Repaired(Database),
}

impl Drop for ReadOnlyLog {
    fn drop(&mut self) {
        // Closing can panic on a damaged file too (redb checks its state on drop).
        if let Some(db) = self.db.take() {
            drop_contained(&self.path, db);
        }
    }
}

impl ReadOnlyLog {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the redb file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was not closed cleanly by its last writer (it was repaired in memory to be
    /// read; the next `omniroute serve` repairs it on disk).
    pub fn was_repaired(&self) -> bool {
        matches!(self.db, Some(Handle::Repaired(_)))
    }

    /// A consistent snapshot. Records read through it are checked against their own hash (a log
    /// at rest may have rotted since it was written).
    pub fn reader(&self) -> Result<Reader, LogError> {
        let path = Arc::clone(&self.path);
        match &self.db {
            Some(Handle::Clean(db)) => Reader::new(db, path, true),
            Some(Handle::Repaired(db)) => Reader::new(db, path, true),
            None => Err(LogError::Closed),
        }
    }
}

/// Opens the log of `dir` for reading only. A missing dir, a dir without `omniroute.redb` and an
/// empty file are [`LogError::NoLog`]; a file a writer holds is [`LogError::InUse`]; a file redb
/// cannot read (or panics on) is [`LogError::Corrupt`].
pub fn open_read_only(dir: impl AsRef<Path>) -> Result<ReadOnlyLog, LogError> {
    let dir = dir.as_ref().to_path_buf();
    let path = dir.join(LOG_FILE);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(LogError::NoLog {
                path: dir,
                what: "it is not a directory",
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(LogError::NoLog {
                path: dir,
                what: "the data dir does not exist",
            });
        }
        Err(source) => return Err(LogError::DataDir { dir, source }),
    }
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(LogError::NoLog {
                path,
                what: "the data dir has no log file",
            });
        }
        Err(source) => return Err(LogError::DataDir { dir: path, source }),
    };
    if len == 0 {
        return Err(LogError::NoLog {
            path,
            what: "the file is empty (0 bytes), and a log never is once created",
        });
    }
    let handle = contain(&path, None, || {
        let mut builder = Builder::new();
        builder.set_cache_size(READ_CACHE_BYTES);
        match builder.open_read_only(&path) {
            Ok(db) => Ok(Handle::Clean(db)),
            Err(DatabaseError::RepairAborted) => {
                let file = File::open(&path).map_err(|source| LogError::DataDir {
                    dir: path.clone(),
                    source,
                })?;
                let overlay = Overlay::new(file).map_err(|e| open_error(&dir, &path, e))?;
                builder
                    .create_with_backend(overlay)
                    .map(Handle::Repaired)
                    .map_err(|e| open_error(&dir, &path, e))
            }
            Err(e) => Err(open_error(&dir, &path, e)),
        }
    })?;
    Ok(ReadOnlyLog {
        dir,
        path: Arc::new(path),
        db: Some(handle),
    })
}

fn open_error(dir: &Path, path: &Path, e: DatabaseError) -> LogError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => LogError::InUse {
            dir: dir.to_path_buf(),
            owner: std::fs::read_to_string(dir.join(OWNER_FILE))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "a process that left no owner record".to_string()),
        },
        DatabaseError::Storage(redb::StorageError::Io(source))
            if matches!(
                source.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            LogError::Corrupt {
                path: path.to_path_buf(),
                reason: source.to_string(),
            }
        }
        DatabaseError::Storage(redb::StorageError::Io(source)) => LogError::DataDir {
            dir: path.to_path_buf(),
            source,
        },
        DatabaseError::UpgradeRequired(v) => LogError::Format {
            path: path.to_path_buf(),
            found: format!("redb file format {v}"),
            expected: super::FORMAT,
        },
        other => LogError::storage(path, other),
    }
}

/// Overlay block size; any size works, this one matches redb's pages.
const BLOCK: u64 = 4096;

/// A storage backend over a file opened read-only: reads come from the file, writes (redb's
/// in-memory repair, its allocator state on close) stay in memory blocks that shadow it.
#[derive(Debug)]
struct Overlay {
    file: FileBackend,
    state: Mutex<OverlayState>,
}

#[derive(Debug)]
struct OverlayState {
    /// The storage's length as redb sees it.
    len: u64,
    /// How many bytes of the file are still visible (a shrink hides the rest for good).
    visible: u64,
    blocks: HashMap<u64, Box<[u8]>>,
}

impl Overlay {
    fn new(file: File) -> Result<Overlay, DatabaseError> {
        let len = file.metadata()?.len();
        Ok(Overlay {
            file: FileBackend::new(file)?,
            state: Mutex::new(OverlayState {
                len,
                visible: len,
                blocks: HashMap::new(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, OverlayState> {
        // The state is a set of whole blocks and two lengths, consistent after every statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes `[offset, offset + out.len())` of the file as it stands under the overlay's
    /// lengths: file bytes where visible, zeros elsewhere.
    fn read_file(&self, visible: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let from_file = visible.saturating_sub(offset).min(out.len() as u64) as usize;
        let (head, tail) = out.split_at_mut(from_file);
        if !head.is_empty() {
            self.file.read(offset, head)?;
        }
        tail.fill(0);
        Ok(())
    }
}

fn eof(offset: u64, len: usize, storage: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at {offset} past the end ({storage})"),
    )
}

impl StorageBackend for Overlay {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let st = self.state();
        let end = offset.checked_add(out.len() as u64);
        if end.is_none_or(|e| e > st.len) {
            return Err(eof(offset, out.len(), st.len));
        }
        self.read_file(st.visible, offset, out)?;
        // Shadow whatever part of the range was written since.
        let first = offset / BLOCK;
        let last = (offset + out.len() as u64).div_ceil(BLOCK);
        for b in first..last {
            let Some(block) = st.blocks.get(&b) else {
                continue;
            };
            let start = (b * BLOCK).max(offset);
            let stop = ((b + 1) * BLOCK).min(offset + out.len() as u64);
            let (Some(dst), Some(src)) = (
                out.get_mut((start - offset) as usize..(stop - offset) as usize),
                block.get((start - b * BLOCK) as usize..(stop - b * BLOCK) as usize),
            ) else {
                continue;
            };
            dst.copy_from_slice(src);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut st = self.state();
        if len < st.len {
            st.visible = st.visible.min(len);
            st.blocks.retain(|b, _| b * BLOCK < len);
            if let Some(block) = st.blocks.get_mut(&(len / BLOCK)) {
                let cut = (len % BLOCK) as usize;
                if let Some(rest) = block.get_mut(cut..) {
                    rest.fill(0);
                }
            }
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut st = self.state();
        let end = offset + data.len() as u64;
        if end > st.len {
            st.len = end;
        }
        let first = offset / BLOCK;
        let last = end.div_ceil(BLOCK);
        for b in first..last {
            if !st.blocks.contains_key(&b) {
                let mut fresh = vec![0u8; BLOCK as usize].into_boxed_slice();
                self.read_file(st.visible, b * BLOCK, &mut fresh)?;
                st.blocks.insert(b, fresh);
            }
            let start = (b * BLOCK).max(offset);
            let stop = ((b + 1) * BLOCK).min(end);
            if let Some(block) = st.blocks.get_mut(&b)
                && let (Some(dst), Some(src)) = (
                    block.get_mut((start - b * BLOCK) as usize..(stop - b * BLOCK) as usize),
                    data.get((start - offset) as usize..(stop - offset) as usize),
                )
            {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.file.close()
    }

    // Locks: redb opens this as a writer and asks for exclusive locks. This handle never writes
    // the file, so a shared lock is what it needs: like redb's own read-only handles it coexists
    // with other readers, and is refused while a writer holds the file (and keeps one out).
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn overlay(content: &[u8]) -> (tempfile::TempDir, Overlay) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, content).unwrap();
        let o = Overlay::new(File::open(&p).unwrap()).unwrap();
        (dir, o)
    }

    fn read(o: &Overlay, offset: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0xAA; n];
        o.read(offset, &mut v).unwrap();
        v
    }

    #[test]
    fn writes_shadow_the_file_and_never_reach_it() {
        let content: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let (dir, o) = overlay(&content);
        o.write(4090, &[1; 20]).unwrap();
        let got = read(&o, 4080, 40);
        assert_eq!(&got[..10], &content[4080..4090]);
        assert_eq!(&got[10..30], &[1; 20]);
        assert_eq!(&got[30..], &content[4110..4120]);
        // Growing: zeros, then the write.
        o.set_len(20_000).unwrap();
        o.write(15_000, &[2; 3]).unwrap();
        assert_eq!(read(&o, 14_998, 6), vec![0, 0, 2, 2, 2, 0]);
        // Shrinking hides the file's bytes for good, even after growing again.
        o.set_len(5_000).unwrap();
        o.set_len(9_000).unwrap();
        assert_eq!(read(&o, 4_998, 4), vec![content[4998], content[4999], 0, 0]);
        assert!(o.read(8_999, &mut [0; 2]).is_err());
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), content);
    }
}
