//! The live runner on a failing disk: a checkpoint that cannot be written while the disk is full
//! is skipped and tried again later; the runner keeps folding, and after the space returns it
//! follows new commits with no restart (issue 11: full disks recover by themselves).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use omniroute_core::log::faults::Faults;
use omniroute_core::log::{Log, LogOptions};
use omniroute_core::sample;
use omniroute_projections::runner::{Runner, RunnerOptions};

#[test]
fn a_checkpoint_refused_by_a_full_disk_does_not_stop_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults::new();
    let log = Log::open_with_backend(
        dir.path(),
        LogOptions::default(),
        faults.factory(dir.path()),
    )
    .unwrap();
    for e in sample::request_story(1) {
        drop(log.append(&e).unwrap());
    }
    let before = log.sync().unwrap();
    faults.disk_full();
    // Due for a checkpoint after every event: the first one meets the full disk.
    let opts = RunnerOptions {
        checkpoint_events: 1,
        checkpoint_interval: Duration::from_secs(3600),
    };
    let runner = Runner::start(log.clone(), opts).unwrap();
    assert!(runner.wait_for(before, Duration::from_secs(20)));
    // The checkpoint right after that fold meets the full disk and the log turns failing. No
    // event announces that, so poll the condition (bounded; no fixed sleep).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !log.is_failing() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint was tried"
        );
        std::thread::yield_now();
    }
    assert_eq!(runner.error(), None);
    faults.return_space();
    assert!(log.wait_writable(Duration::from_secs(20)));
    for e in sample::request_story(2) {
        drop(log.append(&e).unwrap());
    }
    let after = log.sync().unwrap();
    assert!(
        runner.wait_for(after, Duration::from_secs(20)),
        "the runner stopped: {:?}",
        runner.error()
    );
    assert_eq!(runner.error(), None);
    runner.stop().unwrap();
}
