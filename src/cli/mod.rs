//! Command-line interface (clap). Each subcommand module turns arguments into calls on the core and
//! prints the result; exit code 0 on success, 1 on failure with a one-line reason on stderr.

mod config;
mod keys;
mod log;
mod mcp;
mod replay;
mod report;
mod serve;
mod source;

pub use source::ADMIN_ADDR_FILE;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use omniroute_core::config::Config;

#[derive(Parser)]
#[command(name = "omniroute", version, about = "An event-sourced AI gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (OpenAI-compatible API on the config's listen address).
    Serve(serve::ServeArgs),
    /// Serve the MCP tools over stdio (for agents that start omniroute as a subprocess).
    Mcp(mcp::McpArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Inspect the event log: verify its hash chain, tail it, or summarise it.
    Log {
        #[command(subcommand)]
        command: log::LogCommand,
    },
    /// Check configs: strict parse, then validation with every problem named by key.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// One request's whole story: candidates, exclusions, attempts, fallbacks, verdict.
    Explain(report::ExplainArgs),
    /// Reports over the read models.
    Report {
        #[command(subcommand)]
        command: report::ReportCommand,
    },
    /// Session snapshots.
    Sessions {
        #[command(subcommand)]
        command: report::SessionsCommand,
    },
    /// Provider and model metrics: success, errors, latency and TTFT percentiles, circuits.
    Providers(report::ProvidersArgs),
    /// Maintain the read models.
    Projections {
        #[command(subcommand)]
        command: report::ProjectionsCommand,
    },
    /// What if: rerun the recorded traffic under another routing plan (no provider is called)
    /// and compare cost, success, latency and routes with the recording.
    Replay(Box<replay::ReplayArgs>),
}

/// Where the data lives; shared by every command that reads or writes the log.
#[derive(clap::Args, Clone)]
pub struct DataArgs {
    /// Config file [default: $OMNIROUTE_CONFIG, else ./omniroute.toml if present, else the
    /// built-in default config]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory holding omniroute.redb [default: the config's server.data_dir, .omniroute]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "OMNIROUTE_CONFIG";
/// The config file looked for in the working directory when neither is given.
pub const LOCAL_CONFIG: &str = "omniroute.toml";

/// The config file to load (DESIGN.md section 4): `explicit` (`--config`), else
/// `OMNIROUTE_CONFIG`, else `./omniroute.toml` if it exists; `None` means the built-in default.
pub fn config_file(explicit: Option<&std::path::Path>) -> Option<PathBuf> {
    if let Some(f) = explicit {
        return Some(f.to_path_buf());
    }
    if let Some(f) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(f));
    }
    let local = PathBuf::from(LOCAL_CONFIG);
    local.is_file().then_some(local)
}

/// Loads [`config_file`]'s choice; returns its name (for messages) and the config.
pub fn load_config_from(
    explicit: Option<&std::path::Path>,
) -> (String, Result<Config, omniroute_core::config::ConfigError>) {
    match config_file(explicit) {
        Some(f) => (f.display().to_string(), Config::load(&f)),
        None => (
            omniroute_core::config::BUILTIN_NAME.to_string(),
            Config::builtin(),
        ),
    }
}

impl DataArgs {
    /// The config named by `--config`, `OMNIROUTE_CONFIG` or `./omniroute.toml`, else the
    /// built-in default.
    pub fn load_config(&self) -> Result<Config, String> {
        load_config_from(self.config.as_deref())
            .1
            .map_err(|e| e.to_string())
    }

    /// The name of the config [`DataArgs::load_config`] loads: its path or the built-in's name.
    pub fn config_name(&self) -> String {
        load_config_from_name(self.config.as_deref())
    }

    /// Opens (owns) the log of the data dir these arguments name.
    pub fn open_log(&self) -> Result<omniroute_core::log::Log, String> {
        omniroute_core::log::Log::open(self.data_dir()?).map_err(|e| e.to_string())
    }

    /// `--data-dir`, else the config's `server.data_dir`.
    pub fn data_dir(&self) -> Result<PathBuf, String> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => Ok(self.load_config()?.server.data_dir),
        }
    }
}

/// A warning for every provider whose `api_key_env` names an unset (or empty) variable, naming
/// the variable and the models that need it: such a provider starts silently and then fails
/// every request, so `serve` and `config check` say so up front.
pub fn missing_keys(cfg: &Config) -> Vec<String> {
    cfg.providers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let var = p.api_key_env.as_deref()?;
            if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
                return None;
            }
            let models: Vec<&str> = cfg
                .models
                .iter()
                .filter(|m| m.provider == i)
                .map(|m| m.id.as_str())
                .collect();
            Some(format!(
                "warning: provider `{}`: its api_key_env {var} is not set, so requests to {} will fail; export {var}=<key>",
                p.id,
                if models.is_empty() {
                    "it".to_string()
                } else {
                    format!("models {}", models.join(", "))
                }
            ))
        })
        .collect()
}

fn load_config_from_name(explicit: Option<&std::path::Path>) -> String {
    config_file(explicit).map_or_else(
        || omniroute_core::config::BUILTIN_NAME.to_string(),
        |f| f.display().to_string(),
    )
}

/// A command's failure: printed as `error: ...` with exit code 1.
pub type CliResult = Result<ExitCode, String>;

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Mcp(args) => mcp::run(args),
        Command::Keys { command } => keys::run(command),
        Command::Log { command } => log::run(command),
        Command::Config { command } => config::run(command),
        Command::Explain(args) => report::explain(args),
        Command::Report { command } => report::report(command),
        Command::Sessions { command } => report::sessions(command),
        Command::Providers(args) => report::providers(args),
        Command::Projections { command } => report::projections(command),
        Command::Replay(args) => replay::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
