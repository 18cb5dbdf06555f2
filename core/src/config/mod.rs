//! The config model (`omniroute.toml`). Loading has two stages: a strict parse of the file as
//! written ([`raw`]: unknown keys rejected, errors carry the key path and line), then
//! [`validate`] into the runtime [`Config`] (references resolved to indexes, defaults applied,
//! combos that name other combos expanded). The effective config's blake3 hash is its
//! `config_version`, stamped on every event: it hashes [`Config::canonical_json`], and
//! [`Config::from_canonical`] turns those bytes back into the same config, so a log that stores
//! each version's bytes under its hash can rebuild the config any decision was made with.
//! [`diff()`] compares two configs field by field; [`set_path`] and [`carry_over`] apply runtime
//! changes and carry them across a restart (the rule is in the `diff` module).
//!
//! With no file, [`Config::builtin`] gives a default built from `default.toml` (mock providers only),
//! so everything works with zero setup.

mod diff;
mod raw;
mod validate;

pub use diff::{Carried, FieldChange, carry_over, diff, runtime_changeable, set_path};
pub use validate::MAX_BREAKER_FAILURES;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::{Hash32, Strategy};
use crate::pricing::Price;

/// The built-in default config, used when no file is given.
pub const DEFAULT_TOML: &str = include_str!("default.toml");
/// How the built-in config is named in messages.
pub const BUILTIN_NAME: &str = "<built-in default config>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API (OpenAI, OpenRouter, Groq, vLLM, Ollama, ...).
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// The built-in deterministic fake provider.
    Mock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Responses do not wait for the log commit.
    Batched,
    /// Responses are sent only after the request's events are committed.
    Strict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Refuse new requests while the log cannot be written.
    Refuse,
    /// Keep serving, counting what could not be recorded.
    Serve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Aggressive,
    Balanced,
    Conservative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Chat,
    Tools,
    Vision,
    Json,
    Reasoning,
}

impl Capability {
    pub const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_body_bytes: u64,
    /// Longest a client may take to send a request's headers, from the moment the server starts
    /// reading them; then the connection is closed (slowloris). `None`: the default (10 s). The
    /// three runtime fields below are `Option` so configs written before them keep their version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_ms: Option<u64>,
    /// Longest a client may take to send a chat request's body once its headers are in; then the
    /// answer is 408. `None`: the default (30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_read_timeout_ms: Option<u64>,
    /// Most connections served at once; further ones wait in the kernel's accept queue until one
    /// ends. `None`: the default (1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

impl Server {
    pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
    /// Longest read timeout accepted (10 minutes): a longer one is no protection.
    pub const MAX_READ_TIMEOUT_MS: u64 = 600_000;

    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.header_read_timeout_ms
                .unwrap_or(Self::DEFAULT_HEADER_READ_TIMEOUT_MS),
        )
    }

    pub fn body_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.body_read_timeout_ms
                .unwrap_or(Self::DEFAULT_BODY_READ_TIMEOUT_MS),
        )
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
            .unwrap_or(Self::DEFAULT_MAX_CONNECTIONS) as usize
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub durability: Durability,
    pub store_bodies: bool,
    pub on_failure: OnFailure,
    /// In `batched` mode, how long the writer gathers events before one commit (and one fsync)
    /// carries them all; the most a power loss can take. `strict` commits at once.
    pub batch_window_ms: u64,
    /// MiB of redb page cache for the log (bounded memory; the OS page cache holds the file).
    pub cache_size_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub id: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub timeout_ms: u64,
    pub latency_ms: u64,
    pub failure_rate: f64,
    pub enabled: bool,
    /// The provider's usage allowance, reported by `omniroute_check_quota` (not enforced in
    /// routing). Absent from the canonical JSON when unset, so configs without one keep their
    /// version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

/// A provider's usage allowance per calendar window (UTC). Each limit is optional; `None` means
/// no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub usd: Option<f64>,
    pub window: QuotaWindow,
}

/// The calendar window a [`Quota`] counts over, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaWindow {
    Day,
    Month,
}

impl QuotaWindow {
    /// The window holding `now_ms`: its start and the time it resets (the next window's start),
    /// unix ms.
    pub fn bounds(self, now_ms: u64) -> (u64, u64) {
        use crate::time::{civil_from_days, days_from_civil};
        const DAY_MS: u64 = 86_400_000;
        let day = now_ms / DAY_MS;
        match self {
            QuotaWindow::Day => (day * DAY_MS, (day + 1) * DAY_MS),
            QuotaWindow::Month => {
                let (y, m, _) = civil_from_days(day as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let start = days_from_civil(y, m, 1).max(0) as u64;
                let next = days_from_civil(ny, nm, 1).max(0) as u64;
                (start * DAY_MS, next * DAY_MS)
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub id: String,
    /// Index into [`Config::providers`].
    pub provider: usize,
    pub upstream: String,
    pub tier: u8,
    pub context_window: u32,
    /// Bit set of [`Capability::bit`].
    pub capabilities: u8,
    pub price: Option<Price>,
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Index into [`Config::models`].
    pub model: usize,
    pub weight: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Combo {
    pub id: String,
    pub strategy: Strategy,
    /// Model targets only: combos named as targets were expanded in place.
    pub targets: Vec<Target>,
    pub active: bool,
    pub auto_weights: AutoWeights,
}

/// Weights of the `auto` strategy's normalised factors (each factor is in 0..=1, higher is better).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoWeights {
    pub cost: f64,
    pub latency: f64,
    pub success: f64,
    pub circuit: f64,
    pub quota: f64,
}

impl Default for AutoWeights {
    /// Cost and latency lead, reliability close behind; documented in `docs/routing.md`.
    fn default() -> Self {
        Self {
            cost: 0.30,
            latency: 0.30,
            success: 0.25,
            circuit: 0.10,
            quota: 0.05,
        }
    }
}

/// Breaker, retry and timeout numbers. A profile gives all of them; each can be overridden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resilience {
    pub profile: Profile,
    /// Failures within `breaker_window_ms` that open a target's circuit.
    pub breaker_failures: u32,
    pub breaker_window_ms: u64,
    /// Time an open circuit waits before letting one half-open probe through.
    pub breaker_cooldown_ms: u64,
    /// Retries on the same target for retryable errors (before falling back).
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A stream that has sent nothing after this long fails over.
    pub ttft_timeout_ms: u64,
    /// Cooldown after a rate limit that carried no Retry-After.
    pub default_cooldown_ms: u64,
}

impl Resilience {
    pub const fn profile(profile: Profile) -> Self {
        match profile {
            Profile::Aggressive => Self {
                profile,
                breaker_failures: 3,
                breaker_window_ms: 10_000,
                breaker_cooldown_ms: 5_000,
                max_retries: 0,
                backoff_base_ms: 50,
                backoff_max_ms: 500,
                ttft_timeout_ms: 3_000,
                default_cooldown_ms: 1_000,
            },
            Profile::Balanced => Self {
                profile,
                breaker_failures: 5,
                breaker_window_ms: 30_000,
                breaker_cooldown_ms: 30_000,
                max_retries: 1,
                backoff_base_ms: 200,
                backoff_max_ms: 2_000,
                ttft_timeout_ms: 10_000,
                default_cooldown_ms: 5_000,
            },
            Profile::Conservative => Self {
                profile,
                breaker_failures: 10,
                breaker_window_ms: 60_000,
                breaker_cooldown_ms: 60_000,
                max_retries: 2,
                backoff_base_ms: 500,
                backoff_max_ms: 5_000,
                ttft_timeout_ms: 30_000,
                default_cooldown_ms: 15_000,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    pub auto_weights: AutoWeights,
    /// Output tokens assumed when a request sets no `max_tokens` (for cost estimates).
    pub default_output_tokens: u32,
}

/// The validated runtime config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub log: LogConfig,
    pub providers: Vec<Provider>,
    pub models: Vec<Model>,
    pub combos: Vec<Combo>,
    pub resilience: Resilience,
    pub router: RouterConfig,
    #[serde(skip)]
    version: Hash32,
    #[serde(skip)]
    model_ix: HashMap<String, usize>,
    #[serde(skip)]
    combo_ix: HashMap<String, usize>,
}

/// One thing wrong with a config, located by key path (and line, when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `combos[0].targets[1].model`.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}", p.key)?;
            if let Some(line) = p.line {
                write!(f, " (line {line})")?;
            }
            write!(f, ": {}", p.message)?;
            if !p.fix.is_empty() {
                write!(f, "\n    fix: {}", p.fix)?;
            }
        }
        Ok(())
    }
}

/// 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Config {
    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(src: &str, file: &str) -> Result<Config, ConfigError> {
        let raw = parse(src, file)?;
        validate::validate(raw, src, file)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![Problem {
                key: "(file)".into(),
                line: None,
                message: format!("cannot read the file: {e}"),
                fix: "pass the path of a readable omniroute.toml, or omit --config to use the built-in default".into(),
            }],
        })?;
        Self::from_toml(&src, &file)
    }

    /// The built-in default config.
    pub fn builtin() -> Result<Config, ConfigError> {
        Self::from_toml(DEFAULT_TOML, BUILTIN_NAME)
    }

    /// `config_version`: blake3 of the canonical JSON encoding of the effective config.
    pub fn version(&self) -> Hash32 {
        self.version
    }

    pub fn model_index(&self, id: &str) -> Option<usize> {
        self.model_ix.get(id).copied()
    }

    pub fn combo_index(&self, id: &str) -> Option<usize> {
        self.combo_ix.get(id).copied()
    }

    pub fn model(&self, ix: usize) -> Option<&Model> {
        self.models.get(ix)
    }

    /// The provider of a model.
    pub fn provider_of(&self, model: &Model) -> Option<&Provider> {
        self.providers.get(model.provider)
    }

    /// Rebuilds lookups and the version after a change (e.g. a combo switched at runtime).
    pub fn reindex(&mut self) {
        self.model_ix = self
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        self.combo_ix = self
            .combos
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        self.version = Hash32::of(&self.canonical_json());
    }

    /// The canonical JSON encoding of the effective config: the bytes `config_version` hashes, so
    /// stored under that hash they are a content-addressed blob [`Config::from_canonical`] turns
    /// back into this exact config. Fields appear in declaration order; the lookups and the
    /// version itself are not part of it.
    pub fn canonical_json(&self) -> Vec<u8> {
        // Serializing can only fail on a non-UTF-8 `data_dir`, which a TOML file cannot spell.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Rebuilds a config from its [`canonical_json`](Config::canonical_json) bytes, e.g. a blob
    /// read back from the event log. The bytes must be exactly canonical: the rebuilt config's
    /// version must equal their blake3 hash, so a blob found under a `config_version` key yields
    /// the config that version names and nothing else (re-formatted or edited JSON is refused
    /// rather than silently given a different version).
    pub fn from_canonical(bytes: &[u8]) -> Result<Config, String> {
        let mut config: Config =
            serde_json::from_slice(bytes).map_err(|e| format!("not a canonical config: {e}"))?;
        config.reindex();
        let hash = Hash32::of(bytes);
        if config.version != hash {
            return Err(format!(
                "not a canonical config: its bytes hash to {hash} but the config they decode to \
                 re-encodes as {} (JSON that was re-formatted, re-ordered or had numbers rewritten)",
                config.version
            ));
        }
        config
            .check_references()
            .map_err(|e| format!("not a canonical config: {e}"))?;
        Ok(config)
    }

    /// The invariants [`validate`] guarantees and the rest of the code indexes by: unique ids and
    /// in-range indexes. Checked again when a config is rebuilt from JSON (a log blob, a runtime
    /// change) because those bypass validation, and an out-of-range index would be a panic later.
    fn check_references(&self) -> Result<(), String> {
        fn unique<'a>(kind: &str, ids: impl Iterator<Item = &'a str>) -> Result<(), String> {
            let mut seen = std::collections::HashSet::new();
            for id in ids {
                if !seen.insert(id) {
                    return Err(format!("duplicate {kind} id {id:?}"));
                }
            }
            Ok(())
        }
        unique("provider", self.providers.iter().map(|p| p.id.as_str()))?;
        unique("model", self.models.iter().map(|m| m.id.as_str()))?;
        unique("combo", self.combos.iter().map(|c| c.id.as_str()))?;
        for m in &self.models {
            if m.provider >= self.providers.len() {
                return Err(format!(
                    "model {:?} names provider #{} of {}",
                    m.id,
                    m.provider,
                    self.providers.len()
                ));
            }
        }
        for c in &self.combos {
            if self.model_ix.contains_key(&c.id) {
                return Err(format!("{:?} is both a combo id and a model id", c.id));
            }
            if let Some(t) = c.targets.iter().find(|t| t.model >= self.models.len()) {
                return Err(format!(
                    "combo {:?} targets model #{} of {}",
                    c.id,
                    t.model,
                    self.models.len()
                ));
            }
        }
        Ok(())
    }
}

fn parse(src: &str, file: &str) -> Result<raw::RawConfig, ConfigError> {
    let fail = |key: String, span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_string(),
        problems: vec![Problem {
            key,
            line: span.map(|s| line_of(src, s.start)),
            message,
            fix: "correct the key or value; `omniroute config check FILE` re-checks it".into(),
        }],
    };
    let de = toml::Deserializer::parse(src)
        .map_err(|e| fail("(syntax)".into(), e.span(), e.message().trim().to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let key = if key == "." {
            "(top level)".into()
        } else {
            key
        };
        fail(key, inner.span(), inner.message().trim().to_string())
    })
}

#[cfg(test)]
mod tests;
