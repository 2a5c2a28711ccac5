//! payledger's command API: the axum HTTP server, the background roles it runs, and the
//! `payledger` CLI (in `main.rs`).
//!
//! [`app::start`] is the whole server (used by the binary and by the end-to-end tests): it
//! connects and migrates the database, starts the projection, notifier and refund worker over
//! the global log, and serves the HTTP contract of `shared/DESIGN.md`.

pub mod app;
pub mod config;
pub mod http;
pub mod kv_config;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod roles;
pub mod validate;
pub mod workers;
