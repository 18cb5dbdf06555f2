//! The `omniroute log` commands, run as a user would: the real binary on a temp data dir.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use omniroute_core::log::{LOG_FILE, Log};
use redb::ReadableTable;

const EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

fn omniroute(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omniroute"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn generate_verify_stats_tail() {
    let dir = tempfile::tempdir().unwrap();
    let o = omniroute(dir.path(), &["log", "generate", "--requests", "40"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("appended 200 events"), "{}", stdout(&o));

    let o = omniroute(dir.path(), &["log", "verify"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).starts_with("ok: 200 events"), "{}", stdout(&o));

    let o = omniroute(dir.path(), &["log", "stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["events"], 200);
    assert_eq!(v["head_seq"], 200);
    assert_eq!(v["per_kind"]["RouteDecided"], 40);
    assert!(v["disk_bytes"].as_u64().unwrap() > 0);

    let o = omniroute(dir.path(), &["log", "tail", "-n", "3", "--json"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![198, 199, 200]);
    assert_eq!(lines[2]["kind"], "RequestCompleted");
    assert_eq!(lines[2]["event"]["status"], 200);

    let o = omniroute(dir.path(), &["log", "tail", "-n", "2"]);
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("AttemptFinished") && text.contains("openai/gpt-4o-mini"),
        "{text}"
    );
}

#[test]
fn verify_names_the_first_bad_seq_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        omniroute(dir.path(), &["log", "generate", "--requests", "20"])
            .status
            .success()
    );
    {
        let db = redb::Database::open(dir.path().join(LOG_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(EVENTS).unwrap();
            let mut bytes = t.get(57).unwrap().unwrap().value().to_vec();
            let last = bytes.len() - 1;
            bytes[last - 10] ^= 0x01;
            t.insert(57, bytes.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let o = omniroute(dir.path(), &["log", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).contains("seq 57"), "{}", stdout(&o));
}

#[test]
fn a_data_dir_in_use_is_refused_with_the_owner_named() {
    let dir = tempfile::tempdir().unwrap();
    let _owner = Log::open(dir.path()).unwrap();
    let o = omniroute(dir.path(), &["log", "stats"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("in use by process") && err.contains(&std::process::id().to_string()),
        "{err}"
    );
}

#[test]
fn keys_are_printed_once_stored_as_hashes_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let o = omniroute(
        dir.path(),
        &[
            "keys",
            "create",
            "--name",
            "ci",
            "--scopes",
            "execute:completions",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let key = stdout(&o).trim().to_string();
    assert!(key.starts_with("omr-") && key.len() > 40, "{key}");
    let id = omniroute_core::event::Hash32::of(key.as_bytes()).to_string();
    let list = stdout(&omniroute(dir.path(), &["keys", "list"]));
    assert!(
        list.starts_with(&id[..12]) && list.contains("active"),
        "{list}"
    );
    // The key itself is nowhere in the log, only its hash.
    let raw = std::fs::read(dir.path().join(LOG_FILE)).unwrap();
    assert!(!raw.windows(key.len()).any(|w| w == key.as_bytes()));
    let o = omniroute(dir.path(), &["keys", "revoke", &id[..8]]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&omniroute(dir.path(), &["keys", "list"])).contains("revoked"));
    assert_eq!(
        omniroute(dir.path(), &["keys", "revoke", &id[..8]])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn generate_refuses_the_live_data_dir_and_an_implicit_one() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let config = dir.path().join("omniroute.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n\n[[providers]]\nid = \"mock\"\nkind = \"mock\"\n\n[[models]]\nid = \"mock/fast\"\nprovider = \"mock\"\n",
            live.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_omniroute"))
            .args(["log", "generate", "--requests", "3", "--config"])
            .arg(&config)
            .args(args)
            .current_dir(dir.path())
            .env_remove("OMNIROUTE_CONFIG")
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--data-dir"),
        "{o:?}"
    );
    // The live dir, also when spelled differently.
    for spelled in [live.display().to_string(), "./live".to_string()] {
        let o = run(&["--data-dir", &spelled]);
        assert!(!o.status.success(), "{spelled}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("configured data dir"), "{err}");
    }
    assert!(
        !live.join(LOG_FILE).exists(),
        "synthetic traffic reached the live dir"
    );
    let o = run(&["--data-dir", "scratch"]);
    assert!(o.status.success(), "{o:?}");
    assert!(dir.path().join("scratch").join(LOG_FILE).exists());
}
