//! `omniroute keys create | list | revoke`. A key is printed once at creation; the log keeps only
//! its blake3 hash. `create` and `revoke` write, so they run while the gateway is stopped (a
//! running gateway reads the keys at start-up); `list` only reads, through the running server's
//! admin API or the data dir opened read-only.

use std::process::ExitCode;

use clap::Subcommand;
use omniroute_core::event::{Event, Hash32, KeyCreated, KeyRevoked};
use omniroute_core::log::Log;

use super::source::Source;
use super::{CliResult, DataArgs};
use crate::admin::KeyView;
use crate::engine::keys;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create {
        #[command(flatten)]
        data: DataArgs,
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. `read:*,execute:completions` or `manage`.
        #[arg(long, default_value = "execute:completions")]
        scopes: String,
    },
    /// List keys (id prefix, name, scopes, status).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke a key by its id (or a unique prefix of it, as `keys list` shows).
    Revoke {
        #[command(flatten)]
        data: DataArgs,
        id: String,
    },
}

fn append(log: &Log, e: &Event) -> Result<(), String> {
    log.append(e)
        .and_then(|h| h.wait())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub fn run(cmd: KeysCommand) -> CliResult {
    match cmd {
        KeysCommand::Create { data, name, scopes } => {
            let log = data.open_log()?;
            let key = keys::generate()?;
            let id = Hash32::of(key.as_bytes());
            let scopes: Vec<String> = scopes
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            append(
                &log,
                &Event::KeyCreated(Box::new(KeyCreated {
                    key_id: id,
                    name,
                    scopes,
                })),
            )?;
            println!("{key}");
            eprintln!(
                "key id {} created; the key above is shown only once",
                &id.to_string()[..12]
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { data } => {
            let keys: Vec<KeyView> =
                Source::open(&data)?.get_log("/api/keys", crate::admin::keys)?;
            if keys.is_empty() {
                // On stderr: stdout stays the (empty) list for scripts.
                eprintln!(
                    "no keys: /v1 serves loopback clients only; create one with `omniroute keys create --name NAME`"
                );
            }
            for k in keys {
                println!(
                    "{}  {:<20} {:<40} {}",
                    &k.id.to_string()[..12],
                    k.name,
                    k.scopes.join(","),
                    if k.revoked { "revoked" } else { "active" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { data, id } => {
            let log = data.open_log()?;
            let reader = log.reader().map_err(|e| e.to_string())?;
            let all = crate::engine::restore::keys(&reader).map_err(|e| e.to_string())?;
            drop(reader);
            let matches: Vec<_> = all
                .iter()
                .filter(|k| !k.revoked && k.id.to_string().starts_with(&id.to_lowercase()))
                .collect();
            match matches.as_slice() {
                [k] => {
                    append(
                        &log,
                        &Event::KeyRevoked(Box::new(KeyRevoked {
                            key_id: k.id,
                            actor: "cli".into(),
                        })),
                    )?;
                    println!("revoked {} ({})", &k.id.to_string()[..12], k.name);
                    Ok(ExitCode::SUCCESS)
                }
                [] => Err(format!("no active key has an id starting with {id:?}")),
                _ => Err(format!(
                    "{} active keys start with {id:?}; give more of the id",
                    matches.len()
                )),
            }
        }
    }
}
