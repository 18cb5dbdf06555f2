//! `log_append`: sustained durable appends with producers saturating the queue, against raw redb
//! inserting the same bytes in 1024-row transactions, measured in the same run. Also strict
//! single-event append latency (append + wait for durability).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omniroute_core::log::{Log, LogOptions};
use omniroute_core::{record, sample};
use redb::{Database, TableDefinition};

const EVENTS: u64 = 100_000;
const PRODUCERS: u64 = 2;
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

fn sustained(c: &mut Criterion) {
    let events: Vec<_> = (0..EVENTS).map(sample::attempt_finished).collect();
    let mut round = 0u64;
    let record_len = record::encode(&events[0], 0).map(|b| b.len()).unwrap_or(0);
    eprintln!("log_append: record size {record_len} bytes (envelope + event)");

    let mut g = c.benchmark_group("log_append");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    let dir = tempfile::tempdir().unwrap();
    let log = Log::open_with(dir.path(), LogOptions::default()).unwrap();
    g.bench_function("omniroute_log_2_producers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Fresh request ids each round, as live traffic has: ULIDs only grow.
                round += 1;
                let base = round * EVENTS;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for p in 0..PRODUCERS {
                        let log = &log;
                        s.spawn(move || {
                            for n in (p..EVENTS).step_by(PRODUCERS as usize) {
                                drop(log.append(&sample::attempt_finished(base + n)).unwrap());
                            }
                        });
                    }
                });
                log.sync().unwrap();
                total += start.elapsed();
            }
            total
        })
    });
    drop(log);

    // The same bytes the log stores (envelope included), inserted by one thread.
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .map(|e| record::encode(e, 0).unwrap())
        .collect();
    let raw_dir = tempfile::tempdir().unwrap();
    let db = Database::create(raw_dir.path().join("raw.redb")).unwrap();
    let mut next = 1u64;
    g.bench_function("raw_redb_1024_row_txns", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for chunk in encoded.chunks(1024) {
                    let txn = db.begin_write().unwrap();
                    {
                        let mut t = txn.open_table(RAW).unwrap();
                        for v in chunk {
                            t.insert(next, v.as_slice()).unwrap();
                            next += 1;
                        }
                    }
                    txn.commit().unwrap();
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn strict_latency(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let event = sample::attempt_finished(1);

    // Percentiles over individual appends: criterion reports a per-sample mean, not a p99.
    let mut lat: Vec<Duration> = (0..3_000)
        .map(|_| {
            let t = Instant::now();
            log.append(&event).unwrap().wait().unwrap();
            t.elapsed()
        })
        .collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    eprintln!(
        "log_append/strict_single_event: p50 {:?} p99 {:?} (3000 appends, each waited)",
        pct(0.50),
        pct(0.99)
    );

    let mut g = c.benchmark_group("log_append");
    g.bench_function("strict_single_event", |b| {
        b.iter(|| black_box(log.append(&event).unwrap().wait().unwrap()))
    });

    // Baseline: one raw redb insert + durable commit on the calling thread.
    let bytes = record::encode(&event, 0).unwrap();
    let raw_dir = tempfile::tempdir().unwrap();
    let db = Database::create(raw_dir.path().join("raw.redb")).unwrap();
    let mut next = 1u64;
    g.bench_function("raw_redb_single_commit", |b| {
        b.iter(|| {
            let txn = db.begin_write().unwrap();
            txn.open_table(RAW)
                .unwrap()
                .insert(next, bytes.as_slice())
                .unwrap();
            txn.commit().unwrap();
            next += 1;
        })
    });
    g.finish();
}

criterion_group!(benches, sustained, strict_latency);
criterion_main!(benches);
