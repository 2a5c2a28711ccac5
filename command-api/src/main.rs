//! The `payledger` command: `serve`, `migrate`, `replay`, `reconcile`, `merchants add`, `openapi`.
//! The flags and what each command does are in [`payledger_command_api::cli`]; this file only
//! sets up logging and turns an error into a message and an exit code.

use std::process::ExitCode;

use clap::Parser;
use payledger_command_api::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(Cli::parse()).await {
        Ok(code) => code,
        // A returned error is the user's to fix (a bad flag value, file or URL, a server that
        // cannot be reached): the chain of causes, one line, and no backtrace whatever
        // RUST_BACKTRACE says. Bugs panic, and the panic hook still prints their backtrace.
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
