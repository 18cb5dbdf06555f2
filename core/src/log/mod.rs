//! The event log: one redb file per data dir, appended to by a single writer thread (group commit)
//! and read zero-copy by anyone. See DESIGN.md section 2 and `docs/log-format.md`.
//!
//! - [`Log::open`] takes ownership of a data dir (redb's file lock; a second process gets
//!   [`LogError::InUse`] naming the owner) and starts the writer.
//! - [`Log::append`] encodes on the caller's thread and queues; the returned [`Appended`] completes
//!   when the event is durable. Backpressure: `append` blocks while the queue is full,
//!   [`Log::try_append_at`] returns [`LogError::Full`] instead.
//! - [`Log::reader`] gives a consistent snapshot: by seq, by range, by request id, head.
//! - A failed commit (disk full, I/O error) fails that batch's handles and sets
//!   [`Log::is_failing`]; the writer then reopens the database with backoff ([`store`]) and
//!   clears it once a commit succeeds again, without a restart. [`faults`] is the fault-injecting
//!   backend tests use to make that happen.

mod error;
pub mod faults;
mod guard;
mod notify;
mod readonly;
mod salvage;
mod store;
mod verify;
mod writer;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use redb::{
    AccessGuard, Database, DatabaseError, ReadOnlyTable, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TableDefinition,
};

pub use error::LogError;
pub use guard::{in_storage_boundary, install_panic_hook};
pub use notify::{Appended, NextRange, Subscription};
pub use readonly::{READ_CACHE_BYTES, ReadOnlyLog, open_read_only};
pub use salvage::{LeftBehind, SalvageReport, salvage};
pub use store::{BackendFactory, Backoff};
pub use verify::{ChainBreak, Stats, VERIFIED_CHECKPOINT, VerifyReport};

use crate::event::{Event, Hash32, RequestId};
use crate::record::{self, RecordRef};
use notify::{Shared, Slot};
use store::{Current, Opener};
use writer::{Msg, Pending, Writer};

/// File name of the log inside a data dir.
pub const LOG_FILE: &str = "omniroute.redb";
/// Written by the process that owns a data dir, read to name it when another process is refused.
pub const OWNER_FILE: &str = "omniroute.owner";
/// The on-disk encoding this build writes and reads; stored in `meta` when a log is created, so the
/// alignment/endianness choice can never silently change under existing bytes.
pub const FORMAT: &str = "omniroute-log/1 rkyv-0.8 little-endian unaligned pointer-width-32";

pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub(crate) const REQUEST_INDEX: TableDefinition<(u128, u64), ()> =
    TableDefinition::new("request_index");
pub(crate) const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
pub(crate) const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_HEAD_SEQ: &str = "head_seq";
pub(crate) const META_HEAD_HASH: &str = "head_hash";

/// Tuning of the writer.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Events that can wait in the queue before producers feel backpressure.
    pub queue_capacity: usize,
    /// Most events committed in one transaction.
    pub batch_limit: usize,
    /// How long the writer may wait for more events before committing a batch (0: commit what
    /// is there at once). A window trades a bounded loss on power failure (at most one window of
    /// events not yet awaited) for fewer fsyncs; a barrier (`sync`) always commits at once.
    /// Someone waiting for a commit (`Appended::wait`, awaiting an `Appended`, `Log::sync`) cuts
    /// the window short: only events nobody waits for pay it.
    pub batch_window: std::time::Duration,
    /// Bytes of redb page cache. redb's own default (1 GiB) lets the process's memory follow the
    /// file; the OS page cache holds the file anyway.
    pub cache_size: usize,
    /// Waits between attempts to reopen the database after a failed commit.
    pub reopen_backoff: Backoff,
}

/// The default of [`LogOptions::cache_size`] (and of the config key `log.cache_size_mb`).
pub const DEFAULT_CACHE_SIZE: usize = 32 * 1024 * 1024;

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 64 * 1024,
            batch_limit: 8192,
            batch_window: std::time::Duration::ZERO,
            cache_size: DEFAULT_CACHE_SIZE,
            reopen_backoff: Backoff::default(),
        }
    }
}

/// The last committed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash32,
}

/// What a caller can know about the writer's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHealth {
    pub committed_seq: u64,
    /// The last commit failed: the log is not being written right now.
    pub failing: bool,
    pub failed_batches: u64,
    /// Events whose commit failed (their handles completed with an error).
    pub failed_events: u64,
    /// Of `failed_events`, those found on disk after the database was reopened: a failed fsync
    /// leaves a commit's outcome unknown, and it can turn out to have landed.
    pub failed_events_found: u64,
    /// Attempts to reopen the database after failed commits.
    pub reopen_attempts: u64,
    /// Times the writer got the log writable again after a failure.
    pub recoveries: u64,
    pub last_error: Option<String>,
    pub closed: bool,
}

impl LogHealth {
    /// Events that were handed to the log and are not in it: failed commits, less those found
    /// on disk after all.
    pub fn lost_events(&self) -> u64 {
        self.failed_events.saturating_sub(self.failed_events_found)
    }
}

/// A handle on an open log. Cheap to clone; the writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    path: Arc<PathBuf>,
    /// Swapped by the writer when it reopens the database after a failed commit.
    db: Arc<Current>,
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        // Do not let the writer sleep out a batch window first.
        self.shared.hurry();
        let handle = self.writer.get_mut().ok().and_then(Option::take);
        if let Some(h) = handle {
            let _ = h.join();
        }
        // The writer has stopped, so this is the last handle: closing it commits redb's allocator
        // state, which can panic on a damaged file.
        if let Some(db) = self.db.take() {
            guard::drop_contained(&self.path, db);
        }
        let _ = std::fs::remove_file(self.dir.join(OWNER_FILE));
    }
}

/// An encoded event waiting for its time and its place in the log ([`Log::encode`]).
pub struct Encoded {
    bytes: Vec<u8>,
    request: Option<u128>,
}

/// Milliseconds since the unix epoch from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn owner_line() -> String {
    let args: Vec<String> = std::env::args().take(3).collect();
    format!(
        "process {} ({}), which took it at unix ms {}",
        std::process::id(),
        args.join(" "),
        now_ms()
    )
}

fn open_db(
    dir: &Path,
    path: &Path,
    create: impl FnOnce() -> Result<Database, DatabaseError>,
) -> Result<Database, LogError> {
    create().map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => {
            let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "another process that left no owner record (a read command such as `omniroute log verify` leaves none)".to_string());
            LogError::InUse {
                dir: dir.to_path_buf(),
                owner,
            }
        }
        DatabaseError::UpgradeRequired(v) => LogError::Format {
            path: path.to_path_buf(),
            found: format!("redb file format {v}"),
            expected: FORMAT,
        },
        DatabaseError::Storage(StorageError::Io(source)) => {
            if source.kind() == std::io::ErrorKind::InvalidData
                || source.kind() == std::io::ErrorKind::UnexpectedEof
            {
                LogError::Corrupt {
                    path: path.to_path_buf(),
                    reason: source.to_string(),
                }
            } else {
                LogError::DataDir {
                    dir: path.to_path_buf(),
                    source,
                }
            }
        }
        other => LogError::storage(path, other),
    })
}

/// Prepares the tables and returns the current head, checking the stored format.
fn init(db: &Database, path: &Path) -> Result<Head, LogError> {
    let st = |e: redb::Error| LogError::storage(path, e);
    let txn = db.begin_write().map_err(|e| st(e.into()))?;
    let head;
    {
        let events = txn.open_table(EVENTS).map_err(|e| st(e.into()))?;
        txn.open_table(REQUEST_INDEX).map_err(|e| st(e.into()))?;
        txn.open_table(BLOBS).map_err(|e| st(e.into()))?;
        txn.open_table(CHECKPOINTS).map_err(|e| st(e.into()))?;
        let mut meta = txn.open_table(META).map_err(|e| st(e.into()))?;
        let found = meta
            .get(META_FORMAT)
            .map_err(|e| st(e.into()))?
            .map(|g| String::from_utf8_lossy(g.value()).into_owned());
        let last = events.last().map_err(|e| st(e.into()))?;
        match (found, &last) {
            (Some(f), _) if f != FORMAT => {
                return Err(LogError::Format {
                    path: path.to_path_buf(),
                    found: f,
                    expected: FORMAT,
                });
            }
            (Some(_), _) => {}
            (None, None) => {
                meta.insert(META_FORMAT, FORMAT.as_bytes())
                    .map_err(|e| st(e.into()))?;
            }
            (None, Some(_)) => {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    reason: "events are present but the format record is missing".into(),
                });
            }
        }
        head = match last {
            None => Head {
                seq: 0,
                hash: Hash32::default(),
            },
            Some((k, v)) => {
                let seq = k.value();
                let env = record::envelope(v.value()).map_err(|reason| LogError::BadRecord {
                    path: path.to_path_buf(),
                    seq,
                    reason,
                })?;
                Head {
                    seq,
                    hash: Hash32(*env.hash),
                }
            }
        };
    }
    txn.commit().map_err(|e| st(e.into()))?;
    Ok(head)
}

impl Log {
    /// Opens (creating if needed) the log of a data dir with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Log, LogError> {
        Self::open_with(dir, LogOptions::default())
    }

    pub fn open_with(dir: impl AsRef<Path>, opts: LogOptions) -> Result<Log, LogError> {
        Self::start(dir.as_ref(), opts, None)
    }

    /// Like [`Log::open_with`], but the file is reached through storage backends made by
    /// `factory` (called again each time the writer reopens the database). For tests: see
    /// [`faults`].
    pub fn open_with_backend(
        dir: impl AsRef<Path>,
        opts: LogOptions,
        factory: Arc<BackendFactory>,
    ) -> Result<Log, LogError> {
        Self::start(dir.as_ref(), opts, Some(factory))
    }

    fn start(
        dir: &Path,
        opts: LogOptions,
        factory: Option<Arc<BackendFactory>>,
    ) -> Result<Log, LogError> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| LogError::DataDir {
            dir: dir.clone(),
            source,
        })?;
        let path = dir.join(LOG_FILE);
        let opener = Opener {
            dir: dir.clone(),
            path: path.clone(),
            factory,
            cache_size: opts.cache_size,
        };
        let (db, head) = opener.open()?;
        // Best effort: the owner record only improves the message another process gets.
        let _ = std::fs::write(dir.join(OWNER_FILE), owner_line());

        let db = Arc::new(db);
        let current = Arc::new(Current::new(Arc::clone(&db)));
        let shared = Arc::new(Shared::new(!opts.batch_window.is_zero()));
        shared.committed.store(head.seq, Ordering::Release);
        let (tx, rx) = crossbeam_channel::bounded(opts.queue_capacity.max(1));
        let writer = Writer {
            db: Some(db),
            current: Arc::clone(&current),
            opener,
            backoff: opts.reopen_backoff,
            rx,
            shared: Arc::clone(&shared),
            batch_limit: opts.batch_limit.max(1),
            window: opts.batch_window,
            head_seq: head.seq,
            head_hash: head.hash.0,
            index_keys: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("omniroute-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| LogError::DataDir {
                dir: dir.clone(),
                source,
            })?;
        Ok(Log {
            inner: Arc::new(Inner {
                dir,
                path: Arc::new(path),
                db: current,
                tx,
                shared,
                writer: std::sync::Mutex::new(Some(handle)),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Path of the redb file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn handle(&self, slot: Arc<Slot>) -> Appended {
        Appended {
            slot,
            shared: Arc::clone(&self.inner.shared),
        }
    }

    fn send(&self, msg: Msg, block: bool) -> Result<(), LogError> {
        if block {
            self.inner.tx.send(msg).map_err(|_| LogError::Closed)
        } else {
            self.inner.tx.try_send(msg).map_err(|e| match e {
                TrySendError::Full(_) => LogError::Full,
                TrySendError::Disconnected(_) => LogError::Closed,
            })
        }
    }

    fn enqueue(&self, ts_ms: u64, event: &Event, block: bool) -> Result<Appended, LogError> {
        let bytes = record::encode(event, ts_ms).map_err(|e| LogError::Encode(e.to_string()))?;
        let slot = Slot::new();
        let pending = Pending {
            bytes,
            request: event.request_id().map(|r| r.0),
            slot: Arc::clone(&slot),
        };
        self.send(Msg::Append(pending), block)?;
        Ok(self.handle(slot))
    }

    /// Encodes an event ahead of its append (so the encoding happens outside any lock the
    /// caller holds while appending); its time is stamped by [`Log::append_encoded`].
    pub fn encode(event: &Event) -> Result<Encoded, LogError> {
        Ok(Encoded {
            bytes: record::encode(event, 0).map_err(|e| LogError::Encode(e.to_string()))?,
            request: event.request_id().map(|r| r.0),
        })
    }

    /// Appends an event encoded by [`Log::encode`], stamped `ts_ms`. With `block`, waits while
    /// the queue is full; without, a full queue gives the encoding back with [`LogError::Full`].
    // The error carries the encoding back only when the queue is full (rare); boxing it would
    // cost every caller.
    #[allow(clippy::result_large_err)]
    pub fn append_encoded(
        &self,
        ts_ms: u64,
        mut e: Encoded,
        block: bool,
    ) -> Result<Appended, (LogError, Option<Encoded>)> {
        record::stamp(&mut e.bytes, ts_ms);
        let slot = Slot::new();
        let msg = Msg::Append(Pending {
            bytes: e.bytes,
            request: e.request,
            slot: Arc::clone(&slot),
        });
        let sent = if block {
            self.inner
                .tx
                .send(msg)
                .map_err(|_| (LogError::Closed, None))
        } else {
            self.inner.tx.try_send(msg).map_err(|err| match err {
                TrySendError::Full(Msg::Append(p)) => (
                    LogError::Full,
                    Some(Encoded {
                        bytes: p.bytes,
                        request: p.request,
                    }),
                ),
                _ => (LogError::Closed, None),
            })
        };
        sent.map(|()| self.handle(slot))
    }

    /// Appends an event stamped with the system clock. Blocks while the queue is full.
    pub fn append(&self, event: &Event) -> Result<Appended, LogError> {
        self.enqueue(now_ms(), event, true)
    }

    /// Appends an event stamped `ts_ms`. Blocks while the queue is full.
    pub fn append_at(&self, ts_ms: u64, event: &Event) -> Result<Appended, LogError> {
        self.enqueue(ts_ms, event, true)
    }

    /// Like [`Log::append_at`] but never blocks: [`LogError::Full`] when the queue is full (for
    /// async callers, which must not park a runtime worker).
    pub fn try_append_at(&self, ts_ms: u64, event: &Event) -> Result<Appended, LogError> {
        self.enqueue(ts_ms, event, false)
    }

    /// Stores a content-addressed blob (request/response body) under its blake3 hash.
    pub fn put_blob(&self, bytes: Vec<u8>) -> Result<(Hash32, Appended), LogError> {
        let hash = Hash32::of(&bytes);
        let slot = Slot::new();
        self.send(
            Msg::Blob {
                hash: hash.0,
                bytes,
                slot: Arc::clone(&slot),
            },
            true,
        )?;
        Ok((hash, self.handle(slot)))
    }

    /// Stores a projection checkpoint under `name`, replacing the previous one.
    pub fn put_checkpoint(&self, name: &str, bytes: Vec<u8>) -> Result<Appended, LogError> {
        let slot = Slot::new();
        self.send(
            Msg::Checkpoint {
                name: name.to_string(),
                bytes,
                slot: Arc::clone(&slot),
            },
            true,
        )?;
        Ok(self.handle(slot))
    }

    /// Waits until everything appended before this call is committed; returns the head seq.
    pub fn sync(&self) -> Result<u64, LogError> {
        let slot = Slot::new();
        self.send(Msg::Barrier(Arc::clone(&slot)), true)?;
        self.handle(slot).wait()
    }

    /// A handle that resolves to the head seq once everything appended before this call is
    /// committed; never blocks (`LogError::Full` when the queue is full).
    pub fn barrier(&self) -> Result<Appended, LogError> {
        let slot = Slot::new();
        self.send(Msg::Barrier(Arc::clone(&slot)), false)?;
        Ok(self.handle(slot))
    }

    /// Follows committed ranges starting after `after_seq` (pass the seq you have already read).
    pub fn subscribe(&self, after_seq: u64) -> Subscription {
        Subscription {
            next: after_seq + 1,
            shared: Arc::clone(&self.inner.shared),
        }
    }

    /// Highest committed seq.
    pub fn committed_seq(&self) -> u64 {
        self.inner.shared.committed.load(Ordering::Acquire)
    }

    /// Whether the last commit failed (cheap: one atomic read, for per-request checks).
    pub fn is_failing(&self) -> bool {
        self.inner.shared.failing.load(Ordering::Acquire)
    }

    /// Blocks until the log is not failing (the writer reopened the database and a commit
    /// succeeded) or `timeout` passes; whether it is writable. Returns at once when it is.
    pub fn wait_writable(&self, timeout: std::time::Duration) -> bool {
        let shared = &self.inner.shared;
        shared.wait_until(Some(std::time::Instant::now() + timeout), || {
            !shared.failing.load(Ordering::Acquire)
        }) && !shared.closed.load(Ordering::Acquire)
    }

    pub fn health(&self) -> LogHealth {
        let s = &self.inner.shared;
        LogHealth {
            committed_seq: s.committed.load(Ordering::Acquire),
            failing: s.failing.load(Ordering::Acquire),
            failed_batches: s.failed_batches.load(Ordering::Relaxed),
            failed_events: s.failed_events.load(Ordering::Relaxed),
            failed_events_found: s.failed_events_found.load(Ordering::Relaxed),
            reopen_attempts: s.reopen_attempts.load(Ordering::Relaxed),
            recoveries: s.recoveries.load(Ordering::Relaxed),
            last_error: s.last_error(),
            closed: s.closed.load(Ordering::Acquire),
        }
    }

    /// A consistent read snapshot of everything committed so far. Fails (naming the file) while
    /// the writer is reopening the database after a failed commit.
    pub fn reader(&self) -> Result<Reader, LogError> {
        let Some(db) = self.inner.db.get() else {
            return Err(LogError::Unavailable {
                path: self.inner.path.to_path_buf(),
                reason: self
                    .inner
                    .shared
                    .last_error()
                    .unwrap_or_else(|| "the writer is reopening it".into()),
            });
        };
        // This process wrote every record after the start-up check (`serve` verifies the chain
        // before appending), so its own reads skip the per-record hash check.
        Reader::new(&*db, Arc::clone(&self.inner.path), false)
    }
}

/// One stored record, borrowed zero-copy from the snapshot's pages.
pub struct Stored<'r> {
    pub seq: u64,
    /// Dropped outside the storage boundary: a read-only guard's drop releases a page reference
    /// and reads nothing from the file (redb `AccessGuard::drop` with `OnDrop::None`), so damage
    /// cannot make it panic, and a boundary per record cost ~10% of a scan.
    value: AccessGuard<'static, &'static [u8]>,
    reader: &'r Reader,
}

impl Stored<'_> {
    /// The exact stored bytes (envelope + event).
    pub fn bytes(&self) -> &[u8] {
        // The slice was computed once inside the boundary when this was read (see `stored`), so
        // computing it again cannot panic.
        self.value.value()
    }

    /// Validates the record and returns a view of it. Through a read-only handle the record's own
    /// hash is checked too, so a flipped byte is an error here rather than a wrong answer.
    pub fn record(&self) -> Result<RecordRef<'_>, LogError> {
        let bad = |reason| LogError::BadRecord {
            path: self.reader.path.to_path_buf(),
            seq: self.seq,
            reason,
        };
        if self.reader.check_hashes {
            record::check_hash(self.seq, self.bytes()).map_err(bad)?;
        }
        record::decode(self.seq, self.bytes()).map_err(bad)
    }
}

/// The tables of one read snapshot.
struct Tables {
    events: ReadOnlyTable<u64, &'static [u8]>,
    index: ReadOnlyTable<(u128, u64), ()>,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
    blobs: ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
    checkpoints: ReadOnlyTable<&'static str, &'static [u8]>,
}

/// A read snapshot of the log. Every call into redb is made inside the storage boundary
/// ([`guard`]): a damaged file gives [`LogError::Corrupt`] naming it, never a panic.
pub struct Reader {
    path: Arc<PathBuf>,
    /// Check each record's own hash when it is decoded (readers of a log at rest).
    check_hashes: bool,
    /// Always `Some` until dropped; taken out to be dropped inside the storage boundary.
    tables: Option<Tables>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(t) = self.tables.take() {
            guard::drop_contained(&self.path, t);
        }
    }
}

/// Makes a [`Stored`] from a value redb returned, inside the boundary: its slice is computed once
/// here, where a damaged length or offset panics inside [`guard::contain`].
fn stored<'r>(
    reader: &'r Reader,
    seq: u64,
    value: AccessGuard<'static, &'static [u8]>,
) -> Stored<'r> {
    let _ = value.value().len();
    Stored { seq, value, reader }
}

impl Reader {
    pub(crate) fn new(
        db: &impl ReadableDatabase,
        path: Arc<PathBuf>,
        check_hashes: bool,
    ) -> Result<Reader, LogError> {
        let tables = guard::contain(&path, None, || {
            let st = |e: redb::Error| LogError::storage(&path, e);
            let txn = db.begin_read().map_err(|e| st(e.into()))?;
            Ok(Tables {
                events: txn.open_table(EVENTS).map_err(|e| st(e.into()))?,
                index: txn.open_table(REQUEST_INDEX).map_err(|e| st(e.into()))?,
                meta: txn.open_table(META).map_err(|e| st(e.into()))?,
                blobs: txn.open_table(BLOBS).map_err(|e| st(e.into()))?,
                checkpoints: txn.open_table(CHECKPOINTS).map_err(|e| st(e.into()))?,
            })
        })?;
        Ok(Reader {
            path,
            check_hashes,
            tables: Some(tables),
        })
    }

    pub(crate) fn err(&self, e: impl Into<redb::Error>) -> LogError {
        LogError::storage(&self.path, e)
    }

    /// Runs `f` on the tables inside the storage boundary.
    fn read<T>(
        &self,
        seq: Option<u64>,
        f: impl FnOnce(&Tables) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let tables = self.tables.as_ref().ok_or(LogError::Closed)?;
        guard::contain(&self.path, seq, || f(tables))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record at `seq`, if present.
    pub fn get(&self, seq: u64) -> Result<Option<Stored<'_>>, LogError> {
        self.read(Some(seq), |t| {
            Ok(t.events
                .get(seq)
                .map_err(|e| self.err(e))?
                .map(|value| stored(self, seq, value)))
        })
    }

    /// Records in a seq range, in order. The log is gapless from seq 1, so a missing or
    /// out-of-order record ends the iteration with [`LogError::Corrupt`] naming it.
    pub fn range(&self, range: impl RangeBounds<u64>) -> Result<Records<'_>, LogError> {
        let first = match range.start_bound() {
            Bound::Included(&s) => s.max(1),
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 1,
        };
        self.records(range, Some(first))
    }

    /// Like [`Reader::range`] but gaps are passed through (seqs still strictly increase): for
    /// the whole-log checks, which report a gap themselves.
    pub(crate) fn range_with_gaps(
        &self,
        range: impl RangeBounds<u64>,
    ) -> Result<Records<'_>, LogError> {
        self.records(range, None)
    }

    fn records(
        &self,
        range: impl RangeBounds<u64>,
        expect: Option<u64>,
    ) -> Result<Records<'_>, LogError> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        let inner = self.read(None, |t| t.events.range(range).map_err(|e| self.err(e)))?;
        Ok(Records {
            reader: self,
            inner: Some(inner),
            expect,
            last: None,
            done: false,
        })
    }

    /// The highest stored seq (0 for an empty log), from the events themselves.
    pub fn last_seq(&self) -> Result<u64, LogError> {
        self.read(None, |t| {
            Ok(match t.events.last().map_err(|e| self.err(e))? {
                Some((k, _)) => k.value(),
                None => 0,
            })
        })
    }

    /// Every record of one request, in seq order, found through `request_index` (no scan).
    pub fn request(&self, id: RequestId) -> Result<Vec<Stored<'_>>, LogError> {
        let seqs = self.read(None, |t| {
            let mut seqs = Vec::new();
            for item in t
                .index
                .range((id.0, 0)..=(id.0, u64::MAX))
                .map_err(|e| self.err(e))?
            {
                let (k, _) = item.map_err(|e| self.err(e))?;
                let seq = k.value().1;
                // Keys come out strictly increasing; anything else is a damaged page (and a
                // cycle in one would otherwise never end).
                if seqs.last().is_some_and(|&l| l >= seq) {
                    return Err(LogError::Corrupt {
                        path: self.path.to_path_buf(),
                        reason: format!("request_index of {id} is out of order at seq {seq}"),
                    });
                }
                seqs.push(seq);
            }
            Ok(seqs)
        })?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let Some(s) = self.get(seq)? else {
                return Err(LogError::Corrupt {
                    path: self.path.to_path_buf(),
                    reason: format!("request_index names seq {seq}, which is missing"),
                });
            };
            let owner = s.record()?.event.request_id();
            if owner != Some(id) {
                return Err(LogError::Corrupt {
                    path: self.path.to_path_buf(),
                    reason: format!(
                        "request_index lists seq {seq} under request {id}, but that record is not \
                         one of its events"
                    ),
                });
            }
            out.push(s);
        }
        Ok(out)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.read(None, |t| {
            Ok(t.meta
                .get(key)
                .map_err(|e| self.err(e))?
                .map(|g| g.value().to_vec()))
        })
    }

    /// The head as recorded in `meta` (seq 0 and a zero hash for an empty log).
    pub fn head(&self) -> Result<Head, LogError> {
        let seq = self
            .meta(META_HEAD_SEQ)?
            .and_then(|v| v.as_slice().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0);
        let hash = self
            .meta(META_HEAD_HASH)?
            .and_then(|v| v.as_slice().try_into().ok().map(Hash32))
            .unwrap_or_default();
        Ok(Head { seq, hash })
    }

    /// The on-disk format recorded when the log was created (`None` for a log with no tables
    /// written yet).
    pub fn format(&self) -> Result<Option<String>, LogError> {
        Ok(self
            .meta(META_FORMAT)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Number of stored events.
    pub fn len(&self) -> Result<u64, LogError> {
        self.read(None, |t| t.events.len().map_err(|e| self.err(e)))
    }

    pub fn is_empty(&self) -> Result<bool, LogError> {
        Ok(self.len()? == 0)
    }

    /// A stored blob by its hash.
    pub fn blob(&self, hash: &Hash32) -> Result<Option<Vec<u8>>, LogError> {
        self.read(None, |t| {
            Ok(t.blobs
                .get(&hash.0)
                .map_err(|e| self.err(e))?
                .map(|g| g.value().to_vec()))
        })
    }

    /// Every blob hash, in order (for salvage). Stops at the first unreadable entry.
    pub(crate) fn blob_hashes(&self) -> Result<Vec<[u8; 32]>, LogError> {
        self.read(None, |t| {
            let mut out = Vec::new();
            for item in t.blobs.range::<&[u8; 32]>(..).map_err(|e| self.err(e))? {
                let (k, _) = item.map_err(|e| self.err(e))?;
                out.push(*k.value());
            }
            Ok(out)
        })
    }

    /// A projection checkpoint by name.
    pub fn checkpoint(&self, name: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.read(None, |t| {
            Ok(t.checkpoints
                .get(name)
                .map_err(|e| self.err(e))?
                .map(|g| g.value().to_vec()))
        })
    }
}

/// The iterator of [`Reader::range`]: each step is taken inside the storage boundary, and the
/// first error ends it.
pub struct Records<'r> {
    reader: &'r Reader,
    /// Always `Some` until dropped; taken out to be dropped inside the storage boundary.
    inner: Option<redb::Range<'static, u64, &'static [u8]>>,
    /// The seq the next record must have (gapless iteration), if checked.
    expect: Option<u64>,
    last: Option<u64>,
    done: bool,
}

impl Drop for Records<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.inner.take() {
            guard::drop_contained(&self.reader.path, r);
        }
    }
}

impl<'r> Iterator for Records<'r> {
    type Item = Result<Stored<'r>, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let reader = self.reader;
        let inner = self.inner.as_mut()?;
        let at = self.expect.or(self.last.map(|l| l + 1));
        let step = guard::contain(&reader.path, at, || match inner.next() {
            None => Ok(None),
            Some(Err(e)) => Err(reader.err(e)),
            Some(Ok((k, v))) => Ok(Some(stored(reader, k.value(), v))),
        });
        let item = match step {
            Ok(None) => None,
            Err(e) => Some(Err(e)),
            Ok(Some(s)) => {
                let corrupt = |reason| {
                    Some(Err(LogError::Corrupt {
                        path: reader.path.to_path_buf(),
                        reason,
                    }))
                };
                match (self.expect, self.last) {
                    (Some(want), _) if s.seq != want => corrupt(format!(
                        "record {want} is missing (the next stored record is seq {})",
                        s.seq
                    )),
                    (_, Some(last)) if s.seq <= last => corrupt(format!(
                        "the events table is out of order: seq {} after seq {last}",
                        s.seq
                    )),
                    _ => {
                        self.last = Some(s.seq);
                        self.expect = self.expect.map(|_| s.seq + 1);
                        Some(Ok(s))
                    }
                }
            }
        };
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

#[cfg(test)]
mod tests;
