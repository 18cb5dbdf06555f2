//! `omniroute config check` on every fixture in `fixtures/configs/`: valid ones exit 0, invalid ones
//! exit 1 and name the key given on their first line (`# expect: KEY`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check(file: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omniroute"));
    cmd.args(["config", "check"]);
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
