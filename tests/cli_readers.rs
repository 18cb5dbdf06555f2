//! Readers never write (DESIGN.md section 2): every read command, run as a user would (the real
//! binary), on a missing or empty data dir, a read-only copy, the committed v1 fixture, a log left
//! by a killed writer, and a data dir a running server owns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::sync::mpsc;

use omniroute_core::event::RequestId;
use omniroute_core::log::{LOG_FILE, Log};
use support::cli::{self, Out, Server, digest, read_commands, run};

const SOME_ID: &str = "01KAJBCHXV00000000000000NV";

fn args(cmd: &[String]) -> Vec<&str> {
    cmd.iter().map(String::as_str).collect()
}

fn label(cmd: &[String]) -> String {
    cmd.iter()
        .take(3)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The directory entries of `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn read_commands_on_a_missing_or_empty_data_dir_fail_naming_it_and_create_nothing() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("mistyped");
    let empty_dir = root.path().join("no-log");
    std::fs::create_dir(&empty_dir).unwrap();
    let empty_file = root.path().join("zero");
    std::fs::create_dir(&empty_file).unwrap();
    std::fs::write(empty_file.join(LOG_FILE), b"").unwrap();

    for cmd in read_commands(SOME_ID, "s-1") {
        let o = run(&args(&cmd), &missing);
        assert_eq!(o.code, Some(1), "{} on a missing dir: {o:?}", label(&cmd));
        assert!(
            o.stderr.contains(&missing.display().to_string()) && o.stderr.contains("--data-dir"),
            "{}: the message names the dir and what to check: {o:?}",
            label(&cmd)
        );
        assert!(!missing.exists(), "{} created {missing:?}", label(&cmd));

        let o = run(&args(&cmd), &empty_dir);
        assert_eq!(
            o.code,
            Some(1),
            "{} on a dir without a log: {o:?}",
            label(&cmd)
        );
        assert!(o.stderr.contains("no omniroute log"), "{o:?}");
        assert!(
            listing(&empty_dir).is_empty(),
            "{} wrote into it",
            label(&cmd)
        );

        let o = run(&args(&cmd), &empty_file);
        assert_eq!(o.code, Some(1), "{} on a 0-byte log: {o:?}", label(&cmd));
        assert!(!o.stdout.starts_with("ok"), "{o:?}");
        assert!(o.stderr.contains("empty (0 bytes)"), "{o:?}");
        assert_eq!(listing(&empty_file), vec![LOG_FILE.to_string()]);
        assert_eq!(
            std::fs::metadata(empty_file.join(LOG_FILE)).unwrap().len(),
            0
        );
    }
}

/// Whether this process runs as root (where file modes do not stop writes).
fn root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn read_commands_work_on_a_read_only_copy_and_change_no_byte() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let src = cli::generated(40);
    let (rid, session) = cli::last_request(src.path());
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join(LOG_FILE);
    std::fs::copy(src.path().join(LOG_FILE), &file).unwrap();
    // `chmod -w` on the file and its dir.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // `nobody` must be able to run the binary: the build may sit in a directory only root can
    // enter (a clone made under `mktemp -d`), so it runs from a copy beside the data dir.
    let exe = parent.path().join("omniroute");
    std::fs::copy(cli::bin(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Files the commands read from the checkout are copied likewise.
    let copied = |arg: String| {
        let path = std::path::Path::new(&arg);
        if !path.starts_with(env!("CARGO_MANIFEST_DIR")) || !path.is_file() {
            return arg;
        }
        let to = parent.path().join(path.file_name().unwrap());
        std::fs::copy(path, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        to.display().to_string()
    };
    let before = digest(&file);
    for cmd in read_commands(&rid, &session) {
        let cmd: Vec<String> = cmd.into_iter().map(copied).collect();
        let mut c = cli::command_with(&exe, &args(&cmd), &dir);
        // Root ignores file modes, so there the command runs as `nobody`: then the mode is what
        // stops a write, and this proves the commands open the file without asking to write it.
        // The digest and mtime check below proves, for every user, that no byte changed.
        if root() {
            c.uid(65534).gid(65534);
        }
        let o = cli::finish(c.spawn().unwrap());
        assert!(o.ok(), "{} on a read-only copy: {o:?}", label(&cmd));
        assert_eq!(digest(&file), before, "{} changed the file", label(&cmd));
        assert_eq!(listing(&dir), vec![LOG_FILE.to_string()]);
    }
    // Restore write permission so the temp dir can be removed.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_v1_fixture_is_read_in_place_and_left_as_committed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/logs/v1");
    let file = dir.join(LOG_FILE);
    let before = digest(&file);
    let rid = RequestId(0x0197_0000_0000_0000_0000_0000_0000_0001).to_string();
    for cmd in read_commands(&rid, "s-1") {
        let o = run(&args(&cmd), &dir);
        assert!(o.ok(), "{} on the v1 fixture: {o:?}", label(&cmd));
        assert_eq!(digest(&file), before, "{} changed the fixture", label(&cmd));
    }
    let o = run(&["log", "verify"], &dir);
    assert!(o.stdout.starts_with("ok: 17 events"), "{o:?}");
    assert_eq!(listing(&dir), vec![LOG_FILE.to_string()]);
}

#[test]
fn a_log_left_by_a_killed_writer_is_read_without_repairing_the_file() {
    let live = tempfile::tempdir().unwrap();
    let log = Log::open(live.path()).unwrap();
    for n in 0..30 {
        for e in omniroute_core::sample::request_story(n) {
            drop(log.append(&e).unwrap());
        }
    }
    log.sync().unwrap();
    // A copy taken while the writer holds the file is what a kill -9 leaves: committed, but not
    // closed (redb then needs a repair before a writer may use it).
    let crashed = cli::copy_log(live.path());
    drop(log);
    let file = crashed.path().join(LOG_FILE);
    let before = digest(&file);
    let (rid, session) = cli::last_request(crashed.path());
    for cmd in read_commands(&rid, &session) {
        let o = run(&args(&cmd), crashed.path());
        assert!(o.ok(), "{} on a crash image: {o:?}", label(&cmd));
        assert_eq!(digest(&file), before, "{} repaired the file", label(&cmd));
    }
    let o = run(&["log", "verify"], crashed.path());
    assert!(o.stdout.starts_with("ok: 150 events"), "{o:?}");
}

/// The outputs of the read commands, with what legitimately differs between two runs removed
/// (the verify rate; the file's size and allocation, which a closing server changes).
fn answers(dir: &Path, rid: &str, session: &str) -> Vec<(String, Out)> {
    let mut cmds = read_commands(rid, session);
    cmds.push(vec!["log".into(), "stats".into(), "--json".into()]);
    cmds.push(vec![
        "log".into(),
        "tail".into(),
        "-n".into(),
        "30".into(),
        "--json".into(),
    ]);
    cmds.into_iter()
        .map(|cmd| {
            let mut o = run(&args(&cmd), dir);
            o.stdout = normalize(&o.stdout);
            (cmd.join(" "), o)
        })
        .collect()
}

fn normalize(s: &str) -> String {
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(s)
        && let Some(m) = v.as_object_mut()
        && m.contains_key("disk_bytes")
    {
        m.retain(|k, _| !k.starts_with("disk") && !k.starts_with("file"));
        return v.to_string();
    }
    s.lines()
        .filter(|l| !l.starts_with("on disk") && !l.starts_with("file "))
        .map(|l| match l.rsplit_once(" (") {
            Some((ok, rate)) if rate.ends_with("events/s)") => ok,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn while_serve_runs_read_commands_ask_it_and_print_the_same() {
    let dir = cli::generated(30);
    let (rid, session) = cli::last_request(dir.path());
    let o = run(
        &[
            "keys",
            "create",
            "--name",
            "ops",
            "--scopes",
            "execute:completions",
        ],
        dir.path(),
    );
    assert!(o.ok(), "{o:?}");
    let key = o.stdout.trim().to_string();
    let server = Server::start(dir.path()).unwrap();

    // Follow the log through the server while it records a new event.
    let mut tail = cli::KillOnDrop(
        cli::command(&["log", "tail", "-f", "-n", "1", "--json"], dir.path())
            .spawn()
            .unwrap(),
    );
    let lines = {
        use std::io::BufRead;
        let stdout = tail.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let resp = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{}/v1/chat/completions", server.addr))
            .bearer_auth(&key)
            .json(&serde_json::json!({ "model": "default", "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .unwrap()
    });
    assert!(resp.status().is_success());
    let new_rid = support::rid(&resp);
    loop {
        let line = lines.recv_timeout(cli::HANG).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["kind"] == "RequestCompleted" && v["event"]["request_id"] == new_rid.as_str() {
            break;
        }
    }
    drop(tail);

    let remote = answers(dir.path(), &rid, &session);
    for (cmd, o) in &remote {
        assert!(o.ok(), "{cmd} while serving: {o:?}");
    }
    let stopped = server.stop();
    assert!(stopped.ok(), "{stopped:?}");
    let local = answers(dir.path(), &rid, &session);
    for ((cmd, r), (_, l)) in remote.iter().zip(&local) {
        assert!(l.ok(), "{cmd} after the server stopped: {l:?}");
        assert_eq!(
            r.stdout, l.stdout,
            "{cmd}: the server and the data dir disagree"
        );
    }
}
