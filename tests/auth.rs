//! The auth model (issue 14, DESIGN.md section 8), against the real binary: while no key exists,
//! loopback callers are the owner; once one exists, every admin and `/v1` caller needs a key with
//! the right scope, loopback included. The CLI on the data dir stays the owner (the server's
//! `admin.token`), so `keys create | revoke` work while `serve` runs and take effect at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::cli::{Server, run};

fn http(
    method: reqwest::Method,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new().request(method, url);
        if let Some(k) = key {
            // Lower case on purpose: the scheme name is case-insensitive.
            req = req.header("authorization", format!("bearer {k}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

fn create(dir: &std::path::Path, name: &str, scopes: &str) -> String {
    let o = run(&["keys", "create", "--name", name, "--scopes", scopes], dir);
    assert!(o.ok(), "{o:?}");
    o.stdout.trim().to_string()
}

#[test]
fn keys_end_loopback_ownership_and_take_effect_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d).unwrap();
    let base = format!("http://{}", server.addr);
    let get = |path: &str, key: Option<&str>| {
        http(reqwest::Method::GET, &format!("{base}{path}"), key, None)
    };

    // No key yet: loopback is the owner.
    assert_eq!(get("/api/combos", None).0, 200);

    // Keys created while serving work at once (through the server, as its owner).
    let exec = create(d, "app", "execute:completions");
    let admin = create(d, "ops", "read:*,write:combos");
    let o = run(&["keys", "create", "--name", "x", "--scopes", "manage"], d);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains("unknown scope \"manage\"") && o.stderr.contains("write:resilience"),
        "{o:?}"
    );

    // A key exists: loopback without one is refused, on the admin API and on /v1.
    let (status, body) = get("/api/combos", None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(get("/v1/models", None).0, 401);
    // Scopes are the key's: an execute-only key may chat, not read or change routing.
    let patch = |key: &str| {
        http(
            reqwest::Method::PATCH,
            &format!("{base}/api/combos/default"),
            Some(key),
            Some(json!({ "strategy": "weighted" })),
        )
    };
    let (status, body) = patch(&exec);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("write:combos"),
        "{body}"
    );
    assert_eq!(get("/api/combos", Some(&exec)).0, 403);
    let chat = |key: &str| {
        http(
            reqwest::Method::POST,
            &format!("{base}/v1/chat/completions"),
            Some(key),
            Some(json!({ "model": "default", "messages": [{ "role": "user", "content": "hi" }] })),
        )
        .0
    };
    assert_eq!(chat(&exec), 200);
    assert_eq!(patch(&admin).0, 200);
    assert_eq!(get("/api/combos", Some(&admin)).0, 200);
    // Only `*` (or the owner token) manages keys.
    assert_eq!(get("/api/keys", Some(&admin)).0, 403);

    // The CLI on the data dir is still the owner: it reads through the server...
    let list = run(&["keys", "list"], d);
    assert!(list.ok() && list.stdout.contains("app"), "{list:?}");
    // ...and a key it revokes stops working on the next request, without a restart.
    let id = omniroute_core::event::Hash32::of(exec.as_bytes()).to_string();
    let o = run(&["keys", "revoke", &id[..10]], d);
    assert!(
        o.ok() && o.stdout.contains("on the running server"),
        "{o:?}"
    );
    assert_eq!(chat(&exec), 401);
    assert_eq!(get("/api/combos", Some(&admin)).0, 200);

    // After a restart the revocation and the keys hold (they are in the log).
    let out = server.stop();
    assert_eq!(out.code, Some(0), "{out:?}");
    let server = Server::start(d).unwrap();
    let base = format!("http://{}", server.addr);
    let again = |key: &str| {
        http(
            reqwest::Method::GET,
            &format!("{base}/api/combos"),
            Some(key),
            None,
        )
        .0
    };
    assert_eq!(again(&exec), 401);
    assert_eq!(again(&admin), 200);
    assert_eq!(server.stop().code, Some(0));
}
