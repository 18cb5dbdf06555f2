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
    UnknownModel(String),
    ComboInactive(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    BudgetExceeded {
        message: String,
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
    /// The event log could not be read (a damaged file): the message names the file and seq. Only
    /// admin endpoints read the log this way, so their callers (loopback or `manage`) see it.
    LogUnreadable(String),
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
            Self::UnknownModel(_) => (404, "invalid_request_error", "model_not_found"),
            Self::ComboInactive(_) => (400, "invalid_request_error", "combo_inactive"),
            Self::Unauthorized(_) => (401, "invalid_request_error", "invalid_api_key"),
            Self::Forbidden(_) => (403, "permission_error", "forbidden"),
            Self::NotFound(_) => (404, "invalid_request_error", "not_found"),
            Self::BudgetExceeded { .. } => (429, "insufficient_quota", "budget_exceeded"),
            Self::NoTarget { .. } => (503, "api_error", "no_target_available"),
            Self::AllFailed { .. } => (503, "api_error", "all_targets_failed"),
            Self::Upstream { status, .. } => {
                (*status, "invalid_request_error", "upstream_rejected")
            }
            Self::LogUnavailable => (503, "api_error", "event_log_unavailable"),
            Self::LogUnreadable(_) => (500, "api_error", "event_log_unreadable"),
            Self::Internal(_) => (500, "api_error", "internal_error"),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::BadRequest { message, .. } => message.clone(),
            Self::PayloadTooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            Self::UnknownModel(m) => format!("the model or combo `{m}` does not exist"),
            Self::ComboInactive(c) => format!("the combo `{c}` is not active"),
            Self::Unauthorized(m) | Self::Forbidden(m) | Self::NotFound(m) => m.clone(),
            Self::BudgetExceeded { message } => message.clone(),
            Self::NoTarget { reasons } => {
                format!("no target is available: {}", reasons.join("; "))
            }
            Self::AllFailed { attempts } => {
                format!("every target failed: {}", attempts.join("; "))
            }
            Self::Upstream { message, .. } => message.clone(),
            Self::LogUnavailable => {
                "the event log cannot be written, so requests are refused (log.on_failure = \"refuse\")"
                    .into()
            }
            Self::LogUnreadable(m) => m.clone(),
            Self::Internal(_) => "internal error".into(),
        }
    }

    /// The OpenAI error body.
    pub fn body(&self) -> Value {
        let (_, kind, code) = self.parts();
        let param = match self {
            Self::BadRequest { param, .. } => param.clone(),
            Self::UnknownModel(_) | Self::ComboInactive(_) => Some("model".into()),
            _ => None,
        };
        json!({ "error": { "message": self.message(), "type": kind, "param": param, "code": code } })
    }
}
