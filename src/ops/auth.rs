//! Callers and scopes (DESIGN.md sections 7 and 8).
//!
//! While no key exists, loopback callers are the owner and hold every scope: zero-config stays
//! zero-config. Once any key exists, every caller of the admin API (and of `/v1`) needs a key
//! whose scopes grant what it calls, loopback included: a reverse proxy on the same host no longer
//! makes every client an admin. A revoked key still counts as existing: revoking the last key
//! must not reopen the anonymous access that creating keys closed. The owner token is the exception: `serve` writes a random token
//! into the data dir (`admin.token`, readable only by its user), and whoever can read it (the
//! CLI on that data dir) is the owner. Scopes come from the key alone, never from the request.

use omniroute_core::event::Hash32;

use crate::engine::keys::{KeyEntry, KeyStore};
use crate::error::ApiError;

/// What a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ReadHealth,
    ReadCombos,
    WriteCombos,
    ReadQuota,
    ReadUsage,
    ReadModels,
    ExecuteCompletions,
    WriteBudget,
    WriteResilience,
    /// Creating, listing and revoking keys: only `*` grants it.
    Owner,
}

impl Scope {
    /// The scopes a key can be given one by one.
    pub const GRANTABLE: [Scope; 9] = [
        Scope::ReadHealth,
        Scope::ReadCombos,
        Scope::WriteCombos,
        Scope::ReadQuota,
        Scope::ReadUsage,
        Scope::ReadModels,
        Scope::ExecuteCompletions,
        Scope::WriteBudget,
        Scope::WriteResilience,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scope::ReadHealth => "read:health",
            Scope::ReadCombos => "read:combos",
            Scope::WriteCombos => "write:combos",
            Scope::ReadQuota => "read:quota",
            Scope::ReadUsage => "read:usage",
            Scope::ReadModels => "read:models",
            Scope::ExecuteCompletions => "execute:completions",
            Scope::WriteBudget => "write:budget",
            Scope::WriteResilience => "write:resilience",
            Scope::Owner => "*",
        }
    }
}

/// Wildcards a key may hold: a family (`read:*`) or everything (`*`).
const WILDCARDS: [&str; 4] = ["read:*", "write:*", "execute:*", "*"];

/// Every scope name `keys create` accepts.
pub fn valid_scope_names() -> Vec<&'static str> {
    Scope::GRANTABLE
        .iter()
        .map(|s| s.name())
        .chain(WILDCARDS)
        .collect()
}

/// Checks scope names given to a new key: an unknown one is refused with the valid list.
pub fn check_scopes(scopes: &[String]) -> Result<(), String> {
    if scopes.is_empty() {
        return Err(format!(
            "a key needs at least one scope; valid scopes: {}",
            valid_scope_names().join(", ")
        ));
    }
    let valid = valid_scope_names();
    match scopes.iter().find(|s| !valid.contains(&s.as_str())) {
        None => Ok(()),
        Some(s) => Err(format!(
            "unknown scope {s:?}; valid scopes: {}",
            valid.join(", ")
        )),
    }
}

/// Whether held scope names grant `wanted`. `manage`, which keys created before scopes were
/// checked could hold, granted the admin API: it reads as `read:*` and `write:*`.
pub fn grants(held: &[String], wanted: Scope) -> bool {
    let name = wanted.name();
    let family = name.split(':').next().unwrap_or(name);
    held.iter().any(|s| {
        s == "*"
            || (wanted != Scope::Owner
                && (s == name
                    || s.strip_suffix(":*").is_some_and(|f| f == family)
                    || (s == "manage" && matches!(family, "read" | "write"))))
    })
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key it authenticated with (`None`: the owner, by loopback while no key exists or by
    /// the data dir's owner token).
    pub key: Option<Hash32>,
    /// How audit records name it.
    pub name: String,
    pub scopes: Vec<String>,
    pub loopback: bool,
    /// Calling through an MCP tool (so control writes name `mcp` as their actor).
    pub mcp: bool,
}

impl Caller {
    fn owner(name: &str, loopback: bool) -> Caller {
        Caller {
            key: None,
            name: name.into(),
            scopes: vec!["*".into()],
            loopback,
            mcp: false,
        }
    }

    fn keyed(k: KeyEntry, loopback: bool) -> Caller {
        Caller {
            key: Some(k.id),
            name: k.name,
            scopes: k.scopes,
            loopback,
            mcp: false,
        }
    }

    pub fn allows(&self, scope: Scope) -> bool {
        grants(&self.scopes, scope)
    }

    /// Refuses the caller unless it holds every one of `scopes` (the first missing is named).
    pub fn require(&self, scopes: &[Scope]) -> Result<(), ApiError> {
        scopes.iter().try_for_each(|s| authorize(self, *s))
    }

    /// How control writes name it (`actor` of the events they record).
    pub fn actor(&self) -> String {
        let via = if self.mcp { "mcp" } else { "admin-api" };
        format!("{via} ({})", self.name)
    }
}

/// The bearer token of an `Authorization` header (the scheme name in any case).
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let v = authorization?.trim_start();
    let (scheme, token) = v.split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Who the caller is, from its `Authorization` header and whether it connected over loopback.
/// `owner_token` is the data dir's owner token, when the server has one.
pub fn authenticate(
    keys: &KeyStore,
    owner_token: Option<&str>,
    authorization: Option<&str>,
    loopback: bool,
) -> Result<Caller, ApiError> {
    let token = bearer(authorization);
    if let (Some(t), Some(o)) = (token, owner_token)
        && crate::engine::keys::same_secret(t, o)
    {
        return Ok(Caller::owner("owner (data dir token)", loopback));
    }
    if !keys.any() {
        if loopback {
            return Ok(Caller::owner("owner (loopback, no keys)", true));
        }
        return Err(ApiError::Forbidden(
            "no API keys exist, so only loopback clients are served; create one with \
             `omniroute keys create`"
                .into(),
        ));
    }
    let token = token.ok_or_else(|| {
        ApiError::Unauthorized(
            "missing `Authorization: Bearer <key>`: API keys exist, so every caller needs one \
             (loopback included)"
                .into(),
        )
    })?;
    let key = keys
        .find(token)
        .ok_or_else(|| ApiError::Unauthorized("invalid or revoked API key".into()))?;
    Ok(Caller::keyed(key, loopback))
}

/// Refuses a caller whose scopes do not grant `scope`, naming it.
pub fn authorize(caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    if caller.allows(scope) {
        return Ok(());
    }
    Err(ApiError::Forbidden(match scope {
        Scope::Owner => format!(
            "key {} cannot manage keys: that needs the `*` scope (or the data dir's owner token)",
            caller.name
        ),
        s => format!("key {} lacks the `{}` scope", caller.name, s.name()),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn held(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn wildcards_grant_their_family_and_only_star_grants_key_management() {
        assert!(grants(&held(&["read:*"]), Scope::ReadUsage));
        assert!(!grants(&held(&["read:*"]), Scope::WriteCombos));
        assert!(grants(&held(&["write:combos"]), Scope::WriteCombos));
        assert!(!grants(&held(&["write:combos"]), Scope::WriteBudget));
        assert!(grants(&held(&["*"]), Scope::Owner));
        assert!(!grants(
            &held(&["read:*", "write:*", "execute:*"]),
            Scope::Owner
        ));
        assert!(grants(&held(&["manage"]), Scope::WriteCombos));
        assert!(!grants(&held(&["manage"]), Scope::ExecuteCompletions));
        assert!(!grants(&held(&["manage"]), Scope::Owner));
    }

    #[test]
    fn unknown_scopes_are_refused_with_the_valid_list() {
        let e = check_scopes(&held(&["read:*", "manage"])).unwrap_err();
        assert!(
            e.contains("\"manage\"") && e.contains("execute:completions"),
            "{e}"
        );
        assert!(check_scopes(&[]).is_err());
        assert!(check_scopes(&held(&["read:usage", "write:*"])).is_ok());
    }

    #[test]
    fn the_scheme_name_is_case_insensitive() {
        assert_eq!(bearer(Some("Bearer k1")), Some("k1"));
        assert_eq!(bearer(Some("bearer  k1 ")), Some("k1"));
        assert_eq!(bearer(Some("BEARER k1")), Some("k1"));
        assert_eq!(bearer(Some("Basic k1")), None);
        assert_eq!(bearer(Some("Bearer")), None);
    }

    #[test]
    fn keys_end_loopback_ownership() {
        let none = KeyStore::new(Vec::new());
        assert_eq!(authenticate(&none, None, None, true).unwrap().scopes, ["*"]);
        assert!(authenticate(&none, None, None, false).is_err());
        let id = Hash32::of(b"k1");
        let some = KeyStore::new(vec![KeyEntry {
            id,
            name: "ci".into(),
            scopes: held(&["execute:completions"]),
            revoked: false,
        }]);
        let e = authenticate(&some, None, None, true).unwrap_err();
        assert_eq!(e.parts().0, 401);
        let c = authenticate(&some, None, Some("Bearer k1"), true).unwrap();
        assert_eq!(
            authorize(&c, Scope::WriteCombos).unwrap_err().parts().0,
            403
        );
        assert!(authorize(&c, Scope::ExecuteCompletions).is_ok());
        let owner = authenticate(&some, Some("t0"), Some("bearer t0"), true).unwrap();
        assert!(owner.allows(Scope::Owner));
    }
}
