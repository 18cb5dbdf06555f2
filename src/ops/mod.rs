//! The operations layer: what the admin API, the CLI and the MCP tools all call (issue 14). Who
//! the caller is and what it may do ([`auth`]), the audit record of a tool call ([`audit`]), and
//! the operations themselves, each `op(engine, caller, typed args) -> Result<typed answer,
//! ApiError>` checking its scopes first: reads ([`read`]), the log ([`log`]), control writes
//! ([`control`]), completions and their dry runs ([`execute`]). [`routes`] is the admin API's one
//! route table.

pub mod audit;
pub mod auth;
pub mod control;
pub mod execute;
pub mod log;
pub mod read;
pub mod routes;

/// Writes `bytes` to a new `file` readable by this user only (mode 0600), replacing one left by
/// an earlier run (removed first, so the new file is created with the mode): secrets in the data
/// dir (the owner token, the audit key).
pub fn write_private(file: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(file);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}
