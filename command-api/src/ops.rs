//! Operator commands over the database: `payledger replay` and `payledger reconcile --verify`.
//! Reports go to stdout (a table for people, or JSON), progress to stderr.

use std::time::Duration;

use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use payledger_projections::rebuild::{self, Projection, ReplayReport, VerifyReport};
use payledger_store::Database;

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// One JSON document.
    Json,
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} events, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Replays `projections` (all when empty) one after another; prints one report each.
///
/// # Errors
/// The first failing replay's error; projections replayed before it stay swapped in.
pub async fn replay(db: &Database, projections: &[Projection], format: Format) -> anyhow::Result<Vec<ReplayReport>> {
    let total = u64::try_from(db.log().count().await?).unwrap_or(0);
    let mut reports = vec![];
    for p in projections {
        let bar = progress_bar(total);
        bar.set_message(format!("replaying {}", p.name()));
        let report = rebuild::replay(db, *p, &|n| bar.inc(n)).await?;
        bar.finish_and_clear();
        reports.push(report);
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Table => {
            let mut t = Table::new();
            t.set_header(["projection", "events", "seconds", "events/s", "checkpoint"]);
            for r in &reports {
                t.add_row([
                    r.projection.to_string(),
                    r.events.to_string(),
                    format!("{:.2}", r.seconds),
                    format!("{:.0}", r.events_per_second),
                    format!("{}:{}", r.position.transaction_id, r.position.global_position),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(reports)
}

/// Verifies every projection against a replay and prints what differs.
///
/// # Errors
/// The database's or a projection's error.
pub async fn verify(db: &Database, format: Format) -> anyhow::Result<VerifyReport> {
    let total = u64::try_from(db.log().count().await?).unwrap_or(0) * Projection::ALL.len() as u64;
    let bar = progress_bar(total);
    bar.set_message("verifying");
    let report = rebuild::verify(db, &|n| bar.inc(n)).await?;
    bar.finish_and_clear();
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            println!(
                "replayed {} events; compared {} live rows; {} differing rows; {} unbalanced journal entries",
                report.events,
                report.rows_compared,
                report.differences_total,
                report.unbalanced_entries.len()
            );
            if !report.differences.is_empty() {
                let mut t = Table::new();
                t.set_header(["table", "key", "difference"]);
                for d in &report.differences {
                    t.add_row([
                        d.table.to_string(),
                        d.key.clone(),
                        format!("{:?}", d.kind).to_lowercase(),
                    ]);
                }
                println!("{t}");
            }
            if !report.unbalanced_entries.is_empty() {
                let mut t = Table::new();
                t.set_header(["entry_id", "currency", "debit_minor", "credit_minor"]);
                for u in &report.unbalanced_entries {
                    t.add_row([
                        u.entry_id.clone(),
                        u.currency.clone(),
                        u.debit_minor.to_string(),
                        u.credit_minor.to_string(),
                    ]);
                }
                println!("{t}");
            }
            println!("{}", if report.is_clean() { "clean" } else { "NOT clean" });
        }
    }
    Ok(report)
}
