//! `omniroute keys create | list | revoke`. A key is printed once at creation; the log keeps only
//! its blake3 hash. While `serve` owns the data dir, all three go through its admin API as the
//! owner (the server's `admin.token`), so a new key works and a revoked one stops at once;
//! otherwise `create` and `revoke` write the log and `list` reads it read-only.

use crate::ops::routes;
use std::process::ExitCode;

use clap::Subcommand;
use omniroute_core::event::{Event, Hash32, KeyCreated, KeyRevoked};
use omniroute_core::log::Log;

use super::source::{self, Source};
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
        /// Comma-separated scopes: read:health, read:combos, write:combos, read:quota,
        /// read:usage, read:models, execute:completions, write:budget, write:resilience, or the
        /// wildcards read:*, write:*, execute:* and * (which alone may manage keys).
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

/// The admin API of the server that owns the data dir, when one does (`None`: this process may
/// write the log itself).
fn server(data: &DataArgs) -> Result<Option<(String, Option<String>)>, String> {
    // Only a log held by another process sends us to a server (a missing one is created here).
    let dir = data.data_dir()?;
    if !matches!(
        omniroute_core::log::open_read_only(&dir),
        Err(omniroute_core::log::LogError::InUse { .. })
    ) {
        return Ok(None);
    }
    match Source::open(data)? {
        Source::Local { .. } => Ok(None),
        Source::Remote { base, token } => Ok(Some((base, token))),
    }
}

pub fn run(cmd: KeysCommand) -> CliResult {
    match cmd {
        KeysCommand::Create { data, name, scopes } => {
            let scopes: Vec<String> = scopes
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            crate::ops::auth::check_scopes(&scopes)?;
            if let Some((base, token)) = server(&data)? {
                // The running server creates it, so it works at once.
                let body = serde_json::to_value(crate::admin::NewKey { name, scopes })
                    .map_err(|e| e.to_string())?;
                let k: crate::admin::CreatedKey =
                    source::call(&base, token.as_deref(), routes::CREATE_KEY.path, Some(body))?;
                println!("{}", k.key);
                eprintln!(
                    "key id {} created by the running server; the key above is shown only once",
                    &k.view.id.to_string()[..12]
                );
                return Ok(ExitCode::SUCCESS);
            }
            let log = data.open_log()?;
            let key = keys::generate()?;
            let id = Hash32::of(key.as_bytes());
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
                Source::open(&data)?.get_log(routes::KEYS.path, crate::admin::keys)?;
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
            if let Some((base, token)) = server(&data)? {
                // The running server revokes it: it stops working on its next request.
                let k: KeyView = source::send(
                    &base,
                    token.as_deref(),
                    reqwest::Method::DELETE,
                    &routes::REVOKE_KEY.at(&[&id]),
                    None,
                )?;
                println!(
                    "revoked {} ({}) on the running server",
                    &k.id.to_string()[..12],
                    k.name
                );
                return Ok(ExitCode::SUCCESS);
            }
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
