//! What the engine rebuilds from the log at start-up: API keys and session budget guards (with
//! what each session has spent since its guard was set). One pass, in log order.
//! (The projection runner of a later issue replaces this pass with checkpointed read models.)

use std::collections::HashMap;

use omniroute_core::event::{ArchivedEvent, Cost, Event};
use omniroute_core::log::{LogError, Reader};

use super::budget::Guard;
use super::keys::KeyEntry;

#[derive(Debug, Default)]
pub struct Restored {
    pub keys: Vec<KeyEntry>,
    pub guards: HashMap<String, Guard>,
}

fn interesting(e: &ArchivedEvent) -> bool {
    matches!(
        e,
        ArchivedEvent::KeyCreated(_)
            | ArchivedEvent::KeyRevoked(_)
            | ArchivedEvent::BudgetGuardSet(_)
            | ArchivedEvent::RequestReceived(_)
            | ArchivedEvent::RequestCompleted(_)
    )
}

pub fn restore(reader: &Reader) -> Result<Restored, LogError> {
    let mut out = Restored::default();
    // Requests of guarded sessions still waiting for their `RequestCompleted`.
    let mut open: HashMap<u128, String> = HashMap::new();
    for item in reader.range(..)? {
        let stored = item?;
        let rec = stored.record()?;
        if !interesting(rec.event) {
            continue;
        }
        let Ok(event) = rec.event.to_owned_event() else {
            continue;
        };
        match event {
            Event::KeyCreated(k) => out.keys.push(KeyEntry {
                id: k.key_id,
                name: k.name,
                scopes: k.scopes,
                revoked: false,
            }),
            Event::KeyRevoked(k) => {
                for e in out.keys.iter_mut().filter(|e| e.id == k.key_id) {
                    e.revoked = true;
                }
            }
            Event::BudgetGuardSet(g) => {
                let limit = match g.limit {
                    Cost::Micros(m) => m,
                    Cost::Unpriced => 0,
                };
                let e = out.guards.entry(g.session_id).or_insert(Guard {
                    limit_micros: limit,
                    action: g.action,
                    degrade_to_tier: g.degrade_to_tier,
                    spent_micros: 0,
                    reserved_micros: 0,
                });
                e.limit_micros = limit;
                e.action = g.action;
                e.degrade_to_tier = g.degrade_to_tier;
            }
            Event::RequestReceived(r) => {
                if let Some(s) = r.session_id.filter(|s| out.guards.contains_key(s)) {
                    open.insert(r.request_id.0, s);
                }
            }
            Event::RequestCompleted(c) => {
                if let Some(s) = open.remove(&c.request_id.0)
                    && let (Some(g), Cost::Micros(m)) = (out.guards.get_mut(&s), c.cost)
                {
                    g.spent_micros += m;
                }
            }
            _ => {}
        }
    }
    Ok(out)
}
