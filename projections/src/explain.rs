//! `explain`: one request's whole story, read from its own events through `request_index` (no
//! scan, so its cost does not grow with the log). Nothing is recomputed: the route is the recorded
//! `RouteDecided`, with every candidate's score, factors and exclusion.

use omniroute_core::event::{
    AttemptFinished, BudgetExceeded, CircuitChanged, Event, FallbackTriggered, RequestCompleted,
    RequestId, RequestReceived, RouteDecided, RouteInputRecord, Target,
};
use omniroute_core::log::Reader;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::arch::class_name;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Explain {
    pub request_id: RequestId,
    /// Every event of the request, in log order.
    pub events: Vec<Line>,
    pub received_ms: Option<u64>,
    pub request: Option<RequestReceived>,
    pub route: Option<RouteDecided>,
    /// What the decision read from the request (after the budget verdict), when recorded
    /// (`RouteDecidedV2`).
    #[serde(default)]
    pub route_input: Option<RouteInputRecord>,
    pub attempts: Vec<AttemptStory>,
    pub fallbacks: Vec<FallbackTriggered>,
    /// Circuit changes this request's outcomes caused.
    pub circuits: Vec<CircuitStory>,
    /// Budget checks that did not simply pass.
    pub budget: Vec<BudgetExceeded>,
    pub completed: Option<RequestCompleted>,
    pub completed_ms: Option<u64>,
    /// One sentence: what happened in the end.
    pub verdict: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Line {
    pub seq: u64,
    pub ts_ms: u64,
    pub kind: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AttemptStory {
    pub attempt: u16,
    pub target: Target,
    pub upstream_model: Option<String>,
    pub timeout_ms: Option<u64>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub finished: Option<AttemptFinished>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CircuitStory {
    pub ts_ms: u64,
    pub change: CircuitChanged,
}

/// The story of `id`; `Ok(None)` when the log has no event of it.
pub fn explain(reader: &Reader, id: RequestId) -> Result<Option<Explain>, Error> {
    let stored = reader.request(id)?;
    if stored.is_empty() {
        return Ok(None);
    }
    let mut x = Explain {
        request_id: id,
        events: Vec::with_capacity(stored.len()),
        received_ms: None,
        request: None,
        route: None,
        route_input: None,
        attempts: Vec::new(),
        fallbacks: Vec::new(),
        circuits: Vec::new(),
        budget: Vec::new(),
        completed: None,
        completed_ms: None,
        verdict: String::new(),
    };
    for s in &stored {
        let rec = s.record()?;
        x.events.push(Line {
            seq: rec.seq,
            ts_ms: rec.ts_ms,
            kind: rec.event.kind().to_string(),
        });
        let event = rec.event.to_owned_event().map_err(|e| {
            Error::Log(omniroute_core::log::LogError::Corrupt {
                path: reader.path().to_path_buf(),
                reason: format!("record {}: {e}", rec.seq),
            })
        })?;
        let ts = rec.ts_ms;
        match event {
            Event::RequestReceived(r) => {
                x.received_ms = Some(ts);
                x.request = Some(*r);
            }
            Event::RouteDecided(d) => x.route = Some(*d),
            Event::RouteDecidedV2(d) => {
                let d = *d;
                x.route = Some(d.decided);
                x.route_input = Some(d.input);
            }
            Event::AttemptStarted(a) => x.attempts.push(AttemptStory {
                attempt: a.attempt,
                target: a.target,
                upstream_model: Some(a.upstream_model),
                timeout_ms: Some(a.timeout_ms),
                started_ms: Some(ts),
                finished_ms: None,
                finished: None,
            }),
            Event::AttemptFinished(f) => {
                match x.attempts.iter_mut().find(|a| a.attempt == f.attempt) {
                    Some(a) => {
                        a.finished_ms = Some(ts);
                        a.finished = Some(*f);
                    }
                    None => x.attempts.push(AttemptStory {
                        attempt: f.attempt,
                        target: f.target.clone(),
                        upstream_model: None,
                        timeout_ms: None,
                        started_ms: None,
                        finished_ms: Some(ts),
                        finished: Some(*f),
                    }),
                }
            }
            Event::FallbackTriggered(f) => x.fallbacks.push(*f),
            Event::CircuitChanged(c) => x.circuits.push(CircuitStory {
                ts_ms: ts,
                change: *c,
            }),
            Event::BudgetExceeded(b) => x.budget.push(*b),
            Event::RequestCompleted(c) => {
                x.completed_ms = Some(ts);
                x.completed = Some(*c);
            }
            _ => {}
        }
    }
    x.verdict = verdict(&x);
    Ok(Some(x))
}

fn name(t: &Target) -> String {
    format!("{}/{}", t.provider, t.model)
}

fn verdict(x: &Explain) -> String {
    let Some(c) = &x.completed else {
        return "no RequestCompleted recorded: the request is in flight, or the process stopped \
                before it finished"
            .into();
    };
    let failed: Vec<String> = x
        .attempts
        .iter()
        .filter_map(|a| {
            let e = a.finished.as_ref()?.error.as_ref()?;
            Some(format!(
                "attempt {} {}: {}",
                a.attempt,
                name(&a.target),
                class_name(e.class)
            ))
        })
        .collect();
    let after = if failed.is_empty() {
        String::new()
    } else {
        format!(" after {} failed ({})", failed.len(), failed.join("; "))
    };
    let cost = match c.cost {
        omniroute_core::event::Cost::Micros(m) => crate::usd(m),
        omniroute_core::event::Cost::Unpriced => "unpriced".into(),
    };
    let ms = c.total_latency_us as f64 / 1000.0;
    match (&c.target, &c.error) {
        (Some(t), None) => format!(
            "served by {} on attempt {}{after}, {ms:.1} ms, cost {cost}",
            name(t),
            c.attempts
        ),
        (_, Some(e)) => format!(
            "failed with {} {} ({}){after}, {ms:.1} ms, cost {cost}",
            c.status, e.code, e.message
        ),
        (None, None) => format!("answered {} without a target, {ms:.1} ms", c.status),
    }
}
