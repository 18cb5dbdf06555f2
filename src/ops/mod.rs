//! The operations layer: what the admin API, the CLI and (next) the MCP tools all call. So far it
//! owns who the caller is and what it may do ([`auth`]); the typed operations move here from the
//! HTTP handlers one by one (issue 14).

pub mod audit;
pub mod auth;
