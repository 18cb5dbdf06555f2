//! Stage two of config loading: check the parsed file and build the runtime [`Config`]. Every
//! problem is collected (not just the first), each with its key path, line and a fix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Spanned;

use super::raw::{RawAutoWeights, RawCombo, RawConfig};
use super::*;
use crate::pricing::usd_per_million_to_pico;

const DEFAULT_LISTEN: &str = "127.0.0.1:20128";
const DEFAULT_DATA_DIR: &str = ".omniroute";
const DEFAULT_MAX_BODY: u64 = 4 * 1024 * 1024;
const DEFAULT_BATCH_WINDOW_MS: u64 = 10;
const MAX_BATCH_WINDOW_MS: u64 = 1_000;
/// Same default as [`crate::log::DEFAULT_CACHE_SIZE`]; the bounds keep a typo (GiB for MiB, or 0)
/// from becoming either an unbounded cache or none at all.
const DEFAULT_CACHE_SIZE_MB: u64 = (crate::log::DEFAULT_CACHE_SIZE / (1024 * 1024)) as u64;
const MAX_CACHE_SIZE_MB: u64 = 16 * 1024;
const DEFAULT_TIMEOUT_MS: u64 = 60_000;
const DEFAULT_CONTEXT_WINDOW: u32 = 128_000;
const DEFAULT_OUTPUT_TOKENS: u32 = 256;
const MAX_TIER: u8 = 3;
/// Upper bound of `breaker_failures`: the breaker keeps that many failure times per target.
pub const MAX_BREAKER_FAILURES: u32 = 64;

struct Problems<'a> {
    src: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn add(&mut self, key: impl Into<String>, line: Option<usize>, message: String, fix: &str) {
        self.list.push(Problem {
            key: key.into(),
            line,
            message,
            fix: fix.to_string(),
        });
    }

    fn line<T>(&self, s: &Spanned<T>) -> Option<usize> {
        Some(line_of(self.src, s.span().start))
    }
}

fn known(ids: impl Iterator<Item = String>) -> String {
    let mut v: Vec<String> = ids.collect();
    v.sort();
    if v.len() > 12 {
        v.truncate(12);
        v.push("...".into());
    }
    v.join(", ")
}

pub(super) fn validate(raw: RawConfig, src: &str, file: &str) -> Result<Config, ConfigError> {
    let mut p = Problems {
        src,
        list: Vec::new(),
    };

    let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        p.add(
            "server.listen",
            None,
            format!("{listen_text:?} is not a socket address"),
            "write host:port with a numeric host, e.g. \"127.0.0.1:20128\"",
        );
        SocketAddr::from(([127, 0, 0, 1], 20128))
    });
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    if max_body_bytes == 0 {
        p.add(
            "server.max_body_bytes",
            None,
            "must be greater than 0".into(),
            "omit it for the default of 4 MiB",
        );
    }
    for (key, v) in [
        (
            "server.header_read_timeout_ms",
            raw.server.header_read_timeout_ms,
        ),
        (
            "server.body_read_timeout_ms",
            raw.server.body_read_timeout_ms,
        ),
    ] {
        if let Some(ms) = v.filter(|ms| *ms == 0 || *ms > Server::MAX_READ_TIMEOUT_MS) {
            p.add(
                key,
                None,
                format!(
                    "{ms} ms is not from 1 to {} ms",
                    Server::MAX_READ_TIMEOUT_MS
                ),
                "omit it for the default (10000 for headers, 30000 for a body)",
            );
        }
    }
    if raw.server.max_connections == Some(0) {
        p.add(
            "server.max_connections",
            None,
            "0 connections would serve nobody".into(),
            "omit it for the default of 1024, or give a number of connections, 1 or more",
        );
    }
    let server = Server {
        listen,
        data_dir: raw
            .server
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        max_body_bytes,
        header_read_timeout_ms: raw.server.header_read_timeout_ms,
        body_read_timeout_ms: raw.server.body_read_timeout_ms,
        max_connections: raw.server.max_connections,
    };
    let batch_window_ms = raw.log.batch_window_ms.unwrap_or(DEFAULT_BATCH_WINDOW_MS);
    if batch_window_ms > MAX_BATCH_WINDOW_MS {
        p.add(
            "log.batch_window_ms",
            None,
            format!("{batch_window_ms} ms is more than the {MAX_BATCH_WINDOW_MS} ms allowed"),
            "use a few milliseconds (default 10): it is the most a power loss can take",
        );
    }
    let cache_size_mb = raw.log.cache_size_mb.unwrap_or(DEFAULT_CACHE_SIZE_MB);
    if !(1..=MAX_CACHE_SIZE_MB).contains(&cache_size_mb) {
        p.add(
            "log.cache_size_mb",
            None,
            format!("{cache_size_mb} MiB is outside 1..={MAX_CACHE_SIZE_MB}"),
            "write the log's cache size in MiB (default 32); the OS page cache holds the file anyway",
        );
    }
    let log = LogConfig {
        durability: raw.log.durability.unwrap_or(Durability::Batched),
        store_bodies: raw.log.store_bodies.unwrap_or(false),
        on_failure: raw.log.on_failure.unwrap_or(OnFailure::Refuse),
        batch_window_ms,
        cache_size_mb,
    };

    let providers = providers(&raw, &mut p);
    let provider_ix: HashMap<&str, usize> = providers
        .iter()
        .enumerate()
        .map(|(i, pr)| (pr.id.as_str(), i))
        .collect();
    let models = models(&raw, &provider_ix, &mut p);
    let model_ix: HashMap<&str, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();

    let default_auto =
        auto_weights(raw.router.auto_weights, "router.auto_weights", &mut p).unwrap_or_default();
    let combos = combos(&raw.combos, &model_ix, default_auto, &mut p);

    let resilience = resilience(&raw, &mut p);
    let default_output_tokens = raw
        .router
        .default_output_tokens
        .unwrap_or(DEFAULT_OUTPUT_TOKENS);
    if default_output_tokens == 0 {
        p.add(
            "router.default_output_tokens",
            None,
            "must be greater than 0".into(),
            "omit it for the default of 256",
        );
    }

    if !p.list.is_empty() {
        return Err(ConfigError {
            file: file.to_string(),
            problems: p.list,
        });
    }
    let mut config = Config {
        server,
        log,
        providers,
        models,
        combos,
        resilience,
        router: RouterConfig {
            auto_weights: default_auto,
            default_output_tokens,
        },
        version: Hash32::default(),
        model_ix: HashMap::new(),
        combo_ix: HashMap::new(),
    };
    config.reindex();
    Ok(config)
}

fn providers(raw: &RawConfig, p: &mut Problems<'_>) -> Vec<Provider> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, rp) in raw.providers.iter().enumerate() {
        let key = format!("providers[{i}]");
        let id = rp.id.get_ref();
        let line = p.line(&rp.id);
        if id.is_empty() {
            p.add(
                format!("{key}.id"),
                line,
                "is empty".into(),
                "give every provider a unique id",
            );
        } else if let Some(first) = seen.insert(id, i) {
            p.add(
                format!("{key}.id"),
                line,
                format!("duplicate provider id {id:?} (also providers[{first}])"),
                "give every provider a unique id",
            );
        }
        let base_url = match (&rp.base_url, rp.kind) {
            (Some(u), _) => u.clone(),
            (None, ProviderKind::Openai) => "https://api.openai.com/v1".into(),
            (None, ProviderKind::Anthropic) => "https://api.anthropic.com/v1".into(),
            (None, ProviderKind::Mock) => "mock://".into(),
        };
        if rp.kind != ProviderKind::Mock
            && !(base_url.starts_with("http://") || base_url.starts_with("https://"))
        {
            p.add(
                format!("{key}.base_url"),
                line,
                format!("{base_url:?} is not an http(s) URL"),
                "write the API root, e.g. \"https://api.openai.com/v1\"",
            );
        }
        let timeout_ms = rp.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 {
            p.add(
                format!("{key}.timeout_ms"),
                line,
                "must be greater than 0".into(),
                "omit it for the default of 60000",
            );
        }
        let failure_rate = rp.failure_rate.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&failure_rate) {
            p.add(
                format!("{key}.failure_rate"),
                line,
                format!("{failure_rate} is outside 0..=1"),
                "write a share between 0.0 and 1.0",
            );
        }
        let quota = rp
            .quota
            .as_ref()
            .map(|q| quota(q, &format!("{key}.quota"), line, p));
        out.push(Provider {
            id: id.clone(),
            kind: rp.kind,
            base_url,
            api_key_env: rp.api_key_env.clone(),
            timeout_ms,
            latency_ms: rp.latency_ms.unwrap_or(0),
            failure_rate,
            enabled: rp.enabled.unwrap_or(true),
            quota,
        });
    }
    out
}

/// A provider's quota: at least one limit, and a dollar limit that is a finite amount.
fn quota(q: &super::raw::RawQuota, key: &str, line: Option<usize>, p: &mut Problems<'_>) -> Quota {
    if q.requests.is_none() && q.tokens.is_none() && q.usd.is_none() {
        p.add(
            key,
            line,
            "sets no limit".into(),
            "give at least one of requests, tokens or usd, e.g. quota = { usd = 50.0, window = \"day\" }, or remove quota",
        );
    }
    if let Some(usd) = q.usd
        && !(usd.is_finite() && usd >= 0.0)
    {
        p.add(
            format!("{key}.usd"),
            line,
            format!("{usd} is not an amount of dollars"),
            "write a number of dollars, 0 or more, e.g. usd = 50.0",
        );
    }
    Quota {
        requests: q.requests,
        tokens: q.tokens,
        usd: q.usd,
        window: q.window.unwrap_or(QuotaWindow::Day),
    }
}

fn models(raw: &RawConfig, provider_ix: &HashMap<&str, usize>, p: &mut Problems<'_>) -> Vec<Model> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, rm) in raw.models.iter().enumerate() {
        let key = format!("models[{i}]");
        let id = rm.id.get_ref();
        let line = p.line(&rm.id);
        if id.is_empty() {
            p.add(
                format!("{key}.id"),
                line,
                "is empty".into(),
                "give every model a unique id",
            );
        } else if let Some(first) = seen.insert(id, i) {
            p.add(
                format!("{key}.id"),
                line,
                format!("duplicate model id {id:?} (also models[{first}])"),
                "give every model a unique id; the same upstream model can appear under two ids",
            );
        }
        let provider = provider_ix
            .get(rm.provider.as_str())
            .copied()
            .unwrap_or_else(|| {
                p.add(
                    format!("{key}.provider"),
                    line,
                    format!("unknown provider {:?}", rm.provider),
                    &format!(
                        "use the id of a [[providers]] entry (known: {})",
                        known(provider_ix.keys().map(|k| k.to_string()))
                    ),
                );
                0
            });
        let tier = rm.tier.unwrap_or(1);
        if tier > MAX_TIER {
            p.add(
                format!("{key}.tier"),
                line,
                format!("tier {tier} is above {MAX_TIER}"),
                "use 0 (free) to 3 (premium)",
            );
        }
        let context_window = rm.context_window.unwrap_or(DEFAULT_CONTEXT_WINDOW);
        if context_window == 0 {
            p.add(
                format!("{key}.context_window"),
                line,
                "must be greater than 0".into(),
                "write the model's context size in tokens",
            );
        }
        let capabilities = rm
            .capabilities
            .as_deref()
            .unwrap_or(&[Capability::Chat])
            .iter()
            .fold(0u8, |acc, c| acc | c.bit());
        let price = rm.price.as_ref().map(|rp| {
            let mut field = |name: &str, usd: f64| {
                usd_per_million_to_pico(usd).unwrap_or_else(|| {
                    p.add(
                        format!("{key}.price.{name}"),
                        line,
                        format!("{usd} is not a valid price"),
                        "prices are USD per 1M tokens, 0 or more; omit `price` for an unpriced model",
                    );
                    0
                })
            };
            let input = field("input", rp.input);
            let output = field("output", rp.output);
            Price {
                input,
                output,
                cached_read: rp.cached_read.map(|v| field("cached_read", v)).unwrap_or(input),
                cache_write: rp.cache_write.map(|v| field("cache_write", v)).unwrap_or(input),
                reasoning: rp.reasoning.map(|v| field("reasoning", v)).unwrap_or(output),
            }
        });
        out.push(Model {
            id: id.clone(),
            provider,
            upstream: rm.upstream.clone().unwrap_or_else(|| id.clone()),
            tier,
            context_window,
            capabilities,
            price,
            enabled: rm.enabled.unwrap_or(true),
        });
    }
    out
}

fn auto_weights(
    raw: Option<RawAutoWeights>,
    key: &str,
    p: &mut Problems<'_>,
) -> Option<AutoWeights> {
    let r = raw?;
    let d = AutoWeights::default();
    let w = AutoWeights {
        cost: r.cost.unwrap_or(d.cost),
        latency: r.latency.unwrap_or(d.latency),
        success: r.success.unwrap_or(d.success),
        circuit: r.circuit.unwrap_or(d.circuit),
        quota: r.quota.unwrap_or(d.quota),
    };
    let all = [w.cost, w.latency, w.success, w.circuit, w.quota];
    if all.iter().any(|v| !v.is_finite() || *v < 0.0) {
        p.add(
            key,
            None,
            "weights must be finite and 0 or more".into(),
            "write weights such as cost = 0.3, latency = 0.3",
        );
    } else if all.iter().all(|v| *v == 0.0) {
        p.add(
            key,
            None,
            "all weights are 0".into(),
            "give at least one factor a weight above 0",
        );
    }
    Some(w)
}

/// Expands combo `ci` into model targets, following combos named as targets.
fn expand(
    ci: usize,
    raw: &[RawCombo],
    combo_ix: &HashMap<&str, usize>,
    model_ix: &HashMap<&str, usize>,
    stack: &mut Vec<usize>,
    p: &mut Problems<'_>,
) -> Vec<Target> {
    stack.push(ci);
    let rc = &raw[ci];
    let mut out = Vec::new();
    for (j, t) in rc.targets.iter().enumerate() {
        let key = format!("combos[{ci}].targets[{j}].model");
        let weight = t.weight.unwrap_or(1);
        if let Some(&m) = model_ix.get(t.model.as_str()) {
            out.push(Target { model: m, weight });
        } else if let Some(&inner) = combo_ix.get(t.model.as_str()) {
            if let Some(pos) = stack.iter().position(|&c| c == inner) {
                let chain: Vec<&str> = stack[pos..]
                    .iter()
                    .chain(std::iter::once(&inner))
                    .map(|&c| raw[c].id.get_ref().as_str())
                    .collect();
                let message = if inner == ci {
                    format!("combo {:?} references itself", rc.id.get_ref())
                } else {
                    format!(
                        "combos reference each other in a cycle: {}",
                        chain.join(" -> ")
                    )
                };
                p.add(
                    key,
                    p.line(&rc.id),
                    message,
                    "a combo's targets must not lead back to it",
                );
            } else {
                for t in expand(inner, raw, combo_ix, model_ix, stack, p) {
                    out.push(Target {
                        model: t.model,
                        weight: t.weight.saturating_mul(weight),
                    });
                }
            }
        } else {
            p.add(
                key,
                p.line(&rc.id),
                format!("unknown model {:?}", t.model),
                &format!(
                    "add a [[models]] entry with this id, or use a known model or combo (models: {})",
                    known(model_ix.keys().map(|k| k.to_string()))
                ),
            );
        }
    }
    stack.pop();
    out
}

fn combos(
    raw: &[RawCombo],
    model_ix: &HashMap<&str, usize>,
    default_auto: AutoWeights,
    p: &mut Problems<'_>,
) -> Vec<Combo> {
    let mut combo_ix: HashMap<&str, usize> = HashMap::new();
    for (i, rc) in raw.iter().enumerate() {
        let id = rc.id.get_ref().as_str();
        let line = p.line(&rc.id);
        if id.is_empty() {
            p.add(
                format!("combos[{i}].id"),
                line,
                "is empty".into(),
                "give every combo a unique id",
            );
        } else if model_ix.contains_key(id) {
            p.add(
                format!("combos[{i}].id"),
                line,
                format!("{id:?} is both a combo id and a model id"),
                "rename the combo: a client's `model` must name exactly one of them",
            );
        } else if let Some(first) = combo_ix.insert(id, i) {
            p.add(
                format!("combos[{i}].id"),
                line,
                format!("duplicate combo id {id:?} (also combos[{first}])"),
                "give every combo a unique id",
            );
        }
    }
    let mut out = Vec::new();
    for (i, rc) in raw.iter().enumerate() {
        let key = format!("combos[{i}].targets");
        let line = p.line(&rc.id);
        let targets = expand(i, raw, &combo_ix, model_ix, &mut Vec::new(), p);
        if rc.targets.is_empty() {
            p.add(
                key.clone(),
                line,
                "has no targets".into(),
                "list at least one { model = \"...\" }",
            );
        } else if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
            p.add(
                key.clone(),
                line,
                "all weights are 0".into(),
                "give at least one target a weight above 0 (the default weight is 1)",
            );
        }
        let mut seen = std::collections::HashSet::new();
        for t in &targets {
            if !seen.insert(t.model) {
                p.add(
                    key.clone(),
                    line,
                    format!(
                        "model {:?} appears more than once (directly or through a nested combo)",
                        model_ix
                            .iter()
                            .find(|(_, v)| **v == t.model)
                            .map(|(k, _)| *k)
                            .unwrap_or("?")
                    ),
                    "list each model once per combo; use its weight to give it a larger share",
                );
            }
        }
        let auto = auto_weights(rc.auto_weights, &format!("combos[{i}].auto_weights"), p)
            .unwrap_or(default_auto);
        out.push(Combo {
            id: rc.id.get_ref().clone(),
            strategy: rc.strategy,
            targets,
            active: rc.active.unwrap_or(true),
            auto_weights: auto,
        });
    }
    out
}

fn resilience(raw: &RawConfig, p: &mut Problems<'_>) -> Resilience {
    let r = &raw.resilience;
    let base = Resilience::profile(r.profile.unwrap_or(Profile::Balanced));
    let out = Resilience {
        profile: base.profile,
        breaker_failures: r.breaker_failures.unwrap_or(base.breaker_failures),
        breaker_window_ms: r.breaker_window_ms.unwrap_or(base.breaker_window_ms),
        breaker_cooldown_ms: r.breaker_cooldown_ms.unwrap_or(base.breaker_cooldown_ms),
        max_retries: r.max_retries.unwrap_or(base.max_retries),
        backoff_base_ms: r.backoff_base_ms.unwrap_or(base.backoff_base_ms),
        backoff_max_ms: r.backoff_max_ms.unwrap_or(base.backoff_max_ms),
        ttft_timeout_ms: r.ttft_timeout_ms.unwrap_or(base.ttft_timeout_ms),
        default_cooldown_ms: r.default_cooldown_ms.unwrap_or(base.default_cooldown_ms),
    };
    if !(1..=MAX_BREAKER_FAILURES).contains(&out.breaker_failures) {
        p.add(
            "resilience.breaker_failures",
            None,
            format!(
                "{} is outside 1..={MAX_BREAKER_FAILURES}",
                out.breaker_failures
            ),
            "omit it to take the profile's value",
        );
    }
    for (name, v) in [
        ("breaker_window_ms", out.breaker_window_ms),
        ("breaker_cooldown_ms", out.breaker_cooldown_ms),
        ("ttft_timeout_ms", out.ttft_timeout_ms),
    ] {
        if v == 0 {
            p.add(
                format!("resilience.{name}"),
                None,
                "must be greater than 0".into(),
                "omit it to take the profile's value",
            );
        }
    }
    if out.backoff_base_ms > out.backoff_max_ms {
        p.add(
            "resilience.backoff_base_ms",
            None,
            format!(
                "{} is above backoff_max_ms ({})",
                out.backoff_base_ms, out.backoff_max_ms
            ),
            "make backoff_base_ms at most backoff_max_ms",
        );
    }
    out
}
