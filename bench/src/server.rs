//! The server under test: `payledger serve --roles all` as a child process, on a free loopback
//! port, with its merchants created by `payledger merchants add`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use tokio::process::{Child, Command};

/// How long the server may take to migrate and listen.
const START_TIMEOUT_MS: u64 = 120_000;
/// How long the server may take to shut down after SIGTERM before it is killed.
const STOP_TIMEOUT_MS: u64 = 15_000;
/// What `payledger serve` prints on stderr once it listens.
const LISTENING: &str = "payledger listening on ";

/// How to run the `payledger` binary against one database.
#[derive(Debug, Clone)]
pub struct Payledger {
    /// The `payledger` executable.
    pub binary: PathBuf,
    /// `DATABASE_URL`; `None` runs the embedded default (`payledger.db` in `workdir`).
    pub database_url: Option<String>,
    /// Working directory: the SQLite file and `server.log` live here.
    pub workdir: PathBuf,
    /// More arguments for `payledger serve` (NATS mode's flags).
    pub serve_args: Vec<String>,
}

/// A merchant of the run, as `payledger merchants add` printed it (other fields ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Merchant {
    /// Its test-mode bearer token for the merchant endpoints: the benchmark's orders are sandbox
    /// orders.
    #[serde(rename = "test_api_key")]
    pub api_key: String,
}

impl Payledger {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.current_dir(&self.workdir)
            .env("RUST_LOG", "warn")
            .env_remove("NATS_URL")
            .env_remove("PAYLEDGER_CONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &self.database_url {
            Some(url) => cmd.env("DATABASE_URL", url),
            None => cmd.env_remove("DATABASE_URL"),
        };
        cmd
    }

    /// The URL the bench reads the database with: `DATABASE_URL`, or the embedded file.
    pub fn database_url_for_reading(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.workdir.join("payledger.db").display()))
    }

    /// Creates the working directory and runs `payledger migrate`.
    ///
    /// # Errors
    /// When either fails.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.workdir).with_context(|| format!("creating {}", self.workdir.display()))?;
        let out = self.command().arg("migrate").output().await?;
        if !out.status.success() {
            bail!("payledger migrate failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `payledger merchants add <merchant_id>`; returns the merchant with its API key.
    ///
    /// # Errors
    /// When the command fails or prints no JSON.
    pub async fn add_merchant(&self, merchant_id: &str) -> anyhow::Result<Merchant> {
        let out = self.command().args(["merchants", "add", merchant_id]).output().await?;
        if !out.status.success() {
            bail!(
                "payledger merchants add {merchant_id} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("payledger merchants add printed no merchant JSON")
    }

    /// Starts `payledger serve --roles all --listen 127.0.0.1:0 --rate-limit 0` and waits until
    /// it listens. The per-merchant rate limit is off: the benchmark measures capacity, and at
    /// few clients one merchant's client alone passes the default 200 requests/s (a 429 costs
    /// the server nothing, so the phase would count refusals as load).
    ///
    /// # Errors
    /// When it exits or does not listen within [`START_TIMEOUT_MS`].
    pub async fn serve(&self) -> anyhow::Result<Server> {
        let log_path = self.workdir.join("server.log");
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = self
            .command()
            .args([
                "serve",
                "--roles",
                "all",
                "--listen",
                "127.0.0.1:0",
                "--rate-limit",
                "0",
            ])
            .args(&self.serve_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let started = Instant::now();
        loop {
            let text = tokio::fs::read_to_string(&log_path).await.unwrap_or_default();
            if let Some(base_url) = listening_url(&text) {
                return Ok(Server {
                    child,
                    pid,
                    base_url,
                    log_path,
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!("the server exited ({status}) before listening:\n{}", tail(&text));
            }
            if started.elapsed() > Duration::from_millis(START_TIMEOUT_MS) {
                bail!(
                    "the server did not listen within {START_TIMEOUT_MS} ms:\n{}",
                    tail(&text)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The base URL in `payledger serve`'s "listening on http://…" line.
fn listening_url(log: &str) -> Option<String> {
    log.lines().find_map(|line| {
        let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
        rest.split_whitespace().next().map(str::to_string)
    })
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A running server.
pub struct Server {
    child: Child,
    /// Its process id, for /proc sampling.
    pub pid: u32,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Its stderr.
    pub log_path: PathBuf,
}

impl Server {
    /// Stops the server with SIGTERM (a graceful shutdown), killing it if it lingers.
    ///
    /// # Errors
    /// When it had already exited with an error, or cannot be signalled.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server had exited ({status}); see {}", self.log_path.display());
        }
        let term = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await?;
        if !term.success() {
            self.child.kill().await?;
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_millis(STOP_TIMEOUT_MS), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}

/// The `payledger` binary next to this one (both built into the same target directory), or
/// `target/release/payledger`.
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("payledger")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| Path::new("target/release/payledger").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_url_is_read_from_the_log_line() {
        let log = "2026-11-21T10:00:00Z  WARN something\npayledger listening on http://127.0.0.1:40123 (public URL http://127.0.0.1:40123)\n";
        assert_eq!(listening_url(log).as_deref(), Some("http://127.0.0.1:40123"));
        assert_eq!(listening_url("starting\n"), None);
    }
}
