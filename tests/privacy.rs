//! Nothing private stored by default (DESIGN.md section 8): an upstream's error message can quote
//! the prompt, so with `log.store_bodies = false` the log keeps only its kind, HTTP status and a
//! keyed hash; the redb file's bytes never contain the prompt. With `store_bodies = true` the
//! text is kept. Covered: a refused request (400), every target failing (500s) and a stream cut
//! by an in-band upstream error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use omniroute_core::event::{ErrorClass, Event};
use serde_json::json;
use support::*;

/// Prompts no other part of a test writes, quoted back by the fake upstreams' errors.
const REFUSED: &str = "quokka-7f3c9a1e-refused-prompt";
const FAILED: &str = "axolotl-52be08d4-failed-prompt";
const CUT: &str = "pangolin-c61d93f0-cut-prompt";

fn quoting(status: u16, kind: &str, code: &str, prompt: &str) -> Step {
    Step::Json {
        status,
        body: json!({ "error": {
            "message": format!("we cannot answer this message: \"{prompt}\""),
            "type": kind, "code": code } }),
        retry_after: None,
        delay: Duration::ZERO,
    }
}

/// A stream that starts, then breaks with an in-band error quoting `prompt`.
fn cut_quoting(prompt: &str) -> Step {
    let error = json!({ "error": {
        "message": format!("moderation stopped the answer to \"{prompt}\""),
        "type": "server_error" } });
    Step::Stream {
        frames: vec![
            (Duration::ZERO, chunk("Hello")),
            (Duration::ZERO, format!("data: {error}\n\n")),
        ],
        cut: false,
    }
}

/// Runs the three failing requests on a gateway with `store_bodies`, and returns it with the
/// redb file's bytes after the log is synced.
async fn run(store_bodies: bool) -> (Gateway, Vec<u8>, [String; 3]) {
    // a: refuses the first request, then fails with 500; b always fails with 500.
    let a = Fake::start(
        vec![
            quoting(400, "invalid_request_error", "prompt_rejected", REFUSED),
            quoting(500, "server_error", "overloaded", FAILED),
            cut_quoting(CUT),
        ],
        Step::ok("unused"),
    )
    .await;
    let b = Fake::start(vec![], quoting(500, "server_error", "overloaded", FAILED)).await;
    let extra = format!("[log]\nstore_bodies = {store_bodies}\n\n[resilience]\nmax_retries = 0\n");
    let gw = Gateway::start(&two_upstreams(&a, &b, &extra)).await;

    let r = gw
        .chat(json!({ "model": "ab", "messages": user(REFUSED) }))
        .await;
    assert_eq!(r.status(), 400);
    let refused = rid(&r);
    // The client still learns what the upstream said: it is the client's own prompt.
    assert!(r.text().await.unwrap().contains(REFUSED));

    let r = gw
        .chat(json!({ "model": "ab", "messages": user(FAILED) }))
        .await;
    assert_eq!(r.status(), 503);
    let failed = rid(&r);

    let r = gw
        .chat(json!({ "model": "model-a", "messages": user(CUT), "stream": true }))
        .await;
    assert_eq!(r.status(), 200);
    let cut = rid(&r);
    let body = r.text().await.unwrap();
    assert!(body.contains("stream_cut"), "{body}");

    for id in [&refused, &failed, &cut] {
        gw.completed(id).await;
    }
    gw.log.sync().unwrap();
    let bytes = std::fs::read(gw.log.path()).unwrap();
    (gw, bytes, [refused, failed, cut])
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The stored messages of one request: its attempts' and its completion's.
fn messages(gw: &Gateway, rid: &str) -> (Vec<String>, String) {
    let mut attempts = Vec::new();
    let mut completed = String::new();
    for e in gw.events(rid) {
        match e {
            Event::AttemptFinished(a) => {
                if let Some(err) = a.error {
                    attempts.push(err.message);
                }
            }
            Event::RequestCompleted(c) => {
                completed = c.error.map(|e| e.message).unwrap_or_default();
            }
            _ => {}
        }
    }
    (attempts, completed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_text_quoting_the_prompt_is_not_stored_by_default() {
    let (gw, bytes, [refused, failed, cut]) = run(false).await;
    for prompt in [REFUSED, FAILED, CUT] {
        assert!(
            !contains(&bytes, prompt),
            "the redb file holds the prompt `{prompt}` quoted by an upstream error"
        );
    }

    // What kind of error it was is still recorded: class, status, the upstream's type/code.
    let events = gw.events(&refused);
    let attempt = events
        .iter()
        .find_map(|e| match e {
            Event::AttemptFinished(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(attempt.status, Some(400));
    let err = attempt.error.unwrap();
    assert_eq!(err.class, ErrorClass::BadRequest);
    assert!(
        err.message
            .starts_with("upstream error invalid_request_error/prompt_rejected (HTTP 400)")
            && err.message.contains("keyed blake3 "),
        "{}",
        err.message
    );
    let (_, completed) = messages(&gw, &refused);
    assert!(
        completed
            .contains("refused the request: upstream error invalid_request_error/prompt_rejected"),
        "{completed}"
    );

    let (attempts, completed) = messages(&gw, &failed);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for m in &attempts {
        assert!(
            m.starts_with("upstream error server_error/overloaded (HTTP 500)"),
            "{m}"
        );
    }
    assert!(completed.contains("server_error/overloaded"), "{completed}");

    let (attempts, completed) = messages(&gw, &cut);
    assert!(
        attempts[0].starts_with("upstream error server_error;"),
        "{attempts:?}"
    );
    assert!(
        completed.contains("upstream error server_error;"),
        "{completed}"
    );

    // The same text under the same installation key hashes the same (a text can be checked).
    let (again, _) = messages(&gw, &failed);
    assert_eq!(again[0], again[1]);
    gw.verify();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_text_is_kept_with_store_bodies() {
    let (gw, bytes, [refused, failed, cut]) = run(true).await;
    for prompt in [REFUSED, FAILED, CUT] {
        assert!(
            contains(&bytes, prompt),
            "`{prompt}` is not in the redb file"
        );
    }
    for (rid, prompt) in [(&refused, REFUSED), (&failed, FAILED), (&cut, CUT)] {
        let (attempts, completed) = messages(&gw, rid);
        assert!(attempts.iter().all(|m| m.contains(prompt)), "{attempts:?}");
        assert!(completed.contains(prompt), "{completed}");
    }
}

/// The MCP tools that call upstreams: their audit records (`ToolCalled`) keep neither a
/// completion's output nor an error quoting the prompt, only a keyed hash of each.
#[tokio::test]
async fn mcp_completion_tools_keep_no_upstream_text_in_their_audit_records() {
    const ANSWER: &str = "wombat-9a0e44c2-answer-echoing-the-prompt";
    const QUOTED: &str = "numbat-1d7b3f95-quoted-prompt";
    let a = Fake::start(
        vec![
            Step::ok(ANSWER),
            quoting(400, "invalid_request_error", "prompt_rejected", QUOTED),
        ],
        Step::ok("unused"),
    )
    .await;
    let b = Fake::start(vec![], Step::ok("b")).await;
    let mut gw = Gateway::start(&two_upstreams(&a, &b, "")).await;
    let mcp = support::mcp::Mcp::connect(&gw, None).await;
    let out = mcp
        .ok(
            "omniroute_route_request",
            json!({ "model": "model-a", "messages": user("hello") }),
        )
        .await;
    assert_eq!(out["content"], ANSWER, "{out}");
    let e = mcp
        .err(
            "omniroute_route_request",
            json!({ "model": "model-a", "messages": user("hello") }),
        )
        .await;
    assert!(e.contains(QUOTED), "the caller is told: {e}");
    mcp.close().await;
    gw.stop().await;
    let calls: Vec<_> = gw
        .all_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::ToolCalled(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(
        calls[0].output_preview.contains("keyed blake3"),
        "{:?}",
        calls[0]
    );
    assert!(
        calls[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("keyed blake3"),
        "{:?}",
        calls[1]
    );
    let bytes = std::fs::read(gw.log.path()).unwrap();
    for secret in [ANSWER, QUOTED] {
        assert!(!contains(&bytes, secret), "the redb file holds `{secret}`");
    }
}
