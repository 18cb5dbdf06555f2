//! Where a read command gets its answers (DESIGN.md, process model): from the admin API of the
//! server that owns the data dir, or, when none does, from the data dir itself, opened read-only
//! (never created, never changed). Both paths go through the functions of [`crate::admin`], so
//! they print the same.

use omniroute_core::log::{LogError, ReadOnlyLog, Reader};
use omniroute_projections::Projections;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::DataArgs;
use crate::error::ApiError;

/// The file in the data dir where `omniroute serve` writes the address it listens on.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";
/// The file in the data dir where `omniroute serve` writes its owner token (mode 0600): the CLI
/// that can read it calls the admin API as the owner, whatever keys exist.
pub const OWNER_TOKEN_FILE: &str = "admin.token";

/// Writes the owner token, readable by this user only.
pub fn write_owner_token(dir: &std::path::Path, token: &str) -> Result<(), String> {
    crate::ops::write_private(&dir.join(OWNER_TOKEN_FILE), token.as_bytes())
}

/// The owner token of the server that owns `dir`, when this user can read it.
fn owner_token(dir: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(dir.join(OWNER_TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

pub enum Source {
    /// No server owns the data dir: this process reads it, read-only.
    Local { log: ReadOnlyLog },
    /// A server owns it; its admin API answers (as the owner, when this user can read the
    /// server's owner token).
    Remote { base: String, token: Option<String> },
}

/// The message of an API error, as the admin API would send it (for a log that cannot be read,
/// that names the file and seq).
pub(super) fn api_message(e: ApiError) -> String {
    e.body()["error"]["message"]
        .as_str()
        .unwrap_or("request failed")
        .to_string()
}

impl Source {
    pub fn open(data: &DataArgs) -> Result<Source, String> {
        // Loaded even when --data-dir is given, so a broken config is reported, not ignored.
        data.load_config()?;
        let dir = data.data_dir()?;
        match omniroute_core::log::open_read_only(&dir) {
            Ok(log) => Ok(Source::Local { log }),
            // A writer holds the file. `serve` publishes its admin API's address in the data dir;
            // any other owner (a `keys create`, `log generate`, a test) cannot answer.
            Err(e @ LogError::InUse { .. }) => {
                let file = dir.join(ADMIN_ADDR_FILE);
                match std::fs::read_to_string(&file) {
                    Ok(addr) => Ok(Source::Remote {
                        base: format!("http://{}", addr.trim()),
                        token: owner_token(&dir),
                    }),
                    Err(_) => Err(format!(
                        "{e} (it publishes no admin API address in {}, so this command cannot \
                         ask it; an `omniroute serve` that is still starting writes it once it \
                         listens)",
                        file.display()
                    )),
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Answers locally with `local(read models)` (restored from their checkpoint and caught up
    /// in memory: nothing is written back), or remotely with `GET path`.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        local: impl FnOnce(&Projections) -> Result<T, ApiError>,
    ) -> Result<T, String> {
        self.get_log(path, |reader| local(&crate::admin::load(reader)?))
    }

    /// Answers locally with `local(reader)` (no fold), or remotely with `GET path`.
    pub fn get_log<T: DeserializeOwned>(
        &self,
        path: &str,
        local: impl FnOnce(&Reader) -> Result<T, ApiError>,
    ) -> Result<T, String> {
        match self {
            Source::Local { log } => {
                let reader = log.reader().map_err(|e| e.to_string())?;
                local(&reader).map_err(api_message)
            }
            Source::Remote { base, token } => remote(base, token.as_deref(), path, None),
        }
    }

    /// Like [`Source::get`] for a `POST` with a JSON body.
    pub fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
        local: impl FnOnce(&Reader) -> Result<T, ApiError>,
    ) -> Result<T, String> {
        match self {
            Source::Local { log } => {
                let reader = log.reader().map_err(|e| e.to_string())?;
                local(&reader).map_err(api_message)
            }
            Source::Remote { base, token } => remote(base, token.as_deref(), path, Some(body)),
        }
    }
}

/// Why a call to the admin API failed.
pub enum Failure {
    /// Nothing answered (the server stopped, or is still starting).
    Unreachable(String),
    /// The server answered with an error.
    Answer(String),
}

impl From<Failure> for String {
    fn from(f: Failure) -> String {
        match f {
            Failure::Unreachable(m) | Failure::Answer(m) => m,
        }
    }
}

fn remote<T: DeserializeOwned>(
    base: &str,
    token: Option<&str>,
    path: &str,
    body: Option<Value>,
) -> Result<T, String> {
    call(base, token, path, body).map_err(String::from)
}

/// `GET` (or, with a body, `POST`) `base + path` with the bearer `token`, and decode the JSON
/// answer.
pub fn call<T: DeserializeOwned>(
    base: &str,
    token: Option<&str>,
    path: &str,
    body: Option<Value>,
) -> Result<T, Failure> {
    let method = match body {
        Some(_) => reqwest::Method::POST,
        None => reqwest::Method::GET,
    };
    send(base, token, method, path, body)
}

/// `method` `base + path` with the bearer `token` (and a JSON body), and decode the JSON answer.
pub fn send<T: DeserializeOwned>(
    base: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<T, Failure> {
    let url = format!("{base}{path}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Answer(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let req = client.request(method, &url);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| {
            Failure::Unreachable(format!(
                "the data dir is owned by a running server, but its admin API at {base} does not \
                 answer ({e}); is it still starting, or listening elsewhere?"
            ))
        })?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|e| Failure::Answer(format!("{url}: unreadable answer: {e}")))?;
        if !status.is_success() {
            return Err(Failure::Answer(
                v["error"]["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{url}: HTTP {status}")),
            ));
        }
        serde_json::from_value(v)
            .map_err(|e| Failure::Answer(format!("{url}: unexpected answer: {e}")))
    })
}

pub use crate::ops::routes::enc;
