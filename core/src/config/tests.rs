//! Config loading: defaults, the version hash, nested combos.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

#[test]
fn builtin_default_is_valid_and_all_mock() {
    let c = Config::builtin().unwrap();
    assert!(c.providers.iter().all(|p| p.kind == ProviderKind::Mock));
    assert!(c.combo_index("default").is_some());
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:20128");
    assert_eq!(c.server.data_dir, PathBuf::from(".omniroute"));
    assert_eq!(c.resilience, Resilience::profile(Profile::Balanced));
}

#[test]
fn version_is_stable_and_follows_content() {
    let a = Config::builtin().unwrap();
    let b = Config::from_toml(DEFAULT_TOML, "again").unwrap();
    assert_eq!(a.version(), b.version());
    // Comments and formatting do not change the effective config, so not its version either.
    let reformatted = format!("# a comment\n{}", DEFAULT_TOML.replace(" = ", "="));
    assert_eq!(
        Config::from_toml(&reformatted, "x").unwrap().version(),
        a.version()
    );
    let changed = DEFAULT_TOML.replace("profile = \"balanced\"", "profile = \"aggressive\"");
    let mut c = Config::from_toml(&changed, "x").unwrap();
    assert_ne!(c.version(), a.version());
    c.resilience = Resilience::profile(Profile::Balanced);
    c.reindex();
    assert_eq!(c.version(), a.version());
}

#[test]
fn a_combo_naming_another_is_expanded_with_multiplied_weights() {
    let src = r#"
[[providers]]
id = "m"
kind = "mock"
[[models]]
id = "a"
provider = "m"
[[models]]
id = "b"
provider = "m"
[[models]]
id = "c"
provider = "m"
[[combos]]
id = "inner"
strategy = "weighted"
targets = [{ model = "a", weight = 2 }, { model = "b", weight = 3 }]
[[combos]]
id = "outer"
strategy = "weighted"
targets = [{ model = "inner", weight = 2 }, { model = "c", weight = 5 }]
"#;
    let c = Config::from_toml(src, "nested").unwrap();
    let outer = &c.combos[c.combo_index("outer").unwrap()];
    let got: Vec<(String, u32)> = outer
        .targets
        .iter()
        .map(|t| (c.models[t.model].id.clone(), t.weight))
        .collect();
    assert_eq!(got, vec![("a".into(), 4), ("b".into(), 6), ("c".into(), 5)]);
}

#[test]
fn every_problem_is_reported_at_once_with_lines() {
    let src = "[[providers]]\nid = \"m\"\nkind = \"mock\"\n\n[[models]]\nid = \"a\"\nprovider = \"x\"\ntier = 9\n";
    let e = Config::from_toml(src, "many.toml").unwrap_err();
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec!["models[0].provider", "models[0].tier"]);
    assert_eq!(e.problems[0].line, Some(6));
    let text = e.to_string();
    assert!(text.starts_with("many.toml: 2 problems"), "{text}");
}

#[test]
fn the_log_cache_size_has_a_small_default_and_bounds() {
    assert_eq!(Config::builtin().unwrap().log.cache_size_mb, 32);
    let c = Config::from_toml("[log]\ncache_size_mb = 256\n", "x").unwrap();
    assert_eq!(c.log.cache_size_mb, 256);
    for bad in ["0", "16385"] {
        let e =
            Config::from_toml(&format!("[log]\ncache_size_mb = {bad}\n"), "c.toml").unwrap_err();
        assert_eq!(e.problems[0].key, "log.cache_size_mb", "{e}");
        assert!(e.problems[0].fix.contains("MiB"), "{e}");
    }
}
