//! Control operations: writes to routing (combo switches, strategies and weights), budgets and
//! resilience, each recorded in the log and durable before it is acknowledged, and the quota
//! read that tells an agent how much of each provider's allowance is left. The admin API and the
//! MCP tools (`crate::mcp::control`) call these with plain arguments; scopes are checked here.

use std::collections::BTreeMap;
use std::sync::Arc;

use omniroute_core::config::{self, Config, Profile, QuotaWindow};
use omniroute_core::event::{BudgetAction, Strategy};
use omniroute_core::time::rfc3339_ms;
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::ApiError;
use crate::ops::auth::{Caller, Scope};

/// Highest model tier (`core` config validation allows 0..=3).
const MAX_TIER: u8 = 3;

/// A routing strategy, spelled as in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    Priority,
    Weighted,
    RoundRobin,
    LeastLatency,
    Cost,
    LeastBusy,
    Auto,
    Tiered,
}

impl StrategyName {
    fn core(self) -> Strategy {
        match self {
            Self::Priority => Strategy::Priority,
            Self::Weighted => Strategy::Weighted,
            Self::RoundRobin => Strategy::RoundRobin,
            Self::LeastLatency => Strategy::LeastLatency,
            Self::Cost => Strategy::Cost,
            Self::LeastBusy => Strategy::LeastBusy,
            Self::Auto => Strategy::Auto,
            Self::Tiered => Strategy::Tiered,
        }
    }

    fn of(s: Strategy) -> Self {
        match s {
            Strategy::Priority => Self::Priority,
            Strategy::Weighted => Self::Weighted,
            Strategy::RoundRobin => Self::RoundRobin,
            Strategy::LeastLatency => Self::LeastLatency,
            Strategy::Cost => Self::Cost,
            Strategy::LeastBusy => Self::LeastBusy,
            Strategy::Auto => Self::Auto,
            Strategy::Tiered => Self::Tiered,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchComboArgs {
    /// The combo's id (as `omniroute_list_combos` lists it).
    pub combo_id: String,
    /// `true` to route requests for it, `false` to refuse them (`combo_inactive`).
    pub active: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetRoutingStrategyArgs {
    /// The combo's id (as `omniroute_list_combos` lists it).
    pub combo_id: String,
    /// The strategy the combo routes with from the next request on.
    #[serde(deserialize_with = "strategy_field")]
    pub strategy: StrategyName,
    /// Only with `weighted`: `{modelId: weight}` for targets of the combo (targets left out keep
    /// their weight); at least one target must end with a weight above 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<BTreeMap<String, u32>>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ComboChangeOut {
    /// The combo as it now routes.
    pub combo: ComboState,
    /// The config version now in force (blake3 of its canonical JSON).
    pub config_version: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ComboState {
    pub id: String,
    pub strategy: StrategyName,
    pub active: bool,
    /// In the combo's order.
    pub targets: Vec<TargetState>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TargetState {
    /// The model id.
    pub model: String,
    /// The provider id of the model.
    pub provider: String,
    /// Its share under `weighted` (relative to the other targets' weights).
    pub weight: u32,
}

/// What a budget guard does once a session's spend would pass its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetActionName {
    /// Refuse the request (429 `budget_exceeded`).
    Block,
    /// Route to models of tier `degradeToTier` or below instead.
    Degrade,
    /// Serve it, flagged with the `x-omniroute-budget: exceeded` header.
    Alert,
}

impl BudgetActionName {
    fn core(self) -> BudgetAction {
        match self {
            Self::Block => BudgetAction::Block,
            Self::Degrade => BudgetAction::Degrade,
            Self::Alert => BudgetAction::Alert,
        }
    }

    fn of(a: BudgetAction) -> Self {
        match a {
            BudgetAction::Block => Self::Block,
            BudgetAction::Degrade => Self::Degrade,
            BudgetAction::Alert => Self::Alert,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetBudgetGuardArgs {
    /// The session the guard applies to (the `x-omniroute-session` of its requests).
    pub session_id: String,
    /// The session's spending limit in USD, 0 or more.
    pub max_cost_usd: f64,
    /// What happens to a request that would pass the limit.
    #[serde(deserialize_with = "action_field")]
    pub action: BudgetActionName,
    /// The highest model tier (0 to 3) a `degrade` guard routes to; required with `degrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade_to_tier: Option<u8>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct BudgetGuardOut {
    pub session_id: String,
    /// The limit in USD.
    pub limit_usd: f64,
    /// What the session has spent so far, USD.
    pub spent_usd: f64,
    /// Held for requests in flight, USD.
    pub reserved_usd: f64,
    /// What is left of the limit, USD.
    pub left_usd: f64,
    pub action: BudgetActionName,
    /// The tier a `degrade` guard routes to.
    pub degrade_to_tier: Option<u8>,
}

/// A resilience profile: every breaker, retry and timeout number at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfileName {
    /// Fail fast: no retries, short timeouts, circuits open after 3 failures.
    Aggressive,
    /// The default: one retry, moderate timeouts.
    Balanced,
    /// Patient: two retries, long timeouts, circuits open after 10 failures.
    Conservative,
}

impl ProfileName {
    fn core(self) -> Profile {
        match self {
            Self::Aggressive => Profile::Aggressive,
            Self::Balanced => Profile::Balanced,
            Self::Conservative => Profile::Conservative,
        }
    }

    fn of(p: Profile) -> Self {
        match p {
            Profile::Aggressive => Self::Aggressive,
            Profile::Balanced => Self::Balanced,
            Profile::Conservative => Self::Conservative,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetResilienceArgs {
    /// The profile to apply to the running gateway.
    #[serde(deserialize_with = "profile_field")]
    pub profile: ProfileName,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ResilienceOut {
    /// The config version now in force.
    pub config_version: String,
    pub profile: ProfileName,
    /// Failures within `breaker_window_ms` that open a target's circuit.
    pub breaker_failures: u32,
    pub breaker_window_ms: u64,
    /// How long an open circuit waits before one half-open probe.
    pub breaker_cooldown_ms: u64,
    /// Retries on the same target for retryable errors, before falling back.
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// A stream that has sent nothing after this long fails over.
    pub ttft_timeout_ms: u64,
    /// Cooldown after a rate limit that carried no Retry-After.
    pub default_cooldown_ms: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckQuotaArgs {
    /// Only this provider id (default: every provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct QuotaOut {
    /// The engine's clock when the quota was read, unix ms.
    pub now_ms: u64,
    pub providers: Vec<ProviderQuota>,
}

/// The calendar window a quota counts over (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowName {
    Day,
    Month,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ProviderQuota {
    pub provider: String,
    /// Whether a quota is configured for the provider (`providers[].quota`).
    pub configured: bool,
    /// The window usage is counted over: the quota's, or the UTC day when none is configured.
    pub window: WindowName,
    /// Start of the current window, unix ms.
    pub window_start_ms: u64,
    /// When the window resets (the next window's start), unix ms.
    pub resets_at_ms: u64,
    /// The same time in RFC 3339 (UTC).
    pub resets_at: String,
    /// Used in the current window, from the cost read model of the log.
    pub used: Usage,
    /// The configured limits (`null` where none).
    pub limits: Limits,
    /// Percent of each limit left (0 to 100; `null` where there is no limit).
    pub percent_remaining: Remaining,
    /// The earliest time a rate-limited target of this provider may be tried again (Health's
    /// cooldown), unix ms; `null` when none is cooling down.
    pub cooldown_until_ms: Option<u64>,
    /// The same time in RFC 3339 (UTC).
    pub cooldown_until: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Usage {
    /// Upstream calls (attempts) made to the provider.
    pub requests: u64,
    /// Tokens of those calls: input, cached, cache writes, reasoning and output.
    pub tokens: u64,
    /// Their priced cost, USD.
    pub usd: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Limits {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub usd: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Remaining {
    pub requests: Option<f64>,
    pub tokens: Option<f64>,
    pub usd: Option<f64>,
}

/// A closed-set argument whose error names its field: serde's own message for an unknown enum
/// variant lists the valid values but not which argument was wrong.
fn named_field<'de, D, T>(d: D, field: &str) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = serde_json::Value::deserialize(d)?;
    serde_json::from_value(v).map_err(|e| serde::de::Error::custom(format!("{field}: {e}")))
}

fn strategy_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StrategyName, D::Error> {
    named_field(d, "strategy")
}

fn action_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BudgetActionName, D::Error> {
    named_field(d, "action")
}

fn profile_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ProfileName, D::Error> {
    named_field(d, "profile")
}

/// `omniroute_switch_combo`: activates or deactivates a combo (`ComboSwitched`).
pub async fn switch_combo(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: SwitchComboArgs,
) -> Result<ComboChangeOut, ApiError> {
    caller.require(&[Scope::WriteCombos])?;
    let cfg = engine
        .patch_combo(&args.combo_id, Some(args.active), None, &caller.actor())
        .await
        .map_err(combo_field)?;
    combo_out(&cfg, &args.combo_id)
}

/// The body of `PATCH /api/combos/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComboPatch {
    pub active: Option<bool>,
    pub strategy: Option<StrategyName>,
}

/// `PATCH /api/combos/{id}`: a combo's active flag and/or strategy, in one recorded change.
pub async fn patch_combo(
    engine: &Arc<Engine>,
    caller: &Caller,
    id: &str,
    p: ComboPatch,
) -> Result<ComboChangeOut, ApiError> {
    caller.require(&[Scope::WriteCombos])?;
    let cfg = engine
        .patch_combo(
            id,
            p.active,
            p.strategy.map(StrategyName::core),
            &caller.actor(),
        )
        .await?;
    combo_out(&cfg, id)
}

/// `omniroute_set_routing_strategy`: a combo's strategy, and its weights for `weighted`
/// (`StrategySet`).
pub async fn set_routing_strategy(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: SetRoutingStrategyArgs,
) -> Result<ComboChangeOut, ApiError> {
    caller.require(&[Scope::WriteCombos])?;
    let cfg = engine
        .set_combo_routing(
            &args.combo_id,
            args.strategy.core(),
            args.weights.as_ref(),
            &caller.actor(),
        )
        .await
        .map_err(combo_field)?;
    combo_out(&cfg, &args.combo_id)
}

/// `omniroute_set_budget_guard`: the guard the request path enforces for a session
/// (`BudgetGuardSet`).
pub async fn set_budget_guard(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: SetBudgetGuardArgs,
) -> Result<BudgetGuardOut, ApiError> {
    caller.require(&[Scope::WriteBudget])?;
    // The id is stored in the log (`BudgetGuardSet`): the one session-id validator.
    crate::limits::session_id(&args.session_id, "sessionId")?;
    if !(args.max_cost_usd.is_finite() && args.max_cost_usd >= 0.0) {
        return Err(ApiError::bad(
            format!(
                "maxCostUsd must be a number of dollars, 0 or more (got {})",
                args.max_cost_usd
            ),
            Some("maxCostUsd"),
        ));
    }
    match (args.action, args.degrade_to_tier) {
        (_, Some(t)) if t > MAX_TIER => {
            return Err(ApiError::bad(
                format!("degradeToTier must be 0 to {MAX_TIER} (got {t})"),
                Some("degradeToTier"),
            ));
        }
        (BudgetActionName::Degrade, None) => {
            return Err(ApiError::bad(
                format!("action \"degrade\" needs degradeToTier (0 to {MAX_TIER})"),
                Some("degradeToTier"),
            ));
        }
        _ => {}
    }
    let g = engine
        .set_budget(
            &args.session_id,
            args.max_cost_usd,
            args.action.core(),
            args.degrade_to_tier,
            &caller.actor(),
        )
        .await?;
    Ok(BudgetGuardOut {
        session_id: args.session_id,
        limit_usd: usd(g.limit_micros),
        spent_usd: usd(g.spent_micros),
        reserved_usd: usd(g.reserved_micros),
        left_usd: usd(g.left()),
        action: BudgetActionName::of(g.action),
        degrade_to_tier: g.degrade_to_tier,
    })
}

/// `omniroute_set_resilience_profile`: applies a profile to the running config
/// (`ResilienceProfile`) and answers the numbers now in force.
pub async fn set_resilience_profile(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: SetResilienceArgs,
) -> Result<ResilienceOut, ApiError> {
    caller.require(&[Scope::WriteResilience])?;
    let cfg = engine
        .set_resilience_profile(args.profile.core(), &caller.actor())
        .await?;
    let r = cfg.resilience;
    Ok(ResilienceOut {
        config_version: cfg.version().to_string(),
        profile: ProfileName::of(r.profile),
        breaker_failures: r.breaker_failures,
        breaker_window_ms: r.breaker_window_ms,
        breaker_cooldown_ms: r.breaker_cooldown_ms,
        max_retries: r.max_retries,
        backoff_base_ms: r.backoff_base_ms,
        backoff_max_ms: r.backoff_max_ms,
        ttft_timeout_ms: r.ttft_timeout_ms,
        default_cooldown_ms: r.default_cooldown_ms,
    })
}

/// `omniroute_check_quota`: per provider, what its current window used (from the log's cost read
/// model), the configured limits and what is left, when the window resets, and any rate-limit
/// cooldown Health holds. Reports only: routing does not enforce quotas.
pub async fn check_quota(
    engine: &Arc<Engine>,
    caller: &Caller,
    args: CheckQuotaArgs,
) -> Result<QuotaOut, ApiError> {
    caller.require(&[Scope::ReadQuota])?;
    engine.settled().await?;
    let cfg = engine.config();
    if let Some(p) = &args.provider
        && !cfg.providers.iter().any(|x| &x.id == p)
    {
        let known: Vec<&str> = cfg.providers.iter().map(|x| x.id.as_str()).collect();
        return Err(ApiError::bad(
            format!(
                "provider: no provider {p:?} in the config; valid: {}",
                known.join(", ")
            ),
            Some("provider"),
        ));
    }
    let now = engine.now_ms();
    let providers = cfg
        .providers
        .iter()
        .filter(|p| args.provider.as_ref().is_none_or(|want| *want == p.id))
        .map(|p| provider_quota(engine, p, now))
        .collect();
    Ok(QuotaOut {
        now_ms: now,
        providers,
    })
}

fn provider_quota(engine: &Engine, p: &config::Provider, now: u64) -> ProviderQuota {
    let window = p.quota.map_or(QuotaWindow::Day, |q| q.window);
    let (start, reset) = window.bounds(now);
    let cell = engine.projections.read(|m| {
        // Index 0 of the breakdown is the provider dimension (`cost::DIMS`).
        m.cost
            .range(start, reset)
            .by
            .first()
            .and_then(|by| by.get(&p.id).copied())
            .unwrap_or_default()
    });
    let t = cell.tokens;
    let used = Usage {
        requests: cell.attempts,
        tokens: t
            .input
            .saturating_add(t.cached_read)
            .saturating_add(t.cache_write)
            .saturating_add(t.reasoning)
            .saturating_add(t.output),
        usd: usd(cell.cost_micros),
    };
    let limits = Limits {
        requests: p.quota.and_then(|q| q.requests),
        tokens: p.quota.and_then(|q| q.tokens),
        usd: p.quota.and_then(|q| q.usd),
    };
    let percent_remaining = Remaining {
        requests: limits
            .requests
            .map(|l| left_pct(used.requests as f64, l as f64)),
        tokens: limits
            .tokens
            .map(|l| left_pct(used.tokens as f64, l as f64)),
        usd: limits.usd.map(|l| left_pct(used.usd, l)),
    };
    let cooldown = engine.provider_cooldown_until(&p.id);
    ProviderQuota {
        provider: p.id.clone(),
        configured: p.quota.is_some(),
        window: match window {
            QuotaWindow::Day => WindowName::Day,
            QuotaWindow::Month => WindowName::Month,
        },
        window_start_ms: start,
        resets_at_ms: reset,
        resets_at: rfc3339_ms(reset),
        used,
        limits,
        percent_remaining,
        cooldown_until_ms: cooldown,
        cooldown_until: cooldown.map(rfc3339_ms),
    }
}

/// Percent of `limit` not yet used, 0 to 100 (a limit of 0 has nothing left).
fn left_pct(used: f64, limit: f64) -> f64 {
    if limit <= 0.0 {
        return 0.0;
    }
    ((limit - used) / limit * 100.0).clamp(0.0, 100.0)
}

fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// An unknown combo is the caller's `comboId` (the engine reports it as not found).
fn combo_field(e: ApiError) -> ApiError {
    match e {
        ApiError::NotFound(m) => ApiError::bad(format!("comboId: {m}"), Some("comboId")),
        other => other,
    }
}

/// The combo `id` as `cfg` routes it.
fn combo_out(cfg: &Config, id: &str) -> Result<ComboChangeOut, ApiError> {
    let c = cfg
        .combo_index(id)
        .and_then(|i| cfg.combos.get(i))
        .ok_or_else(|| ApiError::Internal(format!("combo {id:?} vanished")))?;
    let targets = c
        .targets
        .iter()
        .filter_map(|t| {
            let m = cfg.model(t.model)?;
            Some(TargetState {
                model: m.id.clone(),
                provider: cfg.provider_of(m).map(|p| p.id.clone()).unwrap_or_default(),
                weight: t.weight,
            })
        })
        .collect();
    Ok(ComboChangeOut {
        combo: ComboState {
            id: c.id.clone(),
            strategy: StrategyName::of(c.strategy),
            active: c.active,
            targets,
        },
        config_version: cfg.version().to_string(),
    })
}
