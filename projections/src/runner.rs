//! The live projection runner: one thread that restores the read models from their checkpoint,
//! catches up from the log, then folds each committed range as the writer publishes it. It writes
//! a checkpoint every so many events or seconds and when stopped. Readers take a read lock; folding
//! holds the write lock for at most one chunk of records at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use omniroute_core::log::Log;

use crate::{CHECKPOINT, Error, Mask, Projections};

/// Records folded per write-lock hold.
const CHUNK: u64 = 4096;

#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Write a checkpoint once this many events were folded since the last one...
    pub checkpoint_events: u64,
    /// ...or this long has passed with anything new.
    pub checkpoint_interval: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            checkpoint_events: 100_000,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

struct Shared {
    state: RwLock<Projections>,
    applied: Mutex<u64>,
    advanced: Condvar,
    stop: AtomicBool,
    error: Mutex<Option<String>>,
}

pub struct Runner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runner {
    /// Starts following `log`. Restoring and catching up happen on the runner's thread, so this
    /// returns at once; [`Runner::wait_for`] tells when a seq has been folded.
    pub fn start(log: Log, opts: RunnerOptions) -> Result<Runner, Error> {
        let shared = Arc::new(Shared {
            state: RwLock::new(Projections::default()),
            applied: Mutex::new(0),
            advanced: Condvar::new(),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("omniroute-projections".into())
            .spawn(move || {
                if let Err(e) = follow(&s, &log, &opts) {
                    *lock(&s.error) = Some(e.to_string());
                }
                // Wake waiters so they see the error (or the stop) instead of timing out.
                s.advanced.notify_all();
            })
            .map_err(|e| {
                Error::Log(omniroute_core::log::LogError::WriteFailed(format!(
                    "cannot start the projection thread: {e}"
                )))
            })?;
        Ok(Runner {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&Projections) -> R) -> R {
        let guard = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// The last seq folded in.
    pub fn applied(&self) -> u64 {
        *lock(&self.shared.applied)
    }

    /// Why the runner stopped folding, if it failed.
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.error).clone()
    }

    /// Waits until `seq` is folded in; false on timeout or when the runner has stopped.
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut applied = lock(&self.shared.applied);
        while *applied < seq {
            let now = Instant::now();
            if now >= deadline || self.error().is_some() || self.stopped() {
                return false;
            }
            applied = self
                .shared
                .advanced
                .wait_timeout(applied, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    fn stopped(&self) -> bool {
        lock(&self.thread)
            .as_ref()
            .is_none_or(JoinHandle::is_finished)
    }

    /// Folds what is committed, writes a final checkpoint and stops the thread.
    pub fn stop(&self) -> Result<(), String> {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        match self.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn follow(s: &Shared, log: &Log, opts: &RunnerOptions) -> Result<(), Error> {
    let restored = Projections::restore(&log.reader()?)?;
    let seq = restored.seq;
    *s.state.write().unwrap_or_else(|e| e.into_inner()) = restored;
    publish(s, seq);
    let mut since_checkpoint = 0u64;
    let mut last_checkpoint = Instant::now();
    let mut sub = log.subscribe(*lock(&s.applied));
    // Everything committed before the subscription started is caught up by the first range.
    let mut pending = sub.try_next();
    loop {
        if let Some(range) = pending.take() {
            match fold(s, log, *range.start(), *range.end()) {
                Ok(n) => since_checkpoint += n,
                // The log is failing or being reopened (a full disk): what is committed stays
                // committed, so wait for the writer to recover and fold the range again (records
                // already folded are skipped).
                Err(e) if transient(log, &e) && !s.stop.load(Ordering::Acquire) => {
                    log.wait_writable(Duration::from_millis(200));
                    pending = Some(range);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let stopping = s.stop.load(Ordering::Acquire);
        let due = since_checkpoint >= opts.checkpoint_events
            || (since_checkpoint > 0 && last_checkpoint.elapsed() >= opts.checkpoint_interval);
        if due || (stopping && since_checkpoint > 0) {
            let bytes = s.state.read().unwrap_or_else(|e| e.into_inner()).encode();
            match log
                .put_checkpoint(CHECKPOINT, bytes)
                .and_then(|h| h.wait())
                .map_err(Error::Log)
            {
                Ok(_) => since_checkpoint = 0,
                // A checkpoint only shortens the next start-up: one that cannot be written while
                // the log is failing is tried again later, never a reason to stop folding.
                Err(e) if transient(log, &e) => {}
                Err(e) => return Err(e),
            }
            last_checkpoint = Instant::now();
        }
        if stopping {
            // One last look, so what was committed before the stop is folded and checkpointed.
            match sub.try_next() {
                Some(r) => pending = Some(r),
                None => return Ok(()),
            }
            continue;
        }
        pending = sub.wait(Some(Duration::from_millis(50)));
    }
}

/// Whether a log error is the log failing for now (disk full, reopening) rather than damage.
fn transient(log: &Log, e: &Error) -> bool {
    use omniroute_core::log::LogError;
    match e {
        Error::Log(LogError::Unavailable { .. } | LogError::WriteFailed(_) | LogError::Full) => {
            true
        }
        Error::Log(_) => log.is_failing(),
        Error::UnknownName(_) => false,
    }
}

/// Folds `from..=to` in chunks; returns the number of records folded.
fn fold(s: &Shared, log: &Log, from: u64, to: u64) -> Result<u64, Error> {
    let reader = log.reader()?;
    let mut n = 0;
    let mut start = from;
    while start <= to {
        let end = to.min(start.saturating_add(CHUNK - 1));
        let mut state = s.state.write().unwrap_or_else(|e| e.into_inner());
        for item in reader.range(start..=end)? {
            let stored = item?;
            let rec = stored.record()?;
            if rec.seq <= state.seq {
                continue;
            }
            state.apply_masked(Mask::ALL, rec.seq, rec.ts_ms, rec.event);
            n += 1;
        }
        let seq = state.seq;
        drop(state);
        publish(s, seq);
        start = end + 1;
    }
    Ok(n)
}

/// Tells waiters that everything up to `seq` is folded in.
fn publish(s: &Shared, seq: u64) {
    *lock(&s.applied) = seq;
    s.advanced.notify_all();
}
