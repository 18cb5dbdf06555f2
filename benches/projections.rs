//! `projections`: fold throughput of all read models together over a generated log; `explain` on
//! logs of 10k and 1M requests (the index makes it independent of log size); and live lag, the time
//! from appending a request's last event to its being folded into the read models, while another
//! thread keeps appending (the gateway's default: batched, 10 ms window). p50/p99 of explain and lag are printed too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use omniroute_core::log::Log;
use omniroute_core::sample;
use omniroute_projections::runner::{Runner, RunnerOptions};
use omniroute_projections::{Mask, Projections};

/// Appends `requests` sample request stories (5 events each).
fn build(dir: &std::path::Path, requests: u64) -> Log {
    let log = Log::open(dir).unwrap();
    for n in 0..requests {
        for e in sample::request_story(n) {
            drop(log.append(&e).unwrap());
        }
    }
    log.sync().unwrap();
    log
}

fn quantiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn fold(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let requests = 200_000;
    let log = build(dir.path(), requests);
    let reader = log.reader().unwrap();
    let events = reader.len().unwrap();
    let mut g = c.benchmark_group("projections");
    g.throughput(Throughput::Elements(events));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("fold_all_1m_events", |b| {
        b.iter(|| {
            let mut p = Projections::default();
            p.catch_up(&reader, Mask::ALL, |_| {}).unwrap();
            black_box(p.seq)
        })
    });
    g.finish();
}

fn explain(c: &mut Criterion) {
    let mut g = c.benchmark_group("explain");
    g.sample_size(20);
    for requests in [10_000u64, 1_000_000] {
        let dir = tempfile::tempdir().unwrap();
        let log = build(dir.path(), requests);
        let reader = log.reader().unwrap();
        let id = |i: u64| sample::request_id((i * 7919) % requests);
        let mut times = Vec::with_capacity(10_000);
        for i in 0..10_000 {
            let t = Instant::now();
            black_box(omniroute_projections::explain::explain(&reader, id(i)).unwrap());
            times.push(t.elapsed());
        }
        let (p50, p99) = quantiles(times);
        eprintln!("explain over {requests} requests: p50 {p50:?}, p99 {p99:?} (10k calls)");
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("requests", requests), &requests, |b, _| {
            b.iter(|| {
                i += 1;
                black_box(omniroute_projections::explain::explain(&reader, id(i)).unwrap())
            })
        });
    }
    g.finish();
}

fn live_lag(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // The gateway's own log options on its default config (batched, `log.batch_window_ms`).
    let config = omniroute_core::config::Config::builtin().unwrap();
    let log = Log::open_with(dir.path(), omniroute::engine::log_options(&config)).unwrap();
    let runner = Runner::start(log.clone(), RunnerOptions::default()).unwrap();
    // Background load: ~5k requests/s (25k events/s) from another thread.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (log, stop) = (log.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 10_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..5 {
                    for e in sample::request_story(n) {
                        drop(log.append(&e).unwrap());
                    }
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut n = 0u64;
    let mut story = || {
        n += 1;
        let t = Instant::now();
        let mut last = None;
        for e in sample::request_story(n) {
            last = Some(log.append(&e).unwrap());
        }
        let seq = last.unwrap().wait().unwrap();
        assert!(runner.wait_for(seq, Duration::from_secs(5)));
        t.elapsed()
    };
    let (p50, p99) = quantiles((0..500).map(|_| story()).collect());
    eprintln!("live lag under load: p50 {p50:?}, p99 {p99:?} (500 requests)");
    let mut g = c.benchmark_group("projections");
    g.sample_size(20);
    g.bench_function("live_lag_under_load", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| story()).sum())
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    runner.stop().unwrap();
}

criterion_group!(benches, fold, explain, live_lag);
criterion_main!(benches);
