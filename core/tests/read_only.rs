//! The reader side of the log's API: `open_read_only` (never creates, never writes, names what is
//! missing, reads a log its writer never closed), per-record hash checks, gaps, the verified point
//! `serve` starts from, and `salvage`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use omniroute_core::event::Hash32;
use omniroute_core::log::{
    Head, LOG_FILE, Log, LogError, VERIFIED_CHECKPOINT, open_read_only, salvage,
};
use omniroute_core::record::RecordError;
use omniroute_core::sample;
use redb::ReadableTable;

const EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

/// A closed log of `requests` sample stories (5 events each).
fn log_of(dir: &Path, requests: u64) {
    let log = Log::open(dir).unwrap();
    for n in 0..requests {
        for e in sample::request_story(n) {
            drop(log.append(&e).unwrap());
        }
    }
    log.sync().unwrap();
}

/// Rewrites (or with `None`, removes) record `seq` through redb, keeping the file readable.
fn rewrite(dir: &Path, seq: u64, edit: Option<fn(&mut [u8])>) {
    let db = redb::Database::open(dir.join(LOG_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(EVENTS).unwrap();
        let mut bytes = t.get(seq).unwrap().unwrap().value().to_vec();
        match edit {
            Some(f) => {
                f(&mut bytes);
                t.insert(seq, bytes.as_slice()).unwrap();
            }
            None => {
                t.remove(seq).unwrap();
            }
        }
    }
    txn.commit().unwrap();
}

fn flip_last_byte(b: &mut [u8]) {
    let i = b.len() - 1;
    b[i] ^= 0x40;
}

#[test]
fn nothing_is_created_where_there_is_no_log() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("missing");
    match open_read_only(&missing) {
        Err(e @ LogError::NoLog { .. }) => {
            assert!(
                e.to_string().contains(&missing.display().to_string()),
                "{e}"
            )
        }
        other => panic!("{:?}", other.err()),
    }
    assert!(!missing.exists());
    assert!(matches!(
        open_read_only(root.path()),
        Err(LogError::NoLog { .. })
    ));
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    std::fs::write(root.path().join(LOG_FILE), b"").unwrap();
    let e = open_read_only(root.path()).err().unwrap();
    assert!(e.to_string().contains("empty (0 bytes)"), "{e}");
    std::fs::write(root.path().join(LOG_FILE), b"not a redb file at all").unwrap();
    assert!(matches!(
        open_read_only(root.path()),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn a_writer_keeps_readers_out_and_a_reader_keeps_writers_out() {
    let dir = tempfile::tempdir().unwrap();
    log_of(dir.path(), 2);
    let log = Log::open(dir.path()).unwrap();
    match open_read_only(dir.path()) {
        Err(LogError::InUse { owner, .. }) => {
            assert!(owner.contains(&std::process::id().to_string()), "{owner}")
        }
        other => panic!("{:?}", other.err()),
    }
    drop(log);
    let a = open_read_only(dir.path()).unwrap();
    let b = open_read_only(dir.path()).unwrap();
    assert!(matches!(Log::open(dir.path()), Err(LogError::InUse { .. })));
    assert_eq!(a.reader().unwrap().len().unwrap(), 10);
    assert_eq!(b.reader().unwrap().len().unwrap(), 10);
}

#[test]
fn a_log_its_writer_never_closed_is_repaired_in_memory_only() {
    let live = tempfile::tempdir().unwrap();
    let log = Log::open(live.path()).unwrap();
    for e in sample::request_story(1) {
        log.append(&e).unwrap().wait().unwrap();
    }
    // What a kill -9 leaves: committed, never closed.
    let crashed = tempfile::tempdir().unwrap();
    std::fs::copy(live.path().join(LOG_FILE), crashed.path().join(LOG_FILE)).unwrap();
    drop(log);
    let before = std::fs::read(crashed.path().join(LOG_FILE)).unwrap();
    {
        let ro = open_read_only(crashed.path()).unwrap();
        assert!(ro.was_repaired());
        let r = ro.reader().unwrap();
        assert_eq!(r.verify().unwrap().unwrap().events, 5);
    }
    assert_eq!(
        std::fs::read(crashed.path().join(LOG_FILE)).unwrap(),
        before
    );
    // A writer still opens it (and repairs it on disk).
    let log = Log::open(crashed.path()).unwrap();
    assert_eq!(log.committed_seq(), 5);
}

#[test]
fn read_only_readers_check_each_records_own_hash() {
    let dir = tempfile::tempdir().unwrap();
    log_of(dir.path(), 4);
    rewrite(dir.path(), 7, Some(flip_last_byte));
    let ro = open_read_only(dir.path()).unwrap();
    let r = ro.reader().unwrap();
    match r.get(7).unwrap().unwrap().record() {
        Err(LogError::BadRecord { seq: 7, reason, .. }) => {
            assert_eq!(reason, RecordError::HashMismatch)
        }
        other => panic!("{:?}", other.map(|r| r.seq)),
    }
    assert!(r.get(6).unwrap().unwrap().record().is_ok());
    assert_eq!(r.stats().unwrap().invalid, 1);
}

#[test]
fn a_missing_record_ends_a_range_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    log_of(dir.path(), 4);
    rewrite(dir.path(), 10, None);
    let ro = open_read_only(dir.path()).unwrap();
    let r = ro.reader().unwrap();
    let items: Vec<_> = r.range(..).unwrap().collect();
    assert_eq!(items.len(), 10, "9 records, then the error, then nothing");
    let e = items.last().unwrap().as_ref().err().unwrap().to_string();
    assert!(e.contains("record 10 is missing"), "{e}");
    let brk = r.verify().unwrap().unwrap_err();
    assert_eq!(brk.seq, 10, "{brk}");
}

#[test]
fn the_verified_point_lets_verification_start_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    log_of(dir.path(), 4);
    let log = Log::open(dir.path()).unwrap();
    let head = log.reader().unwrap().head().unwrap();
    assert_eq!(Head::decode(&head.encode()), Some(head));
    log.put_checkpoint(VERIFIED_CHECKPOINT, head.encode())
        .unwrap()
        .wait()
        .unwrap();
    for e in sample::request_story(9) {
        drop(log.append(&e).unwrap());
    }
    log.sync().unwrap();
    let r = log.reader().unwrap();
    assert_eq!(r.verified_point().unwrap(), Some(head));
    let report = r.verify_from(head).unwrap().unwrap();
    assert_eq!((report.events, report.head_seq), (25, 25));
    // A point that does not describe this log is ignored (verify from seq 1 then).
    let stale = Head {
        seq: 20,
        hash: Hash32([1; 32]),
    };
    log.put_checkpoint(VERIFIED_CHECKPOINT, stale.encode())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(log.reader().unwrap().verified_point().unwrap(), None);
    // And verifying from a point whose link the next record does not match is a break.
    let brk = r.verify_from(stale).unwrap().unwrap_err();
    assert_eq!(brk.seq, 21, "{brk}");
}

#[test]
fn salvage_keeps_the_valid_prefix_with_its_bytes_and_counts_what_it_left() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        for n in 0..10 {
            for e in sample::request_story(n) {
                drop(log.append(&e).unwrap());
            }
        }
        log.put_blob(b"a body".to_vec()).unwrap().1.wait().unwrap();
        log.put_checkpoint("projections", vec![1])
            .unwrap()
            .wait()
            .unwrap();
        log.sync().unwrap();
    }
    rewrite(dir.path(), 23, Some(flip_last_byte));
    let ro = open_read_only(dir.path()).unwrap();
    let src = ro.reader().unwrap();
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("new");
    let report = salvage(&src, &to).unwrap();
    assert_eq!(report.head.seq, 22);
    let left = report.left_behind.clone().unwrap();
    assert_eq!((left.from_seq, left.readable_after), (23, 27));
    assert_eq!((report.blobs_copied, report.blobs_lost), (1, 0));

    let new = open_read_only(&to).unwrap();
    let r = new.reader().unwrap();
    let v = r.verify().unwrap().unwrap();
    assert_eq!((v.events, v.head_hash), (22, report.head.hash));
    for seq in 1..=22 {
        assert_eq!(
            r.get(seq).unwrap().unwrap().bytes(),
            src.get(seq).unwrap().unwrap().bytes()
        );
    }
    assert_eq!(r.request(sample::request_id(2)).unwrap().len(), 5);
    assert_eq!(r.blob(&Hash32::of(b"a body")).unwrap().unwrap(), b"a body");
    assert_eq!(r.checkpoint("projections").unwrap(), None);
    assert!(matches!(
        salvage(&src, &to),
        Err(LogError::SalvageTarget { .. })
    ));
}
