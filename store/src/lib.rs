//! The event store and the global log, shared by every role (API, projections, notifier,
//! channel workers). The one place that knows which database backs payledger.
//!
//! - [`Database`]: connects to PostgreSQL (postgres-es) or the embedded SQLite file
//!   (sqlite-es), runs the migrations of `schemas/`, and hands out the pieces below.
//! - [`OrderStore`]: executes `PaymentOrder` commands with bounded retry on optimistic
//!   concurrency conflicts and returns the committed events and the resulting state; its
//!   appends are group-committed by [`append`] (many commands, one transaction).
//! - [`GlobalLog`]: reads every event in commit order (PostgreSQL: `(transaction_id,
//!   global_position)` below `pg_snapshot_xmin`; SQLite: `event_positions`).
//! - [`subscription`]: checkpointed subscribers of the global log, fed by [`tail`], the
//!   process's one reader of the log's end.
//! - [`console`]: the console users' events and sessions.

pub mod append;
pub mod backend;
pub mod console;
pub mod db;
pub mod error;
pub mod log;
pub mod merchants;
pub mod orders;
pub mod sealed;
pub mod settings;
pub mod subscription;
pub mod tail;
pub mod time;
pub mod turns;
pub mod upcast;
pub mod wake;

pub use backend::{is_unavailable, Backend, DbError};
pub use db::{Database, PoolConfig};
pub use log::{GlobalLog, LogEvent, LogPosition, OrderOwner};
pub use orders::{ExecuteError, Executed, OrderStore, Start};
