//! `replay`: how fast recorded traffic is re-simulated under a plan (issue 13 asks for at least
//! 300,000 simulated requests/s on one core, i.e. 1M recorded requests in under 4 s), and the peak
//! memory of replaying 1M requests (the log is streamed, not loaded).
//!
//! The log is simulated traffic (`sample::traffic`: 8-target combos of every strategy, guarded
//! sessions, failures, retries, fallbacks), written once; each iteration replays all of it.
//! `REPLAY_BENCH_REQUESTS` sets its size (default 1,000,000), `REPLAY_BENCH_TARGETS` the targets per
//! combo (default 8; each decision records every candidate, so this sets the size of the log).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omniroute_core::log::Log;
use omniroute_core::sample;
use omniroute_replay::{ReplayRequest, replay};

/// Peak resident memory of this process since the last reset, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Resets the peak (writing 5 to clear_refs, Linux 4.0+), so the next peak is the replay's own.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn bench(c: &mut Criterion) {
    let requests: u64 = std::env::var("REPLAY_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let width: usize = std::env::var("REPLAY_BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let config = sample::router_config(width).unwrap();
    drop(log.put_blob(config.canonical_json()).unwrap());
    let started = Instant::now();
    sample::traffic(&config, requests, 7, 1_800_000_000_000, &mut |ts, e| {
        drop(log.append_at(ts, &e).unwrap());
    });
    log.sync().unwrap();
    drop(log);
    // Read as `omniroute replay` reads a data dir: read-only, each record's hash checked.
    let ro = omniroute_core::log::open_read_only(dir.path()).unwrap();
    let reader = ro.reader().unwrap();
    eprintln!(
        "replay: {requests} requests over {width}-target combos, {} records ({} MiB), written in {:.1?}",
        reader.last_seq().unwrap(),
        reader.stats().map(|s| s.disk_bytes >> 20).unwrap_or(0),
        started.elapsed()
    );
    let plans: [(&str, ReplayRequest); 3] = [
        ("recorded_plan", ReplayRequest::default()),
        (
            "strategy_cost",
            ReplayRequest {
                strategy: Some("cost".into()),
                ..ReplayRequest::default()
            },
        ),
        (
            "strategy_weighted",
            ReplayRequest {
                strategy: Some("weighted".into()),
                ..ReplayRequest::default()
            },
        ),
    ];
    // What reading and validating the records alone costs (the floor under any replay).
    let t = Instant::now();
    let mut n = 0u64;
    for s in reader.range(..).unwrap() {
        n += black_box(s.unwrap().record().unwrap().seq) & 1;
    }
    eprintln!(
        "replay: reading the log alone: {:.2} s ({:.0} requests/s) {n}",
        t.elapsed().as_secs_f64(),
        requests as f64 / t.elapsed().as_secs_f64()
    );
    // One timed pass each, with the peak memory of that pass alone.
    for (name, req) in &plans {
        let reset = reset_peak();
        let t = Instant::now();
        let r = replay(&reader, req, &mut |_, _| {}).unwrap();
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "replay {name}: {} requests in {secs:.2} s ({:.0}/s), {} exact / {} estimated \
             attempts, peak RSS {}",
            r.requests,
            r.requests as f64 / secs,
            r.outcomes.exact,
            r.outcomes.estimated,
            match (reset, peak_rss_mib()) {
                (true, Some(m)) => format!("{m:.1} MiB"),
                _ => "unavailable".into(),
            }
        );
    }
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(requests));
    for (name, req) in &plans {
        g.bench_function(*name, |b| {
            b.iter(|| black_box(replay(&reader, req, &mut |_, _| {}).unwrap().requests))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
