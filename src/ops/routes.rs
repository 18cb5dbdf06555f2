//! The admin API's route table: each operation's method and path, used both by the gateway's
//! router and by the CLI when it asks the server that owns the data dir (one table, not a URL
//! string in each command).

/// An admin API route. `{name}` segments are filled in order by [`Route::at`].
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

const fn get(path: &'static str) -> Route {
    Route {
        method: Method::Get,
        path,
    }
}

const fn post(path: &'static str) -> Route {
    Route {
        method: Method::Post,
        path,
    }
}

pub const CHAT: Route = post("/v1/chat/completions");
pub const MODELS: Route = get("/v1/models");
pub const HEALTH: Route = get("/api/health");
/// Liveness (no auth): 200 while the process serves.
pub const LIVE: Route = get("/health");
/// Readiness (no auth): 503 while the log fails or no target can serve.
pub const READY: Route = get("/ready");
pub const MODEL_CATALOG: Route = get("/api/models/catalog");
pub const SET_BUDGET: Route = post("/api/sessions/{id}/budget");
pub const SESSION: Route = get("/api/sessions/{id}");
pub const EXPLAIN: Route = get("/api/requests/{id}/explain");
pub const COST: Route = get("/api/usage/cost");
pub const REPRICE: Route = post("/api/usage/cost/reprice");
pub const PROVIDERS: Route = get("/api/providers/metrics");
pub const COMBOS: Route = get("/api/combos");
pub const PATCH_COMBO: Route = Route {
    method: Method::Patch,
    path: "/api/combos/{id}",
};
pub const COMBO_ROUTING: Route = Route {
    method: Method::Put,
    path: "/api/combos/{id}/routing",
};
pub const TEST_COMBO: Route = post("/api/combos/{id}/test");
pub const BEST_COMBO: Route = get("/api/combos/best");
pub const PROVIDER_METRICS: Route = get("/api/providers/{id}/metrics");
pub const QUOTA: Route = get("/api/quota");
pub const RESILIENCE: Route = Route {
    method: Method::Put,
    path: "/api/resilience",
};
pub const SIMULATE: Route = post("/api/simulate");
pub const AUDIT: Route = get("/api/audit/stats");
pub const LOG_STATS: Route = get("/api/log/stats");
pub const LOG_VERIFY: Route = get("/api/log/verify");
pub const LOG_DECISIONS: Route = get("/api/log/decisions");
pub const LOG_TAIL: Route = get("/api/log/tail");
pub const REPLAY: Route = post("/api/replay");
pub const KEYS: Route = get("/api/keys");
pub const CREATE_KEY: Route = post("/api/keys");
pub const REVOKE_KEY: Route = Route {
    method: Method::Delete,
    path: "/api/keys/{id}",
};

impl Route {
    /// The path with its `{name}` segments replaced, in order, by `args` (%-encoded).
    pub fn at(&self, args: &[&str]) -> String {
        let mut out = String::with_capacity(self.path.len() + 32);
        let mut args = args.iter();
        for seg in self.path.split('/').skip(1) {
            out.push('/');
            if seg.starts_with('{') && seg.ends_with('}') {
                out.push_str(&enc(args.next().copied().unwrap_or("")));
            } else {
                out.push_str(seg);
            }
        }
        out
    }
}

/// `%`-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_filled_in_order_and_encoded() {
        assert_eq!(EXPLAIN.at(&["01AB"]), "/api/requests/01AB/explain");
        assert_eq!(SESSION.at(&["a b/c"]), "/api/sessions/a%20b%2Fc");
        assert_eq!(HEALTH.at(&[]), "/api/health");
    }
}
