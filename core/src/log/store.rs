//! How the log's redb database is opened, and reopened after a failed commit.
//!
//! After an I/O error redb's `Database` answers every later transaction with "Previous I/O error
//! occurred" until it is dropped and opened again, so a full disk would be a permanent outage.
//! The writer therefore keeps an [`Opener`] (the path, or a backend factory in tests) and swaps
//! the handle readers use ([`Current`]) when it reopens.

use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redb::{BackendError, Database, DatabaseError, StorageBackend, StorageError};

use super::{Head, LogError};

/// Makes a fresh storage backend for the log file each time it is called (the writer calls it
/// again for every reopen). See [`crate::log::faults`] for the test backend.
pub type BackendFactory = dyn Fn() -> Result<Box<dyn StorageBackend>, io::Error> + Send + Sync;

/// Delays between reopen attempts after a failed commit: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(10),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait before reopen attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// Everything needed to open the database again.
pub(crate) struct Opener {
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) factory: Option<Arc<BackendFactory>>,
    pub(crate) cache_size: usize,
}

impl Opener {
    /// Creates a new log file atomically: built and initialised under a temporary name, then
    /// renamed into place. A process killed while creating it (a `keys create` on a fresh data
    /// dir) leaves no half-written `omniroute.redb` that no later open could read.
    fn create_atomically(&self) -> Result<(), LogError> {
        let tmp = self.path.with_extension("redb.new");
        let io = |source| LogError::DataDir {
            dir: self.dir.clone(),
            source,
        };
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let db = super::guard::contain(&tmp, None, || {
            super::open_db(&self.dir, &tmp, || Database::builder().create(&tmp))
        })?;
        let init = super::guard::contain(&tmp, None, || super::init(&db, &tmp));
        super::guard::drop_contained(&tmp, db);
        init?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }

    /// Opens the database (creating it if needed), prepares the tables and reads the head.
    pub(crate) fn open(&self) -> Result<(Database, Head), LogError> {
        if self.factory.is_none() && !self.path.exists() {
            self.create_atomically()?;
        }
        let mut builder = Database::builder();
        builder.set_cache_size(self.cache_size);
        // Opening runs redb's repair on a file that was not closed cleanly, and `init` commits:
        // both read the file, so both run inside the storage boundary.
        let db = super::guard::contain(&self.path, None, || {
            super::open_db(&self.dir, &self.path, || match &self.factory {
                None => builder.create(&self.path),
                Some(make) => {
                    let backend =
                        make().map_err(|e| DatabaseError::Storage(StorageError::Io(e)))?;
                    builder.create_with_backend(Boxed(backend))
                }
            })
        })?;
        match super::guard::contain(&self.path, None, || super::init(&db, &self.path)) {
            Ok(head) => Ok((db, head)),
            Err(e) => {
                super::guard::drop_contained(&self.path, db);
                Err(e)
            }
        }
    }
}

/// The database handle readers use; empty while the writer is reopening it.
pub(crate) struct Current {
    db: RwLock<Option<Arc<Database>>>,
}

impl Current {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self {
            db: RwLock::new(Some(db)),
        }
    }

    pub(crate) fn get(&self) -> Option<Arc<Database>> {
        match self.db.read() {
            Ok(g) => g.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// Takes the handle out (at close), leaving readers none.
    pub(crate) fn take(&self) -> Option<Arc<Database>> {
        match self.db.write() {
            Ok(mut g) => g.take(),
            Err(e) => e.into_inner().take(),
        }
    }

    pub(crate) fn set(&self, db: Option<Arc<Database>>) {
        let old = match self.db.write() {
            Ok(mut g) => std::mem::replace(&mut *g, db),
            Err(e) => std::mem::replace(&mut *e.into_inner(), db),
        };
        // Dropped outside the lock: closing a database can take a moment.
        drop(old);
    }
}

/// A boxed backend as a backend (redb's `create_with_backend` takes `impl StorageBackend`).
#[derive(Debug)]
struct Boxed(Box<dyn StorageBackend>);

impl StorageBackend for Boxed {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> Result<(), io::Error> {
        self.0.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_first_up_to_max() {
        let b = Backoff::default();
        let ms: Vec<u128> = (0..10).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(ms, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }
}
