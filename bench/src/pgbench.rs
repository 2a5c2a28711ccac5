//! The yardstick: `pgbench` running the event store's append transaction at the same concurrency,
//! on a database of its own migrated with the real schema (the `events` table with its primary
//! key, global-order index, identity column and triggers).
//!
//! One pgbench transaction is one command's worth of event-store work, as postgres-es does it:
//! read the order's events, append one event row with the next sequence, commit (durably, with
//! the server's `synchronous_commit`). Each transaction appends to a new order, as `CreateOrder`
//! does, so the read finds nothing and the sequence is 1.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::process::Command;

/// One command's read: the order's events, as postgres-es loads them. `{ID}` is the order id.
const SELECT_EVENTS: &str = "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata FROM events WHERE aggregate_type = 'PaymentOrder' AND aggregate_id = {ID} ORDER BY sequence;";
/// An `OrderCreated` payload of the size the server writes (a macro so it can be `concat!`ed).
macro_rules! sample_payload {
    () => {
        r#"{"OrderCreated": {"order_id": "6f1d8e2a-3b4c-5d6e-8f90-a1b2c3d4e5f6","merchant_id": "bench-01","out_trade_no": "bench-0001-00000001","amount": {"amount_minor": 1999,"currency": "CNY"},"channel": "sandbox","method": "page","subject": "benchmark order","user_id": null,"notify_url": null,"return_url": null,"metadata": {},"expire_at": "2026-11-21T10.30.00Z","created_at": "2026-11-21T10.00.00Z"}}"#
    };
}
/// The payload of [`INSERT_EVENT`], also what the SQLite append probe inserts.
pub const SAMPLE_PAYLOAD: &str = sample_payload!();
/// One command's append: one event row with the next sequence (1: a new order). The payload is
/// an `OrderCreated` of the size the server writes. pgbench reads `:name` anywhere as a variable,
/// so the JSON has a space after each colon and its times none (jsonb does not check them).
const INSERT_EVENT: &str = concat!(
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('PaymentOrder', {ID}, 1, 'OrderCreated', '1', '",
    sample_payload!(),
    "', '{\"actor\": \"merchant/bench-01\"}');"
);

/// The pgbench script: one transaction of `appends` (read the order's events, append one event)
/// pairs, each on a new order. `appends = 1` is one command's transaction, the yardstick; more is
/// what group commit would do (several commands' appends in one transaction). `:client_id`, a
/// random number and the pair's index make each order id unique: a 36-character id like the real
/// UUIDs, so index entries are the same size.
pub fn script(appends: usize) -> String {
    let mut s = String::from("\\set r random(1, 1000000000000)\nBEGIN;\n");
    for i in 0..appends.max(1) {
        let id = format!("md5(:client_id::text || '-' || :r::text || '-{i}')::uuid::text");
        s.push_str(&SELECT_EVENTS.replace("{ID}", &id));
        s.push('\n');
        s.push_str(&INSERT_EVENT.replace("{ID}", &id));
        s.push('\n');
    }
    s.push_str("COMMIT;\n");
    s
}

/// What pgbench reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PgbenchResult {
    /// Clients (`-c`).
    pub clients: usize,
    /// Transactions per second, without the initial connection time.
    pub tps: f64,
    /// Mean transaction latency, milliseconds.
    pub latency_avg_ms: Option<f64>,
    /// Transactions completed.
    pub transactions: Option<u64>,
    /// Transactions that failed (pgbench 15 reports them; 0 expected).
    pub failed: Option<u64>,
}

/// Reads pgbench's summary (PostgreSQL 14–17 wording). `clients` is recorded as given.
///
/// # Errors
/// When the output has no `tps = …` line.
pub fn parse_output(output: &str, clients: usize) -> anyhow::Result<PgbenchResult> {
    let number_after = |prefix: &str| -> Option<&str> {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
    };
    // pgbench ≥ 14 prints one tps line "(without initial connection time)"; older ones print
    // "(including connections establishing)" then "(excluding …)": prefer the one without.
    let tps_lines: Vec<&str> = output
        .lines()
        .filter(|l| l.trim_start().starts_with("tps = "))
        .collect();
    let tps_line = tps_lines
        .iter()
        .find(|l| l.contains("without") || l.contains("excluding"))
        .or(tps_lines.first())
        .with_context(|| format!("no `tps = ` line in pgbench's output:\n{output}"))?;
    let tps: f64 = tps_line
        .trim_start()
        .trim_start_matches("tps = ")
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("tps is not a number: {tps_line}"))?;
    Ok(PgbenchResult {
        clients,
        tps,
        latency_avg_ms: number_after("latency average = ").and_then(|v| v.parse().ok()),
        transactions: number_after("number of transactions actually processed: ").and_then(|v| v.parse().ok()),
        failed: number_after("number of failed transactions: ").and_then(|v| v.parse().ok()),
    })
}

/// Runs `pgbench` with [`script`]`(appends)` (written to `script_path`) against `database_url`
/// with `clients` connections for `duration`, prepared statements, at most 2 threads.
///
/// # Errors
/// When pgbench cannot be run, exits non-zero, or prints no tps.
pub async fn run(
    database_url: &str,
    script_path: &Path,
    appends: usize,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<PgbenchResult> {
    tokio::fs::write(script_path, script(appends))
        .await
        .with_context(|| format!("writing {}", script_path.display()))?;
    let threads = clients.clamp(1, 2);
    let output = Command::new("pgbench")
        .arg("--no-vacuum")
        .args(["--file", &script_path.display().to_string()])
        .args(["--client", &clients.to_string()])
        .args(["--jobs", &threads.to_string()])
        .args(["--time", &duration.as_secs().max(1).to_string()])
        .args(["--protocol", "prepared"])
        .arg(database_url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running pgbench (is the PostgreSQL client installed?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}):\n{}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_output(&stdout, clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15: &str = "pgbench (15.20 (Debian 15.20-0+deb12u1))
transaction type: /tmp/append.sql
scaling factor: 1
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 41234
number of failed transactions: 0 (0.000%)
latency average = 1.940 ms
initial connection time = 12.345 ms
tps = 4123.456789 (without initial connection time)
";

    const PG13: &str = "number of transactions actually processed: 1000
latency average = 2.000 ms
tps = 480.000000 (including connections establishing)
tps = 500.000000 (excluding connections establishing)
";

    #[test]
    fn parses_pgbench_15_summary() {
        let r = parse_output(PG15, 8).expect("parsed");
        assert_eq!(
            r,
            PgbenchResult {
                clients: 8,
                tps: 4123.456789,
                latency_avg_ms: Some(1.94),
                transactions: Some(41234),
                failed: Some(0),
            }
        );
    }

    #[test]
    fn older_pgbench_tps_excludes_connection_time() {
        let r = parse_output(PG13, 4).expect("parsed");
        assert_eq!(r.tps, 500.0);
        assert_eq!(r.failed, None);
    }

    #[test]
    fn output_without_tps_is_an_error() {
        let err = parse_output("pgbench: error: connection refused\n", 4).expect_err("no tps");
        assert!(err.to_string().contains("no `tps = ` line"), "{err}");
    }

    #[test]
    fn script_appends_one_event_in_one_transaction() {
        let script = script(1);
        let statements: Vec<&str> = script.lines().filter(|l| !l.starts_with('\\')).collect();
        assert_eq!(statements.first(), Some(&"BEGIN;"));
        assert_eq!(statements.last(), Some(&"COMMIT;"));
        assert!(statements[1].starts_with("SELECT") && statements[1].contains("FROM events"));
        assert!(statements[2].starts_with("INSERT INTO events"));
        assert_eq!(statements.len(), 4);
    }

    #[test]
    fn script_uses_no_variables_but_its_own() {
        // pgbench's rule: `::` is a cast; `:name` (letters, digits, _) is a variable.
        let mut names = Vec::new();
        let script = script(3);
        let mut chars = script.chars().peekable();
        while let Some(c) = chars.next() {
            if c != ':' {
                continue;
            }
            if chars.peek() == Some(&':') {
                chars.next();
                continue;
            }
            let mut name = String::new();
            while let Some(&n) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_') {
                name.push(n);
                chars.next();
            }
            if !name.is_empty() {
                names.push(name);
            }
        }
        names.sort();
        names.dedup();
        assert_eq!(names, ["client_id", "r"]);
    }

    #[test]
    fn grouped_script_appends_to_distinct_orders_in_one_transaction() {
        let script = script(4);
        assert_eq!(script.matches("BEGIN;").count(), 1);
        assert_eq!(script.matches("COMMIT;").count(), 1);
        assert_eq!(script.matches("INSERT INTO events").count(), 4);
        for i in 0..4 {
            assert!(script.contains(&format!("'-{i}')::uuid")), "pair {i} has its own order");
        }
    }
}
