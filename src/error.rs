//! The one error type of the HTTP surface. One exhaustive match gives each variant its status,
//! OpenAI error `type` and `code`; internals are never shown on 5xx.

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Malformed or invalid request; `param` names the offending field.
    BadRequest {
        message: String,
        param: Option<String>,
    },
    PayloadTooLarge {
        limit: u64,
    },
    /// The client did not send its whole body within `server.body_read_timeout_ms`.
    RequestTimeout {
        limit_ms: u64,
    },
    UnknownModel(String),
    ComboInactive(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    BudgetExceeded {
        message: String,
    },
    /// No configured target could ever serve the request, because the prompt is longer than
    /// every target's context window.
    ContextLengthExceeded {
        message: String,
    },
    /// Every target that could serve is rate-limited or cooling down: retry after this many
    /// seconds (the soonest cooldown end, rounded up), sent as the `Retry-After` header.
    RateLimited {
        message: String,
        retry_after_s: u64,
    },
    /// Every candidate was excluded before any attempt.
    NoTarget {
        reasons: Vec<String>,
    },
    /// Every planned target failed.
    AllFailed {
        attempts: Vec<String>,
    },
    /// An upstream refused the request itself (a client error no other target would accept).
    Upstream {
        status: u16,
        message: String,
    },
    LogUnavailable,
    /// The request's events could not be committed, and its answer had to wait for them.
    NotRecorded,
    /// The client went away before its answer; recorded as 499, never sent to anyone.
    ClientClosed,
    /// The event log could not be read (a damaged file): the message names the file and seq. Only
    /// admin endpoints read the log this way, so their callers (loopback or `manage`) see it.
    LogUnreadable(String),
    /// A heavy admin job of this kind is already running (one replay at a time): retry when it
    /// ends.
    Busy(String),
    Internal(String),
}

impl ApiError {
    pub fn bad(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    /// (HTTP status, OpenAI error type, code).
    pub fn parts(&self) -> (u16, &'static str, &'static str) {
        match self {
            Self::BadRequest { .. } => (400, "invalid_request_error", "invalid_request"),
            Self::PayloadTooLarge { .. } => (413, "invalid_request_error", "payload_too_large"),
            Self::RequestTimeout { .. } => (408, "invalid_request_error", "request_timeout"),
            Self::UnknownModel(_) => (404, "invalid_request_error", "model_not_found"),
            Self::ComboInactive(_) => (400, "invalid_request_error", "combo_inactive"),
            Self::Unauthorized(_) => (401, "invalid_request_error", "invalid_api_key"),
            Self::Forbidden(_) => (403, "permission_error", "forbidden"),
            Self::NotFound(_) => (404, "invalid_request_error", "not_found"),
            Self::BudgetExceeded { .. } => (429, "insufficient_quota", "budget_exceeded"),
            Self::ContextLengthExceeded { .. } => {
                (400, "invalid_request_error", "context_length_exceeded")
            }
            Self::RateLimited { .. } => (429, "rate_limit_error", "rate_limit_exceeded"),
            Self::NoTarget { .. } => (503, "api_error", "no_target_available"),
            Self::AllFailed { .. } => (503, "api_error", "all_targets_failed"),
            Self::Upstream { status, .. } => {
                (*status, "invalid_request_error", "upstream_rejected")
            }
            Self::LogUnavailable => (503, "api_error", "event_log_unavailable"),
            Self::NotRecorded => (503, "api_error", "event_log_unavailable"),
            Self::ClientClosed => (499, "api_error", "client_closed"),
            Self::LogUnreadable(_) => (500, "api_error", "event_log_unreadable"),
            Self::Busy(_) => (429, "rate_limit_error", "busy"),
            Self::Internal(_) => (500, "api_error", "internal_error"),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::BadRequest { message, .. } => message.clone(),
            Self::PayloadTooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            Self::RequestTimeout { limit_ms } => format!(
                "the request body did not arrive within {limit_ms} ms \
                 (server.body_read_timeout_ms)"
            ),
            Self::UnknownModel(m) => format!("the model or combo `{m}` does not exist"),
            Self::ComboInactive(c) => format!("the combo `{c}` is not active"),
            Self::Unauthorized(m) | Self::Forbidden(m) | Self::NotFound(m) => m.clone(),
            Self::BudgetExceeded { message }
            | Self::ContextLengthExceeded { message }
            | Self::RateLimited { message, .. } => message.clone(),
            Self::NoTarget { reasons } => {
                format!("no target is available: {}", reasons.join("; "))
            }
            Self::AllFailed { attempts } => {
                format!("every target failed: {}", attempts.join("; "))
            }
            Self::Upstream { message, .. } => message.clone(),
            // Not "requests are refused": this also answers a strict-mode request whose commit
            // failed, or an admin read that waits for the log, under either on_failure setting.
            Self::LogUnavailable => "the event log cannot be written right now (disk full or I/O \
                error; see /api/health), so this request was not served. The gateway retries the \
                log by itself; whether requests are refused meanwhile is set by log.on_failure"
                .into(),
            Self::NotRecorded => {
                "the answer is withheld: this request could not be recorded in the event log, and \
                 its answer may only be sent once recorded (strict durability, or a session with \
                 a budget guard); retry later"
                    .into()
            }
            Self::ClientClosed => "the client closed the connection".into(),
            Self::LogUnreadable(m) | Self::Busy(m) => m.clone(),
            Self::Internal(_) => "internal error".into(),
        }
    }

    /// Seconds the client should wait before retrying, sent as `Retry-After` (SDKs honour it).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> Value {
        let (_, kind, code) = self.parts();
        let param = match self {
            Self::BadRequest { param, .. } => param.clone(),
            Self::UnknownModel(_) | Self::ComboInactive(_) => Some("model".into()),
            Self::ContextLengthExceeded { .. } => Some("messages".into()),
            _ => None,
        };
        json!({ "error": { "message": self.message(), "type": kind, "param": param, "code": code } })
    }
}
