//! Bad bytes on disk give clear errors that name the file (and the seq), never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use omniroute_core::log::{LOG_FILE, Log, LogError};
use omniroute_core::record;
use omniroute_core::sample;
use redb::ReadableTable;

const EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

fn write_log(dir: &Path, n: u64) {
    let log = Log::open(dir).unwrap();
    for i in 0..n {
        drop(log.append(&sample::attempt_finished(i)).unwrap());
    }
    log.sync().unwrap();
}

fn open_err(dir: &Path) -> LogError {
    match Log::open(dir) {
        Err(e) => e,
        Ok(_) => panic!("{} opened", dir.display()),
    }
}

#[test]
fn a_file_that_is_not_redb_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LOG_FILE), vec![b'x'; 10_000]).unwrap();
    let e = open_err(dir.path());
    let msg = e.to_string();
    assert!(msg.contains(LOG_FILE), "{msg}");
    assert!(matches!(e, LogError::Corrupt { .. }), "{e:?}");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"").unwrap();
    let msg = open_err(&file).to_string();
    assert!(msg.contains("data"), "{msg}");
}

#[test]
fn a_truncated_file_gives_an_error_or_a_verifiable_prefix() {
    for keep in [0.0, 0.1, 0.5, 0.9] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3_000);
        let path = dir.path().join(LOG_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(((len as f64) * keep) as u64 + 1).unwrap();
        drop(f);
        match Log::open(dir.path()) {
            Err(e) => assert!(e.to_string().contains(LOG_FILE), "keep {keep}: {e}"),
            // redb may recover an earlier committed state; then every record left must verify or
            // the break must be named.
            Ok(log) => {
                let r = log.reader().unwrap();
                match r.verify() {
                    Ok(Ok(_)) | Ok(Err(_)) => {}
                    Err(e) => assert!(e.to_string().contains(LOG_FILE), "keep {keep}: {e}"),
                }
            }
        }
    }
}

/// Replaces the stored value at `seq` with `value`, re-sealed so that only validation can object.
fn replace_record(dir: &Path, seq: u64, mut value: Vec<u8>) {
    let db = redb::Database::open(dir.join(LOG_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(EVENTS).unwrap();
        let prev = *record::envelope(t.get(seq).unwrap().unwrap().value())
            .unwrap()
            .prev_hash;
        if value.len() >= record::HEADER_LEN {
            record::seal(&mut value, seq, &prev).unwrap();
        }
        t.insert(seq, value.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_record_that_fails_validation_is_named_by_seq() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10);
    // A well-formed envelope around garbage event bytes, with a correct hash.
    let mut value = record::encode(&sample::attempt_finished(4), 1).unwrap();
    let n = value.len();
    for b in &mut value[record::HEADER_LEN..n] {
        *b = 0xFF;
    }
    replace_record(dir.path(), 4, value);
    let log = Log::open(dir.path()).unwrap();
    let r = log.reader().unwrap();
    let e = r.get(4).unwrap().unwrap().record().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("record 4") && msg.contains(LOG_FILE), "{msg}");
    assert!(matches!(e, LogError::BadRecord { seq: 4, .. }));
    let brk = r.verify().unwrap().unwrap_err();
    assert_eq!(brk.seq, 4, "{brk}");
    // Records around it still read.
    assert!(r.get(3).unwrap().unwrap().record().is_ok());
    assert!(r.get(5).unwrap().unwrap().record().is_ok());
}

#[test]
fn a_record_shorter_than_its_envelope_is_named_by_seq() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3);
    replace_record(dir.path(), 2, vec![1, 0, 0]);
    let log = Log::open(dir.path()).unwrap();
    let r = log.reader().unwrap();
    let msg = r.get(2).unwrap().unwrap().record().unwrap_err().to_string();
    assert!(msg.contains("record 2") && msg.contains("shorter"), "{msg}");
    assert_eq!(r.verify().unwrap().unwrap_err().seq, 2);
}

#[test]
fn an_unknown_schema_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3);
    let mut value = record::encode(&sample::attempt_finished(1), 1).unwrap();
    value[0] = 99;
    replace_record(dir.path(), 2, value);
    let log = Log::open(dir.path()).unwrap();
    let r = log.reader().unwrap();
    let msg = r.get(2).unwrap().unwrap().record().unwrap_err().to_string();
    assert!(msg.contains("schema version 99"), "{msg}");
}
