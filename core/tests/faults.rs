//! The log under storage faults, through the fault-injecting backend (`log::faults`): a full disk
//! or a failed fsync fails the batch in flight and marks the log failing; when the space returns
//! the writer reopens the database by itself, without a restart; nothing acknowledged is lost and
//! the chain verifies. Also: a caller that waits for a commit does not pay the batch window.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use omniroute_core::event::{Event, RequestId};
use omniroute_core::log::faults::Faults;
use omniroute_core::log::{Appended, Backoff, Log, LogError, LogOptions};
use omniroute_core::sample;

/// Generous upper bound for things that happen in milliseconds; only reached when broken.
const PATIENCE: Duration = Duration::from_secs(20);

fn opts() -> LogOptions {
    LogOptions {
        // Reopen attempts every millisecond or two: the tests wait for recovery, not for a timer.
        reopen_backoff: Backoff {
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
        },
        ..LogOptions::default()
    }
}

fn open(dir: &Path, faults: &Faults) -> Log {
    Log::open_with_backend(dir, opts(), faults.factory(dir)).unwrap()
}

/// Appends events `from..to` and waits for each; returns (seq, n) of every acknowledged one.
fn append_acked(log: &Log, from: u64, to: u64) -> Vec<(u64, u64)> {
    let handles: Vec<(u64, Appended)> = (from..to)
        .map(|n| (n, log.append(&sample::attempt_finished(n)).unwrap()))
        .collect();
    handles
        .into_iter()
        .map(|(n, h)| (h.wait().unwrap(), n))
        .collect()
}

/// Every stored event's request id, by seq (after checking the chain).
fn stored(log: &Log) -> HashMap<u64, RequestId> {
    log.sync().unwrap();
    let reader = log.reader().unwrap();
    reader.verify().unwrap().unwrap();
    reader
        .range(..)
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            let Event::AttemptFinished(e) = s.record().unwrap().event.to_owned_event().unwrap()
            else {
                panic!("seq {} holds another kind", s.seq);
            };
            (s.seq, e.request_id)
        })
        .collect()
}

fn assert_acked_present(stored: &HashMap<u64, RequestId>, acked: &[(u64, u64)]) {
    for (seq, n) in acked {
        assert_eq!(
            stored.get(seq),
            Some(&sample::request_id(*n)),
            "acknowledged seq {seq} lost"
        );
    }
}

/// How many of the sample events `ns` are stored.
fn count_stored(stored: &HashMap<u64, RequestId>, ns: &[u64]) -> u64 {
    let ids: HashSet<RequestId> = stored.values().copied().collect();
    ns.iter()
        .filter(|n| ids.contains(&sample::request_id(**n)))
        .count() as u64
}

#[test]
fn a_full_disk_fails_its_batch_and_the_writer_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let log = open(dir.path(), &faults);
    let mut acked = append_acked(&log, 0, 50);
    let head = log.committed_seq();

    faults.disk_full();
    let err = log
        .append(&sample::attempt_finished(100))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(matches!(err, LogError::WriteFailed(_)), "{err}");
    assert!(err.to_string().contains("omniroute.redb"), "{err}");
    assert!(log.is_failing());
    assert!(!log.wait_writable(Duration::ZERO));
    // While the disk stays full every append fails (at its commit, or at once while the writer
    // is reopening), and nothing moves the head.
    for n in 101..110 {
        let r = log.append(&sample::attempt_finished(n)).unwrap().wait();
        assert!(r.is_err(), "append {n} committed on a full disk: {r:?}");
    }
    assert!(log.sync().is_err());
    assert_eq!(log.committed_seq(), head);
    let h = log.health();
    assert!(h.failing && h.failed_events >= 10, "{h:?}");
    assert!(faults.failed_writes() >= 1);

    faults.return_space();
    assert!(log.wait_writable(PATIENCE), "{:?}", log.health());
    let h = log.health();
    assert!(
        !h.failing && h.recoveries >= 1 && h.reopen_attempts >= 1,
        "{h:?}"
    );
    assert_eq!(
        h.failed_events_found, 0,
        "nothing of a refused write reached the file"
    );
    assert!(faults.backends_made() >= 2, "the database was reopened");

    // New appends continue the chain right after the committed head.
    let more = append_acked(&log, 200, 210);
    assert_eq!(more[0].0, head + 1);
    acked.extend(more);
    let stored = stored(&log);
    assert_acked_present(&stored, &acked);
    assert_eq!(
        stored.len() as u64,
        head + 10,
        "failed events are not in the log"
    );

    // A clean restart (through the plain file path) sees the same log.
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    assert_acked_present(&self::stored(&log), &acked);
}

#[test]
fn a_disk_that_fills_mid_commit_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let log = open(dir.path(), &faults);
    let mut acked = append_acked(&log, 0, 20);
    // Some pages of the next commits fit, then the disk is full in the middle of one.
    faults.fail_writes_after(200_000);
    let mut failed = Vec::new();
    for round in 0..200u64 {
        let from = 1_000 + round * 20;
        let handles: Vec<(u64, Appended)> = (from..from + 20)
            .map(|n| (n, log.append(&sample::attempt_finished(n)).unwrap()))
            .collect();
        for (n, h) in handles {
            match h.wait() {
                Ok(seq) => acked.push((seq, n)),
                Err(_) => failed.push(n),
            }
        }
        if !failed.is_empty() {
            break;
        }
    }
    assert!(!failed.is_empty(), "the disk never filled");
    assert!(log.is_failing());
    faults.return_space();
    assert!(log.wait_writable(PATIENCE), "{:?}", log.health());
    acked.extend(append_acked(&log, 900_000, 900_005));
    let stored = stored(&log);
    assert_acked_present(&stored, &acked);
    let found = count_stored(&stored, &failed);
    assert_eq!(found, log.health().failed_events_found);
    assert_eq!(stored.len() as u64, acked.len() as u64 + found);
}

#[test]
fn a_failed_fsync_fails_its_batch_and_the_log_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let log = open(dir.path(), &faults);
    let mut acked = append_acked(&log, 0, 10);
    let head = log.committed_seq();

    // fsync fails until healed: commits fail, and so does every reopen (its repair syncs too).
    faults.fail_sync();
    let r = log.append(&sample::attempt_finished(50)).unwrap().wait();
    assert!(r.is_err(), "{r:?}");
    assert!(log.is_failing());
    let r = log.append(&sample::attempt_finished(51)).unwrap().wait();
    assert!(r.is_err(), "{r:?}");
    // A sync makes the writer try to reopen at once; the reopen's own fsync fails too.
    assert!(log.sync().is_err());
    faults.heal();
    assert!(log.wait_writable(PATIENCE), "{:?}", log.health());

    // One failed fsync: the writer recovers without anyone healing anything.
    faults.fail_next_sync();
    let r = log.append(&sample::attempt_finished(60)).unwrap().wait();
    assert!(r.is_err(), "{r:?}");
    assert!(log.wait_writable(PATIENCE), "{:?}", log.health());
    assert!(faults.failed_syncs() >= 2);

    let more = append_acked(&log, 70, 75);
    acked.extend(more.iter().copied());
    let stored = stored(&log);
    assert_acked_present(&stored, &acked);
    // The failed batches' bytes had reached the file before the fsync failed, so they may have
    // landed: each is there whole or not at all, and the count says which.
    let found = count_stored(&stored, &[50, 51, 60]);
    assert_eq!(found, log.health().failed_events_found);
    assert_eq!(more[0].0, head + found + 1);
}

#[test]
fn a_second_opener_through_the_fault_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let _log = open(dir.path(), &faults);
    match Log::open_with_backend(dir.path(), opts(), faults.factory(dir.path())) {
        Err(LogError::InUse { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a second writer opened the file"),
    }
}

/// A window no test can sit out: only a waiter that cuts it short gets its commit.
fn hour_window(dir: &Path) -> Log {
    Log::open_with(
        dir,
        LogOptions {
            batch_window: Duration::from_secs(3600),
            ..LogOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn a_waiter_does_not_sit_out_the_batch_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = hour_window(dir.path());
    // Producers that do not wait leave the writer in its window...
    let a = log.append(&sample::attempt_finished(1)).unwrap();
    let b = log.append(&sample::attempt_finished(2)).unwrap();
    assert_eq!(log.committed_seq(), 0);
    assert!(a.try_get().is_none());
    // ...a waiter ends it, and the whole gathered batch commits.
    assert_eq!(b.wait_timeout(PATIENCE).map(Result::unwrap), Some(2));
    assert_eq!(a.try_get().map(Result::unwrap), Some(1));

    // The same for `sync`, and for an `Appended` awaited as a future.
    drop(log.append(&sample::attempt_finished(3)).unwrap());
    assert_eq!(log.sync().unwrap(), 3);
    let fut = log.append(&sample::attempt_finished(4)).unwrap();
    assert_eq!(block_on(fut).unwrap(), 4);
    let waited = log.append(&sample::attempt_finished(5)).unwrap();
    assert_eq!(waited.wait().unwrap(), 5);
}

/// A minimal executor: park the thread until the waker fires.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct W(std::thread::Thread);
    impl std::task::Wake for W {
        fn wake(self: Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = std::task::Waker::from(Arc::new(W(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => return r,
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}
