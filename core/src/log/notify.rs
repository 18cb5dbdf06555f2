//! How the writer tells the rest of the process what became durable: per-append completion slots
//! ([`Appended`]) and coalescing range subscriptions ([`Subscription`]). Both wait on one condvar
//! (blocking callers) or one waker list (async callers), signalled once per committed batch.
//!
//! Waiting is also a signal the other way: a caller that waits for a commit marks the writer
//! urgent and unparks it ([`Shared::hurry`]), so it does not sleep out its batch window while
//! someone waits. Producers that do not wait never wake the writer (that cost was measured).

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::LogError;

const PENDING: u64 = u64::MAX;
const FAILED: u64 = u64::MAX - 1;

/// State shared by the writer thread and every waiter.
pub(crate) struct Shared {
    /// Highest committed seq (0 before the first event).
    pub(crate) committed: AtomicU64,
    /// Set once the writer has stopped; waiters stop waiting.
    pub(crate) closed: AtomicBool,
    /// Whether the last commit failed (cleared by the next one that succeeds).
    pub(crate) failing: AtomicBool,
    /// Batches that could not be committed since the log was opened.
    pub(crate) failed_batches: AtomicU64,
    /// Events that could not be committed since the log was opened.
    pub(crate) failed_events: AtomicU64,
    /// Failed events found on disk after a reopen (a failed fsync's batch can land after all).
    pub(crate) failed_events_found: AtomicU64,
    /// Attempts to reopen the database after failed commits.
    pub(crate) reopen_attempts: AtomicU64,
    /// Times the log became writable again after a failure.
    pub(crate) recoveries: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Someone waits for a commit: the writer must not sleep out its batch window.
    pub(crate) urgent: AtomicBool,
    /// Whether the writer has a batch window at all (without one there is nothing to cut short).
    windowed: bool,
    /// The writer thread, registered by itself when it starts, to be unparked by [`Shared::hurry`].
    writer: OnceLock<Thread>,
    wakers: Mutex<Vec<Waker>>,
    cond: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the data here (a waker
    // list, an error string) is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(windowed: bool) -> Self {
        Self {
            committed: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            failed_batches: AtomicU64::new(0),
            failed_events: AtomicU64::new(0),
            failed_events_found: AtomicU64::new(0),
            reopen_attempts: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            last_error: Mutex::new(None),
            urgent: AtomicBool::new(false),
            windowed,
            writer: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
            cond: Condvar::new(),
        }
    }

    /// Called by the writer thread before it takes its first message.
    pub(crate) fn register_writer(&self) {
        let _ = self.writer.set(std::thread::current());
    }

    /// Someone waits for a commit: end the writer's batch window now. Only the first caller per
    /// batch unparks the thread (the writer clears the flag when it starts a commit).
    pub(crate) fn hurry(&self) {
        if self.windowed
            && !self.urgent.swap(true, Ordering::AcqRel)
            && let Some(t) = self.writer.get()
        {
            t.unpark();
        }
    }

    /// Wakes every waiter; called after slots and `committed` were updated.
    pub(crate) fn notify(&self) {
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        self.cond.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn set_error(&self, msg: String) {
        *lock(&self.last_error) = Some(msg);
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    fn failure(&self) -> LogError {
        match self.last_error() {
            Some(e) => LogError::WriteFailed(e),
            None => LogError::Closed,
        }
    }

    /// Blocks until `ready()` holds, the log closes, or the deadline passes.
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        let mut guard = lock(&self.wakers);
        loop {
            if ready() {
                return true;
            }
            if self.closed.load(Ordering::Acquire) {
                return ready();
            }
            guard = match deadline {
                None => self.cond.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return ready();
                    }
                    self.cond
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Registers `cx`'s waker unless `ready()` already holds (checked under the lock, so a
    /// notification between the check and the registration cannot be lost).
    fn register(&self, cx: &Context<'_>, ready: impl Fn() -> bool) -> bool {
        let mut wakers = lock(&self.wakers);
        if ready() || self.closed.load(Ordering::Acquire) {
            return true;
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        false
    }
}

/// The completion cell of one append (or barrier): pending, failed, or the committed seq.
pub(crate) struct Slot(AtomicU64);

impl Slot {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(PENDING)))
    }
    pub(crate) fn complete(&self, seq: u64) {
        self.0.store(seq, Ordering::Release);
    }
    pub(crate) fn fail(&self) {
        self.0.store(FAILED, Ordering::Release);
    }
    fn state(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// The handle `append` returns. Await it (or call [`Appended::wait`]) to know the event is durable
/// and learn its seq (`strict` mode); drop it to not wait (`batched` mode).
#[must_use = "drop the handle explicitly if you do not need to wait for durability"]
pub struct Appended {
    pub(crate) slot: Arc<Slot>,
    pub(crate) shared: Arc<Shared>,
}

impl Appended {
    /// The outcome if it is known already: `Some(Ok(seq))` once committed.
    pub fn try_get(&self) -> Option<Result<u64, LogError>> {
        match self.slot.state() {
            PENDING if self.shared.closed.load(Ordering::Acquire) => {
                // The writer may have completed the slot just before closing.
                match self.slot.state() {
                    PENDING => Some(Err(self.shared.failure())),
                    _ => self.try_get(),
                }
            }
            PENDING => None,
            FAILED => Some(Err(self.shared.failure())),
            seq => Some(Ok(seq)),
        }
    }

    /// Blocks the calling thread until the event is durable; returns its seq.
    pub fn wait(&self) -> Result<u64, LogError> {
        if self.slot.state() == PENDING {
            self.shared.hurry();
        }
        self.shared
            .wait_until(None, || self.slot.state() != PENDING);
        self.try_get().unwrap_or(Err(LogError::Closed))
    }

    /// Like [`Appended::wait`] with a limit; `None` if still pending after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<u64, LogError>> {
        if self.slot.state() == PENDING {
            self.shared.hurry();
        }
        self.shared.wait_until(Some(Instant::now() + timeout), || {
            self.slot.state() != PENDING
        });
        self.try_get()
    }
}

impl Future for Appended {
    type Output = Result<u64, LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.try_get() {
            return Poll::Ready(r);
        }
        // Awaiting is waiting: the writer must not sleep out its window for this event.
        self.shared.hurry();
        if self.shared.register(cx, || self.slot.state() != PENDING) {
            return Poll::Ready(self.try_get().unwrap_or(Err(LogError::Closed)));
        }
        Poll::Pending
    }
}

/// Follows committed ranges. Ranges coalesce: a slow subscriber gets one larger range, never a
/// growing queue, so the writer never waits for a subscriber.
pub struct Subscription {
    pub(crate) next: u64,
    pub(crate) shared: Arc<Shared>,
}

impl Subscription {
    /// The next seq this subscription will report.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The committed range not yet reported, if any.
    pub fn try_next(&mut self) -> Option<RangeInclusive<u64>> {
        let head = self.shared.committed.load(Ordering::Acquire);
        if head >= self.next {
            let r = self.next..=head;
            self.next = head + 1;
            Some(r)
        } else {
            None
        }
    }

    /// Blocks until a new range is committed (or `timeout` passes, or the log closes: `None`).
    pub fn wait(&mut self, timeout: Option<Duration>) -> Option<RangeInclusive<u64>> {
        let next = self.next;
        let shared = Arc::clone(&self.shared);
        shared.wait_until(timeout.map(|t| Instant::now() + t), || {
            shared.committed.load(Ordering::Acquire) >= next
        });
        self.try_next()
    }

    /// Async form of [`Subscription::wait`]: resolves with the next committed range, or `None`
    /// once the log has closed.
    pub fn next_range(&mut self) -> NextRange<'_> {
        NextRange { sub: self }
    }
}

/// Future returned by [`Subscription::next_range`].
pub struct NextRange<'a> {
    sub: &'a mut Subscription,
}

impl Future for NextRange<'_> {
    type Output = Option<RangeInclusive<u64>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.sub.try_next() {
            return Poll::Ready(Some(r));
        }
        let next = self.sub.next;
        let shared = Arc::clone(&self.sub.shared);
        if shared.register(cx, || shared.committed.load(Ordering::Acquire) >= next) {
            return Poll::Ready(self.sub.try_next());
        }
        Poll::Pending
    }
}
