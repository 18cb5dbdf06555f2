//! The operations layer: what the admin API, the CLI and (next) the MCP tools all call. So far it
//! owns who the caller is and what it may do ([`auth`]); the typed operations move here from the
//! HTTP handlers one by one (issue 14).

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
