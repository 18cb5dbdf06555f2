//! The per-request context every read model shares: who asked (session, key) and through which
//! combo, recorded once at the request's start and needed by its later events. A request is open
//! from its `RequestReceived` through its `RequestCompleted`.

use std::collections::{BTreeMap, HashMap};

use omniroute_core::event::{ArchivedEvent, Hash32, RequestId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What is known of an open request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Open {
    pub session: Option<String>,
    /// The key's name when it is known, else `key:` and the first 12 hex digits of its id.
    pub key: Option<String>,
    /// The combo (or directly requested model) the router decided for.
    pub combo: Option<String>,
    pub fallbacks: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Context {
    #[serde(serialize_with = "sorted", deserialize_with = "unsorted")]
    open: HashMap<u128, Open>,
    /// Key names by key id, from `KeyCreated`.
    key_names: BTreeMap<String, String>,
}

fn sorted<S: Serializer>(m: &HashMap<u128, Open>, s: S) -> Result<S::Ok, S::Error> {
    let mut v: Vec<(RequestId, &Open)> = m.iter().map(|(k, o)| (RequestId(*k), o)).collect();
    v.sort_by_key(|(k, _)| *k);
    v.serialize(s)
}

fn unsorted<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<u128, Open>, D::Error> {
    let v = Vec::<(RequestId, Open)>::deserialize(d)?;
    Ok(v.into_iter().map(|(k, o)| (k.0, o)).collect())
}

impl Context {
    /// Updates the context with what `event` tells before the read models see it; returns the
    /// request to close once they have.
    pub(crate) fn before(&mut self, event: &ArchivedEvent) -> Option<u128> {
        match event {
            ArchivedEvent::RequestReceived(r) => {
                let key = r.api_key_id.as_ref().map(|k| {
                    let hex = Hash32(k.0).to_string();
                    match self.key_names.get(&hex) {
                        Some(name) => name.clone(),
                        None => format!("key:{}", hex.get(..12).unwrap_or(&hex)),
                    }
                });
                self.open.insert(
                    r.request_id.get().0,
                    Open {
                        session: r.session_id.as_ref().map(|s| s.as_str().to_string()),
                        key,
                        combo: None,
                        fallbacks: 0,
                    },
                );
                None
            }
            ArchivedEvent::RouteDecided(_) | ArchivedEvent::RouteDecidedV2(_) => {
                if let Some(d) = event.route_decided()
                    && let Some(o) = self.open.get_mut(&d.request_id.get().0)
                {
                    o.combo = Some(d.combo.as_str().to_string());
                }
                None
            }
            ArchivedEvent::FallbackTriggered(f) => {
                if let Some(o) = self.open.get_mut(&f.request_id.get().0) {
                    o.fallbacks += 1;
                }
                None
            }
            ArchivedEvent::RequestCompleted(c) => Some(c.request_id.get().0),
            ArchivedEvent::KeyCreated(k) => {
                self.key_names
                    .insert(Hash32(k.key_id.0).to_string(), k.name.as_str().to_string());
                None
            }
            _ => None,
        }
    }

    pub(crate) fn open_of(&self, event: &ArchivedEvent) -> Option<&Open> {
        self.open.get(&event.request_id()?.0)
    }

    pub(crate) fn close(&mut self, id: u128) {
        self.open.remove(&id);
    }

    /// Requests received and not yet completed.
    pub fn open_requests(&self) -> usize {
        self.open.len()
    }
}
