//! `log_scan`: validated zero-copy scan of 1M events against raw redb iteration of the same file,
//! and `log verify` (full hash-chain recomputation) over the same log. Also prints the on-disk
//! size against the encoded bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omniroute_core::log::{LOG_FILE, Log};
use omniroute_core::sample;
use redb::{Database, ReadableDatabase, TableDefinition};

const EVENTS: u64 = 1_000_000;
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

fn build(dir: &std::path::Path) {
    let log = Log::open(dir).unwrap();
    let mut n = 0;
    while n < EVENTS {
        for e in sample::request_story(n / 5) {
            drop(log.append(&e).unwrap());
            n += 1;
        }
    }
    log.sync().unwrap();
    let s = log.reader().unwrap().stats().unwrap();
    eprintln!(
        "log_scan: {} events, {} record bytes ({} event bytes), on disk {} bytes = {:.2}x event bytes, {:.2}x record bytes (file length {})",
        s.events,
        s.record_bytes,
        s.event_bytes,
        s.disk_bytes,
        s.disk_bytes as f64 / s.event_bytes as f64,
        s.disk_bytes as f64 / s.record_bytes as f64,
        s.file_bytes
    );
}

fn scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());

    let mut g = c.benchmark_group("log_scan");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));

    {
        let db = Database::open(dir.path().join(LOG_FILE)).unwrap();
        g.bench_function("raw_redb_iter", |b| {
            b.iter(|| {
                let txn = db.begin_read().unwrap();
                let t = txn.open_table(RAW).unwrap();
                let mut bytes = 0usize;
                for item in t.range(0..).unwrap() {
                    let (_, v) = item.unwrap();
                    bytes += v.value().len();
                }
                black_box(bytes)
            })
        });
    }

    // The log's default page cache (`log.cache_size_mb`, 32 MiB: far smaller than this 330 MB
    // file, so a whole-log scan reads most pages through the OS), and redb's own default (1 GiB,
    // as the raw baseline above uses).
    for (label, cache_size) in [
        ("", omniroute_core::log::DEFAULT_CACHE_SIZE),
        ("_1gib_cache", 1 << 30),
    ] {
        let opts = omniroute_core::log::LogOptions {
            cache_size,
            ..Default::default()
        };
        let log = Log::open_with(dir.path(), opts).unwrap();
        g.bench_function(format!("validated_scan{label}"), |b| {
            b.iter(|| {
                let reader = log.reader().unwrap();
                let mut kinds = 0usize;
                for item in reader.range(..).unwrap() {
                    let stored = item.unwrap();
                    kinds += stored.record().unwrap().event.kind_index();
                }
                black_box(kinds)
            })
        });
        g.bench_function(format!("verify{label}"), |b| {
            b.iter(|| black_box(log.reader().unwrap().verify().unwrap().unwrap().events))
        });
    }
    g.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
