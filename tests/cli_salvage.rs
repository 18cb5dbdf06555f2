//! `serve` checks the chain before appending (from the point verified at its last start) and
//! refuses a broken one; `log salvage` copies the valid prefix into a new data dir that serves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use omniroute_core::log::LOG_FILE;
use support::cli::{self, Server, digest, run};

/// The hash of record `seq`, as `log tail --json` shows it.
fn hash_of(dir: &std::path::Path, seq: u64, head: u64) -> String {
    let o = run(
        &["log", "tail", "-n", &(head - seq + 1).to_string(), "--json"],
        dir,
    );
    assert!(o.ok(), "{o:?}");
    let first: serde_json::Value = serde_json::from_str(o.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], seq);
    first["hash"].as_str().unwrap().to_string()
}

/// The (from, to) of serve's "log chain verified from seq A to B" line.
fn verified_range(startup: &str) -> (u64, u64) {
    let line = startup
        .lines()
        .find(|l| l.contains("log chain verified from seq"))
        .unwrap_or_else(|| panic!("no verification line in: {startup}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn serve_verifies_what_is_new_refuses_a_broken_chain_and_salvage_restores_service() {
    let dir = cli::generated(60);

    // First start: the whole chain is checked, and the head is recorded as verified.
    let s = Server::start(dir.path()).unwrap();
    assert_eq!(verified_range(&s.startup), (1, 300));
    assert!(s.stop().ok());
    // The second start checks only what the first one appended (its start-up record).
    let s = Server::start(dir.path()).unwrap();
    assert_eq!(verified_range(&s.startup), (301, 301));
    assert!(s.stop().ok());
    let o = run(&["log", "generate", "--requests", "20"], dir.path());
    assert!(o.ok(), "{o:?}");
    let head = 302 + 100;

    // A record after the verified point is altered: serve refuses, naming it.
    let bad = 350;
    let kept_hash = hash_of(dir.path(), bad - 1, head);
    cli::flip_record(dir.path(), bad);
    let before = digest(&dir.path().join(LOG_FILE));
    let refused = Server::start(dir.path()).err().expect("serve must refuse");
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!("broken at seq {bad}"))
            && refused.stderr.contains("log salvage")
            && refused
                .stderr
                .contains(&dir.path().join(LOG_FILE).display().to_string()),
        "{refused:?}"
    );
    assert_eq!(
        digest(&dir.path().join(LOG_FILE)),
        before,
        "a refused serve must not have written"
    );
    let o = run(&["log", "verify"], dir.path());
    assert_eq!(o.code, Some(1));
    assert!(o.stdout.contains(&format!("seq {bad}")), "{o:?}");

    // Salvage keeps seq 1..bad-1 with their original bytes, and says what it left.
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("salvaged");
    let o = run(
        &["log", "salvage", "--to", to.to_str().unwrap()],
        dir.path(),
    );
    assert!(o.ok(), "{o:?}");
    assert!(
        o.stdout.contains(&format!(
            "kept       seq 1..={} (head seq {} hash {kept_hash})",
            bad - 1,
            bad - 1
        )),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(&format!(
            "left       everything from seq {bad}: hash mismatch"
        )),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(&format!(
            "after it: {} readable record(s), 0 damaged",
            head - bad
        )),
        "{}",
        o.stdout
    );
    assert_eq!(
        digest(&dir.path().join(LOG_FILE)),
        before,
        "salvage only reads the damaged log"
    );
    let o = run(&["log", "verify"], &to);
    assert!(
        o.stdout.starts_with(&format!(
            "ok: {} events, chain intact, head seq {} hash {kept_hash}",
            bad - 1,
            bad - 1
        )),
        "{o:?}"
    );
    // It never overwrites a log.
    let again = run(
        &["log", "salvage", "--to", to.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("already exists"), "{again:?}");

    // The salvaged log serves, and appends onto the kept head.
    let s = Server::start(&to).unwrap();
    assert_eq!(verified_range(&s.startup), (1, bad - 1));
    let stopped = s.stop();
    assert!(stopped.ok(), "{stopped:?}");
    let o = run(&["log", "verify"], &to);
    assert!(o.stdout.starts_with(&format!("ok: {bad} events")), "{o:?}");
}

#[test]
fn salvage_of_an_intact_log_copies_it_whole() {
    let dir = cli::generated(10);
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("copy");
    let o = run(
        &["log", "salvage", "--to", to.to_str().unwrap()],
        dir.path(),
    );
    assert!(o.ok(), "{o:?}");
    assert!(o.stdout.contains("left       nothing"), "{}", o.stdout);
    let a = run(&["log", "tail", "-n", "50", "--json"], dir.path());
    let b = run(&["log", "tail", "-n", "50", "--json"], &to);
    assert_eq!(a.stdout, b.stdout, "the same records, byte for byte");
    let o = run(&["log", "salvage", "--to", to.to_str().unwrap()], &to);
    assert_eq!(o.code, Some(1), "{o:?}");
}
