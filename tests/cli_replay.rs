//! `omniroute replay` and `POST /api/replay`, run as a user would: the real binary on a data dir
//! of synthetic traffic, alone or owned by a running `serve`. These test the surface (flags,
//! errors, formats, the HTML page, the process model), not the simulation's numbers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use omniroute_core::log::Log;
use omniroute_core::sample;
use omniroute_replay::ReplayReport;
use support::cli::{self, Out, Server, run};

/// A data dir holding `requests` requests of simulated traffic over every strategy, with the
/// config they ran under (`log generate` records none, and a replay needs one to rewrite).
fn traffic(requests: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = sample::router_config(8).unwrap();
    drop(log.put_blob(config.canonical_json()).unwrap());
    sample::traffic(&config, requests, 7, 1_800_000_000_000, &mut |ts, e| {
        drop(log.append_at(ts, &e).unwrap());
    });
    log.sync().unwrap();
    dir
}

fn replay(dir: &std::path::Path, args: &[&str]) -> Out {
    let mut a = vec!["replay"];
    a.extend_from_slice(args);
    run(&a, dir)
}

fn failed_with(o: &Out, wants: &[&str]) {
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stdout.is_empty(), "nothing on stdout: {o:?}");
    assert!(o.stderr.starts_with("error: "), "{o:?}");
    for w in wants {
        assert!(o.stderr.contains(w), "stderr lacks {w:?}: {o:?}");
    }
}

#[test]
fn bad_flags_fail_with_a_message_that_lists_the_valid_values() {
    let dir = cli::generated(20);
    let d = dir.path();
    failed_with(
        &replay(d, &["--strategy", "fastest"]),
        &[
            "unknown strategy \"fastest\"",
            "priority, weighted, round-robin, least-latency, cost, least-busy, auto, tiered",
        ],
    );
    failed_with(
        &replay(d, &["--strategy", "weighted", "--weights", "a"]),
        &["--weights", "MODEL=WEIGHT", "e.g. a=3,b=1"],
    );
    failed_with(
        &replay(d, &["--format", "nope"]),
        &["unknown format \"nope\"", "table, json, markdown, csv"],
    );
    let missing = d.join("no-such-plan.toml");
    failed_with(
        &replay(d, &["--plan-config", missing.to_str().unwrap()]),
        &["cannot read the plan config", "no-such-plan.toml"],
    );
    let nowhere = d.join("no-such-dir").join("r.html");
    failed_with(
        &replay(
            d,
            &["--strategy", "cost", "--html", nowhere.to_str().unwrap()],
        ),
        &["no-such-dir", "does not exist"],
    );
    assert!(!nowhere.exists());
}

#[test]
fn on_a_missing_data_dir_it_fails_naming_it_and_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("mistyped");
    failed_with(
        &replay(&missing, &["--strategy", "cost"]),
        &[&missing.display().to_string()],
    );
    assert!(!missing.exists());
}

#[test]
fn every_format_prints_and_html_writes_a_page_with_charts() {
    let dir = traffic(300);
    let d = dir.path();

    let o = replay(d, &["--strategy", "cost"]);
    assert!(o.ok(), "{o:?}");
    for want in [
        "strategy cost for every combo",
        "recorded vs simulated",
        "success rate",
        "changed routes",
    ] {
        assert!(o.stdout.contains(want), "{want}: {o:?}");
    }

    let o = replay(d, &["--strategy", "cost", "--format", "json"]);
    assert!(o.ok(), "{o:?}");
    let r: ReplayReport = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(r.plan.description, "strategy cost for every combo");
    assert_eq!(
        replay(d, &["--strategy", "cost", "--format", "json"]).stdout,
        o.stdout,
        "the same replay prints the same bytes"
    );

    let o = replay(d, &["--strategy", "cost", "--format", "markdown"]);
    assert!(
        o.ok() && o.stdout.starts_with("# omniroute replay"),
        "{o:?}"
    );

    let o = replay(d, &["--strategy", "cost", "--format", "csv"]);
    assert!(o.ok(), "{o:?}");
    assert!(
        o.stdout
            .starts_with("section,metric,key,recorded,simulated,difference\n"),
        "{o:?}"
    );

    let out = tempfile::tempdir().unwrap();
    let page = out.path().join("replay.html");
    let o = replay(
        d,
        &[
            "--strategy",
            "weighted",
            "--runs",
            "3",
            "--html",
            page.to_str().unwrap(),
        ],
    );
    assert!(o.ok(), "{o:?}");
    assert!(
        o.stderr.contains(&page.display().to_string()),
        "says where the page is: {o:?}"
    );
    assert!(
        o.stdout.contains("strategy weighted"),
        "the report still prints: {o:?}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    // Latency, per provider, and (with more than one run) the spread over seeds.
    assert_eq!(html.matches("<svg").count(), 3, "{html}");
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "self-contained"
    );
}

/// POSTs `body` to `/api/replay` of the server at `addr`: (status, JSON answer).
fn post(addr: &str, body: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/api/replay"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    })
}

#[test]
fn while_serve_runs_the_api_answers_and_the_cli_asks_it() {
    let dir = traffic(200);
    let d = dir.path();
    let server = Server::start(d).unwrap();

    let (status, v) = post(&server.addr, r#"{"strategy": "fastest"}"#);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("unknown strategy") && msg.contains("least-latency"),
        "{v}"
    );

    for bad in [r#"{"strategy": 3}"#, r#"{"stratgy": "cost"}"#, "not json"] {
        let (status, v) = post(&server.addr, bad);
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{bad}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid replay body"),
            "{bad}: {v}"
        );
    }

    let (status, v) = post(&server.addr, r#"{"strategy": "cost", "runs": 2}"#);
    assert_eq!(status, 200, "{v}");
    let api: ReplayReport = serde_json::from_value(v).unwrap();
    assert_eq!(api.plan.runs, 2);

    // The server holds the log, so this process cannot open it: an answer came from the server.
    let args = ["--strategy", "cost", "--runs", "2", "--format", "json"];
    let remote = replay(d, &args);
    assert!(remote.ok(), "{remote:?}");
    let through: ReplayReport = serde_json::from_str(&remote.stdout).unwrap();
    assert_eq!(through, api);
    failed_with(
        &replay(d, &["--strategy", "fastest"]),
        &["unknown strategy \"fastest\"", "least-latency"],
    );

    let stopped = server.stop();
    assert!(stopped.ok(), "{stopped:?}");
    let local = replay(d, &args);
    assert!(local.ok(), "{local:?}");
    assert_eq!(
        local.stdout, remote.stdout,
        "the server and the data dir give the same report"
    );
}

/// A damaged record stops the replay with an error naming the file and the record: a replay of
/// a log that is not what was recorded would be a wrong answer.
#[test]
fn a_damaged_record_is_an_error_naming_it_not_a_wrong_report() {
    let dir = traffic(100);
    let d = dir.path();
    let ok = replay(d, &["--format", "json"]);
    assert!(ok.ok(), "{ok:?}");
    cli::flip_record(d, 200);
    failed_with(
        &replay(d, &["--format", "json"]),
        &["record 200", "omniroute.redb", "altered"],
    );
}
