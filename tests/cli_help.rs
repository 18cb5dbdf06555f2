//! The CLI helps a user who mistypes: "did you mean" for commands and flags, and help text on
//! every `--json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::cli::run;

#[test]
fn mistyped_commands_and_flags_get_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["sesions"], dir.path());
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("'sessions'"), "{o:?}");
    let o = run(&["report", "cost", "--jsn"], dir.path());
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(o.stderr.contains("'--json'"), "{o:?}");
}

#[test]
fn every_json_flag_says_what_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        &["explain"][..],
        &["report", "cost"],
        &["sessions", "show"],
        &["providers"],
        &["log", "verify"],
        &["log", "tail"],
        &["log", "stats"],
    ] {
        // `-h`: the one-line form, each flag's text on its line.
        let mut args = cmd.to_vec();
        args.push("-h");
        let o = run(&args, dir.path());
        assert!(o.ok(), "{cmd:?}: {o:?}");
        let line = o
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with("--json"))
            .unwrap_or_else(|| panic!("{cmd:?} has no --json: {}", o.stdout));
        assert!(
            line.trim_start().trim_start_matches("--json").trim().len() > 5,
            "{cmd:?}: `{line}` says nothing"
        );
    }
}
