//! The corruption suite: damage is a named error, never a panic, and readers never write.
//!
//! One log of 3,500 events (700 synthetic requests in 35 transactions, fixed timestamps: the file,
//! and so the whole suite, is the same on every run), then copies of it damaged three ways:
//!
//! - one copy per 4 KiB page with one byte flipped at a seeded offset inside that page: `log verify`
//!   runs on every one of them, every other read command on the first three pages and every 24th
//!   (all nine commands on every page would take minutes on 2 cores; this is the deterministic
//!   spread, and `OMNIROUTE_DAMAGE_FULL=1` runs every command and `serve` on every page). Pages
//!   that were never written (all zeros: the tail redb grows the file by, which nothing
//!   references) are sampled, every 8th, for the same reason;
//! - one byte flipped at each of 12 seeded offsets anywhere in the file, 4 copies with 8 flips
//!   each, and the case, every page's middle byte flipped: every read command;
//! - truncated at 0, 1, 4095, 4096, 4097, 8192 bytes, at every eighth of the file, and one byte
//!   and one page short of its end: every read command.
//!
//! Every command must exit 0 with exactly the answer it gives on an undamaged copy, or exit 1 with
//! a message naming the file (`log verify`'s "broken: seq N ... in FILE" included); never 101, never
//! a signal, never "panicked" on stderr; and each leaves the copy's bytes and mtime as they were.
//! `serve` runs on a subset: it must refuse (exit 1 naming the file) or listen and then stop
//! cleanly on SIGTERM (exit 0), without "panicked".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use omniroute_core::log::LOG_FILE;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use support::cli::{self, Out, Server, digest, read_commands, run};

const PAGE: usize = 4096;

/// Which commands a damaged copy gets.
#[derive(Clone, Copy, PartialEq)]
enum Runs {
    Verify,
    All,
    AllAndServe,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    runs: Runs,
}

fn flipped(base: &[u8], offsets: &[usize], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    for &o in offsets {
        // A nonzero mask: the byte always changes.
        b[o] ^= (rng.next_u32() % 255 + 1) as u8;
    }
    b
}

fn cases(base: &[u8]) -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut out = Vec::new();
    let pages = base.len() / PAGE;
    // `OMNIROUTE_DAMAGE_FULL=1`: every read command and `serve` on every page's copy (minutes).
    let full = std::env::var_os("OMNIROUTE_DAMAGE_FULL").is_some();
    for p in 0..pages {
        let at = p * PAGE + (rng.next_u32() as usize % PAGE);
        let unwritten = base[p * PAGE..(p + 1) * PAGE].iter().all(|&b| b == 0);
        if unwritten && p % 8 != 0 && !full {
            continue;
        }
        out.push(Case {
            name: format!("page {p}: byte {at} flipped"),
            bytes: flipped(base, &[at], &mut rng),
            runs: match p {
                0..=2 => Runs::AllAndServe,
                _ if full => Runs::AllAndServe,
                p if p % 24 == 0 => Runs::All,
                _ => Runs::Verify,
            },
        });
    }
    for i in 0..12 {
        let at = rng.next_u32() as usize % base.len();
        out.push(Case {
            name: format!("random {i}: byte {at} flipped"),
            bytes: flipped(base, &[at], &mut rng),
            runs: if i < 2 { Runs::AllAndServe } else { Runs::All },
        });
    }
    for i in 0..4 {
        let at: Vec<usize> = (0..8)
            .map(|_| rng.next_u32() as usize % base.len())
            .collect();
        out.push(Case {
            name: format!("random {i}: bytes {at:?} flipped"),
            bytes: flipped(base, &at, &mut rng),
            runs: Runs::All,
        });
    }
    let middles: Vec<usize> = (0..pages).map(|p| p * PAGE + PAGE / 2).collect();
    out.push(Case {
        name: "every page's middle byte flipped".into(),
        bytes: flipped(base, &middles, &mut rng),
        runs: Runs::AllAndServe,
    });
    let mut lengths = vec![
        0,
        1,
        4095,
        4096,
        4097,
        8192,
        base.len() - 1,
        base.len() - PAGE,
    ];
    lengths.extend((1..8).map(|k| base.len() * k / 8));
    for len in lengths {
        out.push(Case {
            name: format!("truncated to {len} bytes"),
            bytes: base[..len].to_vec(),
            runs: if len == 0 || len == base.len() / 2 {
                Runs::AllAndServe
            } else {
                Runs::All
            },
        });
    }
    out
}

/// The answer with what differs between two copies of one log removed: where the copy is, and
/// the verify rate.
fn normalize(s: &str, dir: &Path) -> String {
    s.replace(&dir.display().to_string(), "DIR")
        .lines()
        .map(|l| match l.rsplit_once(" (") {
            Some((ok, rate)) if rate.ends_with("events/s)") => ok,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Default)]
struct Tally {
    runs: usize,
    answers: usize,
    errors: usize,
    /// Errors that were a redb panic contained at the storage boundary (stderr stayed quiet).
    contained: usize,
    /// Failures by kind: a panic (exit 101, a signal, or "panicked"), a wrong answer, an error
    /// that does not name the file, a read command that changed the file.
    panics: usize,
    wrong: usize,
    unnamed: usize,
    writes: usize,
    served: usize,
    refused: usize,
    failures: Vec<String>,
}

/// Checks one read command's run on a damaged copy; returns why it is wrong, if it is.
fn judge(out: &Out, expected: &str, dir: &Path, t: &mut Tally) -> Option<String> {
    t.runs += 1;
    if out.stderr.contains("panicked") {
        t.panics += 1;
        return Some(format!("\"panicked\" on stderr: {out:?}"));
    }
    match out.code {
        Some(0) if normalize(&out.stdout, dir) == expected => {
            t.answers += 1;
            None
        }
        // `log stats` counts records that fail validation instead of stopping at the first: its
        // answer about a damaged log says so (and names the file).
        Some(0)
            if out
                .stdout
                .contains("records fail validation (run `omniroute log verify`)") =>
        {
            t.answers += 1;
            None
        }
        Some(0) => {
            t.wrong += 1;
            Some(format!(
                "exit 0 with an answer that differs from the undamaged log's:\n{}\n--- expected:\n{expected}",
                out.stdout
            ))
        }
        Some(1) if out.all().contains(&dir.display().to_string()) => {
            t.errors += 1;
            if out
                .stderr
                .contains("the storage engine (redb) failed on damaged data")
            {
                t.contained += 1;
            }
            None
        }
        Some(1) => {
            t.unnamed += 1;
            Some(format!("exit 1 without naming the file: {out:?}"))
        }
        code => {
            t.panics += 1;
            Some(format!("exit {code:?}: {out:?}"))
        }
    }
}

#[test]
fn damaged_logs_give_a_named_error_or_the_right_answer_and_are_never_written() {
    let started = std::time::Instant::now();
    let src = tempfile::tempdir().unwrap();
    {
        // 35 transactions of 100 events: each group is queued well within the writer's batch
        // window, so the batches (and so the file) do not depend on timing.
        let opts = omniroute_core::log::LogOptions {
            batch_limit: 100,
            batch_window: std::time::Duration::from_millis(50),
            ..Default::default()
        };
        let log = omniroute_core::log::Log::open_with(src.path(), opts).unwrap();
        for group in 0..35 {
            let handles: Vec<_> = (group * 20..(group + 1) * 20)
                .flat_map(|n| {
                    let ts = 1_763_700_000_000 + n * 1_000;
                    omniroute_core::sample::request_story(n)
                        .into_iter()
                        .map(move |e| (ts, e))
                })
                .map(|(ts, e)| log.append_at(ts, &e).unwrap())
                .collect();
            for h in handles {
                h.wait().unwrap();
            }
        }
    }
    let (rid, session) = cli::last_request(src.path());
    let base = std::fs::read(src.path().join(LOG_FILE)).unwrap();
    let commands = read_commands(&rid, &session);
    // The right answers, from an undamaged copy written the same way as the damaged ones.
    let pristine = tempfile::tempdir().unwrap();
    std::fs::write(pristine.path().join(LOG_FILE), &base).unwrap();
    let expected: Vec<String> = commands
        .iter()
        .map(|c| {
            let o = run(
                &c.iter().map(String::as_str).collect::<Vec<_>>(),
                pristine.path(),
            );
            assert!(o.ok(), "{c:?} on the undamaged log: {o:?}");
            normalize(&o.stdout, pristine.path())
        })
        .collect();

    let cases = cases(&base);
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let root = tempfile::tempdir().unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let dir = root.path().join(format!("copy-{i}"));
                    std::fs::create_dir(&dir).unwrap();
                    let file = dir.join(LOG_FILE);
                    std::fs::write(&file, &case.bytes).unwrap();
                    let before = digest(&file);
                    let mut t = Tally::default();
                    let picked = match case.runs {
                        Runs::Verify => 1,
                        Runs::All | Runs::AllAndServe => commands.len(),
                    };
                    for (cmd, want) in commands.iter().zip(&expected).take(picked) {
                        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
                        let out = run(&args, &dir);
                        if let Some(why) = judge(&out, want, &dir, &mut t) {
                            t.failures
                                .push(format!("{}: `{}`: {why}", case.name, cmd.join(" ")));
                        }
                        if digest(&file) != before {
                            t.writes += 1;
                            t.failures.push(format!(
                                "{}: `{}` changed the file",
                                case.name,
                                cmd.join(" ")
                            ));
                        }
                    }
                    if case.runs == Runs::AllAndServe {
                        serve(&case.name, &dir, &mut t);
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    let mut all = tally.lock().unwrap();
                    all.runs += t.runs;
                    all.answers += t.answers;
                    all.errors += t.errors;
                    all.contained += t.contained;
                    all.served += t.served;
                    all.refused += t.refused;
                    all.panics += t.panics;
                    all.wrong += t.wrong;
                    all.unnamed += t.unnamed;
                    all.writes += t.writes;
                    all.failures.extend(t.failures);
                }
            });
        }
    });
    let t = tally.into_inner().unwrap();
    println!(
        "corruption suite: {} damaged copies, {} read-command runs ({} right answers, {} named \
         errors, {} of them redb panics contained), serve started on {} and refused {}; {} failures ({} panics, {} wrong answers, \
         {} errors not naming the file, {} runs that changed the file), in {:.1?}",
        cases.len(),
        t.runs,
        t.answers,
        t.errors,
        t.contained,
        t.served,
        t.refused,
        t.failures.len(),
        t.panics,
        t.wrong,
        t.unnamed,
        t.writes,
        started.elapsed()
    );
    assert!(
        t.failures.is_empty(),
        "{} failures; the first ones:\n{}",
        t.failures.len(),
        t.failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

/// `serve` on a damaged copy: a refusal naming the file, or a clean start and stop.
fn serve(name: &str, dir: &Path, t: &mut Tally) {
    let fail = |t: &mut Tally, why: String| t.failures.push(format!("{name}: `serve`: {why}"));
    match Server::start(dir) {
        Err(out) => {
            if out.code != Some(1) || out.stderr.contains("panicked") {
                t.panics += 1;
                fail(t, format!("exit {:?}: {out:?}", out.code));
            } else if !out.stderr.contains(&dir.display().to_string()) {
                fail(t, format!("refused without naming the file: {out:?}"));
            } else {
                t.refused += 1;
            }
        }
        Ok(server) => {
            let out = server.stop();
            if out.code != Some(0) || out.stderr.contains("panicked") {
                t.panics += 1;
                fail(t, format!("started, then exit {:?}: {out:?}", out.code));
            } else {
                t.served += 1;
            }
        }
    }
}
