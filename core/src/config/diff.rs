//! Field-level changes between two configs, and runtime changes that outlive a restart.
//!
//! This module owns three things, all pure functions over the canonical JSON tree of a [`Config`]
//! (the tree [`Config::canonical_json`] encodes and `config_version` hashes):
//!
//! * [`diff`]: what differs between two configs, as [`FieldChange`]s at readable paths.
//! * [`set_path`]: one change applied at such a path (how a runtime change is made).
//! * [`carry_over`]: the runtime changes of the previous run re-applied to a config file that may
//!   have been edited meanwhile, by the restart rule below.
//!
//! # Paths
//!
//! A path names object keys and, inside arrays whose elements are objects with a unique string
//! `id` (providers, models, combos), elements by id: `combos.fast.strategy`,
//! `models.gpt-4o.price.input`, `providers.mock-b`. Matching by id rather than by position keeps a
//! path meaning the same thing when an element is added or removed before it. A segment that is
//! empty or contains `.` or `"` (model ids like `gpt-4.1` do) is written as a JSON string:
//! `models."gpt-4.1".price.input`. Other arrays (a combo's `targets`) are one value: a path ends
//! at them.
//!
//! # The restart rule
//!
//! The *overrides* of a run are `diff(old_file, old_effective)`: what runtime changes made on top
//! of the file the run started from. Only `combos.<id>.active`, `combos.<id>.strategy` and the
//! `resilience.*` numbers are carried ([`runtime_changeable`]); any other difference (a combo's
//! weights set at runtime) is reported by [`diff`] but not carried. On restart each override is re-applied on top of the new file (*kept*) unless the
//! file itself changed that same path since the old run (`old_file` and `new_file` hold different
//! values there) or the path no longer exists in the new file (the combo was removed): then the
//! file wins, because an edit to the file is the newer and more deliberate decision, and the
//! override is reported as *dropped* so the operator can see what was undone. An override whose
//! value the new file now holds anyway is neither kept nor dropped: there is nothing to re-apply
//! and nothing was lost. When the file did not change, `carry_over(f, e, f)` is `e` exactly (same
//! version) unless weights were set at runtime (they end with the run).

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Config;

/// One difference between two configs. `None` means the path is absent on that side (a whole
/// provider, model or combo added or removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

/// The result of [`carry_over`].
#[derive(Debug, Clone)]
pub struct Carried {
    /// The new file with the kept overrides applied: the config to run with.
    pub config: Config,
    /// Overrides re-applied: `from` is the new file's value, `to` the override's, so `kept` is
    /// exactly `diff(new_file, config)`.
    pub kept: Vec<FieldChange>,
    /// Overrides the file won over: `from` is the override's value, `to` the new file's (`None`
    /// when the path is gone from the new file).
    pub dropped: Vec<FieldChange>,
}

/// Every difference between `a` and `b`, `from` in `a` and `to` in `b`. Object keys are visited in
/// sorted order and id-keyed elements in sorted id order, so the output is deterministic.
///
/// Besides field changes, an id-keyed array whose shared elements changed order is reported once
/// at the array's own path with the id lists as `from` and `to`: order is part of the config
/// (models and providers are referenced by position), so two configs with different versions
/// never diff as empty.
pub fn diff(a: &Config, b: &Config) -> Vec<FieldChange> {
    let mut out = Vec::new();
    diff_values(&mut String::new(), &tree(a), &tree(b), &mut out);
    out
}

/// Whether a path may be changed at runtime (and so is carried over a restart by
/// [`carry_over`]): `combos.<id>.active` and `combos.<id>.strategy`.
pub fn runtime_changeable(path: &str) -> bool {
    parse_path(path).is_ok_and(|segs| is_runtime(&segs))
}

/// `cfg` with the value at `path` replaced by `value`. The path must exist (this sets, it does not
/// add or remove elements); the result must still decode as a config with unique ids and in-range
/// references. Value ranges that loading checks (tiers, weights, timeouts) are not re-checked:
/// callers letting an operator change a path should allow only [`runtime_changeable`] ones.
pub fn set_path(cfg: &Config, path: &str, value: &Value) -> Result<Config, String> {
    let segs = parse_path(path)?;
    if segs.is_empty() {
        return Err("an empty path names the whole config; name a field".into());
    }
    let mut t = tree(cfg);
    let slot = lookup_mut(&mut t, &segs).ok_or_else(|| format!("{path}: no such path"))?;
    *slot = value.clone();
    let mut out: Config = serde_json::from_value(t).map_err(|e| format!("{path}: {e}"))?;
    out.reindex();
    out.check_references().map_err(|e| format!("{path}: {e}"))?;
    Ok(out)
}

/// Carries the runtime changes of a previous run over to a (possibly edited) config file, by the
/// restart rule in the module documentation.
pub fn carry_over(old_file: &Config, old_effective: &Config, new_file: &Config) -> Carried {
    let old_tree = tree(old_file);
    let new_tree = tree(new_file);
    let mut config = new_file.clone();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for change in diff(old_file, old_effective) {
        let Ok(segs) = parse_path(&change.path) else {
            continue;
        };
        // A runtime change sets a field that always exists, so it has a value on both sides.
        let (true, Some(value)) = (is_runtime(&segs), change.to) else {
            continue;
        };
        let Some(now) = lookup(&new_tree, &segs) else {
            dropped.push(FieldChange {
                path: change.path,
                from: Some(value),
                to: None,
            });
            continue;
        };
        if *now == value {
            // The new file holds the override's value itself: nothing to re-apply, nothing lost.
            continue;
        }
        let file_changed = lookup(&old_tree, &segs) != Some(now);
        let applied = if file_changed {
            None
        } else {
            // Cannot fail for the value of a field of the same name in a config of the same
            // schema; if it ever did, the file's value stands and the override shows as dropped.
            set_path(&config, &change.path, &value).ok()
        };
        match applied {
            Some(c) => {
                config = c;
                kept.push(FieldChange {
                    path: change.path,
                    from: Some(now.clone()),
                    to: Some(value),
                });
            }
            None => dropped.push(FieldChange {
                path: change.path,
                from: Some(value),
                to: Some(now.clone()),
            }),
        }
    }
    Carried {
        config,
        kept,
        dropped,
    }
}

/// The canonical JSON tree of a config.
fn tree(cfg: &Config) -> Value {
    // Fails only where `canonical_json` does (a non-UTF-8 `data_dir`, which TOML cannot spell).
    serde_json::to_value(cfg).unwrap_or(Value::Null)
}

/// A combo's `active` and `strategy`, and the resilience numbers (a profile applied at runtime).
/// A combo's `targets` are not: they hold model indexes, which an edited file may renumber, so
/// weights set at runtime last until the next restart.
fn is_runtime(segs: &[String]) -> bool {
    match segs {
        [combos, _, field] => combos == "combos" && (field == "active" || field == "strategy"),
        [resilience, _] => resilience == "resilience",
        _ => false,
    }
}

/// The ids of an array whose elements are all objects with a string `id`, each id once; `None`
/// for any other array, which is then compared (and addressed) as one value.
fn ids(items: &[Value]) -> Option<Vec<&str>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let id = item.get("id")?.as_str()?;
        if !seen.insert(id) {
            return None;
        }
        out.push(id);
    }
    Some(out)
}

fn element_id(item: &Value) -> Option<&str> {
    item.get("id").and_then(Value::as_str)
}

fn diff_values(path: &mut String, a: &Value, b: &Value, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            // Sorted explicitly: `Map` keeps insertion order if serde_json's `preserve_order` is on.
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                children(path, key, x.get(key.as_str()), y.get(key.as_str()), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => match (ids(x), ids(y)) {
            (Some(ix), Some(iy)) => {
                let (in_x, in_y): (HashSet<&str>, HashSet<&str>) =
                    (ix.iter().copied().collect(), iy.iter().copied().collect());
                let shared_x: Vec<&str> = ix.iter().copied().filter(|i| in_y.contains(i)).collect();
                let shared_y: Vec<&str> = iy.iter().copied().filter(|i| in_x.contains(i)).collect();
                if shared_x != shared_y {
                    out.push(FieldChange {
                        path: path.clone(),
                        from: Some(id_list(&ix)),
                        to: Some(id_list(&iy)),
                    });
                }
                let all: BTreeSet<&str> = in_x.union(&in_y).copied().collect();
                for id in all {
                    let ex = x.iter().find(|v| element_id(v) == Some(id));
                    let ey = y.iter().find(|v| element_id(v) == Some(id));
                    children(path, id, ex, ey, out);
                }
            }
            _ => out.push(FieldChange {
                path: path.clone(),
                from: Some(a.clone()),
                to: Some(b.clone()),
            }),
        },
        _ => out.push(FieldChange {
            path: path.clone(),
            from: Some(a.clone()),
            to: Some(b.clone()),
        }),
    }
}

/// Diffs the child `seg` of `path`, present on either or both sides.
fn children(
    path: &mut String,
    seg: &str,
    a: Option<&Value>,
    b: Option<&Value>,
    out: &mut Vec<FieldChange>,
) {
    let len = path.len();
    push_segment(path, seg);
    match (a, b) {
        (Some(a), Some(b)) => diff_values(path, a, b, out),
        (a, b) => out.push(FieldChange {
            path: path.clone(),
            from: a.cloned(),
            to: b.cloned(),
        }),
    }
    path.truncate(len);
}

fn id_list(ids: &[&str]) -> Value {
    Value::Array(
        ids.iter()
            .map(|i| Value::String((*i).to_string()))
            .collect(),
    )
}

pub(super) fn push_segment(path: &mut String, seg: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    if seg.is_empty() || seg.contains(['.', '"']) {
        // A JSON string literal; serializing a `&str` cannot fail.
        path.push_str(&serde_json::to_string(seg).unwrap_or_default());
    } else {
        path.push_str(seg);
    }
}

/// Splits a path into its segments (the inverse of how [`diff`] writes them).
pub(super) fn parse_path(path: &str) -> Result<Vec<String>, String> {
    let mut segs = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let seg;
        if rest.starts_with('"') {
            // Find the closing quote, skipping escaped characters, then let serde_json unescape.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in rest.char_indices().skip(1) {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| format!("{path:?}: unterminated quoted segment"))?;
            seg = serde_json::from_str::<String>(&rest[..=end])
                .map_err(|e| format!("{path:?}: bad quoted segment: {e}"))?;
            rest = &rest[end + 1..];
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("{path:?}: empty segment (quote it as \"\")"));
            }
            seg = rest[..end].to_string();
            rest = &rest[end..];
        }
        segs.push(seg);
        if let Some(after) = rest.strip_prefix('.') {
            if after.is_empty() {
                return Err(format!("{path:?}: ends with '.'"));
            }
            rest = after;
        } else if !rest.is_empty() {
            return Err(format!("{path:?}: expected '.' after a quoted segment"));
        }
    }
    Ok(segs)
}

fn lookup<'a>(tree: &'a Value, segs: &[String]) -> Option<&'a Value> {
    let mut cur = tree;
    for seg in segs {
        cur = match cur {
            Value::Object(m) => m.get(seg.as_str())?,
            Value::Array(items) => {
                ids(items)?;
                items.iter().find(|v| element_id(v) == Some(seg.as_str()))?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn lookup_mut<'a>(tree: &'a mut Value, segs: &[String]) -> Option<&'a mut Value> {
    let mut cur = tree;
    for seg in segs {
        cur = match cur {
            Value::Object(m) => m.get_mut(seg.as_str())?,
            Value::Array(items) => {
                ids(items)?;
                items
                    .iter_mut()
                    .find(|v| element_id(v) == Some(seg.as_str()))?
            }
            _ => return None,
        };
    }
    Some(cur)
}
