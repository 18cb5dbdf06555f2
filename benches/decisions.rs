//! `decisions`: how fast `log verify --decisions` re-derives recorded decisions (issue 12 asks
//! for at least 500k/s), and what the routing step costs in the engine's critical section
//! (`flow::route`: budget verdict, input assembly, `decide`, the Health digest and the event).
//!
//! The log is simulated traffic (`sample::traffic`: 8-target combos of every strategy, guarded
//! sessions, failures, retries, fallbacks), written once; each iteration folds all of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omniroute_core::event::RequestId;
use omniroute_core::flow::fold::verify_decisions;
use omniroute_core::flow::{self, Facts, State};
use omniroute_core::log::Log;
use omniroute_core::sample;

const REQUESTS: u64 = 100_000;

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = sample::router_config(8).unwrap();
    drop(log.put_blob(config.canonical_json()).unwrap());
    sample::traffic(&config, REQUESTS, 7, 1_800_000_000_000, &mut |ts, e| {
        drop(log.append_at(ts, &e).unwrap());
    });
    log.sync().unwrap();
    let reader = log.reader().unwrap();
    let report = verify_decisions(&reader, &mut |_, _| {}).unwrap();
    assert_eq!(report.reproduced, report.checked);
    eprintln!(
        "decisions: {} events, {} decisions in the log",
        report.events, report.checked
    );
    let mut g = c.benchmark_group("verify_decisions");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(report.checked));
    g.bench_function("simulated_8_targets", |b| {
        b.iter(|| black_box(verify_decisions(&reader, &mut |_, _| {}).unwrap()))
    });
    // The same fold without re-deriving: what reading and folding the log costs.
    g.bench_function("fold_only", |b| {
        b.iter(|| {
            let mut f = omniroute_core::flow::fold::Folder::new(false);
            for s in reader.range(..).unwrap() {
                let s = s.unwrap();
                f.apply(&s.record().unwrap(), &reader).unwrap();
            }
            black_box(f.report().events)
        })
    });
    g.finish();
}

fn route(c: &mut Criterion) {
    let config = sample::router_config(8).unwrap();
    let state = State::new(&config);
    let mut g = c.benchmark_group("flow_route");
    g.throughput(Throughput::Elements(1));
    for strategy in ["priority", "weighted", "auto"] {
        let facts = Facts {
            requested: strategy,
            est_prompt_tokens: 1_200,
            max_tokens: Some(256),
            min_tier: None,
            session: None,
            required: 0,
        };
        let mut input = omniroute_core::router::RouteInput::new(strategy, 1_200, 7);
        input.max_tokens = Some(256);
        let health = &state.health;
        g.bench_function(format!("{strategy}_decide_only"), |b| {
            b.iter(|| {
                black_box(omniroute_core::router::decide_seeded(
                    &input, health, &config, 20_000,
                ))
            })
        });
        let d = omniroute_core::router::decide_seeded(&input, health, &config, 20_000).unwrap();
        g.bench_function(format!("{strategy}_digest_only"), |b| {
            b.iter(|| black_box(health.digest(d.candidates.iter().map(|c| c.model), d.combo)))
        });
        g.bench_function(format!("{strategy}_to_event_only"), |b| {
            b.iter(|| black_box(d.to_event(RequestId(1), config.version(), strategy, &config)))
        });
        g.bench_function(format!("{strategy}_8_targets"), |b| {
            b.iter(|| {
                black_box(flow::route(
                    &facts,
                    RequestId(1),
                    7,
                    20_000,
                    &state,
                    &config,
                ))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, verify, route);
criterion_main!(benches);
