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

// --- Canonical JSON: the bytes `config_version` hashes turn back into the same config. ---

/// Several providers of every kind, priced and unpriced models, a combo of every strategy (one
/// nesting another), auto weights that are not short decimals, and resilience overrides.
const RICH_TOML: &str = r#"
[server]
listen = "0.0.0.0:8080"
data_dir = "/var/lib/omniroute"
max_body_bytes = 1048576

[log]
durability = "strict"
store_bodies = true
on_failure = "serve"
batch_window_ms = 3
cache_size_mb = 64

[[providers]]
id = "openai"
kind = "openai"
api_key_env = "OPENAI_API_KEY"
timeout_ms = 45000

[[providers]]
id = "anthropic"
kind = "anthropic"
api_key_env = "ANTHROPIC_API_KEY"

[[providers]]
id = "mock-b"
kind = "mock"
latency_ms = 17
failure_rate = 0.30000000000000004
enabled = false

[[models]]
id = "gpt-4o"
provider = "openai"
tier = 2
capabilities = ["chat", "tools", "vision", "json"]
price = { input = 2.5, output = 10.0, cached_read = 1.25 }

[[models]]
id = "gpt-4.1"
provider = "openai"
upstream = "gpt-4.1-2025-04-14"
tier = 2
context_window = 1000000
price = { input = 2.0, output = 8.0, cached_read = 0.5, cache_write = 2.0, reasoning = 8.0 }

[[models]]
id = "claude"
provider = "anthropic"
upstream = "claude-sonnet-4-5"
tier = 3
context_window = 200000
capabilities = ["chat", "tools", "vision", "reasoning"]
price = { input = 3.0, output = 15.0, cached_read = 0.3, cache_write = 3.75 }

[[models]]
id = "mock/free"
provider = "mock-b"
tier = 0
enabled = false

[[combos]]
id = "fast"
strategy = "priority"
targets = [{ model = "gpt-4o" }, { model = "claude" }]

[[combos]]
id = "split"
strategy = "weighted"
targets = [{ model = "gpt-4o", weight = 7 }, { model = "claude", weight = 3 }]

[[combos]]
id = "rr"
strategy = "round-robin"
targets = [{ model = "gpt-4o" }, { model = "gpt-4.1" }]
active = false

[[combos]]
id = "quick"
strategy = "least-latency"
targets = [{ model = "gpt-4o" }, { model = "mock/free" }]

[[combos]]
id = "cheap"
strategy = "cost"
targets = [{ model = "split", weight = 2 }, { model = "mock/free" }]

[[combos]]
id = "idle"
strategy = "least-busy"
targets = [{ model = "gpt-4.1" }, { model = "claude" }]

[[combos]]
id = "smart"
strategy = "auto"
targets = [{ model = "gpt-4o" }, { model = "claude" }, { model = "mock/free" }]
auto_weights = { cost = 0.30000000000000004, latency = 0.1, success = 0.7000000000000001, circuit = 1e-9, quota = 0.0 }

[[combos]]
id = "ladder"
strategy = "tiered"
targets = [{ model = "mock/free" }, { model = "gpt-4o" }, { model = "claude" }]

[resilience]
profile = "aggressive"
max_retries = 3
backoff_max_ms = 750
default_cooldown_ms = 2500

[router]
auto_weights = { cost = 0.45, latency = 0.15000000000000002 }
default_output_tokens = 512
"#;

fn rich() -> Config {
    Config::from_toml(RICH_TOML, "rich.toml").unwrap()
}

/// Reads the config back from its canonical bytes and checks it is the same config.
fn round_trip(c: &Config) -> Config {
    let bytes = c.canonical_json();
    assert_eq!(
        Hash32::of(&bytes),
        c.version(),
        "version hashes canonical_json"
    );
    let back = Config::from_canonical(&bytes).unwrap();
    assert_eq!(back.version(), c.version());
    assert_eq!(back.canonical_json(), bytes);
    back
}

#[test]
fn builtin_and_rich_configs_round_trip_through_canonical_json() {
    let b = Config::builtin().unwrap();
    let back = round_trip(&b);
    assert_eq!(back.combo_index("cheapest"), b.combo_index("cheapest"));
    assert_eq!(
        back.model_index("mock/premium"),
        b.model_index("mock/premium")
    );

    let r = rich();
    let strategies: std::collections::HashSet<Strategy> =
        r.combos.iter().map(|c| c.strategy).collect();
    assert_eq!(strategies.len(), 8, "every strategy is covered");
    let back = round_trip(&r);
    let smart = &back.combos[back.combo_index("smart").unwrap()];
    assert_eq!(smart.auto_weights.cost.to_bits(), (0.1f64 + 0.2).to_bits());
    assert_eq!(back.resilience, r.resilience);
    assert_eq!(back.models[1].price, r.models[1].price);
    assert_eq!(
        back.combos[back.combo_index("cheap").unwrap()]
            .targets
            .len(),
        3
    );

    // A float computed at runtime, not parsed from text.
    let mut c = r.clone();
    c.router.auto_weights.latency = 0.1 + 0.2;
    c.providers[2].failure_rate = 1.0 / 3.0;
    c.reindex();
    assert_ne!(c.version(), r.version());
    round_trip(&c);
}

/// serde_json's default float parser may land one ulp off for decimal strings of 17 significant
/// digits, which most doubles need; then the decoded config re-encodes differently and
/// `from_canonical` refuses it. The `float_roundtrip` feature makes parsing exact. Without the
/// feature this test fails.
#[test]
fn arbitrary_floats_round_trip_exactly() {
    // splitmix64: deterministic, spreads over every exponent and mantissa.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn any_double(state: &mut u64) -> f64 {
        loop {
            let f = f64::from_bits(next(state));
            if f.is_finite() {
                return f;
            }
        }
    }
    fn unit(state: &mut u64) -> f64 {
        (next(state) >> 11) as f64 / (1u64 << 53) as f64
    }
    let s = &mut 0x0123_4567_89ab_cdef_u64;
    let base = Config::builtin().unwrap();
    for _ in 0..200 {
        let mut c = base.clone();
        let w = &mut c.router.auto_weights;
        // Both full-range doubles and ones in 0..1, where the weights really live.
        *w = AutoWeights {
            cost: any_double(s),
            latency: any_double(s),
            success: unit(s),
            circuit: unit(s),
            quota: unit(s) * 1e-3,
        };
        c.providers[0].failure_rate = unit(s);
        c.reindex();
        let back = Config::from_canonical(&c.canonical_json())
            .unwrap_or_else(|e| panic!("{:?}: {e}", c.router.auto_weights));
        let (a, b) = (c.router.auto_weights, back.router.auto_weights);
        for (x, y) in [
            (a.cost, b.cost),
            (a.latency, b.latency),
            (a.success, b.success),
            (a.circuit, b.circuit),
            (a.quota, b.quota),
        ] {
            assert_eq!(x.to_bits(), y.to_bits());
        }
    }
}

#[test]
fn from_canonical_refuses_bytes_that_are_not_exactly_canonical() {
    let c = Config::builtin().unwrap();
    // Same config, different bytes: it would be found under a key it does not hash to.
    let value: serde_json::Value = serde_json::from_slice(&c.canonical_json()).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    let e = Config::from_canonical(&pretty).unwrap_err();
    assert!(e.starts_with("not a canonical config: "), "{e}");
    assert!(e.contains(&c.version().to_string()), "{e}");

    let e = Config::from_canonical(b"{\"server\": 1}").unwrap_err();
    assert!(e.starts_with("not a canonical config: "), "{e}");
    let mut extra = value.clone();
    extra["version"] = serde_json::json!("x");
    let e = Config::from_canonical(&serde_json::to_vec(&extra).unwrap()).unwrap_err();
    assert!(e.contains("unknown field"), "{e}");

    // Canonical bytes, but an index past the end: refused rather than a panic later.
    let mut broken = c.clone();
    broken.combos[0].targets[0].model = 99;
    broken.reindex();
    let e = Config::from_canonical(&broken.canonical_json()).unwrap_err();
    assert!(e.contains("targets model #99"), "{e}");
}

// --- diff ---

fn change(
    path: &str,
    from: Option<serde_json::Value>,
    to: Option<serde_json::Value>,
) -> FieldChange {
    FieldChange {
        path: path.into(),
        from,
        to,
    }
}

fn edited(find: &str, replace: &str) -> Config {
    assert!(RICH_TOML.contains(find), "{find}");
    Config::from_toml(&RICH_TOML.replacen(find, replace, 1), "edited.toml").unwrap()
}

#[test]
fn diff_of_equal_configs_is_empty() {
    assert_eq!(diff(&rich(), &rich()), vec![]);
    let b = Config::builtin().unwrap();
    assert_eq!(diff(&b, &b.clone()), vec![]);
}

#[test]
fn diff_matches_elements_by_id_and_names_fields_by_path() {
    use serde_json::json;
    let a = rich();
    let mut b = edited(
        "price = { input = 2.5, output = 10.0, cached_read = 1.25 }",
        "price = { input = 2.75, output = 10.0, cached_read = 1.25 }",
    );
    let fast = b.combo_index("fast").unwrap();
    b.combos[fast].strategy = Strategy::Cost;
    b.combos[fast].active = false;
    b.resilience.max_retries = 1;
    b.reindex();
    assert_eq!(
        diff(&a, &b),
        vec![
            change("combos.fast.active", Some(json!(true)), Some(json!(false))),
            change(
                "combos.fast.strategy",
                Some(json!("priority")),
                Some(json!("cost"))
            ),
            // `cache_write` defaults to the input price, so it moves with it.
            change(
                "models.gpt-4o.price.cache_write",
                Some(json!(2_500_000)),
                Some(json!(2_750_000))
            ),
            change(
                "models.gpt-4o.price.input",
                Some(json!(2_500_000)),
                Some(json!(2_750_000))
            ),
            change("resilience.max_retries", Some(json!(3)), Some(json!(1))),
        ]
    );
    // Reversed, every change is reversed.
    let back: Vec<FieldChange> = diff(&b, &a);
    let forth: Vec<FieldChange> = diff(&a, &b)
        .into_iter()
        .map(|c| change(&c.path, c.to, c.from))
        .collect();
    assert_eq!(back, forth);
}

#[test]
fn diff_reports_whole_elements_added_or_removed_and_quotes_dotted_ids() {
    use serde_json::json;
    let a = rich();
    // Remove the provider `mock-b` with its one model and the combos that use that model.
    let mut b = a.clone();
    let removed = b.providers.remove(2);
    assert_eq!(removed.id, "mock-b");
    b.models.retain(|m| m.id != "mock/free");
    b.combos
        .retain(|c| !["quick", "cheap", "smart", "ladder"].contains(&c.id.as_str()));
    b.models
        .iter_mut()
        .find(|m| m.id == "gpt-4.1")
        .unwrap()
        .tier = 1;
    b.reindex();
    let d = diff(&a, &b);
    let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "combos.cheap",
            "combos.ladder",
            "combos.quick",
            "combos.smart",
            "models.\"gpt-4.1\".tier",
            "models.mock/free",
            "providers.mock-b",
        ]
    );
    let gone = d.iter().find(|c| c.path == "providers.mock-b").unwrap();
    assert_eq!(gone.to, None);
    assert_eq!(gone.from.as_ref().unwrap()["latency_ms"], json!(17));
    // Added is the mirror image.
    let added = diff(&b, &a);
    let p = added.iter().find(|c| c.path == "providers.mock-b").unwrap();
    assert_eq!((p.from.clone(), p.to.clone()), (None, gone.from.clone()));
    // Quoted segments parse back to the id.
    assert_eq!(
        diff::parse_path("models.\"gpt-4.1\".tier").unwrap(),
        vec!["models", "gpt-4.1", "tier"]
    );
}

#[test]
fn diff_compares_other_arrays_as_one_value() {
    use serde_json::json;
    let a = rich();
    let b = edited(
        "targets = [{ model = \"gpt-4o\", weight = 7 }, { model = \"claude\", weight = 3 }]",
        "targets = [{ model = \"gpt-4o\", weight = 6 }, { model = \"claude\", weight = 3 }]",
    );
    let d = diff(&a, &b);
    // `cheap` nests `split`, so its expanded weights change too.
    let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, vec!["combos.cheap.targets", "combos.split.targets"]);
    assert_eq!(
        d[1].to,
        Some(json!([{ "model": 0, "weight": 6 }, { "model": 2, "weight": 3 }]))
    );
}

#[test]
fn diff_reports_a_reorder_so_different_versions_never_diff_empty() {
    use serde_json::json;
    let a = Config::builtin().unwrap();
    let mut b = a.clone();
    b.combos.swap(0, 1);
    b.reindex();
    assert_ne!(a.version(), b.version());
    assert_eq!(
        diff(&a, &b),
        vec![change(
            "combos",
            Some(json!(["default", "balanced", "cheapest", "escalate"])),
            Some(json!(["balanced", "default", "cheapest", "escalate"]))
        )]
    );
}

#[test]
fn paths_with_awkward_ids_parse_back() {
    for ids in [
        vec!["models", "gpt-4.1", "price", "input"],
        vec!["combos", "", "active"],
        vec!["combos", "we\"ird.id\\", "strategy"],
        vec!["providers", "mock-b"],
    ] {
        let mut path = String::new();
        for seg in &ids {
            diff::push_segment(&mut path, seg);
        }
        assert_eq!(diff::parse_path(&path).unwrap(), ids, "{path}");
    }
    for bad in ["a..b", "a.", ".a", "\"open", "\"x\"y"] {
        assert!(diff::parse_path(bad).is_err(), "{bad}");
    }
}

// --- set_path and carry_over ---

#[test]
fn set_path_changes_one_field_by_id_keyed_path() {
    use serde_json::json;
    let a = rich();
    let b = set_path(&a, "combos.fast.strategy", &json!("auto")).unwrap();
    assert_eq!(
        b.combos[b.combo_index("fast").unwrap()].strategy,
        Strategy::Auto
    );
    assert_ne!(b.version(), a.version());
    assert_eq!(
        diff(&a, &b),
        vec![change(
            "combos.fast.strategy",
            Some(json!("priority")),
            Some(json!("auto"))
        )]
    );
    let c = set_path(&a, "models.\"gpt-4.1\".tier", &json!(3)).unwrap();
    assert_eq!(c.models[c.model_index("gpt-4.1").unwrap()].tier, 3);

    for (path, value, want) in [
        ("combos.nope.active", json!(false), "no such path"),
        ("combos.fast.bogus", json!(1), "no such path"),
        ("combos.fast.strategy", json!("fastest"), "unknown variant"),
        ("combos.fast.active", json!("yes"), "invalid type"),
        ("combos.fast.id", json!("split"), "duplicate combo id"),
        (
            "combos.fast.id",
            json!("gpt-4o"),
            "both a combo id and a model id",
        ),
        ("", json!(1), "empty path"),
    ] {
        let e = set_path(&a, path, &value).unwrap_err();
        assert!(e.contains(want), "{path}: {e}");
    }
    assert!(runtime_changeable("combos.fast.active"));
    assert!(runtime_changeable("combos.\"a.b\".strategy"));
    assert!(!runtime_changeable("combos.fast.targets"));
    assert!(runtime_changeable("resilience.max_retries"));
    assert!(!runtime_changeable("resilience"));
    assert!(!runtime_changeable("models.gpt-4o.enabled"));
}

/// The file a run started from, and what runtime changes made of it.
fn running() -> (Config, Config) {
    use serde_json::json;
    let file = rich();
    let mut eff = set_path(&file, "combos.fast.active", &json!(false)).unwrap();
    eff = set_path(&eff, "combos.split.strategy", &json!("least-latency")).unwrap();
    eff = set_path(&eff, "combos.ladder.strategy", &json!("cost")).unwrap();
    (file, eff)
}

#[test]
fn carry_over_with_an_unchanged_file_keeps_every_override() {
    use serde_json::json;
    let (file, eff) = running();
    let c = carry_over(&file, &eff, &file);
    assert_eq!(c.config.version(), eff.version());
    assert_eq!(c.config.canonical_json(), eff.canonical_json());
    assert_eq!(c.dropped, vec![]);
    assert_eq!(
        c.kept,
        vec![
            change("combos.fast.active", Some(json!(true)), Some(json!(false))),
            change(
                "combos.ladder.strategy",
                Some(json!("tiered")),
                Some(json!("cost"))
            ),
            change(
                "combos.split.strategy",
                Some(json!("weighted")),
                Some(json!("least-latency"))
            ),
        ]
    );
    assert_eq!(c.kept, diff(&file, &c.config));
    // A run with no overrides carries nothing.
    let c = carry_over(&file, &file, &file);
    assert_eq!((c.kept.len(), c.dropped.len()), (0, 0));
    assert_eq!(c.config.version(), file.version());
}

#[test]
fn carry_over_keeps_an_override_when_the_file_changed_another_field() {
    let (file, eff) = running();
    let new_file = edited("max_retries = 3", "max_retries = 2");
    let new_file = {
        // And a field of an overridden combo that is not the overridden one.
        let mut f = new_file;
        let ix = f.combo_index("fast").unwrap();
        f.combos[ix].auto_weights.cost = 0.5;
        f.reindex();
        f
    };
    let c = carry_over(&file, &eff, &new_file);
    assert_eq!(c.dropped, vec![]);
    assert_eq!(c.kept.len(), 3);
    assert_eq!(c.config.resilience.max_retries, 2);
    let fast = &c.config.combos[c.config.combo_index("fast").unwrap()];
    assert!(!fast.active);
    assert_eq!(fast.auto_weights.cost, 0.5);
    assert_eq!(c.kept, diff(&new_file, &c.config));
    let paths: Vec<String> = diff(&eff, &c.config).into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        vec!["combos.fast.auto_weights.cost", "resilience.max_retries"]
    );
}

#[test]
fn carry_over_drops_an_override_when_the_file_changed_the_same_field() {
    use serde_json::json;
    let (file, eff) = running();
    // The file moved `split` to round-robin; at runtime it had been switched to least-latency.
    let new_file = set_path(&file, "combos.split.strategy", &json!("round-robin")).unwrap();
    let c = carry_over(&file, &eff, &new_file);
    assert_eq!(
        c.dropped,
        vec![change(
            "combos.split.strategy",
            Some(json!("least-latency")),
            Some(json!("round-robin"))
        )]
    );
    let paths: Vec<&str> = c.kept.iter().map(|k| k.path.as_str()).collect();
    assert_eq!(paths, vec!["combos.fast.active", "combos.ladder.strategy"]);
    let split = &c.config.combos[c.config.combo_index("split").unwrap()];
    assert_eq!(split.strategy, Strategy::RoundRobin);
}

#[test]
fn carry_over_drops_overrides_of_a_removed_combo() {
    use serde_json::json;
    let (file, eff) = running();
    let mut new_file = file.clone();
    new_file.combos.retain(|c| c.id != "fast");
    new_file.reindex();
    let c = carry_over(&file, &eff, &new_file);
    assert_eq!(
        c.dropped,
        vec![change("combos.fast.active", Some(json!(false)), None)]
    );
    assert_eq!(c.kept.len(), 2);
    assert_eq!(c.config.combo_index("fast"), None);
    assert_eq!(c.kept, diff(&new_file, &c.config));
}

#[test]
fn carry_over_is_silent_when_the_file_adopted_the_override() {
    use serde_json::json;
    let (file, eff) = running();
    // The operator wrote the runtime change into the file: nothing to keep, nothing lost.
    let new_file = set_path(&file, "combos.fast.active", &json!(false)).unwrap();
    let c = carry_over(&file, &eff, &new_file);
    assert_eq!(c.dropped, vec![]);
    let paths: Vec<&str> = c.kept.iter().map(|k| k.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["combos.ladder.strategy", "combos.split.strategy"]
    );
    assert_eq!(c.config.version(), eff.version());
}

#[test]
fn carry_over_ignores_differences_that_are_not_runtime_changes() {
    let (file, mut eff) = running();
    eff.router.default_output_tokens = 9;
    let ix = eff.combo_index("fast").unwrap();
    eff.combos[ix].targets.reverse();
    eff.reindex();
    let c = carry_over(&file, &eff, &file);
    assert_eq!(c.kept.len(), 3);
    assert_eq!(
        c.config.router.default_output_tokens,
        file.router.default_output_tokens
    );
    let (_, plain) = running();
    assert_eq!(c.config.version(), plain.version());
}

#[test]
fn a_resilience_profile_set_at_runtime_is_carried_unless_the_file_changed_it() {
    let (file, mut eff) = running();
    eff.resilience = Resilience::profile(Profile::Conservative);
    let c = carry_over(&file, &eff, &file);
    assert_eq!(
        c.config.resilience,
        Resilience::profile(Profile::Conservative)
    );
    let mut edited = file.clone();
    edited.resilience.max_retries = 0;
    edited.reindex();
    let c = carry_over(&file, &eff, &edited);
    assert_eq!(c.config.resilience.max_retries, 0, "the file's edit wins");
    assert!(
        c.dropped.iter().any(|d| d.path == "resilience.max_retries"),
        "{:?}",
        c.dropped
    );
}

#[test]
fn builtin_version_is_unchanged_by_optional_fields() {
    // Computed on main before provider quotas existed: an optional field that is absent must not
    // change the canonical JSON, or every recorded config version would move.
    assert_eq!(
        Config::builtin().unwrap().version().to_string(),
        "a401431ebfc1671e26401b88ecd4e279d8465b35cc09978da8372da380e514ad"
    );
}

#[test]
fn a_provider_quota_is_parsed_checked_and_round_trips() {
    let base = "[[providers]]\nid = \"m\"\nkind = \"mock\"\n";
    let c = Config::from_toml(
        &format!("{base}quota = {{ requests = 10, usd = 2.5, window = \"month\" }}\n"),
        "q.toml",
    )
    .unwrap();
    let q = c.providers[0].quota.unwrap();
    assert_eq!((q.requests, q.tokens, q.usd), (Some(10), None, Some(2.5)));
    assert_eq!(q.window, QuotaWindow::Month);
    assert_eq!(round_trip(&c).version(), c.version());
    let d = Config::from_toml(&format!("{base}quota = {{ tokens = 5 }}\n"), "q.toml").unwrap();
    assert_eq!(d.providers[0].quota.unwrap().window, QuotaWindow::Day);

    let e = Config::from_toml(&format!("{base}quota = {{ window = \"day\" }}\n"), "q").unwrap_err();
    assert_eq!(e.problems[0].key, "providers[0].quota");
    assert!(e.problems[0].fix.contains("requests, tokens or usd"), "{e}");
    let e = Config::from_toml(&format!("{base}quota = {{ usd = -1.0 }}\n"), "q").unwrap_err();
    assert_eq!(e.problems[0].key, "providers[0].quota.usd");
    let e = Config::from_toml(
        &format!("{base}quota = {{ usd = 1.0, window = \"week\" }}\n"),
        "q",
    )
    .unwrap_err();
    assert_eq!(e.problems[0].key, "providers[0].quota.window", "{e}");
    assert!(e.to_string().contains("month"), "{e}");
}

#[test]
fn quota_windows_are_utc_days_and_months() {
    // 2026-02-14T13:00:00Z
    let now = 1_771_074_000_000;
    let (s, r) = QuotaWindow::Day.bounds(now);
    assert_eq!(crate::time::rfc3339_ms(s), "2026-02-14T00:00:00.000Z");
    assert_eq!(crate::time::rfc3339_ms(r), "2026-02-15T00:00:00.000Z");
    let (s, r) = QuotaWindow::Month.bounds(now);
    assert_eq!(crate::time::rfc3339_ms(s), "2026-02-01T00:00:00.000Z");
    assert_eq!(crate::time::rfc3339_ms(r), "2026-03-01T00:00:00.000Z");
    let dec = QuotaWindow::Month.bounds(1_796_083_200_000); // 2026-12-01T00:00:00Z
    assert_eq!(crate::time::rfc3339_ms(dec.1), "2027-01-01T00:00:00.000Z");
}
