//! `omniroute replay`: the recorded traffic rerun under another routing plan, without calling
//! any provider (DESIGN.md section 6), printed as a table, JSON, Markdown or CSV, and optionally
//! written as a self-contained HTML page with charts. Like the other read commands it asks the
//! server that owns the data dir (`POST /api/replay`), or opens the log read-only; both paths
//! run [`crate::admin::replay`].

use crate::ops::routes;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use omniroute_replay::render::{Format, render};
use omniroute_replay::{ReplayReport, ReplayRequest};

use super::source::Source;
use super::{CliResult, DataArgs};
use crate::admin;

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The strategy to replay with: priority, weighted, round-robin, least-latency, cost,
    /// least-busy, auto or tiered [default: each combo's recorded strategy]
    #[arg(long, value_name = "S")]
    strategy: Option<String>,
    /// Change only this combo's strategy, weights and order [default: every combo]
    #[arg(long, value_name = "C")]
    combo: Option<String>,
    /// Target weights for `weighted`, by model id, e.g. a=3,b=1 (models left out keep theirs).
    #[arg(long, value_name = "M=W,...")]
    weights: Option<String>,
    /// Target order, e.g. b,a: these models are tried first, in this order (priority's order and
    /// the other strategies' tie-break); the rest keep theirs after them.
    #[arg(long, value_name = "M,...", value_delimiter = ',')]
    order: Vec<String>,
    /// A whole alternative config (TOML) to replay with, in place of every recorded config.
    #[arg(long, value_name = "FILE")]
    plan_config: Option<PathBuf>,
    /// Only requests decided at or after this time (unix ms or UTC date YYYY-MM-DD).
    #[arg(long, value_name = "T")]
    from: Option<String>,
    /// Only requests decided before this time (unix ms or UTC date YYYY-MM-DD).
    #[arg(long, value_name = "T")]
    to: Option<String>,
    /// Only requests of this session.
    #[arg(long, value_name = "S")]
    session: Option<String>,
    /// Only requests that asked for (or were recorded running on) this model.
    #[arg(long, value_name = "M")]
    model: Option<String>,
    /// Only requests made with this API key id.
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// Only requests recorded through this combo.
    #[arg(long, value_name = "C")]
    filter_combo: Option<String>,
    /// Seed of the sampled outcome estimates [default: 0]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Runs with seeds N, N+1, ...; more than one reports the spread over seeds [default: 1]
    #[arg(long, value_name = "K")]
    runs: Option<u32>,
    /// How many changed routes to list [default: 20]
    #[arg(long, value_name = "N")]
    changed: Option<u32>,
    /// Output format: table, json, markdown or csv.
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    format: String,
    /// Also write the report as one self-contained HTML page with charts to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub fn run(args: ReplayArgs) -> CliResult {
    // Everything that needs no log is checked first, so a typo fails at once instead of after
    // a replay.
    let format = Format::parse(&args.format)?;
    let req = request(&args)?;
    if let Some(path) = &args.html {
        writable_dir(path)?;
    }
    let src = Source::open(&args.data)?;
    let body = serde_json::to_value(&req).map_err(|e| e.to_string())?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} records ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("replaying");
    if matches!(src, Source::Remote { .. }) {
        // The server simulates; there is no position to show, only that it is working.
        bar.set_message("asking the server to replay");
        bar.enable_steady_tick(Duration::from_millis(200));
    }
    let report: ReplayReport = src.post(routes::REPLAY.path, body, |reader| {
        admin::replay(reader, &req, &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
    })?;
    bar.finish_and_clear();
    if let Some(path) = &args.html {
        let page = omniroute_replay::html::html(&report)?;
        std::fs::write(path, page)
            .map_err(|e| format!("cannot write the HTML report to {}: {e}", path.display()))?;
        eprintln!("wrote the HTML report to {}", path.display());
    }
    print!("{}", render(&report, format));
    Ok(ExitCode::SUCCESS)
}

/// The request the server (or this process) replays, from the flags.
fn request(args: &ReplayArgs) -> Result<ReplayRequest, String> {
    let plan_config = match &args.plan_config {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the plan config {}: {e}", path.display()))?,
        ),
    };
    Ok(ReplayRequest {
        strategy: args.strategy.clone(),
        combo: args.combo.clone(),
        weights: match &args.weights {
            Some(w) => parse_weights(w)?,
            None => BTreeMap::new(),
        },
        order: args.order.iter().map(|m| m.trim().to_string()).collect(),
        plan_config,
        plan_config_name: args.plan_config.as_ref().map(|p| p.display().to_string()),
        from: args.from.clone(),
        to: args.to.clone(),
        filter_combo: args.filter_combo.clone(),
        model: args.model.clone(),
        session: args.session.clone(),
        key: args.key.clone(),
        seed: args.seed,
        runs: args.runs,
        changed_limit: args.changed,
    })
}

/// `a=3,b=1` -> {a: 3, b: 1}. Zero weights pass here: the replay itself refuses them, with the
/// same message the API gives.
fn parse_weights(s: &str) -> Result<BTreeMap<String, u32>, String> {
    let bad = |why: String| {
        format!(
            "--weights {s:?}: {why}; expected MODEL=WEIGHT pairs separated by commas, e.g. a=3,b=1"
        )
    };
    let mut out = BTreeMap::new();
    for pair in s.split(',') {
        let pair = pair.trim();
        let Some((model, weight)) = pair.split_once('=') else {
            return Err(bad(format!("{pair:?} has no `=`")));
        };
        let (model, weight) = (model.trim(), weight.trim());
        if model.is_empty() {
            return Err(bad(format!("{pair:?} names no model")));
        }
        let w: u32 = weight
            .parse()
            .map_err(|_| bad(format!("the weight of {model:?} is not a whole number")))?;
        if out.insert(model.to_string(), w).is_some() {
            return Err(bad(format!("{model:?} is given twice")));
        }
    }
    Ok(out)
}

/// Fails when `file`'s directory does not exist, so `--html` into a missing directory is
/// reported before the replay runs rather than after.
fn writable_dir(file: &Path) -> Result<(), String> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "cannot write the HTML report to {}: the directory {} does not exist",
            file.display(),
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn weights_parse_and_bad_syntax_says_what_is_expected() {
        let w = parse_weights("a=3, b = 1").unwrap();
        assert_eq!(w, BTreeMap::from([("a".into(), 3), ("b".into(), 1)]));
        for (bad, why) in [
            ("a", "has no `=`"),
            ("=3", "names no model"),
            ("a=x", "not a whole number"),
            ("a=-1", "not a whole number"),
            ("a=1,a=2", "given twice"),
            ("a=1,", "has no `=`"),
        ] {
            let e = parse_weights(bad).unwrap_err();
            assert!(e.contains(why) && e.contains("e.g. a=3,b=1"), "{bad}: {e}");
        }
    }
}
