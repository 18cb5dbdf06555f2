//! The live engine: the one place where config, the event log, health, budgets and keys meet.
//! HTTP handlers call plain functions here; every step of a request is appended to the log as it
//! happens, stamped with the config version (DESIGN.md section 4).

pub mod budget;
mod chat;
pub mod keys;
pub mod restore;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use omniroute_core::config::{Config, Durability, OnFailure};
use omniroute_core::event::{
    BudgetAction, BudgetGuardSet, CircuitChanged, ConfigChangeKind, ConfigChanged, Cost, Event,
    RequestId, Strategy,
};
use omniroute_core::log::{Appended, Log, LogError, LogOptions};
use omniroute_core::router::{CircuitTransition, Health};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub use chat::{ChatInput, ChatOutput, ChatReply};

use crate::error::ApiError;

pub struct Engine {
    config: RwLock<Arc<Config>>,
    log: Log,
    health: Mutex<Health>,
    pub budgets: budget::Budgets,
    pub keys: keys::KeyStore,
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
    /// before it takes effect, so the recorded config versions form one chain.
    control: tokio::sync::Mutex<()>,
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    /// Starts an engine on an open log: loads keys from it and records the config in use.
    pub async fn start(config: Config, source: &str, log: Log) -> Result<Arc<Engine>, String> {
        let restored = {
            let reader = log.reader().map_err(|e| e.to_string())?;
            restore::restore(&reader).map_err(|e| e.to_string())?
        };
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
        let engine = Arc::new(Engine {
            health: Mutex::new(Health::new(&config)),
            config: RwLock::new(Arc::new(config)),
            budgets: budget::Budgets::restored(restored.guards),
            endpoints: Default::default(),
            keys: keys::KeyStore::new(restored.keys),
            http,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            started: Instant::now(),
            unrecorded: AtomicU64::new(0),
            control: tokio::sync::Mutex::new(()),
            projections: omniroute_projections::runner::Runner::start(
                log.clone(),
                omniroute_projections::runner::RunnerOptions::default(),
            )
            .map_err(|e| e.to_string())?,
            log,
        });
        let cfg = engine.config();
        engine
            .record_durably(Event::ConfigChanged(Box::new(ConfigChanged {
                actor: "startup".into(),
                kind: ConfigChangeKind::Loaded,
                detail: format!("loaded {source}"),
                previous_version: None,
                config_version: cfg.version(),
            })))
            .await
            .map_err(|_| {
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
        let ms = u128::from(omniroute_core::log::now_ms());
        (RequestId((ms << 80) | random), rng.next_u64())
    }

    /// Whether new requests must be refused because the log cannot be written.
    fn refusing(&self) -> bool {
        self.log.is_failing() && self.config().log.on_failure == OnFailure::Refuse
    }

    /// Appends an event. Never blocks a runtime worker: a full queue is waited on off the runtime.
    /// A failure is counted (and surfaces in `/api/health`), never silently dropped.
    pub async fn record(&self, event: Event) -> Option<Appended> {
        let now = omniroute_core::log::now_ms();
        let result = match self.log.try_append_at(now, &event) {
            Err(LogError::Full) => {
                let log = self.log.clone();
                tokio::task::spawn_blocking(move || log.append_at(now, &event))
                    .await
                    .unwrap_or(Err(LogError::Closed))
            }
            other => other,
        };
        match result {
            Ok(h) => Some(h),
            Err(_) => {
                self.unrecorded.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Appends a control-plane event and waits until it is committed: a control write (budget
    /// guard, combo switch, config change) is acknowledged only once durable, in every mode.
    async fn record_durably(&self, event: Event) -> Result<u64, ApiError> {
        match self.record(event).await {
            Some(h) => h.await.map_err(|_| ApiError::NotRecorded),
            None => Err(ApiError::NotRecorded),
        }
    }

    async fn record_circuit(&self, t: Option<CircuitTransition>, request: Option<RequestId>) {
        let Some(t) = t else { return };
        let cfg = self.config();
        let Some(m) = cfg.model(t.model) else { return };
        let provider = cfg.provider_of(m).map(|p| p.id.clone()).unwrap_or_default();
        self.record(Event::CircuitChanged(Box::new(CircuitChanged {
            config_version: cfg.version(),
            provider,
            model: Some(m.id.clone()),
            from: t.from,
            to: t.to,
            reason: t.reason.to_string(),
            request_id: request,
        })))
        .await;
    }

    /// Each target's circuit state, for `/api/health`.
    pub fn circuits(&self) -> Vec<(String, String, omniroute_core::event::CircuitState)> {
        let cfg = self.config();
        let health = lock(&self.health);
        let now = omniroute_core::log::now_ms();
        cfg.models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let state = health
                    .target(i)
                    .map(|t| t.breaker.state_at(now, health.resilience()))
                    .unwrap_or(omniroute_core::event::CircuitState::Closed);
                let provider = cfg.provider_of(m).map(|p| p.id.clone()).unwrap_or_default();
                (provider, m.id.clone(), state)
            })
            .collect()
    }

    /// Health's attempts in flight on a target and whether its half-open probe is out.
    pub fn in_flight(&self, model: &str) -> Option<(u32, bool)> {
        let i = self.config().model_index(model)?;
        let health = lock(&self.health);
        let t = health.target(i)?;
        Some((t.in_flight, t.breaker.probe_in_flight()))
    }

    /// Sets a session's budget guard (`POST /api/sessions/{id}/budget`).
    pub async fn set_budget(
        &self,
        session: &str,
        max_cost_usd: f64,
        action: BudgetAction,
        degrade_to_tier: Option<u8>,
        actor: &str,
    ) -> Result<budget::Guard, ApiError> {
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
        // Recorded first, applied once committed: a guard that is not in the log would vanish
        // at the next restart while the client believes it holds.
        let _serial = self.control.lock().await;
        self.record_durably(Event::BudgetGuardSet(Box::new(BudgetGuardSet {
            session_id: session.to_string(),
            limit: Cost::Micros(limit),
            action,
            degrade_to_tier,
            actor: actor.to_string(),
        })))
        .await?;
        self.budgets.set(session, limit, action, degrade_to_tier);
        self.budgets
            .get(session)
            .ok_or_else(|| ApiError::Internal("guard vanished".into()))
    }

    /// Changes a combo at runtime (`PATCH /api/combos/{id}`): the next request routes with the new
    /// config, and the change is recorded as `ConfigChanged` with both config versions.
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
        // One control write at a time, each applied only once committed, so the next one starts
        // from the config version the log holds.
        let _serial = self.control.lock().await;
        let (event, cfg) = {
            let current = self.config();
            let mut cfg = Config::clone(&current);
            let ci = cfg
                .combo_index(id)
                .ok_or_else(|| ApiError::NotFound(format!("no combo {id:?} in the config")))?;
            let mut changes = Vec::new();
            let mut kind = ConfigChangeKind::ComboSwitched;
            if let Some(c) = cfg.combos.get_mut(ci) {
                if let Some(a) = active.filter(|a| *a != c.active) {
                    changes.push(format!("active {} -> {a}", c.active));
                    c.active = a;
                }
                if let Some(s) = strategy.filter(|s| *s != c.strategy) {
                    changes.push(format!("strategy {:?} -> {s:?}", c.strategy).to_lowercase());
                    c.strategy = s;
                    if active.is_none() {
                        kind = ConfigChangeKind::StrategySet;
                    }
                }
            }
            if changes.is_empty() {
                return Ok(current);
            }
            let previous = current.version();
            cfg.reindex();
            let event = ConfigChanged {
                actor: actor.to_string(),
                kind,
                detail: format!("combo {id}: {}", changes.join(", ")),
                previous_version: Some(previous),
                config_version: cfg.version(),
            };
            (event, Arc::new(cfg))
        };
        self.record_durably(Event::ConfigChanged(Box::new(event)))
            .await?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&cfg);
        Ok(cfg)
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
