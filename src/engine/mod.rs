//! The live engine: the one place where config, the event log, the flow's state and keys meet.
//! HTTP handlers call plain functions here; every step of a request is appended to the log as it
//! happens, stamped with the config version (DESIGN.md section 4).
//!
//! **The log order is the state's order.** The flow's state (Health and budget guards,
//! `omniroute_core::flow::State`) changes only inside [`Engine::sequenced`]: one lock under which
//! the clock is read once, the step decides and changes the state, and its events are stamped
//! with that time and enqueued before the lock is released. So folding the log in order with the
//! recorded times (`log verify --decisions`, replay, the restore at start-up) gives the state each
//! decision saw.

mod chat;
pub mod keys;
mod outcome;
pub mod privacy;
pub mod restore;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use omniroute_core::config::{self, Config, Durability, OnFailure};
use omniroute_core::event::{
    BudgetAction, BudgetGuardSet, CircuitChanged, ConfigChangeKind, ConfigChangedV2,
    ConfigFieldChange, Cost, Event, Hash32, RequestId, Strategy,
};
use omniroute_core::flow::{Clock, Guard, State, SystemClock};
use omniroute_core::log::{Appended, Log, LogError, LogOptions};
use omniroute_core::router::CircuitTransition;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub use chat::{ChatInput, ChatOutput, ChatReply};

use crate::error::ApiError;

/// Sequenced steps between two checkpoints of the flow state.
const CHECKPOINT_EVERY: u64 = 50_000;

pub struct Engine {
    config: RwLock<Arc<Config>>,
    log: Log,
    /// The flow's critical section: see the module docs.
    seq: Mutex<Sequencer>,
    clock: Arc<dyn Clock>,
    pub keys: keys::KeyStore,
    /// The data dir's owner token (`serve` writes it to `admin.token`): whoever presents it is
    /// the owner, keys or not (see `ops::auth`).
    pub owner_token: std::sync::OnceLock<String>,
    /// The key of the audit records' argument hashes (`ops::audit::key`), read once.
    audit_key: std::sync::OnceLock<[u8; 32]>,
    http: reqwest::Client,
    endpoints: crate::providers::Endpoints,
    rng: Mutex<ChaCha8Rng>,
    started: Instant,
    /// Events the log refused at enqueue (it had closed). Those whose commit failed are counted
    /// by the log itself; [`Engine::unrecorded`] adds both.
    unrecorded: AtomicU64,
    /// The read models, folded live from the log.
    pub projections: omniroute_projections::runner::Runner,
    /// Serialises control-plane writes (config changes), each of which waits for its commit
    /// before it is acknowledged, so the recorded config versions form one chain.
    control: tokio::sync::Mutex<()>,
    /// Version of the config file as loaded at start-up: the base runtime changes layer on.
    file_version: Hash32,
    /// The last time the flow handed out (also read by events that take no lock), so the log's
    /// times never run backwards, across restarts too (it starts at the log's last time).
    last_ms: AtomicU64,
}

struct Sequencer {
    state: State,
    /// The last time handed out: the flow's clock never runs backwards.
    last_ms: u64,
    /// Steps since the last checkpoint.
    steps: u64,
}

/// A snapshot of the flow state waiting for its barrier (see [`Engine::take_checkpoint`]).
struct PendingCheckpoint {
    barrier: Appended,
    snapshot: omniroute_core::flow::StateSnapshot,
    config_version: Hash32,
    log: Log,
}

impl PendingCheckpoint {
    /// Waits for the barrier, then stores the checkpoint at the seq it resolved to.
    fn write(self) -> Result<Appended, String> {
        let at = self.barrier.wait().map_err(|e| e.to_string())?;
        let c = restore::StateCheckpoint {
            seq: at,
            config_version: self.config_version,
            state: self.snapshot,
        };
        let bytes = serde_json::to_vec(&c).map_err(|e| e.to_string())?;
        self.log
            .put_checkpoint(restore::STATE_CHECKPOINT, bytes)
            .map_err(|e| e.to_string())
    }
}

/// Commit handles of a caller's events, and whether one could not even be queued.
#[derive(Default)]
pub(crate) struct Sink {
    pub appended: Vec<Appended>,
    pub lost: bool,
}

/// How the gateway opens its log: in `batched` mode the writer gathers events for
/// `log.batch_window_ms` (one fsync then carries a whole window of requests: the writer's CPU per
/// request at low rates was ~60 µs with a 2 ms window and ~25 µs with 10 ms; a caller that waits
/// for a commit cuts the window short); in `strict` mode it commits at once, because every
/// response waits for it. redb's page cache is `log.cache_size_mb`.
pub fn log_options(config: &Config) -> LogOptions {
    LogOptions {
        batch_window: match config.log.durability {
            Durability::Batched => std::time::Duration::from_millis(config.log.batch_window_ms),
            Durability::Strict => std::time::Duration::ZERO,
        },
        cache_size: usize::try_from(config.log.cache_size_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        ..LogOptions::default()
    }
}

/// Runs a blocking call from async code: through `block_in_place` on a multi-threaded runtime
/// (so the worker's other tasks move elsewhere), directly otherwise.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Config field changes in their event form (values as canonical JSON text).
fn field_changes(changes: Vec<config::FieldChange>) -> Vec<ConfigFieldChange> {
    changes
        .into_iter()
        .map(|c| ConfigFieldChange {
            path: c.path,
            from: c.from.map(|v| v.to_string()),
            to: c.to.map(|v| v.to_string()),
        })
        .collect()
}

/// The combo `id` of `cfg`, to change.
fn combo_mut<'a>(cfg: &'a mut Config, id: &str) -> Result<&'a mut config::Combo, ApiError> {
    let known: Vec<String> = cfg.combos.iter().map(|c| c.id.clone()).collect();
    cfg.combo_index(id)
        .and_then(|i| cfg.combos.get_mut(i))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no combo {id:?} in the config; combos: {}",
                known.join(", ")
            ))
        })
}

/// The config a start-up serves, and what it carried over: the file wins on every field it
/// changed since the last start; runtime changes to other fields are kept (`config::carry_over`).
struct StartupConfig {
    config: Config,
    kept: Vec<ConfigFieldChange>,
    dropped: Vec<ConfigFieldChange>,
}

fn startup_config(
    file: Config,
    last: Option<(Hash32, Option<Hash32>)>,
    reader: &omniroute_core::log::Reader,
) -> Result<StartupConfig, String> {
    let stored = |v: &Hash32| -> Result<Option<Config>, String> {
        let bytes = reader.blob(v).map_err(|e| e.to_string())?;
        Ok(bytes.and_then(|b| Config::from_canonical(&b).ok()))
    };
    let none = |config| StartupConfig {
        config,
        kept: Vec::new(),
        dropped: Vec::new(),
    };
    let Some((effective, Some(old_file))) = last else {
        return Ok(none(file));
    };
    if effective == old_file {
        return Ok(none(file));
    }
    let (Some(old_effective), Some(old_file)) = (stored(&effective)?, stored(&old_file)?) else {
        return Ok(none(file));
    };
    let carried = config::carry_over(&old_file, &old_effective, &file);
    Ok(StartupConfig {
        config: carried.config,
        kept: field_changes(carried.kept),
        dropped: field_changes(carried.dropped),
    })
}

/// One target's live state (`Engine::targets`).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetState {
    pub provider: String,
    pub model: String,
    pub circuit: omniroute_core::event::CircuitState,
    /// No new attempts before this time (unix ms; a rate limit's Retry-After or the default
    /// cooldown), while it lies ahead.
    pub cooldown_until_ms: Option<u64>,
    /// ... and how long that is from now.
    pub cooldown_remaining_ms: Option<u64>,
    /// Attempts running on it now.
    pub in_flight: u32,
}

impl Engine {
    /// Starts an engine on an open log with the system clock.
    pub async fn start(config: Config, source: &str, log: Log) -> Result<Arc<Engine>, String> {
        Self::start_with_clock(config, source, log, Arc::new(SystemClock)).await
    }

    /// Starts an engine on an open log: restores keys and the flow state from it, carries runtime
    /// config changes over (see [`config::carry_over`]) and records the config in use.
    pub async fn start_with_clock(
        file_config: Config,
        source: &str,
        log: Log,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Engine>, String> {
        let (restored, startup) = {
            let reader = log.reader().map_err(|e| e.to_string())?;
            let restored = restore::restore(&reader).map_err(|e| e.to_string())?;
            let startup = startup_config(file_config.clone(), restored.last_config, &reader)?;
            (restored, startup)
        };
        let file_version = file_config.version();
        let config = startup.config;
        // TCP_NODELAY is reqwest's default; it is stated here because a stream's pieces cross
        // this socket too, and without it small writes wait for a delayed ACK (issue 10).
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let seed = {
            use rand_core::TryRngCore;
            rand_core::OsRng
                .try_next_u64()
                .map_err(|e| format!("no randomness from the OS: {e}"))?
        };
        let (state, previous) = match restored.state {
            Some((state, cfg)) => (state, Some(cfg)),
            None => {
                let mut state = State::new(&config);
                state.budgets = restored.budgets;
                (state, None)
            }
        };
        let engine = Arc::new(Engine {
            config: RwLock::new(Arc::new(config)),
            seq: Mutex::new(Sequencer {
                state,
                last_ms: restored.last_ts_ms,
                steps: 0,
            }),
            last_ms: AtomicU64::new(restored.last_ts_ms),
            clock,
            keys: keys::KeyStore::new(restored.keys),
            owner_token: std::sync::OnceLock::new(),
            audit_key: std::sync::OnceLock::new(),
            http,
            endpoints: Default::default(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            started: Instant::now(),
            unrecorded: AtomicU64::new(0),
            control: tokio::sync::Mutex::new(()),
            projections: omniroute_projections::runner::Runner::start(
                log.clone(),
                omniroute_projections::runner::RunnerOptions::default(),
            )
            .map_err(|e| e.to_string())?,
            file_version,
            log,
        });
        let cfg = engine.config();
        let detail = match (startup.kept.len(), startup.dropped.len()) {
            (0, 0) => format!("loaded {source}"),
            (k, 0) => format!("loaded {source}; {k} runtime change(s) kept"),
            (k, d) => format!(
                "loaded {source}; {k} runtime change(s) kept, {d} dropped because the file changed the same field(s)"
            ),
        };
        let event = ConfigChangedV2 {
            actor: "startup".into(),
            kind: ConfigChangeKind::Loaded,
            detail,
            previous_version: restored.last_config.map(|(v, _)| v),
            config_version: cfg.version(),
            file_version,
            changes: field_changes(match &previous {
                Some(p) => config::diff(p, &cfg),
                None => Vec::new(),
            }),
            kept: startup.kept,
            dropped: startup.dropped,
        };
        let recorded = engine
            .record_config(&[&file_config, &cfg], &cfg, event, |state| {
                state.restart();
                state.health.reconfigure(&cfg);
            })
            .await;
        recorded.map_err(|_| {
            format!(
                "cannot record the config in the event log at {}: {}",
                engine.log.path().display(),
                engine
                    .log
                    .health()
                    .last_error
                    .unwrap_or_else(|| "the log is closed".into())
            )
        })?;
        Ok(engine)
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| Arc::clone(&c))
            .unwrap_or_else(|e| Arc::clone(&e.into_inner()))
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Events that never became durable: refused at enqueue, or failed at commit (less those
    /// found on disk after the writer reopened the file). With `log.on_failure = "serve"` this
    /// counts what the gateway served without recording.
    pub fn unrecorded(&self) -> u64 {
        self.unrecorded.load(Ordering::Relaxed) + self.log.health().lost_events()
    }

    /// A new request id (ULID: unix ms and 80 random bits) and the seed its decisions draw from.
    fn new_request(&self) -> (RequestId, u64) {
        let mut rng = lock(&self.rng);
        let random = (u128::from(rng.next_u64()) << 16) | u128::from(rng.next_u32() & 0xFFFF);
        let ms = u128::from(self.clock.now_ms());
        (RequestId((ms << 80) | random), rng.next_u64())
    }

    /// Whether new requests must be refused because the log cannot be written.
    fn refusing(&self) -> bool {
        self.log.is_failing() && self.config().log.on_failure == OnFailure::Refuse
    }

    /// One step of the flow, in its critical section (module docs): reads the clock once (never
    /// backwards), lets `step` decide and change the state at that time, and enqueues `pre` (the
    /// step's own event, encoded beforehand so that the lock is held briefly) and then the events
    /// `step` returns, all stamped with that time, before the lock is released. A full queue is
    /// waited on here (backpressure, never loss), off the runtime's scheduling when it can be. An
    /// event the log refused is counted (and surfaces in `/api/health`), never silently dropped.
    pub(crate) fn sequenced<R>(
        &self,
        sink: &mut Sink,
        pre: Option<Event>,
        step: impl FnOnce(&mut State, u64) -> (R, [Option<Event>; 2]),
    ) -> R {
        let pre = pre.map(|e| Log::encode(&e));
        let mut seq = lock(&self.seq);
        let now = self.clock.now_ms().max(seq.last_ms);
        seq.last_ms = now;
        self.last_ms.store(now, Ordering::Relaxed);
        let (out, events) = step(&mut seq.state, now);
        if let Some(e) = pre {
            self.push(sink, now, e);
        }
        for event in events.into_iter().flatten() {
            self.push(sink, now, Log::encode(&event));
        }
        seq.steps += 1;
        if seq.steps >= CHECKPOINT_EVERY {
            seq.steps = 0;
            self.checkpoint_locked(&seq);
        }
        out
    }

    /// Enqueues one encoded event stamped `ts`, waiting while the queue is full.
    fn push(&self, sink: &mut Sink, ts: u64, e: Result<omniroute_core::log::Encoded, LogError>) {
        let result = match e {
            Ok(e) => match self.log.append_encoded(ts, e, false) {
                Err((LogError::Full, Some(e))) => {
                    blocking(|| self.log.append_encoded(ts, e, true).map_err(|(e, _)| e))
                }
                other => other.map_err(|(e, _)| e),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(h) => sink.appended.push(h),
            Err(_) => {
                sink.lost = true;
                self.unrecorded.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends an event that changes no state. It needs no place in the state's order (the fold
    /// skips it), so it takes no lock: encoded and enqueued as it comes.
    pub(crate) fn record_into(&self, sink: &mut Sink, event: Event) {
        let now = self
            .clock
            .now_ms()
            .max(self.last_ms.load(Ordering::Relaxed));
        self.push(sink, now, Log::encode(&event));
    }

    /// Appends an event that changes no state (audit records such as `ToolCalled`); the handle
    /// resolves once it is committed. `None` if the log refused it (counted as unrecorded).
    pub async fn record(&self, event: Event) -> Option<Appended> {
        let mut sink = Sink::default();
        self.record_into(&mut sink, event);
        sink.appended.pop()
    }

    /// A checkpoint of the flow state as it is now (the caller holds the sequencer): a barrier
    /// enqueued under the same lock resolves to the seq of the last event folded into it. Refused
    /// once anything went unrecorded: the state then holds effects the log lacks, and a
    /// checkpoint would make them permanent, while a restart without one folds back to the
    /// log's truth.
    fn take_checkpoint(&self, seq: &Sequencer) -> Result<PendingCheckpoint, String> {
        if self.unrecorded() > 0 {
            return Err(format!(
                "{} event(s) went unrecorded: the routing state is not checkpointed, the next start folds the log instead",
                self.unrecorded()
            ));
        }
        Ok(PendingCheckpoint {
            barrier: self.log.barrier().map_err(|e| e.to_string())?,
            snapshot: seq.state.snapshot(),
            config_version: self.config().version(),
            log: self.log.clone(),
        })
    }

    /// Periodic checkpoint, from inside a step: written off the lock once its barrier commits.
    fn checkpoint_locked(&self, seq: &Sequencer) {
        let Ok(pending) = self.take_checkpoint(seq) else {
            return;
        };
        let write = move || drop(pending.write());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(write)),
            Err(_) => write(),
        }
    }

    /// Checkpoints the flow state and waits until it is stored (graceful shutdown), so the next
    /// start folds only what came after.
    pub fn checkpoint(&self) -> Result<(), String> {
        let pending = self.take_checkpoint(&lock(&self.seq))?;
        pending
            .write()?
            .wait()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Waits for a caller's events to commit: a control write (budget guard, combo switch,
    /// config change) is acknowledged only once durable, in every mode.
    async fn committed(sink: Sink) -> Result<(), ApiError> {
        if sink.lost {
            return Err(ApiError::NotRecorded);
        }
        for h in sink.appended {
            h.await.map_err(|_| ApiError::NotRecorded)?;
        }
        Ok(())
    }

    /// Like [`Engine::committed`] for a control write, whose failure must be undone: a commit
    /// reported as failed can still have reached the file (a failed fsync; the writer finds such
    /// events when it reopens the database). So on failure this waits (off the runtime, up to 5 s)
    /// for the log to be writable again and looks for the event among the records committed
    /// since `after`: found, the write stands and is acknowledged; not found (or the log did not
    /// recover), the caller undoes it.
    async fn committed_or_found(
        &self,
        sink: Sink,
        after: u64,
        is_ours: impl Fn(&omniroute_core::event::ArchivedEvent) -> bool + Send + 'static,
    ) -> Result<(), ApiError> {
        let Err(e) = Self::committed(sink).await else {
            return Ok(());
        };
        let log = self.log.clone();
        let found = tokio::task::spawn_blocking(move || {
            if !log.wait_writable(std::time::Duration::from_secs(5)) {
                return false;
            }
            let Ok(head) = log.sync() else { return false };
            let Ok(reader) = log.reader() else {
                return false;
            };
            let Ok(records) = reader.range(after + 1..=head) else {
                return false;
            };
            records
                .filter_map(Result::ok)
                .any(|s| s.record().is_ok_and(|r| is_ours(r.event)))
        })
        .await
        .unwrap_or(false);
        if found { Ok(()) } else { Err(e) }
    }

    /// Stores a config version's canonical form as a blob (its blake3 is the version), so the log
    /// alone can rebuild the config any decision used.
    fn store_config(&self, cfg: &Config, sink: &mut Sink) {
        match self.log.put_blob(cfg.canonical_json()) {
            Ok((_, h)) => sink.appended.push(h),
            Err(_) => sink.lost = true,
        }
    }

    /// Records a config change and applies it in the same step: the new config is swapped in and
    /// `apply` changes the state (Health follows the new config), then the commit is awaited. If
    /// it fails, the previous config is put back and the change is refused.
    async fn record_config(
        &self,
        store: &[&Config],
        cfg: &Arc<Config>,
        event: ConfigChangedV2,
        apply: impl FnOnce(&mut State),
    ) -> Result<(), ApiError> {
        let mut sink = Sink::default();
        for c in store {
            self.store_config(c, &mut sink);
        }
        let after = self.log.committed_seq();
        let (version, prior) = (event.config_version, event.previous_version);
        let previous = self.sequenced(&mut sink, None, |state, _| {
            let previous = self.swap_config(Arc::clone(cfg));
            apply(state);
            (
                previous,
                [Some(Event::ConfigChangedV2(Box::new(event))), None],
            )
        });
        let is_ours = move |e: &omniroute_core::event::ArchivedEvent| {
            matches!(e, omniroute_core::event::ArchivedEvent::ConfigChangedV2(c)
                if c.config_version.get() == version
                    && c.previous_version.as_ref().map(|v| v.get()) == prior)
        };
        let result = self.committed_or_found(sink, after, is_ours).await;
        if result.is_err() {
            // Not in the log, so not in effect: the previous config comes back and Health follows
            // it again (keeping what requests did to it meanwhile).
            let seq = &mut lock(&self.seq);
            seq.state.health.reconfigure(&previous);
            self.swap_config(previous);
        }
        result
    }

    fn swap_config(&self, cfg: Arc<Config>) -> Arc<Config> {
        let mut c = self.config.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *c, cfg)
    }

    /// The event of a circuit transition.
    fn circuit_event(
        cfg: &Config,
        t: Option<CircuitTransition>,
        request: Option<RequestId>,
    ) -> Option<Event> {
        let t = t?;
        let m = cfg.model(t.model)?;
        let provider = cfg.provider_of(m).map(|p| p.id.clone()).unwrap_or_default();
        Some(Event::CircuitChanged(Box::new(CircuitChanged {
            config_version: cfg.version(),
            provider,
            model: Some(m.id.clone()),
            from: t.from,
            to: t.to,
            reason: t.reason.to_string(),
            request_id: request,
        })))
    }

    /// Each target's circuit state, for `/api/health`.
    pub fn circuits(&self) -> Vec<(String, String, omniroute_core::event::CircuitState)> {
        self.targets()
            .into_iter()
            .map(|t| (t.provider, t.model, t.circuit))
            .collect()
    }

    /// Each target's live state in Health, at the engine clock's now.
    pub fn targets(&self) -> Vec<TargetState> {
        let cfg = self.config();
        let seq = lock(&self.seq);
        let health = &seq.state.health;
        let now = self.clock.now_ms().max(seq.last_ms);
        cfg.models
            .iter()
            .map(|m| {
                let t = health.model_index(&m.id).and_then(|i| health.target(i));
                let cooling = t.map(|t| t.cooldown_until_ms).filter(|&until| until > now);
                TargetState {
                    provider: cfg.provider_of(m).map(|p| p.id.clone()).unwrap_or_default(),
                    model: m.id.clone(),
                    circuit: t
                        .map(|t| t.breaker.state_at(now, health.resilience()))
                        .unwrap_or(omniroute_core::event::CircuitState::Closed),
                    cooldown_until_ms: cooling,
                    cooldown_remaining_ms: cooling.map(|u| u - now),
                    in_flight: t.map_or(0, |t| t.in_flight),
                }
            })
            .collect()
    }

    /// A copy of the routing state (Health; no budget guards) and the flow's time, taken under
    /// the flow's lock, for a dry run of a decision (`ops::execute::simulate_route`): the copy is
    /// decided on outside the lock and then dropped, so nothing a simulation does reaches the
    /// live state or the log.
    pub fn routing_snapshot(&self) -> (State, u64) {
        let seq = lock(&self.seq);
        let now = self.clock.now_ms().max(seq.last_ms);
        let state = State {
            health: seq.state.health.clone(),
            budgets: Default::default(),
        };
        (state, now)
    }

    /// Health's attempts in flight on a target and whether its half-open probe is out.
    pub fn in_flight(&self, model: &str) -> Option<(u32, bool)> {
        let seq = lock(&self.seq);
        let health = &seq.state.health;
        let t = health.target(health.model_index(model)?)?;
        Some((t.in_flight, t.breaker.probe_in_flight()))
    }

    /// A session's budget guard, with what it has spent and holds reserved.
    pub fn guard(&self, session: &str) -> Option<Guard> {
        lock(&self.seq).state.budgets.get(session)
    }

    /// Sets a session's budget guard (`POST /api/sessions/{id}/budget`).
    pub async fn set_budget(
        &self,
        session: &str,
        max_cost_usd: f64,
        action: BudgetAction,
        degrade_to_tier: Option<u8>,
        actor: &str,
    ) -> Result<Guard, ApiError> {
        if !(max_cost_usd.is_finite() && max_cost_usd >= 0.0) {
            return Err(ApiError::bad(
                "max_cost_usd must be a number of dollars, 0 or more",
                Some("max_cost_usd"),
            ));
        }
        if action == BudgetAction::Degrade && degrade_to_tier.is_none() {
            return Err(ApiError::bad(
                "action \"degrade\" needs degrade_to_tier (0..=3)",
                Some("degrade_to_tier"),
            ));
        }
        let limit = (max_cost_usd * 1_000_000.0).round() as u64;
        // Recorded and applied in one step; acknowledged once committed. A guard whose commit
        // failed is taken back: it would vanish at the next restart while the client believed it
        // held.
        let _serial = self.control.lock().await;
        let mut sink = Sink::default();
        let event = Event::BudgetGuardSet(Box::new(BudgetGuardSet {
            session_id: session.to_string(),
            limit: Cost::Micros(limit),
            action,
            degrade_to_tier,
            actor: actor.to_string(),
        }));
        let after = self.log.committed_seq();
        let before = self.sequenced(&mut sink, None, |state, _| {
            let before = state.budgets.get(session);
            state.budgets.set(session, limit, action, degrade_to_tier);
            (before, [Some(event), None])
        });
        let (who, sess) = (actor.to_string(), session.to_string());
        let is_ours = move |e: &omniroute_core::event::ArchivedEvent| {
            matches!(e, omniroute_core::event::ArchivedEvent::BudgetGuardSet(g)
                if g.session_id == sess.as_str()
                    && g.actor == who.as_str()
                    && g.action.get() == action
                    && g.degrade_to_tier.as_ref().copied() == degrade_to_tier
                    && matches!(&g.limit, omniroute_core::event::ArchivedCost::Micros(m) if m.to_native() == limit))
        };
        if let Err(e) = self.committed_or_found(sink, after, is_ours).await {
            lock(&self.seq).state.budgets.put_back(session, before);
            return Err(e);
        }
        self.guard(session)
            .ok_or_else(|| ApiError::Internal("guard vanished".into()))
    }

    /// The installation's audit key (`audit.key` in the data dir). If it cannot be read or made,
    /// a key of this process's own stands in: hashes then match only within this run, and are
    /// still not guessable from the log.
    pub fn audit_key(&self) -> [u8; 32] {
        *self.audit_key.get_or_init(|| {
            crate::ops::audit::key(self.log.dir()).unwrap_or_else(|e| {
                eprintln!("audit: {e}; argument hashes use a key of this run only");
                let token = keys::generate().unwrap_or_default();
                Hash32::of(format!("{token}{:?}", Instant::now()).as_bytes()).0
            })
        })
    }

    /// Creates an API key (`POST /api/keys`): recorded as `KeyCreated` (its hash only) and
    /// usable once committed. Returns the key, shown this once, and its id.
    pub async fn create_key(
        &self,
        name: &str,
        scopes: Vec<String>,
    ) -> Result<(String, keys::KeyEntry), ApiError> {
        crate::ops::auth::check_scopes(&scopes).map_err(|m| ApiError::bad(m, Some("scopes")))?;
        if name.trim().is_empty() || name.len() > 100 {
            return Err(ApiError::bad(
                "a key needs a name of 1 to 100 characters",
                Some("name"),
            ));
        }
        let key = keys::generate().map_err(ApiError::Internal)?;
        let entry = keys::KeyEntry {
            id: Hash32::of(key.as_bytes()),
            name: name.to_string(),
            scopes,
            revoked: false,
        };
        let mut sink = Sink::default();
        self.record_into(
            &mut sink,
            Event::KeyCreated(Box::new(omniroute_core::event::KeyCreated {
                key_id: entry.id,
                name: entry.name.clone(),
                scopes: entry.scopes.clone(),
            })),
        );
        Engine::committed(sink).await?;
        self.keys.add(entry.clone());
        Ok((key, entry))
    }

    /// Revokes the active key whose id starts with `prefix` (`DELETE /api/keys/{id}`). It stops
    /// working at once, before the revocation is committed: a failed commit is reported, and the
    /// key would work again only after a restart.
    pub async fn revoke_key(&self, prefix: &str, actor: &str) -> Result<keys::KeyEntry, ApiError> {
        let prefix = prefix.to_ascii_lowercase();
        let all = self.keys.all();
        let matches: Vec<&keys::KeyEntry> = all
            .iter()
            .filter(|k| !k.revoked && !prefix.is_empty() && k.id.to_string().starts_with(&prefix))
            .collect();
        let k = match matches.as_slice() {
            [k] => (*k).clone(),
            [] => {
                return Err(ApiError::NotFound(format!(
                    "no active key has an id starting with {prefix:?}"
                )));
            }
            _ => {
                return Err(ApiError::bad(
                    format!(
                        "{} active keys start with {prefix:?}; give more of the id",
                        matches.len()
                    ),
                    Some("id"),
                ));
            }
        };
        self.keys.revoke(&k.id);
        let mut sink = Sink::default();
        self.record_into(
            &mut sink,
            Event::KeyRevoked(Box::new(omniroute_core::event::KeyRevoked {
                key_id: k.id,
                actor: actor.to_string(),
            })),
        );
        Engine::committed(sink).await?;
        Ok(keys::KeyEntry { revoked: true, ..k })
    }

    /// Changes a combo at runtime (`PATCH /api/combos/{id}`): the next request routes with the new
    /// config, and the change is recorded as `ConfigChangedV2` with both config versions and
    /// the fields that changed. It survives a restart unless the file changes the same field.
    pub async fn patch_combo(
        &self,
        id: &str,
        active: Option<bool>,
        strategy: Option<Strategy>,
        actor: &str,
    ) -> Result<Arc<Config>, ApiError> {
        if active.is_none() && strategy.is_none() {
            return Err(ApiError::bad(
                "nothing to change: give `active` (true/false) and/or `strategy`",
                None,
            ));
        }
        let kind = if active.is_some() {
            ConfigChangeKind::ComboSwitched
        } else {
            ConfigChangeKind::StrategySet
        };
        self.change_config(actor, kind, |cfg| {
            let c = combo_mut(cfg, id)?;
            if let Some(a) = active {
                c.active = a;
            }
            if let Some(s) = strategy {
                c.strategy = s;
            }
            Ok(())
        })
        .await
    }

    /// Sets a combo's routing strategy and, for `weighted`, its targets' weights (`{model id:
    /// weight}`; targets not named keep theirs), as one recorded change (`StrategySet`). Weights
    /// naming a model that is not a target, weights that would all be 0, or weights given for a
    /// strategy that does not use them are refused with the valid targets.
    pub async fn set_combo_routing(
        &self,
        id: &str,
        strategy: Strategy,
        weights: Option<&std::collections::BTreeMap<String, u32>>,
        actor: &str,
    ) -> Result<Arc<Config>, ApiError> {
        self.change_config(actor, ConfigChangeKind::StrategySet, |cfg| {
            let models: Vec<String> = cfg.models.iter().map(|m| m.id.clone()).collect();
            let c = combo_mut(cfg, id)?;
            c.strategy = strategy;
            let Some(weights) = weights else {
                return Ok(());
            };
            let names: Vec<&str> = c
                .targets
                .iter()
                .filter_map(|t| models.get(t.model).map(String::as_str))
                .collect();
            if strategy != Strategy::Weighted {
                return Err(ApiError::bad(
                    format!(
                        "weights: only the weighted strategy uses target weights; omit weights, \
                         or set strategy \"weighted\" (targets of {id:?}: {})",
                        names.join(", ")
                    ),
                    Some("weights"),
                ));
            }
            for (model, w) in weights {
                let Some(i) = names.iter().position(|n| n == model) else {
                    return Err(ApiError::bad(
                        format!(
                            "weights: {model:?} is not a target of combo {id:?}; valid targets: {}",
                            names.join(", ")
                        ),
                        Some("weights"),
                    ));
                };
                if let Some(t) = c.targets.get_mut(i) {
                    t.weight = *w;
                }
            }
            if c.targets.iter().all(|t| t.weight == 0) {
                return Err(ApiError::bad(
                    format!(
                        "weights: every target of {id:?} would have weight 0; give at least one \
                         of {} a weight above 0",
                        names.join(", ")
                    ),
                    Some("weights"),
                ));
            }
            Ok(())
        })
        .await
    }

    /// Applies a resilience profile at runtime: every breaker, retry and timeout number becomes
    /// the profile's (overrides from the file are replaced), recorded as `ResilienceProfile`;
    /// Health takes the new numbers in the same step.
    pub async fn set_resilience_profile(
        &self,
        profile: config::Profile,
        actor: &str,
    ) -> Result<Arc<Config>, ApiError> {
        self.change_config(actor, ConfigChangeKind::ResilienceProfile, |cfg| {
            cfg.resilience = config::Resilience::profile(profile);
            Ok(())
        })
        .await
    }

    /// The one path of a runtime config change: `edit` changes a copy of the current config; the
    /// change is recorded as `ConfigChangedV2` (both versions and the changed fields), applied
    /// with Health reconfigured in the same step, and acknowledged once durable. An edit that
    /// changes nothing records nothing and answers the current config.
    async fn change_config(
        &self,
        actor: &str,
        kind: ConfigChangeKind,
        edit: impl FnOnce(&mut Config) -> Result<(), ApiError>,
    ) -> Result<Arc<Config>, ApiError> {
        // One control write at a time, so the next one starts from the config version the log
        // holds.
        let _serial = self.control.lock().await;
        let current = self.config();
        let mut cfg = Config::clone(&current);
        edit(&mut cfg)?;
        cfg.reindex();
        let changes = config::diff(&current, &cfg);
        if changes.is_empty() {
            return Ok(current);
        }
        let detail = changes
            .iter()
            .map(|c| {
                let v = |x: &Option<serde_json::Value>| {
                    x.as_ref().map_or("(none)".to_string(), |v| v.to_string())
                };
                format!("{}: {} -> {}", c.path, v(&c.from), v(&c.to))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let cfg = Arc::new(cfg);
        let event = ConfigChangedV2 {
            actor: actor.to_string(),
            kind,
            detail,
            previous_version: Some(current.version()),
            config_version: cfg.version(),
            file_version: self.file_version,
            changes: field_changes(changes),
            kept: Vec::new(),
            dropped: Vec::new(),
        };
        let health_cfg = Arc::clone(&cfg);
        self.record_config(&[&cfg], &cfg, event, move |state| {
            state.health.reconfigure(&health_cfg)
        })
        .await?;
        Ok(cfg)
    }

    /// The earliest time any target of `provider` may be attempted again after a rate limit
    /// (Health's cooldown), if one is still cooling down now.
    pub fn provider_cooldown_until(&self, provider: &str) -> Option<u64> {
        self.targets()
            .into_iter()
            .filter(|t| t.provider == provider)
            .filter_map(|t| t.cooldown_until_ms)
            .min()
    }

    /// The engine's clock (never behind a time already handed out): what control reads such as
    /// quota windows count as now.
    pub fn now_ms(&self) -> u64 {
        self.clock
            .now_ms()
            .max(self.last_ms.load(Ordering::Relaxed))
    }

    /// Waits (off the runtime) until everything recorded so far is committed and folded into the
    /// read models, so an admin read sees the requests that finished before it.
    pub async fn settled(self: &Arc<Self>) -> Result<(), ApiError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let seq = me.log.sync().map_err(|_| ApiError::LogUnavailable)?;
            let deadline = std::time::Duration::from_secs(5);
            if me.projections.wait_for(seq, deadline) {
                return Ok(());
            }
            Err(ApiError::Internal(match me.projections.error() {
                Some(e) => format!("the read models stopped: {e}"),
                None => format!("the read models did not reach seq {seq} within {deadline:?}"),
            }))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    }
}
