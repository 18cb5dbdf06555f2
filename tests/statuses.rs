//! The route-outcome status table (docs/routing.md, "Statuses"): one test per row. A request no
//! configured target could ever serve is a 400 that reaches no upstream; every servable target
//! rate-limited or cooling down is a 429 with `Retry-After` (the soonest cooldown end); 503 only
//! when targets exist that are temporarily unavailable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::{Fake, Gateway, Step, two_upstreams, user};

/// The flow's clock starts here; cooldowns are measured on it, so `Retry-After` is exact.
const T0: u64 = 1_800_000_000_000;

/// Models and combos beside `two_upstreams`' `model-a` (tier 2), `model-b` (tier 1), combo `ab`
/// (both chat-only, 128k context): a vision/tools/json model outside `ab`, two small-context
/// models, and a combo mixing a chat-only model with the vision one.
const EXTRA: &str = r#"
[resilience]
max_retries = 0

[[models]]
id = "model-v"
provider = "b"
tier = 3
capabilities = ["chat", "vision", "tools", "json"]

[[models]]
id = "small-a"
provider = "a"
context_window = 1000

[[models]]
id = "small-b"
provider = "b"
context_window = 2000

[[combos]]
id = "small"
strategy = "priority"
targets = [{ model = "small-a" }, { model = "small-b" }]

[[combos]]
id = "mixed"
strategy = "priority"
targets = [{ model = "model-a" }, { model = "model-v" }]
"#;

fn rate_limited(retry_after: &str) -> Step {
    match Step::status(429, "slow down") {
        Step::Json {
            status,
            body,
            delay,
            ..
        } => Step::Json {
            status,
            body,
            retry_after: Some(retry_after.into()),
            delay,
        },
        s => s,
    }
}

async fn fakes() -> (Fake, Fake) {
    (
        Fake::start(vec![], Step::ok("a")).await,
        Fake::start(vec![], Step::ok("b")).await,
    )
}

async fn send(gw: &Gateway, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = Gateway::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// Status, `Retry-After`, and the OpenAI error body.
async fn outcome(r: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.unwrap();
    (status, retry_after, body["error"].clone())
}

fn assert_shape(e: &Value, kind: &str, code: &str) {
    assert_eq!(e["type"], kind, "{e}");
    assert_eq!(e["code"], code, "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(e.get("param").is_some(), "{e}");
}

/// Row 400 (capability): an image part to a combo with no vision model.
#[tokio::test]
async fn an_image_for_a_combo_without_vision_is_400_naming_the_models_that_have_it() {
    let (a, b) = fakes().await;
    let gw = Gateway::start(&two_upstreams(&a, &b, EXTRA)).await;
    let messages = json!([{ "role": "user", "content": [
        { "type": "text", "text": "what is this" },
        { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } } ] }]);
    let r = send(&gw, json!({ "model": "ab", "messages": messages }), &[]).await;
    let (status, retry_after, e) = outcome(r).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(retry_after, None);
    assert_shape(&e, "invalid_request_error", "invalid_request");
    assert_eq!(e["param"], "messages");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("vision") && m.contains("model-v"), "{m}");
    assert_eq!((a.calls(), b.calls()), (0, 0));
}

/// Row 400 (capability): tools with no tool-capable target.
#[tokio::test]
async fn tools_for_a_combo_without_tools_is_400() {
    let (a, b) = fakes().await;
    let gw = Gateway::start(&two_upstreams(&a, &b, EXTRA)).await;
    let tools = json!([{ "type": "function", "function": { "name": "f", "parameters": {} } }]);
    let body = json!({ "model": "ab", "messages": user("x"), "tools": tools });
    let (status, _, e) = outcome(send(&gw, body, &[]).await).await;
    assert_eq!(status, 400, "{e}");
    assert_shape(&e, "invalid_request_error", "invalid_request");
    assert_eq!(e["param"], "tools");
    assert!(e["message"].as_str().unwrap().contains("model-v"), "{e}");
    assert_eq!((a.calls(), b.calls()), (0, 0));
}

/// Row 400 (capability): `response_format` json with no json-capable target.
#[tokio::test]
async fn json_mode_for_a_combo_without_json_is_400() {
    let (a, b) = fakes().await;
    let gw = Gateway::start(&two_upstreams(&a, &b, EXTRA)).await;
    let body = json!({ "model": "ab", "messages": user("x"),
        "response_format": { "type": "json_object" } });
    let (status, _, e) = outcome(send(&gw, body, &[]).await).await;
    assert_eq!(status, 400, "{e}");
    assert_shape(&e, "invalid_request_error", "invalid_request");
    assert_eq!(e["param"], "response_format");
    assert_eq!((a.calls(), b.calls()), (0, 0));
}

/// Row 400 (limit): `max_tokens` beyond every target's context window.
#[tokio::test]
async fn max_tokens_beyond_every_target_is_400_on_max_tokens() {
    let (a, b) = fakes().await;
    let gw = Gateway::start(&two_upstreams(&a, &b, EXTRA)).await;
    let body = json!({ "model": "ab", "messages": user("x"), "max_tokens": 4_294_967_295u64 });
    let (status, _, e) = outcome(send(&gw, body, &[]).await).await;
    assert_eq!(status, 400, "{e}");
    assert_shape(&e, "invalid_request_error", "invalid_request");
    assert_eq!(e["param"], "max_tokens");
    assert!(e["message"].as_str().unwrap().contains("128000"), "{e}");
    assert_eq!((a.calls(), b.calls()), (0, 0));
}

/// Row 400 (tier): `x-omniroute-min-tier` above every target's tier.
#[tokio::test]
async fn a_min_tier_above_every_target_is_400_on_the_header() {
    let (a, b) = fakes().await;
    let gw = Gateway::start(&two_upstreams(&a, &b, EXTRA)).await;
    let body = json!({ "model": "ab", "messages": user("x") });
    let (status, _, e) = outcome(send(&gw, body, &[("x-omniroute-min-tier", "3")]).await).await;
    assert_eq!(status, 400, "{e}");
    assert_shape(&e, "invalid_request_error", "invalid_request");
    assert_eq!(e["param"], "x-omniroute-min-tier");
    assert!(e["message"].as_str().unwrap().contains("model-v"), "{e}");
    assert_eq!((a.calls(), b.calls()), (0, 0));
}

/// Row 400 `context_length_exceeded`: the prompt alone exceeds every target's context window.
#[tokio::test]
async fn a_prompt_over_every_context_window_is_400_context_length_exceeded() {
    let (a, b) = fakes().await;
    let gw = Gateway::start(&two_upstreams(&a, &b, EXTRA)).await;
    // ~3000 estimated tokens: over small-a's 1000 and small-b's 2000.
    let body = json!({ "model": "small", "messages": user(&"word ".repeat(2400)) });
    let (status, _, e) = outcome(send(&gw, body, &[]).await).await;
    assert_eq!(status, 400, "{e}");
    assert_shape(&e, "invalid_request_error", "context_length_exceeded");
    assert_eq!(e["param"], "messages");
    assert!(e["message"].as_str().unwrap().contains("2000"), "{e}");
    assert_eq!((a.calls(), b.calls()), (0, 0));
}

/// Row 429 (upstreams): every attempt answered 429; the client gets 429 with the soonest of the
/// upstreams' `Retry-After`, then (every target cooling down, no attempt) 429 again with what is
/// left of it.
#[tokio::test]
async fn every_upstream_429_is_429_with_the_soonest_retry_after_then_cooling_down_too() {
    let a = Fake::start(vec![], rate_limited("7")).await;
    let b = Fake::start(vec![], rate_limited("3")).await;
    let (gw, clock) = Gateway::start_clocked(&two_upstreams(&a, &b, EXTRA), T0).await;
    let body = json!({ "model": "ab", "messages": user("x") });
    let (status, retry_after, e) = outcome(send(&gw, body.clone(), &[]).await).await;
    assert_eq!(status, 429, "{e}");
    assert_shape(&e, "rate_limit_error", "rate_limit_exceeded");
    assert_eq!(retry_after.as_deref(), Some("3"));
    assert_eq!((a.calls(), b.calls()), (1, 1));

    // Both now cooling down: excluded before any attempt, still 429 (seconds rounded up).
    clock.advance(1_500);
    let (status, retry_after, e) = outcome(send(&gw, body.clone(), &[]).await).await;
    assert_eq!(status, 429, "{e}");
    assert_shape(&e, "rate_limit_error", "rate_limit_exceeded");
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!((a.calls(), b.calls()), (1, 1));

    // b's cooldown is over: it is tried again.
    clock.advance(1_500);
    let (status, retry_after, _) = outcome(send(&gw, body, &[]).await).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("3")));
    assert_eq!((a.calls(), b.calls()), (1, 2));
}

/// Row 429 (mixed): the only target that could serve is rate-limited, the other can never serve:
/// still 429, not 400 (waiting helps).
#[tokio::test]
async fn a_rate_limited_capable_target_beside_an_incapable_one_is_429() {
    let a = Fake::start(vec![], Step::ok("a")).await;
    let b = Fake::start(vec![], rate_limited("5")).await;
    let (gw, _clock) = Gateway::start_clocked(&two_upstreams(&a, &b, EXTRA), T0).await;
    let messages = json!([{ "role": "user", "content": [
        { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } } ] }]);
    let body = json!({ "model": "mixed", "messages": messages });
    let (status, retry_after, e) = outcome(send(&gw, body, &[]).await).await;
    assert_eq!(status, 429, "{e}");
    assert_shape(&e, "rate_limit_error", "rate_limit_exceeded");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert_eq!((a.calls(), b.calls()), (0, 1));
}

/// Row 503: targets exist that could serve but failed for now (5xx, or a 5xx beside a 429).
#[tokio::test]
async fn temporarily_failing_targets_are_503_all_targets_failed() {
    let a = Fake::start(vec![], Step::status(500, "down")).await;
    let b = Fake::start(vec![], Step::status(503, "busy")).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, EXTRA)).await;
    let body = json!({ "model": "ab", "messages": user("x") });
    let (status, retry_after, e) = outcome(send(&gw, body, &[]).await).await;
    assert_eq!(status, 503, "{e}");
    assert_eq!(retry_after, None);
    assert_shape(&e, "api_error", "all_targets_failed");

    let a = Fake::start(vec![], rate_limited("2")).await;
    let b = Fake::start(vec![], Step::status(500, "down")).await;
    let gw = Gateway::start(&two_upstreams(&a, &b, EXTRA)).await;
    let body = json!({ "model": "ab", "messages": user("x") });
    let (status, _, e) = outcome(send(&gw, body, &[]).await).await;
    assert_eq!(status, 503, "{e}");
    assert_shape(&e, "api_error", "all_targets_failed");
}
