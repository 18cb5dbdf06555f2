//! The fold against simulated traffic: every decision the flow made is derived again from the
//! log it wrote.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::event::Event;
use crate::flow::fold::verify_decisions;
use crate::log::Log;
use crate::sample;

fn write(requests: u64, seed: u64) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = sample::router_config(8).unwrap();
    drop(log.put_blob(config.canonical_json()).unwrap());
    sample::traffic(
        &config,
        requests,
        seed,
        1_800_000_000_000,
        &mut |ts, e: Event| {
            drop(log.append_at(ts, &e).unwrap());
        },
    );
    log.sync().unwrap();
    (dir, log)
}

#[test]
fn simulated_traffic_is_reproduced_decision_for_decision() {
    for seed in [1, 2, 3] {
        let (_dir, log) = write(2_000, seed);
        let r = verify_decisions(&log.reader().unwrap(), &mut |_, _| {}).unwrap();
        assert!(r.first_divergence.is_none(), "seed {seed}: {r:?}");
        assert_eq!(r.reproduced, r.checked);
        assert_eq!(r.checked, r.decisions);
        assert!(r.checked > 1_500, "{r:?}");
    }
}

#[test]
fn the_simulation_is_deterministic() {
    let config = sample::router_config(8).unwrap();
    let run = || {
        let mut out = Vec::new();
        sample::traffic(&config, 300, 9, 0, &mut |ts, e| out.push((ts, e)));
        out
    };
    assert_eq!(run(), run());
}
