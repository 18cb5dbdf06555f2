//! Stage one of config loading: the TOML file as written, parsed strictly (unknown keys are errors).
//! Every field the user may omit is an `Option`; defaults are applied in `validate`.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{Capability, Durability, OnFailure, Profile, ProviderKind, QuotaWindow};
use crate::event::Strategy;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub models: Vec<RawModel>,
    #[serde(default)]
    pub combos: Vec<RawCombo>,
    #[serde(default)]
    pub resilience: RawResilience,
    #[serde(default)]
    pub router: RawRouter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub durability: Option<Durability>,
    pub store_bodies: Option<bool>,
    pub on_failure: Option<OnFailure>,
    pub batch_window_ms: Option<u64>,
    pub cache_size_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub id: Spanned<String>,
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub timeout_ms: Option<u64>,
    /// mock only: added latency of every response.
    pub latency_ms: Option<u64>,
    /// mock only: share of requests that fail with a 500.
    pub failure_rate: Option<f64>,
    pub enabled: Option<bool>,
    /// Usage allowance per window, e.g. `{ requests = 10000, usd = 50.0, window = "day" }`.
    pub quota: Option<RawQuota>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub usd: Option<f64>,
    /// `day` (the default) or `month`, UTC.
    pub window: Option<QuotaWindow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub id: Spanned<String>,
    pub provider: String,
    pub upstream: Option<String>,
    pub tier: Option<u8>,
    pub context_window: Option<u32>,
    pub capabilities: Option<Vec<Capability>>,
    pub price: Option<RawPrice>,
    pub enabled: Option<bool>,
}

/// USD per 1M tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    pub output: f64,
    pub cached_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub reasoning: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCombo {
    pub id: Spanned<String>,
    pub strategy: Strategy,
    pub targets: Vec<RawTarget>,
    pub active: Option<bool>,
    pub auto_weights: Option<RawAutoWeights>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// A model id, or the id of another combo (expanded in place).
    pub model: String,
    pub weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResilience {
    pub profile: Option<Profile>,
    pub breaker_failures: Option<u32>,
    pub breaker_window_ms: Option<u64>,
    pub breaker_cooldown_ms: Option<u64>,
    pub max_retries: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub ttft_timeout_ms: Option<u64>,
    pub default_cooldown_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    pub auto_weights: Option<RawAutoWeights>,
    pub default_output_tokens: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoWeights {
    pub cost: Option<f64>,
    pub latency: Option<f64>,
    pub success: Option<f64>,
    pub circuit: Option<f64>,
    pub quota: Option<f64>,
}
