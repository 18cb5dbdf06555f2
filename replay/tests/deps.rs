//! `omniroute-replay` can never call a provider: no HTTP client is anywhere in its dependency tree
//! (DESIGN.md section 1). Checked with `cargo tree` over the normal and build dependencies for
//! the host platform, offline (the tree comes from `Cargo.lock` and the local registry cache;
//! nothing is fetched).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that speak HTTP (clients, or the transport layers clients are built on).
const HTTP: &[&str] = &[
    "reqwest",
    "hyper",
    "hyper-util",
    "h2",
    "ureq",
    "curl",
    "isahc",
    "surf",
    "attohttpc",
    "http-body",
    "tower",
];

fn workspace_root() -> PathBuf {
    // replay/ is a member directly under the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    assert!(
        std::fs::read_to_string(root.join("Cargo.toml"))
            .unwrap()
            .contains("[workspace]"),
        "{} is not the workspace root",
        root.display()
    );
    root
}

/// The names of the crates in `package`'s normal and build dependency tree (itself included).
fn tree(package: &str) -> BTreeSet<String> {
    let root = workspace_root();
    let out = Command::new(env!("CARGO"))
        .arg("tree")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["-p", package, "-e", "normal,build", "--prefix", "none"])
        // The host's tree: what a build here downloads. `--target all` would need every
        // platform's crates in the local cache, which a fresh machine's build does not fetch
        // (it failed offline once rmcp brought chrono's Android-only dependencies in); the HTTP
        // crates checked for are not platform-gated.
        .arg("--offline")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo tree failed: {stderr}");
    // One crate per line: `name vX.Y.Z [(path)] [(*)]`.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn replay_has_no_http_client_in_its_dependency_tree() {
    let crates = tree("omniroute-replay");
    assert!(
        crates.contains("omniroute-replay") && crates.contains("omniroute-core"),
        "the tree was not read: {crates:?}"
    );
    let http: Vec<&&str> = HTTP.iter().filter(|c| crates.contains(**c)).collect();
    assert!(
        http.is_empty(),
        "omniroute-replay depends on HTTP crates {http:?}; its tree: {crates:?}"
    );
}

/// The same check finds the HTTP client of the gateway itself: the parse sees what it looks for.
#[test]
fn the_check_sees_the_gateways_http_client() {
    let crates = tree("omniroute");
    assert!(crates.contains("reqwest"), "{crates:?}");
    assert!(crates.contains("hyper"), "{crates:?}");
    assert!(crates.contains("omniroute-replay"), "{crates:?}");
}
