//! `router`: `decide` throughput per strategy on 8-target combos, `auto` on 32 targets, and
//! `Health::observe`. One decision per iteration, on one core.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use omniroute_core::event::ErrorClass;
use omniroute_core::router::{AttemptOutcome, Health, RouteInput, decide};
use omniroute_core::sample;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// A health with some history, so strategies that read it have something to read.
fn warmed(config: &omniroute_core::config::Config, n: usize) -> Health {
    let mut h = Health::new(config);
    for i in 0..10_000u64 {
        let m = (i as usize * 7) % n;
        h.observe(
            &AttemptOutcome {
                model: m,
                latency_us: 50_000 + (i * 7_919) % 900_000,
                error: i.is_multiple_of(17).then_some(ErrorClass::ServerError),
                retry_after_ms: None,
            },
            i,
        );
    }
    h
}

fn decide_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("router_decide");
    g.throughput(Throughput::Elements(1));
    let config8 = sample::router_config(8).unwrap();
    let health8 = warmed(&config8, 8);
    for strategy in [
        "priority",
        "weighted",
        "round-robin",
        "cost",
        "least-latency",
        "least-busy",
        "tiered",
        "auto",
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut input = RouteInput::new(strategy, 1_200, 7);
        input.max_tokens = Some(256);
        g.bench_function(format!("{strategy}_8_targets"), |b| {
            b.iter(|| black_box(decide(&input, &health8, &config8, 20_000, &mut rng).unwrap()))
        });
    }
    let config32 = sample::router_config(32).unwrap();
    let health32 = warmed(&config32, 32);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let input = RouteInput::new("auto", 1_200, 7);
    g.bench_function("auto_32_targets", |b| {
        b.iter(|| black_box(decide(&input, &health32, &config32, 20_000, &mut rng).unwrap()))
    });
    g.finish();
}

fn observe_bench(c: &mut Criterion) {
    let config = sample::router_config(8).unwrap();
    let mut h = Health::new(&config);
    let mut i = 0u64;
    let mut g = c.benchmark_group("health");
    g.throughput(Throughput::Elements(1));
    g.bench_function("observe", |b| {
        b.iter(|| {
            i += 1;
            let o = AttemptOutcome {
                model: (i % 8) as usize,
                latency_us: 40_000 + (i * 7_919) % 500_000,
                error: i.is_multiple_of(23).then_some(ErrorClass::Timeout),
                retry_after_ms: None,
            };
            black_box(h.observe(&o, i))
        })
    });
    g.finish();
}

criterion_group!(benches, decide_bench, observe_bench);
criterion_main!(benches);
