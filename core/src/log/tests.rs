//! Round-trip, chain and tamper properties of the log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use redb::ReadableTable;

use std::future::Future as _;

use super::*;
use crate::event::Event;
use crate::sample;

fn open(dir: &Path) -> Log {
    Log::open_with(
        dir,
        LogOptions {
            queue_capacity: 64,
            batch_limit: 7,
            ..LogOptions::default()
        },
    )
    .unwrap()
}

fn append_all(log: &Log, events: &[Event]) -> Vec<u64> {
    let handles: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| log.append_at(1_000 + i as u64, e).unwrap())
        .collect();
    handles.iter().map(|h| h.wait().unwrap()).collect()
}

/// Rewrites one stored record with one byte xor-ed, the way bit rot or tampering would.
fn flip_byte(dir: &Path, seq: u64, offset: usize, mask: u8) {
    let db = redb::Database::open(dir.join(LOG_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(EVENTS).unwrap();
        let mut bytes = t.get(seq).unwrap().unwrap().value().to_vec();
        let i = offset % bytes.len();
        bytes[i] ^= mask;
        t.insert(seq, bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_event_round_trips_and_the_chain_verifies(events in prop::collection::vec(any::<Event>(), 1..24)) {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let seqs = append_all(&log, &events);
        prop_assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
        let reader = log.reader().unwrap();
        for (i, item) in reader.range(..).unwrap().enumerate() {
            let stored = item.unwrap();
            let rec = stored.record().unwrap();
            prop_assert_eq!(rec.ts_ms, 1_000 + i as u64);
            prop_assert_eq!(&rec.event.to_owned_event().unwrap(), &events[i]);
            prop_assert_eq!(rec.event.request_id(), events[i].request_id());
        }
        // Every request-scoped event is reachable through the index, in order.
        for e in &events {
            if let Some(id) = e.request_id() {
                let found: Vec<Event> = reader.request(id).unwrap().iter()
                    .map(|s| s.record().unwrap().event.to_owned_event().unwrap()).collect();
                let expected: Vec<&Event> = events.iter().filter(|x| x.request_id() == Some(id)).collect();
                prop_assert_eq!(found.iter().collect::<Vec<_>>(), expected);
            }
        }
        let report = reader.verify().unwrap().unwrap();
        prop_assert_eq!(report.events, events.len() as u64);
    }

    #[test]
    fn a_flipped_byte_is_reported_at_its_seq(n in 1u64..40, pick in any::<prop::sample::Index>(),
                                             offset in any::<usize>(), mask in 1u8..=255) {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path());
            let events: Vec<Event> = (0..n).map(sample::attempt_finished).collect();
            append_all(&log, &events);
        }
        let seq = 1 + pick.index(n as usize) as u64;
        flip_byte(dir.path(), seq, offset, mask);
        let log = open(dir.path());
        let brk = log.reader().unwrap().verify().unwrap().unwrap_err();
        prop_assert_eq!(brk.seq, seq, "{}", brk);
    }
}

#[test]
fn seqs_are_gapless_across_reopen_and_subscribers_see_ranges() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        append_all(&log, &sample::request_story(1));
    }
    let log = open(dir.path());
    assert_eq!(log.committed_seq(), 5);
    let mut sub = log.subscribe(log.committed_seq());
    assert_eq!(sub.try_next(), None);
    let seqs = append_all(&log, &sample::request_story(2));
    assert_eq!(seqs, vec![6, 7, 8, 9, 10]);
    assert_eq!(sub.wait(None), Some(6..=10));
    let r = log.reader().unwrap();
    assert_eq!(r.head().unwrap().seq, 10);
    assert_eq!(r.request(sample::request_id(2)).unwrap().len(), 5);
    assert!(r.verify().unwrap().is_ok());
}

#[test]
fn a_second_opener_is_told_who_owns_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _log = open(dir.path());
    match Log::open(dir.path()) {
        Err(LogError::InUse { owner, .. }) => {
            assert!(owner.contains(&std::process::id().to_string()), "{owner}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
}

#[test]
fn blobs_checkpoints_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let (hash, h) = log.put_blob(b"{\"model\":\"x\"}".to_vec()).unwrap();
    let c = log.put_checkpoint("cost", vec![1, 2, 3]).unwrap();
    drop(log.append(&sample::attempt_finished(1)).unwrap());
    assert_eq!(log.sync().unwrap(), 1);
    h.wait().unwrap();
    c.wait().unwrap();
    let r = log.reader().unwrap();
    assert_eq!(r.blob(&hash).unwrap().unwrap(), b"{\"model\":\"x\"}");
    assert_eq!(r.checkpoint("cost").unwrap().unwrap(), vec![1, 2, 3]);
}

#[test]
fn appended_is_a_future() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let fut = log.append(&sample::attempt_finished(1)).unwrap();
    // A minimal executor: park the thread until the waker fires.
    let thread = std::thread::current();
    struct W(std::thread::Thread);
    impl std::task::Wake for W {
        fn wake(self: Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = std::task::Waker::from(Arc::new(W(thread)));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let seq = loop {
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => break r.unwrap(),
            std::task::Poll::Pending => std::thread::park(),
        }
    };
    assert_eq!(seq, 1);
}
