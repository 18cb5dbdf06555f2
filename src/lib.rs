//! omniroute: the running system. HTTP gateway (axum), providers (reqwest), the live engine, and
//! the CLI. The binary (`src/main.rs`) is a shell around [`cli::run`].
//!
//! - [`gateway`]: routes and handlers; `serve(listener, engine, shutdown)`.
//! - [`engine`]: the request flow, budgets, keys; every step appended to the event log.
//! - [`providers`]: OpenAI-compatible, Anthropic (translated both ways) and the built-in mock.
//! - [`error`]: the one API error type and its OpenAI JSON shape.
//! - [`limits`]: hard limits on what comes from outside (sizes of stored strings).

pub mod admin;
pub mod cli;
pub mod engine;
pub mod error;
pub mod gateway;
pub mod limits;
pub mod mcp;
pub mod ops;
pub mod providers;
