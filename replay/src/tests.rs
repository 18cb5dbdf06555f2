//! The simulation against simulated traffic written to a real log (`sample::traffic`: every
//! strategy, guarded sessions, failures, retries and fallbacks).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use omniroute_core::log::Log;
use omniroute_core::sample;

use crate::{ReplayRequest, replay};

fn log_with(requests: u64) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = sample::router_config(8).unwrap();
    drop(log.put_blob(config.canonical_json()).unwrap());
    sample::traffic(&config, requests, 7, 1_800_000_000_000, &mut |ts, e| {
        drop(log.append_at(ts, &e).unwrap());
    });
    log.sync().unwrap();
    (dir, log)
}

fn run(log: &Log, req: &ReplayRequest) -> crate::ReplayReport {
    replay(&log.reader().unwrap(), req, &mut |_, _| {}).unwrap()
}

#[test]
fn the_recorded_plan_reproduces_every_decision_and_outcome() {
    let (_d, log) = log_with(3_000);
    let r = run(&log, &ReplayRequest::default());
    let f = r.fidelity.clone().unwrap();
    assert!(r.requests > 2_000, "{}", r.requests);
    assert_eq!(f.decisions_reproduced, f.decisions, "{f:?}");
    assert_eq!(f.outcomes_reproduced, f.requests, "{f:?}");
    assert_eq!(r.outcomes.estimated, 0);
    assert_eq!(r.changed.count, 0);
    assert_eq!(r.recorded, r.simulated);
    assert!(r.recorded.fallbacks > 0 && r.recorded.retries > 0 && r.recorded.budget_blocked > 0);
}

#[test]
fn a_changed_plan_changes_routes_and_is_deterministic_per_seed() {
    let (_d, log) = log_with(2_000);
    let req = ReplayRequest {
        strategy: Some("cost".into()),
        ..ReplayRequest::default()
    };
    let a = run(&log, &req);
    let b = run(&log, &req);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert!(a.fidelity.is_none());
    assert!(a.changed.count > 0 && a.outcomes.estimated > 0);
    assert!(
        a.simulated.cost_micros < a.recorded.cost_micros,
        "{:?}",
        a.simulated
    );
    let c = run(
        &log,
        &ReplayRequest {
            seed: Some(9),
            ..req.clone()
        },
    );
    assert_ne!(a.simulated, c.simulated);
}

#[test]
fn nothing_matching_is_an_empty_report_that_says_so() {
    let (_d, log) = log_with(200);
    let r = run(
        &log,
        &ReplayRequest {
            session: Some("nobody".into()),
            ..ReplayRequest::default()
        },
    );
    assert_eq!(r.requests, 0);
    assert!(r.message.unwrap().contains("no recorded request matches"));
}

#[test]
fn unknown_names_are_errors_listing_the_valid_ones() {
    let (_d, log) = log_with(50);
    let reader = log.reader().unwrap();
    let err = |req: ReplayRequest| {
        replay(&reader, &req, &mut |_, _| {})
            .unwrap_err()
            .to_string()
    };
    let e = err(ReplayRequest {
        strategy: Some("fastest".into()),
        ..ReplayRequest::default()
    });
    assert!(e.contains("priority, weighted"), "{e}");
    let e = err(ReplayRequest {
        strategy: Some("cost".into()),
        combo: Some("nope".into()),
        ..ReplayRequest::default()
    });
    assert!(
        e.contains("unknown combo") && e.contains("round-robin"),
        "{e}"
    );
    let e = err(ReplayRequest {
        strategy: Some("weighted".into()),
        weights: [("zz".to_string(), 2)].into_iter().collect(),
        ..ReplayRequest::default()
    });
    assert!(e.contains("unknown model") && e.contains("m0"), "{e}");
}
