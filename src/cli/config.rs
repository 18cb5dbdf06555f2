//! `omniroute config check [FILE]`: parse and validate a config; exit 0, or 1 with every problem.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::CliResult;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a config file (without one: $OMNIROUTE_CONFIG, else ./omniroute.toml, else the
    /// built-in default).
    Check {
        /// The omniroute.toml to check.
        file: Option<PathBuf>,
    },
    /// Print the built-in default config (a starting point for your own).
    Default,
}

pub fn run(cmd: ConfigCommand) -> CliResult {
    match cmd {
        ConfigCommand::Check { file } => {
            let (name, result) = super::load_config_from(file.as_deref());
            match result {
                Ok(c) => {
                    for w in super::missing_keys(&c) {
                        eprintln!("{w}");
                    }
                    println!(
                        "ok: {name}: {} providers, {} models, {} combos; config_version {}",
                        c.providers.len(),
                        c.models.len(),
                        c.combos.len(),
                        c.version()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ConfigCommand::Default => {
            print!("{}", omniroute_core::config::DEFAULT_TOML);
            Ok(ExitCode::SUCCESS)
        }
    }
}
