//! Crash consistency: a child process appends continuously and is killed with SIGKILL at random
//! moments. Every append whose durability handle had completed must survive, seqs must stay gapless,
//! the chain must verify, and the log must keep accepting appends.
//!
//! The child is this same test binary, re-run with `OMNIROUTE_CRASH_CHILD` set; it prints
//! `ACK <seq> <n>` for each append it saw become durable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use omniroute_core::event::Event;
use omniroute_core::log::Log;
use omniroute_core::sample;

const CHILD_ENV: &str = "OMNIROUTE_CRASH_CHILD";
const ROUNDS: u64 = 20;

/// The child's body. A no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (dir, mode, base) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
        parts.next().unwrap().parse::<u64>().unwrap(),
    );
    let log = Log::open(&dir).unwrap();
    let mut out = std::io::stdout().lock();
    let mut waiting = VecDeque::new();
    for n in base.. {
        let handle = log.append(&sample::attempt_finished(n)).unwrap();
        if mode == "strict" {
            let seq = handle.wait().unwrap();
            writeln!(out, "ACK {seq} {n}").unwrap();
            out.flush().unwrap();
            continue;
        }
        // batched: never wait, but report handles as they complete on their own.
        waiting.push_back((n, handle));
        while let Some((n, h)) = waiting.front() {
            match h.try_get() {
                Some(r) => {
                    writeln!(out, "ACK {} {n}", r.unwrap()).unwrap();
                    waiting.pop_front();
                }
                None if waiting.len() > 20_000 => {
                    let seq = h.wait().unwrap();
                    writeln!(out, "ACK {seq} {n}").unwrap();
                    waiting.pop_front();
                }
                None => break,
            }
        }
        out.flush().unwrap();
    }
}

/// splitmix64: enough randomness for kill points, reproducible from the printed seed.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn run_rounds(mode: &str, max_acks: u64) {
    let seed = std::env::var("OMNIROUTE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_u64 ^ max_acks);
    eprintln!("crash test {mode}: seed {seed}");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for round in 0..ROUNDS {
        let kill_after = 1 + next(&mut rng) % max_acks;
        let base = round * 1_000_000;
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{mode}|{base}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        let record = |line: &str, acked: &mut Vec<(u64, u64)>| {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let mut it = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
                acked.push((it.next().unwrap(), it.next().unwrap()));
                true
            } else {
                false
            }
        };
        for line in lines.by_ref() {
            if record(&line.unwrap(), &mut acked) {
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Acks printed before the kill are still in the pipe: they count too.
        for line in lines {
            let Ok(line) = line else { break };
            record(&line, &mut acked);
        }
        assert!(seen >= kill_after, "round {round}: child exited early");

        let log = Log::open(dir.path()).unwrap();
        let reader = log.reader().unwrap();
        let report = reader
            .verify()
            .unwrap()
            .unwrap_or_else(|b| panic!("round {round}: chain broken after kill: {b}"));
        for &(seq, n) in &acked {
            assert!(
                seq <= report.head_seq,
                "round {round}: acked seq {seq} lost"
            );
            let stored = reader.get(seq).unwrap().unwrap();
            let rec = stored.record().unwrap();
            let Event::AttemptFinished(e) = rec.event.to_owned_event().unwrap() else {
                panic!("seq {seq} holds the wrong kind");
            };
            assert_eq!(
                e.request_id,
                sample::request_id(n),
                "seq {seq} holds other data"
            );
        }
        // The log keeps accepting appends after recovery.
        let seq = log
            .append(&sample::attempt_finished(base + 999_999))
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(seq, report.head_seq + 1);
    }
    assert!(acked.len() as u64 >= ROUNDS);
}

#[test]
fn sigkill_in_strict_mode_loses_no_acknowledged_append() {
    run_rounds("strict", 300);
}

#[test]
fn sigkill_in_batched_mode_loses_no_completed_append() {
    run_rounds("batched", 5_000);
}
