//! Audit stats of MCP tool calls (`ToolCalled`): calls, success rate, average duration, top tools.

use std::collections::BTreeMap;

use omniroute_core::event::ArchivedEvent;
use serde::{Deserialize, Serialize};

use crate::Rec;
use crate::arch;

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Audit {
    pub tools: BTreeMap<String, ToolStats>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct ToolStats {
    pub calls: u64,
    pub ok: u64,
    pub duration_us: u64,
}

impl Audit {
    pub(crate) fn apply(&mut self, r: &Rec<'_>) {
        if let ArchivedEvent::ToolCalled(t) = r.event {
            arch::with(&mut self.tools, t.tool.as_str(), |s| {
                s.calls += 1;
                s.ok += u64::from(t.ok);
                s.duration_us += t.duration_us.to_native();
            });
        }
    }

    /// `GET /api/audit/stats`: tools ordered by calls, most first.
    pub fn view(&self) -> AuditView {
        let mut total = ToolStats::default();
        let mut tools: Vec<ToolView> = self
            .tools
            .iter()
            .map(|(name, s)| {
                total.calls += s.calls;
                total.ok += s.ok;
                total.duration_us += s.duration_us;
                ToolView::of(name, s)
            })
            .collect();
        tools.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.tool.cmp(&b.tool)));
        AuditView {
            total: ToolView::of("(all)", &total),
            tools,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditView {
    pub total: ToolView,
    pub tools: Vec<ToolView>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ToolView {
    pub tool: String,
    pub calls: u64,
    pub success_rate: Option<f64>,
    pub avg_duration_us: Option<u64>,
}

impl ToolView {
    fn of(name: &str, s: &ToolStats) -> Self {
        Self {
            tool: name.to_string(),
            calls: s.calls,
            success_rate: (s.calls > 0).then(|| s.ok as f64 / s.calls as f64),
            avg_duration_us: (s.calls > 0).then(|| s.duration_us / s.calls),
        }
    }
}
