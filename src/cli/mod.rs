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
    /// Config file (omniroute.toml); without it, the built-in default config.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory holding omniroute.redb [default: the config's server.data_dir, .omniroute]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The config named by `--config`, or the built-in default.
    pub fn load_config(&self) -> Result<Config, String> {
        match &self.config {
            Some(f) => Config::load(f),
            None => Config::builtin(),
        }
        .map_err(|e| e.to_string())
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
