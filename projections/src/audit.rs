//! Audit stats of MCP tool calls (`ToolCalled`): per tool and per caller, calls, successes,
//! denials (a call refused for a missing scope: its error starts with [`DENIED`]), average
//! duration; tools ordered by calls.

use std::collections::BTreeMap;

use omniroute_core::event::{ArchivedEvent, Hash32};
use serde::{Deserialize, Serialize};

use crate::Rec;
use crate::arch;

/// How the error of a `ToolCalled` refused for a missing scope begins (written by the gateway's
/// MCP server), so denials are counted apart from tools that failed.
pub const DENIED: &str = "denied: ";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Audit {
    pub tools: BTreeMap<String, ToolStats>,
    /// By caller: the key id (hex), or `owner` for calls without a key.
    pub callers: BTreeMap<String, ToolStats>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct ToolStats {
    pub calls: u64,
    pub ok: u64,
    pub denied: u64,
    pub duration_us: u64,
}

impl ToolStats {
    fn add(&mut self, ok: bool, denied: bool, duration_us: u64) {
        self.calls += 1;
        self.ok += u64::from(ok);
        self.denied += u64::from(denied);
        self.duration_us += duration_us;
    }
}

impl Audit {
    pub(crate) fn apply(&mut self, r: &Rec<'_>) {
        if let ArchivedEvent::ToolCalled(t) = r.event {
            let denied = t
                .error
                .as_ref()
                .is_some_and(|e| e.as_str().starts_with(DENIED));
            let (ok, us) = (t.ok, t.duration_us.to_native());
            arch::with(&mut self.tools, t.tool.as_str(), |s| s.add(ok, denied, us));
            let caller = t
                .caller_key_id
                .as_ref()
                .map_or_else(|| "owner".to_string(), |k| Hash32(k.0).to_string());
            arch::with(&mut self.callers, caller.as_str(), |s| {
                s.add(ok, denied, us)
            });
        }
    }

    /// `GET /api/audit/stats`: tools and callers ordered by calls, most first.
    pub fn view(&self) -> AuditView {
        let mut total = ToolStats::default();
        let mut tools: Vec<ToolView> = self
            .tools
            .iter()
            .map(|(name, s)| {
                total.calls += s.calls;
                total.ok += s.ok;
                total.denied += s.denied;
                total.duration_us += s.duration_us;
                ToolView::of(name, s)
            })
            .collect();
        tools.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tool.cmp(&b.tool)));
        let mut callers: Vec<ToolView> = self
            .callers
            .iter()
            .map(|(name, s)| ToolView::of(name, s))
            .collect();
        callers.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tool.cmp(&b.tool)));
        AuditView {
            total: ToolView::of("(all)", &total),
            tools,
            callers,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditView {
    pub total: ToolView,
    pub tools: Vec<ToolView>,
    /// The same counts by caller (`tool` holds the key id, or `owner`).
    pub callers: Vec<ToolView>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ToolView {
    pub tool: String,
    pub calls: u64,
    /// Calls refused for a missing scope.
    pub denied: u64,
    pub success_rate: Option<f64>,
    pub avg_duration_us: Option<u64>,
}

impl ToolView {
    fn of(name: &str, s: &ToolStats) -> Self {
        Self {
            tool: name.to_string(),
            calls: s.calls,
            denied: s.denied,
            success_rate: (s.calls > 0).then(|| s.ok as f64 / s.calls as f64),
            avg_duration_us: (s.calls > 0).then(|| s.duration_us / s.calls),
        }
    }
}
