//! Crash tests of acknowledgements (issue 11): `omniroute serve` is killed with SIGKILL at a random
//! moment (seeded) while clients set budget guards, switch a combo's strategy and spend on a
//! guarded session; then the data dir is reopened and restored as a restarted server would.
//! Every acknowledged (200) control write must be in the log, and the guarded session's restored
//! spend must cover every request whose answer the client received. 20 rounds per durability
//! mode. `keys create` is killed likewise: every key it printed must be in the log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omniroute_core::event::{Cost, Event, RequestId};
use omniroute_core::log::Log;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_omniroute");
const ROUNDS: u64 = 20;
const STRATEGIES: [&str; 4] = ["weighted", "round-robin", "cost", "priority"];

/// The built-in config with the chosen durability.
fn config(dir: &std::path::Path, durability: &str) -> std::path::PathBuf {
    let out = Command::new(EXE)
        .args(["config", "default"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap().replace(
        "durability = \"batched\"",
        &format!("durability = \"{durability}\""),
    );
    assert!(text.contains(&format!("durability = \"{durability}\"")));
    let path = dir.join("omniroute.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `serve` and returns it with its address.
fn serve(config: &std::path::Path, data: &std::path::Path) -> (Child, String) {
    support::cli::serve_with(config, Some(data))
}

#[derive(Default)]
struct Acked {
    guards: Vec<(String, u64)>,
    strategies: Vec<String>,
    served: Vec<RequestId>,
}

/// Clients until the server dies: one setting guards and switching `default`'s strategy, three
/// spending on guarded session G.
async fn traffic(base: String, acked: Arc<Mutex<Acked>>) {
    let http = reqwest::Client::new();
    let control = {
        let (http, base, acked) = (http.clone(), base.clone(), Arc::clone(&acked));
        tokio::spawn(async move {
            for i in 0u64.. {
                let session = format!("S{i}");
                let limit = 1_000 + i;
                let r = http
                    .post(format!("{base}/api/sessions/{session}/budget"))
                    .json(&json!({ "max_cost_usd": limit as f64 / 1e6, "action": "block" }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        acked.lock().unwrap().guards.push((session, limit))
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
                let s = STRATEGIES[i as usize % STRATEGIES.len()];
                let r = http
                    .patch(format!("{base}/api/combos/default"))
                    .json(&json!({ "strategy": s }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().strategies.push(s.into()),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
    };
    let mut spenders = Vec::new();
    for _ in 0..3 {
        let (http, base, acked) = (http.clone(), base.clone(), Arc::clone(&acked));
        spenders.push(tokio::spawn(async move {
            loop {
                let r = http
                    .post(format!("{base}/v1/chat/completions"))
                    .header("x-omniroute-session", "G")
                    .json(&json!({ "model": "mock/premium", "max_tokens": 50,
                        "messages": [{ "role": "user", "content": "spend a little" }] }))
                    .send()
                    .await;
                let Ok(r) = r else { return };
                let id = r.headers().get("x-omniroute-request-id").cloned();
                // Served means the client received the whole answer.
                if r.status() == 200 && r.bytes().await.is_ok() {
                    let id = RequestId::parse(id.unwrap().to_str().unwrap()).unwrap();
                    acked.lock().unwrap().served.push(id);
                }
            }
        }));
    }
    let _ = control.await;
    for s in spenders {
        let _ = s.await;
    }
}

fn round(durability: &str, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), durability);
    let data = tmp.path().join("data");
    let (mut child, base) = serve(&cfg, &data);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/api/sessions/G/budget"))
            .json(&json!({ "max_cost_usd": 1000.0, "action": "block" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let t = tokio::spawn(traffic(base.clone(), Arc::clone(&acked)));
        // The random moment of the crash (this sleep is the experiment, not a synchronisation).
        let ms = 20 + ChaCha8Rng::seed_from_u64(seed).next_u64() % 230;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = t.await;
    });
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    // "Restart": reopen the data dir and restore guards as `serve` does at start-up.
    let log = Log::open(&data).unwrap();
    let reader = log.reader().unwrap();
    assert!(
        reader.verify().unwrap().is_ok(),
        "the chain survives the kill"
    );
    let restored = omniroute::engine::restore::restore(&reader).unwrap();
    let budgets = &restored.state.as_ref().unwrap().0.budgets;
    let mut strategies = Vec::new();
    let mut costs: HashMap<RequestId, u64> = HashMap::new();
    for s in reader.range(..).unwrap() {
        match s.unwrap().record().unwrap().event.to_owned_event().unwrap() {
            Event::ConfigChangedV2(c) => strategies.extend(
                c.changes
                    .into_iter()
                    .filter(|f| f.path.ends_with(".strategy"))
                    .filter_map(|f| f.to),
            ),
            Event::RequestCompleted(c) if c.status == 200 => {
                let Cost::Micros(m) = c.cost else { panic!() };
                costs.insert(c.request_id, m);
            }
            _ => {}
        }
    }
    for (session, limit) in &acked.guards {
        let g = budgets.get(session).unwrap_or_else(|| {
            panic!("{durability} seed {seed}: acknowledged guard {session} lost")
        });
        assert_eq!(g.limit_micros, *limit);
    }
    // Each acknowledged switch is one ConfigChangedV2 naming its new strategy, in order.
    let recorded: Vec<&String> = strategies.iter().collect();
    assert!(
        recorded.len() >= acked.strategies.len(),
        "{durability} seed {seed}: {recorded:?}"
    );
    for (d, s) in recorded.iter().zip(&acked.strategies) {
        // The change's new value is the strategy as canonical JSON ("\"round-robin\"").
        assert_eq!(**d, format!("{s:?}"), "{d} vs {s}");
    }
    let mut seen = 0;
    for id in &acked.served {
        seen += costs.get(id).unwrap_or_else(|| {
            panic!("{durability} seed {seed}: served request {id} not in the log")
        });
    }
    let g = budgets.get("G").unwrap();
    assert!(
        g.spent_micros >= seen,
        "{durability} seed {seed}: restored spend {} < {seen} seen by the client",
        g.spent_micros
    );
    eprintln!(
        "{durability} seed {seed}: {} guards, {} switches, {} served ({seen} µ$) acknowledged; all present",
        acked.guards.len(),
        acked.strategies.len(),
        acked.served.len()
    );
}

#[test]
fn acknowledged_writes_survive_sigkill_batched() {
    for seed in 0..ROUNDS {
        round("batched", seed);
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_strict() {
    for seed in 0..ROUNDS {
        round("strict", 100 + seed);
    }
}

#[test]
fn printed_keys_survive_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut printed = HashSet::new();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for i in 0..ROUNDS {
        let name = format!("k{i}");
        let mut child = Command::new(EXE)
            .args(["keys", "create", "--name", &name, "--data-dir"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next_u64() % 40_000));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("omr-") {
            printed.insert(name);
        }
    }
    let log = Log::open(&data).unwrap();
    let reader = log.reader().unwrap();
    let names: HashSet<String> = reader
        .range(..)
        .unwrap()
        .filter_map(
            |s| match s.unwrap().record().unwrap().event.to_owned_event().unwrap() {
                Event::KeyCreated(k) => Some(k.name),
                _ => None,
            },
        )
        .collect();
    for n in &printed {
        assert!(names.contains(n), "printed key {n} is not in the log");
    }
    eprintln!(
        "{} of {ROUNDS} keys printed before the kill; all present",
        printed.len()
    );
}
