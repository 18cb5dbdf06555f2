//! Driving the built binary: commands with a hang guard, a real `serve` on port 0 stopped with
//! SIGTERM, file digests, and damage done to a log through redb itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use omniroute_core::event::Hash32;
use omniroute_core::log::LOG_FILE;
use redb::ReadableTable;

/// A command that has not finished after this long is hung (a bug): it is killed and reported.
/// This is a guard against a hang, not a timing assertion.
pub const HANG: Duration = Duration::from_secs(120);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_omniroute")
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Out {
    /// `None` when it was killed by a signal (an abort, or the hang guard).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// Waits for `child` to exit (killing it after [`HANG`]) and collects its output.
pub fn finish(child: Child) -> Out {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(HANG) {
        Ok(r) => r.unwrap(),
        Err(_) => {
            kill(pid, "KILL");
            let mut o = rx.recv().unwrap().unwrap();
            o.stderr
                .extend_from_slice(b"\n[test: killed by the hang guard]");
            o
        }
    };
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn command(args: &[&str], dir: &Path) -> Command {
    command_with(Path::new(bin()), args, dir)
}

/// [`command`] with another copy of the binary.
pub fn command_with(exe: &Path, args: &[&str], dir: &Path) -> Command {
    let mut c = Command::new(exe);
    c.args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `omniroute ARGS --data-dir DIR`.
pub fn run(args: &[&str], dir: &Path) -> Out {
    finish(command(args, dir).spawn().unwrap())
}

/// The file's content digest (blake3, like the log's own hashes) and modification time.
pub fn digest(file: &Path) -> (Hash32, SystemTime) {
    let bytes = std::fs::read(file).unwrap();
    let mtime = std::fs::metadata(file).unwrap().modified().unwrap();
    (Hash32::of(&bytes), mtime)
}

/// Every read-only command, with the arguments that make its output independent of the clock.
pub fn read_commands(request_id: &str, session: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&["log", "verify"]),
        v(&["log", "stats"]),
        v(&["log", "tail", "-n", "7"]),
        v(&["explain", request_id]),
        v(&["sessions", "show", session]),
        v(&["report", "cost", "--from", "1", "--to", "4102444800000"]),
        v(&[
            "report",
            "cost",
            "--from",
            "1",
            "--to",
            "4102444800000",
            "--pricing",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/configs/valid/full.toml"
            ),
        ]),
        v(&["providers"]),
        v(&["keys", "list"]),
    ]
}

/// A running `omniroute serve --listen 127.0.0.1:0` (killed if dropped without [`Server::stop`],
/// so a failing test leaves no server behind).
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    /// stderr lines after the "listening" line.
    rest: mpsc::Receiver<String>,
    /// stderr up to and including the "listening" line.
    pub startup: String,
}

impl Server {
    /// Starts `serve` on `dir`; `Err` with its output when it exits instead of listening.
    pub fn start(dir: &Path) -> Result<Server, Out> {
        let mut child = command(&["serve", "--listen", "127.0.0.1:0"], dir)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup = String::new();
        loop {
            match rx.recv_timeout(HANG) {
                Ok(line) => {
                    startup.push_str(&line);
                    startup.push('\n');
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap().to_string();
                        return Ok(Server {
                            child: Some(child),
                            addr,
                            rest: rx,
                            startup,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let mut out = finish(child);
                    out.stderr = startup + &out.stderr;
                    return Err(out);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    kill(child.id(), "KILL");
                    let mut out = finish(child);
                    out.stderr = format!("{startup}{}\n[test: serve hung]", out.stderr);
                    return Err(out);
                }
            }
        }
    }

    /// SIGTERM, then its exit and the rest of its stderr.
    pub fn stop(mut self) -> Out {
        let child = self.child.take().unwrap();
        kill(child.id(), "TERM");
        let mut out = finish(child);
        // The reader thread ends at EOF, which came with the exit.
        let rest: Vec<String> = self.rest.iter().collect();
        out.stderr = format!("{}{}{}", self.startup, rest.join("\n"), out.stderr);
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child process killed when this is dropped (a failing test leaves nothing running).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A copy of a data dir's log in a new dir.
pub fn copy_log(from: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(from.join(LOG_FILE), d.path().join(LOG_FILE)).unwrap();
    d
}

const EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

/// Rewrites the stored value of record `seq` with one byte of its event flipped, through redb, so
/// the file stays a readable redb file while the chain breaks at `seq`.
pub fn flip_record(dir: &Path, seq: u64) {
    let db = redb::Database::open(dir.join(LOG_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(EVENTS).unwrap();
        let mut bytes = t.get(seq).unwrap().unwrap().value().to_vec();
        let at = bytes.len() - 10;
        bytes[at] ^= 0x01;
        t.insert(seq, bytes.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

/// A fresh data dir with `requests` synthetic requests (5 events each).
pub fn generated(requests: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let o = run(
        &["log", "generate", "--requests", &requests.to_string()],
        d.path(),
    );
    assert!(o.ok(), "{o:?}");
    d
}

/// (request id, session id) of the last request of a log, read from `log tail --json`.
pub fn last_request(dir: &Path) -> (String, String) {
    let o = run(&["log", "tail", "-n", "5", "--json"], dir);
    assert!(o.ok(), "{o:?}");
    let mut rid = None;
    let mut session = None;
    for line in o.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "RequestReceived" {
            rid = v["event"]["request_id"].as_str().map(str::to_string);
            session = v["event"]["session_id"].as_str().map(str::to_string);
        }
    }
    (rid.unwrap(), session.unwrap())
}

pub fn path_of(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

/// Starts `omniroute serve --listen 127.0.0.1:0 --config CONFIG [--data-dir DATA]` and returns it
/// with its base URL, read from its "listening on" line; its stderr keeps being drained so the
/// server never blocks on a full pipe.
pub fn serve_with(config: &Path, data: Option<&Path>) -> (Child, String) {
    let mut c = Command::new(bin());
    c.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config);
    if let Some(d) = data {
        c.arg("--data-dir").arg(d);
    }
    let mut child = c
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    (child, format!("http://{addr}"))
}
