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

/// The field-by-field check agrees with comparing encodings, on clean and on damaged logs.
#[test]
fn comparing_fields_agrees_with_comparing_bytes() {
    use crate::flow::fold::{Folder, fold_log};
    let (_dir, log) = write(1_500, 4);
    let reader = log.reader().unwrap();
    let config = sample::router_config(8).unwrap();
    // Damaged copies: one decision's time moved, one outcome left out, one guard left out.
    let copies: Vec<(tempfile::TempDir, Log)> = (0..3)
        .map(|k| {
            let dir = tempfile::tempdir().unwrap();
            let out = Log::open(dir.path()).unwrap();
            drop(out.put_blob(config.canonical_json()).unwrap());
            let (mut decisions, mut failures, mut guards) = (0, 0, 0);
            for s in reader.range(..).unwrap() {
                let s = s.unwrap();
                let rec = s.record().unwrap();
                let e = rec.event.to_owned_event().unwrap();
                let mut ts = rec.ts_ms;
                match &e {
                    Event::RouteDecidedV2(_) => {
                        decisions += 1;
                        if k == 0 && decisions == 700 {
                            ts += 1;
                        }
                    }
                    Event::AttemptFinished(f) if f.error.is_some() => {
                        failures += 1;
                        if k == 1 && failures == 20 {
                            continue;
                        }
                    }
                    Event::BudgetGuardSet(_) => {
                        guards += 1;
                        if k == 2 && guards == 2 {
                            continue;
                        }
                    }
                    _ => {}
                }
                drop(out.append_at(ts, &e).unwrap());
            }
            out.sync().unwrap();
            (dir, out)
        })
        .collect();
    let mut fields = Vec::new();
    for l in std::iter::once(&log).chain(copies.iter().map(|(_, l)| l)) {
        let r = l.reader().unwrap();
        let fast = fold_log(&r, Folder::new(true), &mut |_, _| {}).unwrap();
        let exact = fold_log(&r, Folder::exact(), &mut |_, _| {}).unwrap();
        assert_eq!(fast, exact);
        fields.push(fast.first_divergence.map(|d| d.field));
    }
    assert_eq!(fields[0], None);
    assert_eq!(fields[1].as_deref(), Some("now_ms"));
    assert_eq!(fields[2].as_deref(), Some("health_digest"));
    assert!(
        fields[3]
            .as_deref()
            .is_some_and(|f| f.starts_with("budget") || f.starts_with("input")),
        "{fields:?}"
    );
}
