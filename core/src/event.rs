//! The event schema: every fact the gateway records. Names here are the contract (DESIGN.md section 2).
//!
//! Encoded with rkyv (`unaligned` format, so archived events can be read in place from any redb slice).
//! Evolution rules, enforced by the fixture test in `tests/fixture_v1.rs`:
//! - never change the layout of a type that has been written: add a new variant (`...V2`) instead;
//! - every [`Event`] variant holds its payload boxed, so the archived `Event` is always a tag plus a
//!   relative pointer and adding a variant never changes the size of the root object;
//! - unit enums (`ErrorClass`, `Strategy`, ...) may gain variants only at the end.

use rkyv::{Archive, Deserialize as RkyvDeserialize, Serialize as RkyvSerialize};
use serde::Serialize;

/// Schema version of records written before `RouteDecidedV2` and `ConfigChangedV2` existed.
pub const SCHEMA_V1: u16 = 1;
/// Schema version written in every record envelope by this build: v1 plus the `...V2` variants.
/// A build reads every version up to its own.
pub const SCHEMA_V2: u16 = 2;
/// The schema version this build writes.
pub const SCHEMA: u16 = SCHEMA_V2;

/// A request id: a 128-bit ULID, shown in its 26-character Crockford form.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RequestId(pub u128);

impl RequestId {
    /// Parses the 26-character ULID form.
    pub fn parse(s: &str) -> Result<Self, ulid::DecodeError> {
        ulid::Ulid::from_string(s).map(|u| Self(u.0))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&ulid::Ulid(self.0), f)
    }
}

impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        RequestId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl ArchivedRequestId {
    pub fn get(&self) -> RequestId {
        RequestId(self.0.to_native())
    }
}

/// A blake3 digest: config versions, body hashes, api-key ids, chain links. Shown as lowercase hex.
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

impl std::fmt::Display for Hash32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Hash32 {
    /// Parses the 64-character lowercase or uppercase hex form.
    pub fn parse_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
        }
        Some(Self(out))
    }
}

impl<'de> serde::Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash32::parse_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Money in integer micro-dollars. `Unpriced` (no price known) is distinct from a price of zero.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
)]
#[rkyv(derive(Debug))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Cost {
    #[default]
    Unpriced,
    Micros(u64),
}

/// Token counts in disjoint buckets: a token is counted in exactly one of them.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Tokens {
    /// Prompt tokens not served from a cache.
    pub input: u64,
    pub cached_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    /// Completion tokens excluding reasoning.
    pub output: u64,
}

/// A routable target: a provider and the model id clients use.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Default,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Target {
    pub provider: String,
    pub model: String,
}

/// The typed class of a failed attempt. Append new classes at the end only.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[rkyv(compare(PartialEq))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ErrorClass {
    Timeout,
    RateLimited,
    QuotaExhausted,
    Overloaded,
    ServerError,
    ContextOverflow,
    Auth,
    BadRequest,
    Network,
    StreamCut,
}

/// A routing strategy. Append new strategies at the end only.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Strategy {
    Priority,
    Weighted,
    RoundRobin,
    LeastLatency,
    Cost,
    LeastBusy,
    Auto,
    Tiered,
}

/// Why a candidate was left out of the plan. Append new reasons at the end only.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ExclusionReason {
    CircuitOpen,
    CoolingDown,
    Budget,
    Quota,
    Capability,
    ContextWindow,
    Inactive,
    Disabled,
}

/// Circuit-breaker state of a target.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// What a budget guard does when a session would exceed it.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum BudgetAction {
    Block,
    Degrade,
    Alert,
}

/// What kind of configuration change a `ConfigChanged` records.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum ConfigChangeKind {
    /// The process started with (or reloaded) a config.
    Loaded,
    ComboSwitched,
    StrategySet,
    ResilienceProfile,
    ProviderAdded,
    ProviderRemoved,
    PricingSynced,
    Other,
}

/// One named input of a candidate's score.
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Debug,
    PartialEq,
    Default,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Factor {
    pub name: String,
    #[cfg_attr(test, proptest(strategy = "crate::event::tests::finite()"))]
    pub value: f64,
    #[cfg_attr(test, proptest(strategy = "crate::event::tests::finite()"))]
    pub weight: f64,
}

/// Why a candidate was excluded, with a human-readable detail (e.g. "open until 12:03:11").
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Exclusion {
    pub reason: ExclusionReason,
    pub detail: String,
}

/// A target the router considered, scored or excluded.
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Candidate {
    pub target: Target,
    /// Tier of the model (0 free .. 3 premium).
    pub tier: u8,
    #[cfg_attr(test, proptest(strategy = "crate::event::tests::finite()"))]
    pub score: f64,
    pub factors: Vec<Factor>,
    pub excluded: Option<Exclusion>,
}

// ---- request-scoped events --------------------------------------------------------------------

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RequestReceived {
    pub request_id: RequestId,
    pub config_version: Hash32,
    pub session_id: Option<String>,
    /// blake3 of the API key, never the key itself.
    pub api_key_id: Option<Hash32>,
    /// e.g. "/v1/chat/completions".
    pub endpoint: String,
    /// The `model` the client asked for: a combo id or a model id.
    pub requested: String,
    pub stream: bool,
    pub est_prompt_tokens: u32,
    pub max_tokens: Option<u32>,
    pub body_hash: Hash32,
    /// Whether the body was stored in the `blobs` table under `body_hash`.
    pub body_stored: bool,
    pub task_hint: Option<String>,
    pub min_tier: Option<u8>,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RouteDecided {
    pub request_id: RequestId,
    pub config_version: Hash32,
    pub combo: String,
    pub strategy: Strategy,
    /// Seed of the ChaCha8 RNG the decision drew from.
    pub seed: u64,
    pub candidates: Vec<Candidate>,
    /// The ordered plan, as indexes into `candidates`.
    pub plan: Vec<u16>,
    /// Probability with which the strategy picked `plan[0]` (1.0 for deterministic strategies).
    #[cfg_attr(test, proptest(strategy = "crate::event::tests::finite()"))]
    pub propensity: f64,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AttemptStarted {
    pub request_id: RequestId,
    pub config_version: Hash32,
    /// 1-based attempt number within the request.
    pub attempt: u16,
    pub target: Target,
    /// Model name sent upstream.
    pub upstream_model: String,
    pub timeout_ms: u64,
}

/// Why an attempt failed.
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AttemptError {
    pub class: ErrorClass,
    /// Cooldown the upstream asked for (Retry-After), in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// Short, redacted message.
    pub message: String,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AttemptFinished {
    pub request_id: RequestId,
    pub config_version: Hash32,
    pub attempt: u16,
    pub target: Target,
    /// Upstream HTTP status, if one was received.
    pub status: Option<u16>,
    pub latency_us: u64,
    /// Time to first token (streaming) or first byte.
    pub ttft_us: Option<u64>,
    /// Tokens billed for this attempt (a cut stream can still bill tokens).
    pub tokens: Tokens,
    pub cost: Cost,
    /// `None` when the attempt succeeded.
    pub error: Option<AttemptError>,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FallbackTriggered {
    pub request_id: RequestId,
    pub config_version: Hash32,
    /// The attempt that failed.
    pub attempt: u16,
    pub from: Target,
    pub to: Target,
    pub reason: ErrorClass,
}

/// The error a request finally returned to the client.
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FinalError {
    /// OpenAI-style error code, e.g. "all_targets_failed", "budget_exceeded".
    pub code: String,
    pub class: Option<ErrorClass>,
    pub message: String,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RequestCompleted {
    pub request_id: RequestId,
    pub config_version: Hash32,
    /// HTTP status returned to the client.
    pub status: u16,
    /// The target that served the response, when one did.
    pub target: Option<Target>,
    pub error: Option<FinalError>,
    pub total_latency_us: u64,
    pub ttft_us: Option<u64>,
    /// Sum over all attempts.
    pub tokens: Tokens,
    pub cost: Cost,
    pub attempts: u16,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CircuitChanged {
    pub config_version: Hash32,
    pub provider: String,
    /// `None` when the breaker covers the whole provider.
    pub model: Option<String>,
    pub from: CircuitState,
    pub to: CircuitState,
    pub reason: String,
    /// The request whose outcome tripped the change, if any.
    pub request_id: Option<RequestId>,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct BudgetGuardSet {
    pub session_id: String,
    pub limit: Cost,
    pub action: BudgetAction,
    pub degrade_to_tier: Option<u8>,
    pub actor: String,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct BudgetExceeded {
    pub request_id: RequestId,
    pub config_version: Hash32,
    pub session_id: String,
    pub limit: Cost,
    pub spent: Cost,
    pub reserved: Cost,
    pub action: BudgetAction,
    /// What the gateway did: "blocked", "degraded to tier 0", "served with alert".
    pub outcome: String,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ConfigChanged {
    /// Who changed it: "startup", "admin-api", "mcp:<key id>", "cli".
    pub actor: String,
    pub kind: ConfigChangeKind,
    /// Human-readable summary, e.g. "combo default: strategy priority -> weighted".
    pub detail: String,
    pub previous_version: Option<Hash32>,
    /// blake3 of the effective config after the change.
    pub config_version: Hash32,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ToolCalled {
    pub tool: String,
    pub caller_key_id: Option<Hash32>,
    pub scopes: Vec<String>,
    pub args_hash: Hash32,
    /// Redacted preview of the arguments.
    pub args_preview: String,
    pub duration_us: u64,
    pub ok: bool,
    pub error: Option<String>,
    /// First 200 characters of the output.
    pub output_preview: String,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct CacheHit {
    pub request_id: RequestId,
    pub config_version: Hash32,
    pub cache_kind: String,
    pub key_hash: Hash32,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct KeyCreated {
    /// blake3 of the key: the only form in which a key is ever stored.
    pub key_id: Hash32,
    pub name: String,
    pub scopes: Vec<String>,
}

#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct KeyRevoked {
    pub key_id: Hash32,
    pub actor: String,
}

/// Everything `decide` read from the request (the router's `RouteInput`, owned).
#[derive(
    Archive,
    RkyvSerialize,
    RkyvDeserialize,
    Serialize,
    serde::Deserialize,
    Clone,
    Debug,
    PartialEq,
    Eq,
    Default,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RouteInputRecord {
    pub requested: String,
    pub est_prompt_tokens: u32,
    /// The effective `max_tokens` (after a budget guard capped an unbounded request).
    pub max_tokens: Option<u32>,
    /// Capabilities the request needs (bit set of `Capability::bit`).
    pub required: u8,
    pub min_tier: Option<u8>,
    /// The highest tier a degrading budget guard allowed.
    pub max_tier: Option<u8>,
    pub budget_left_micros: Option<u64>,
}

/// A session's budget guard as the request's verdict saw it, and what the verdict did.
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct BudgetSeen {
    pub session_id: String,
    pub limit_micros: u64,
    pub action: BudgetAction,
    pub degrade_to_tier: Option<u8>,
    /// Spent and reserved by the session before this request.
    pub spent_micros: u64,
    pub reserved_micros: u64,
    /// This request's worst-case cost at full tier.
    pub worst_micros: u64,
    /// What this request reserved (0 when none).
    pub reserved_now_micros: u64,
}

/// `RouteDecided` with everything the decision read, so it can be derived again from the log
/// alone (`omniroute log verify --decisions`).
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RouteDecidedV2 {
    pub decided: RouteDecided,
    pub input: RouteInputRecord,
    /// The clock value `decide` ran at (also the record's `ts_ms`).
    pub now_ms: u64,
    /// Digest of the Health `decide` saw: the combo's targets and its round-robin cursor.
    pub health_digest: Hash32,
    /// The session's budget guard, when it has one.
    pub budget: Option<BudgetSeen>,
}

/// One field of the config that changed, by path (`combos.fast.strategy`: arrays of objects
/// with an `id` are keyed by it); values are canonical JSON, `None` when absent.
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ConfigFieldChange {
    pub path: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// `ConfigChanged` that says structurally what changed. Every version it names is stored in the
/// log's blobs under that version (its canonical JSON hashes to it).
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ConfigChangedV2 {
    /// Who changed it: "startup", "admin-api", "mcp:<key id>", "cli".
    pub actor: String,
    /// `Loaded` marks a process start.
    pub kind: ConfigChangeKind,
    pub detail: String,
    pub previous_version: Option<Hash32>,
    pub config_version: Hash32,
    /// Version of the config file as read (the base that runtime changes are layered on).
    pub file_version: Hash32,
    /// Previous effective config -> this one.
    pub changes: Vec<ConfigFieldChange>,
    /// At start-up: runtime changes carried over onto the file, and those dropped because the
    /// file itself changed the same field (`to` is then the file's value).
    pub kept: Vec<ConfigFieldChange>,
    pub dropped: Vec<ConfigFieldChange>,
}

/// Every event the log can hold. Payloads are boxed so the archived root keeps one size forever.
#[derive(
    Archive, RkyvSerialize, RkyvDeserialize, Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[rkyv(derive(Debug))]
#[serde(tag = "kind", content = "event")]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Event {
    RequestReceived(Box<RequestReceived>),
    RouteDecided(Box<RouteDecided>),
    AttemptStarted(Box<AttemptStarted>),
    AttemptFinished(Box<AttemptFinished>),
    FallbackTriggered(Box<FallbackTriggered>),
    RequestCompleted(Box<RequestCompleted>),
    CircuitChanged(Box<CircuitChanged>),
    BudgetGuardSet(Box<BudgetGuardSet>),
    BudgetExceeded(Box<BudgetExceeded>),
    ConfigChanged(Box<ConfigChanged>),
    ToolCalled(Box<ToolCalled>),
    CacheHit(Box<CacheHit>),
    KeyCreated(Box<KeyCreated>),
    KeyRevoked(Box<KeyRevoked>),
    RouteDecidedV2(Box<RouteDecidedV2>),
    ConfigChangedV2(Box<ConfigChangedV2>),
}

/// The kinds of [`Event`], in tag order; used for stats and filters.
pub const EVENT_KINDS: [&str; 16] = [
    "RequestReceived",
    "RouteDecided",
    "AttemptStarted",
    "AttemptFinished",
    "FallbackTriggered",
    "RequestCompleted",
    "CircuitChanged",
    "BudgetGuardSet",
    "BudgetExceeded",
    "ConfigChanged",
    "ToolCalled",
    "CacheHit",
    "KeyCreated",
    "KeyRevoked",
    "RouteDecidedV2",
    "ConfigChangedV2",
];

/// How many kinds schema v1 had (the first ones of [`EVENT_KINDS`]).
pub const EVENT_KINDS_V1: usize = 14;

macro_rules! per_variant {
    ($self:expr, $ty:ident, |$p:ident| $body:expr) => {
        match $self {
            $ty::RequestReceived($p) => $body,
            $ty::RouteDecided($p) => $body,
            $ty::AttemptStarted($p) => $body,
            $ty::AttemptFinished($p) => $body,
            $ty::FallbackTriggered($p) => $body,
            $ty::RequestCompleted($p) => $body,
            $ty::CircuitChanged($p) => $body,
            $ty::BudgetGuardSet($p) => $body,
            $ty::BudgetExceeded($p) => $body,
            $ty::ConfigChanged($p) => $body,
            $ty::ToolCalled($p) => $body,
            $ty::CacheHit($p) => $body,
            $ty::KeyCreated($p) => $body,
            $ty::KeyRevoked($p) => $body,
            $ty::RouteDecidedV2($p) => $body,
            $ty::ConfigChangedV2($p) => $body,
        }
    };
}

/// Which events belong to a request, i.e. are listed in the `request_index` table.
trait RequestScoped {
    fn request(&self) -> Option<RequestId>;
}

macro_rules! scoped {
    (always: $($t:ident / $at:ident),*; maybe: $($m:ident / $am:ident),*; never: $($n:ident / $an:ident),*) => {
        $(impl RequestScoped for $t { fn request(&self) -> Option<RequestId> { Some(self.request_id) } })*
        $(impl RequestScoped for $m { fn request(&self) -> Option<RequestId> { self.request_id } })*
        $(impl RequestScoped for $n { fn request(&self) -> Option<RequestId> { None } })*
        $(impl RequestScoped for $at { fn request(&self) -> Option<RequestId> { Some(self.request_id.get()) } })*
        $(impl RequestScoped for $am {
            fn request(&self) -> Option<RequestId> { self.request_id.as_ref().map(|r| r.get()) }
        })*
        $(impl RequestScoped for $an { fn request(&self) -> Option<RequestId> { None } })*
    };
}

scoped!(
    always: RequestReceived / ArchivedRequestReceived, RouteDecided / ArchivedRouteDecided,
        AttemptStarted / ArchivedAttemptStarted, AttemptFinished / ArchivedAttemptFinished,
        FallbackTriggered / ArchivedFallbackTriggered, RequestCompleted / ArchivedRequestCompleted,
        BudgetExceeded / ArchivedBudgetExceeded, CacheHit / ArchivedCacheHit;
    maybe: CircuitChanged / ArchivedCircuitChanged;
    never: BudgetGuardSet / ArchivedBudgetGuardSet, ConfigChanged / ArchivedConfigChanged,
        ConfigChangedV2 / ArchivedConfigChangedV2,
        ToolCalled / ArchivedToolCalled, KeyCreated / ArchivedKeyCreated,
        KeyRevoked / ArchivedKeyRevoked
);

impl RequestScoped for RouteDecidedV2 {
    fn request(&self) -> Option<RequestId> {
        Some(self.decided.request_id)
    }
}

impl RequestScoped for ArchivedRouteDecidedV2 {
    fn request(&self) -> Option<RequestId> {
        Some(self.decided.request_id.get())
    }
}

impl Event {
    /// The variant's name, as in [`EVENT_KINDS`].
    pub fn kind(&self) -> &'static str {
        EVENT_KINDS[self.kind_index()]
    }

    pub fn kind_index(&self) -> usize {
        per_variant_index(self)
    }

    /// The request this event belongs to, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        per_variant!(self, Event, |p| p.request())
    }
}

fn per_variant_index(e: &Event) -> usize {
    match e {
        Event::RequestReceived(_) => 0,
        Event::RouteDecided(_) => 1,
        Event::AttemptStarted(_) => 2,
        Event::AttemptFinished(_) => 3,
        Event::FallbackTriggered(_) => 4,
        Event::RequestCompleted(_) => 5,
        Event::CircuitChanged(_) => 6,
        Event::BudgetGuardSet(_) => 7,
        Event::BudgetExceeded(_) => 8,
        Event::ConfigChanged(_) => 9,
        Event::ToolCalled(_) => 10,
        Event::CacheHit(_) => 11,
        Event::KeyCreated(_) => 12,
        Event::KeyRevoked(_) => 13,
        Event::RouteDecidedV2(_) => 14,
        Event::ConfigChangedV2(_) => 15,
    }
}

fn archived_index(e: &ArchivedEvent) -> usize {
    match e {
        ArchivedEvent::RequestReceived(_) => 0,
        ArchivedEvent::RouteDecided(_) => 1,
        ArchivedEvent::AttemptStarted(_) => 2,
        ArchivedEvent::AttemptFinished(_) => 3,
        ArchivedEvent::FallbackTriggered(_) => 4,
        ArchivedEvent::RequestCompleted(_) => 5,
        ArchivedEvent::CircuitChanged(_) => 6,
        ArchivedEvent::BudgetGuardSet(_) => 7,
        ArchivedEvent::BudgetExceeded(_) => 8,
        ArchivedEvent::ConfigChanged(_) => 9,
        ArchivedEvent::ToolCalled(_) => 10,
        ArchivedEvent::CacheHit(_) => 11,
        ArchivedEvent::KeyCreated(_) => 12,
        ArchivedEvent::KeyRevoked(_) => 13,
        ArchivedEvent::RouteDecidedV2(_) => 14,
        ArchivedEvent::ConfigChangedV2(_) => 15,
    }
}

impl ArchivedEvent {
    pub fn kind(&self) -> &'static str {
        EVENT_KINDS[archived_index(self)]
    }

    pub fn kind_index(&self) -> usize {
        archived_index(self)
    }

    /// The request this event belongs to, if any (read in place).
    pub fn request_id(&self) -> Option<RequestId> {
        per_variant!(self, ArchivedEvent, |p| p.request())
    }

    /// The routing decision of a `RouteDecided` of either version.
    pub fn route_decided(&self) -> Option<&ArchivedRouteDecided> {
        match self {
            ArchivedEvent::RouteDecided(d) => Some(d),
            ArchivedEvent::RouteDecidedV2(d) => Some(&d.decided),
            _ => None,
        }
    }

    /// Deserializes into the owned form (allocates; prefer reading the archived form in place).
    pub fn to_owned_event(&self) -> Result<Event, rkyv::rancor::Error> {
        rkyv::deserialize::<Event, rkyv::rancor::Error>(self)
    }
}

impl ArchivedTokens {
    pub fn get(&self) -> Tokens {
        Tokens {
            input: self.input.to_native(),
            cached_read: self.cached_read.to_native(),
            cache_write: self.cache_write.to_native(),
            reasoning: self.reasoning.to_native(),
            output: self.output.to_native(),
        }
    }
}

impl ArchivedHash32 {
    pub fn get(&self) -> Hash32 {
        Hash32(self.0)
    }
}

impl ArchivedErrorClass {
    pub fn get(&self) -> ErrorClass {
        match self {
            ArchivedErrorClass::Timeout => ErrorClass::Timeout,
            ArchivedErrorClass::RateLimited => ErrorClass::RateLimited,
            ArchivedErrorClass::QuotaExhausted => ErrorClass::QuotaExhausted,
            ArchivedErrorClass::Overloaded => ErrorClass::Overloaded,
            ArchivedErrorClass::ServerError => ErrorClass::ServerError,
            ArchivedErrorClass::ContextOverflow => ErrorClass::ContextOverflow,
            ArchivedErrorClass::Auth => ErrorClass::Auth,
            ArchivedErrorClass::BadRequest => ErrorClass::BadRequest,
            ArchivedErrorClass::Network => ErrorClass::Network,
            ArchivedErrorClass::StreamCut => ErrorClass::StreamCut,
        }
    }
}

impl ArchivedBudgetAction {
    pub fn get(&self) -> BudgetAction {
        match self {
            ArchivedBudgetAction::Block => BudgetAction::Block,
            ArchivedBudgetAction::Degrade => BudgetAction::Degrade,
            ArchivedBudgetAction::Alert => BudgetAction::Alert,
        }
    }
}

impl ArchivedStrategy {
    pub fn get(&self) -> Strategy {
        match self {
            ArchivedStrategy::Priority => Strategy::Priority,
            ArchivedStrategy::Weighted => Strategy::Weighted,
            ArchivedStrategy::RoundRobin => Strategy::RoundRobin,
            ArchivedStrategy::LeastLatency => Strategy::LeastLatency,
            ArchivedStrategy::Cost => Strategy::Cost,
            ArchivedStrategy::LeastBusy => Strategy::LeastBusy,
            ArchivedStrategy::Auto => Strategy::Auto,
            ArchivedStrategy::Tiered => Strategy::Tiered,
        }
    }
}

impl ArchivedExclusionReason {
    pub fn get(&self) -> ExclusionReason {
        match self {
            ArchivedExclusionReason::CircuitOpen => ExclusionReason::CircuitOpen,
            ArchivedExclusionReason::CoolingDown => ExclusionReason::CoolingDown,
            ArchivedExclusionReason::Budget => ExclusionReason::Budget,
            ArchivedExclusionReason::Quota => ExclusionReason::Quota,
            ArchivedExclusionReason::Capability => ExclusionReason::Capability,
            ArchivedExclusionReason::ContextWindow => ExclusionReason::ContextWindow,
            ArchivedExclusionReason::Inactive => ExclusionReason::Inactive,
            ArchivedExclusionReason::Disabled => ExclusionReason::Disabled,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    /// Finite floats only: NaN would make equality-based round-trip checks meaningless.
    pub fn finite() -> impl Strategy<Value = f64> {
        prop::num::f64::NORMAL | prop::num::f64::ZERO
    }
}
