//! A fault-injecting storage backend: **a test tool**, not something a running gateway uses.
//!
//! [`FaultyBackend`] wraps redb's [`FileBackend`] (so the file, its locks and its bytes are real) and
//! fails on command, the way redb's own crash tests do: writes fail once a byte budget is spent (a
//! full disk, [`std::io::ErrorKind::StorageFull`]), `sync_data` fails (an fsync error), and later
//! the space "returns". Every backend made from one [`Faults`] handle shares its switches, which
//! matters because the log's writer reopens the database (through a fresh backend from the factory)
//! after a failed commit.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use omniroute_core::log::{Log, LogOptions, faults::Faults};
//! let dir = std::path::Path::new("/tmp/some-data-dir");
//! let faults = Faults::new();
//! let log = Log::open_with_backend(dir, LogOptions::default(), faults.factory(dir))?;
//! faults.disk_full();      // the next commit fails, nothing of it reaches the file
//! // ... appends now fail (their handles complete with an error), `log.is_failing()` ...
//! faults.return_space();   // the writer reopens the file by itself and commits again
//! assert!(log.wait_writable(std::time::Duration::from_secs(10)));
//! # Ok(()) }
//! ```
//!
//! **How to make the next commit fail:** [`Faults::disk_full`] (equivalently
//! `fail_writes_after(0)`): redb writes a commit's pages and header only when it commits, so the
//! commit fails at its first write and the file keeps the previous commit, exactly as on a full
//! disk. [`Faults::fail_next_sync`] fails the next fsync instead; note that the commit's bytes
//! were then already written (to the OS), so after the writer reopens the file the "failed" batch
//! may turn out to be on disk: an fsync error means "not known to be durable", not "absent".

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use std::ops::Bound;

/// No byte limit.
const UNLIMITED: u64 = u64::MAX;

#[derive(Debug, Default)]
struct State {
    /// Bytes that may still be written before writes fail (`UNLIMITED`: no limit).
    budget: AtomicU64,
    /// Every `sync_data` fails while set.
    fail_sync: AtomicBool,
    /// The next `sync_data` fails, once.
    fail_next_sync: AtomicBool,
    failed_writes: AtomicU64,
    failed_syncs: AtomicU64,
    backends_made: AtomicU64,
}

/// The control handle of a set of [`FaultyBackend`]s. Cheap to clone; every clone (and every
/// backend it made) shares the same switches.
#[derive(Clone, Debug)]
pub struct Faults {
    state: Arc<State>,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new()
    }
}

impl Faults {
    /// A handle with no fault armed.
    pub fn new() -> Faults {
        let state = State::default();
        state.budget.store(UNLIMITED, Ordering::SeqCst);
        Faults {
            state: Arc::new(state),
        }
    }

    /// Writes succeed for `bytes` more bytes, then every write fails with `StorageFull` (a write
    /// that does not fit fails whole and writes nothing).
    pub fn fail_writes_after(&self, bytes: u64) {
        self.state.budget.store(bytes, Ordering::SeqCst);
    }

    /// The disk is full from now on: the next commit fails at its first write.
    pub fn disk_full(&self) {
        self.fail_writes_after(0);
    }

    /// Every `sync_data` fails (an I/O error) until [`Faults::heal`].
    pub fn fail_sync(&self) {
        self.state.fail_sync.store(true, Ordering::SeqCst);
    }

    /// The next `sync_data` fails, once.
    pub fn fail_next_sync(&self) {
        self.state.fail_next_sync.store(true, Ordering::SeqCst);
    }

    /// Writes succeed again (the space came back). Sync faults stay as they are.
    pub fn return_space(&self) {
        self.state.budget.store(UNLIMITED, Ordering::SeqCst);
    }

    /// Disarms every fault.
    pub fn heal(&self) {
        self.return_space();
        self.state.fail_sync.store(false, Ordering::SeqCst);
        self.state.fail_next_sync.store(false, Ordering::SeqCst);
    }

    /// Writes refused so far.
    pub fn failed_writes(&self) -> u64 {
        self.state.failed_writes.load(Ordering::SeqCst)
    }

    /// Syncs failed so far.
    pub fn failed_syncs(&self) -> u64 {
        self.state.failed_syncs.load(Ordering::SeqCst)
    }

    /// Backends made so far: 1 after the log opened, one more per reopen attempt.
    pub fn backends_made(&self) -> u64 {
        self.state.backends_made.load(Ordering::SeqCst)
    }

    /// A backend on the file at `path` (created if missing), governed by this handle.
    pub fn backend(&self, path: &Path) -> io::Result<FaultyBackend> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        self.state.backends_made.fetch_add(1, Ordering::SeqCst);
        Ok(FaultyBackend {
            inner,
            state: Arc::clone(&self.state),
        })
    }

    /// The factory [`crate::log::Log::open_with_backend`] takes: a new backend on the log file of
    /// the data dir `dir` each time it is called.
    pub fn factory(&self, dir: &Path) -> Arc<crate::log::BackendFactory> {
        let me = self.clone();
        let path: PathBuf = dir.join(crate::log::LOG_FILE);
        Arc::new(move || {
            me.backend(&path)
                .map(|b| Box::new(b) as Box<dyn StorageBackend>)
        })
    }
}

/// redb's file backend with switchable faults; see the module docs.
pub struct FaultyBackend {
    inner: FileBackend,
    state: Arc<State>,
}

impl fmt::Debug for FaultyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner)
            .field("state", &self.state)
            .finish()
    }
}

impl FaultyBackend {
    /// Takes `len` bytes from the budget, or fails without taking any.
    fn spend(&self, len: u64) -> io::Result<()> {
        let taken = self
            .state
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                if b == UNLIMITED {
                    Some(b)
                } else {
                    b.checked_sub(len)
                }
            });
        match taken {
            Ok(_) => Ok(()),
            Err(_) => {
                // A write that does not fit ends the space: later small writes fail too, as on
                // a full disk (not "whatever still fits").
                self.state.budget.store(0, Ordering::SeqCst);
                self.state.failed_writes.fetch_add(1, Ordering::SeqCst);
                Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device (injected by omniroute_core::log::faults)",
                ))
            }
        }
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        // Growing a file allocates nothing (it is sparse), so a full disk does not refuse it.
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let once = self.state.fail_next_sync.swap(false, Ordering::SeqCst);
        if once || self.state.fail_sync.load(Ordering::SeqCst) {
            self.state.failed_syncs.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other(
                "fsync failed: input/output error (injected by omniroute_core::log::faults)",
            ));
        }
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.spend(data.len() as u64)?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    // The locks are the file's own, so a second opener of the same file is refused as usual.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
