//! payledger's command API: the axum HTTP server, the background roles it runs, and the
//! `payledger` command line ([`cli`]; `main.rs` only wires it).
//!
//! [`app::start`] is the whole server (used by the binary and by the end-to-end tests): it
//! connects and migrates the database, starts the roles of its configuration (projections,
//! notifier, refund worker, monitor, and with NATS the relay and the channel service), and serves the HTTP API (its contract: `schemas/openapi.json`; the parts and
//! how they fit: `ARCHITECTURE.md`).

pub mod app;
pub mod channel_accounts;
pub mod cli;
pub mod config;
pub mod console;
pub mod faults;
pub mod flows;
pub mod http;
pub mod kv_config;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod roles;
pub mod validate;
pub mod workers;
