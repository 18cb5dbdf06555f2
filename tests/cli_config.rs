//! `omniroute config check` on every fixture in `fixtures/configs/`: valid ones exit 0, invalid ones
//! exit 1 and name the key given on their first line (`# expect: KEY`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(file: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omniroute"));
    cmd.args(["config", "check"]).env_remove("OMNIROUTE_CONFIG");
    if let Some(f) = file {
        cmd.arg(f);
    }
    cmd.output().unwrap()
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/configs")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_fixtures_pass() {
    let files = fixtures("valid");
    assert!(files.len() >= 2);
    for f in files {
        let o = check(Some(&f));
        assert!(o.status.success(), "{}: {o:?}", f.display());
        assert!(String::from_utf8_lossy(&o.stdout).starts_with("ok: "));
    }
}

#[test]
fn invalid_fixtures_fail_naming_the_key_and_the_file() {
    let files = fixtures("invalid");
    assert!(files.len() >= 15);
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        let key = src
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks its `# expect:` line", f.display()));
        let o = check(Some(&f));
        assert_eq!(o.status.code(), Some(1), "{}", f.display());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(key),
            "{}: expected key {key:?} in:\n{err}",
            f.display()
        );
        assert!(err.contains(&f.display().to_string()), "{err}");
        assert!(err.contains("fix: "), "{err}");
    }
}

#[test]
fn the_builtin_default_passes_and_a_missing_file_is_named() {
    let o = check(None);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("built-in default config"));
    let o = check(Some(Path::new("/nonexistent/omniroute.toml")));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/omniroute.toml"));
}

/// `config check` run in `cwd` with `OMNIROUTE_CONFIG` set to `env` (or unset): its stdout.
fn check_in(cwd: &Path, env: Option<&Path>, file: Option<&Path>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omniroute"));
    cmd.args(["config", "check"]).current_dir(cwd);
    match env {
        Some(e) => cmd.env("OMNIROUTE_CONFIG", e),
        None => cmd.env_remove("OMNIROUTE_CONFIG"),
    };
    if let Some(f) = file {
        cmd.arg(f);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_config_is_found_where_users_put_it() {
    let valid = fixtures("valid").remove(0);
    let dir = tempfile::tempdir().unwrap();
    // No file anywhere: the built-in default.
    let builtin = check_in(dir.path(), None, None);
    assert!(
        builtin.starts_with("ok: <built-in default config>:"),
        "{builtin}"
    );
    // `omniroute config default > omniroute.toml`, as the README says: found in the working dir.
    std::fs::copy(&valid, dir.path().join("omniroute.toml")).unwrap();
    let local = check_in(dir.path(), None, None);
    assert!(local.starts_with("ok: omniroute.toml:"), "{local}");
    // OMNIROUTE_CONFIG wins over ./omniroute.toml, and the file given wins over both.
    let env = dir.path().join("from-env.toml");
    std::fs::copy(&valid, &env).unwrap();
    let out = check_in(dir.path(), Some(&env), None);
    assert!(out.starts_with(&format!("ok: {}:", env.display())), "{out}");
    let out = check_in(dir.path(), Some(&env), Some(&valid));
    assert!(
        out.starts_with(&format!("ok: {}:", valid.display())),
        "{out}"
    );
}

#[test]
fn a_provider_whose_api_key_env_is_unset_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.toml");
    std::fs::write(
        &file,
        r#"
[[providers]]
id = "up"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "OMNIROUTE_TEST_NEVER_SET_KEY"

[[models]]
id = "up-small"
provider = "up"
"#,
    )
    .unwrap();
    let run = |set: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omniroute"));
        cmd.args(["config", "check"]).arg(&file);
        if set {
            cmd.env("OMNIROUTE_TEST_NEVER_SET_KEY", "sk-test");
        } else {
            cmd.env_remove("OMNIROUTE_TEST_NEVER_SET_KEY");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8(o.stderr).unwrap()
    };
    let err = run(false);
    assert!(
        err.contains("OMNIROUTE_TEST_NEVER_SET_KEY") && err.contains("up-small"),
        "{err}"
    );
    assert!(!run(true).contains("warning"));
}
