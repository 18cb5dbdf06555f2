//! Command-line interface (clap). Each subcommand module turns arguments into calls on the core and
//! prints the result; exit code 0 on success, 1 on failure with a one-line reason on stderr.

mod log;
mod time;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "omniroute", version, about = "An event-sourced AI gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect the event log: verify its hash chain, tail it, or summarise it.
    Log {
        #[command(subcommand)]
        command: log::LogCommand,
    },
}

/// Where the data lives; shared by every command that reads or writes the log.
#[derive(clap::Args, Clone)]
pub struct DataArgs {
    /// Data directory holding omniroute.redb.
    #[arg(long, value_name = "DIR", default_value = ".omniroute")]
    pub data_dir: PathBuf,
}

/// A command's failure: printed as `error: ...` with exit code 1.
pub type CliResult = Result<ExitCode, String>;

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Log { command } => log::run(command),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
