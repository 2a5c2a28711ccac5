//! Operator commands over the database: `payledger replay` and `payledger reconcile --verify`.
//! Reports go to stdout (a table for people, or JSON), progress to stderr.

use std::time::Duration;

use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use payledger_projections::rebuild::{self, Projection, ReplayReport, VerifyReport};
use payledger_projections::reconcile::AccountScope;
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

/// Compares the statement in `bytes` (its format detected, else the channel's own) with the
/// ledger: what `reconcile --statement` and the console's reconciliation page run. Returns the
/// report and the parsed statement.
///
/// # Errors
/// A statement that does not parse (naming the format); the account rule of [`account_scope`];
/// the database's error.
pub async fn reconcile_statement(
    db: &Database,
    bytes: &[u8],
    channel: &str,
    account: Option<&str>,
    date: Option<chrono::NaiveDate>,
) -> anyhow::Result<(
    payledger_projections::reconcile::ReconcileReport,
    payledger_channel_adapters::statement::Statement,
)> {
    use anyhow::Context;
    use payledger_channel_adapters::statement::{self, StatementFormat};
    let kind = statement::detect(bytes).unwrap_or_else(|| StatementFormat::for_channel(channel));
    let parsed = statement::parse(kind, bytes).with_context(|| format!("a {kind} statement"))?;
    let scope = account_scope(db, channel, account).await?;
    let report = payledger_projections::reconcile::reconcile(db.pool(), channel, &scope, &parsed, date).await?;
    Ok((report, parsed))
}

/// Largest statement file read (a day of a busy merchant's WeChat Pay bill is tens of MiB).
pub const STATEMENT_BYTES_MAX: u64 = 1 << 30;

/// The orders a statement of `channel`'s account `account` covers ([`AccountScope`]). Without
/// an account: every account of the channel, allowed only when its orders were all placed with
/// one account (a statement is one account's; another's payments would all be "missing at the
/// channel").
///
/// # Errors
/// Without `account` when the channel's orders were placed with several accounts (naming them);
/// the database's error.
pub async fn account_scope(db: &Database, channel: &str, account: Option<&str>) -> anyhow::Result<AccountScope> {
    let key = format!("{}{channel}", crate::channel_accounts::LEGACY_PIN_PREFIX);
    let legacy: Option<String> = match payledger_store::settings::get(db.pool(), &key).await? {
        Some(pin) => Some(serde_json::from_str::<payledger_domain::ChannelAccountRef>(&pin)?.id),
        None => None,
    };
    if let Some(account) = account {
        return Ok(AccountScope {
            account: Some(account.to_string()),
            with_legacy: legacy.as_deref() == Some(account),
        });
    }
    let placed: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT channel_account FROM order_view WHERE channel = $1")
            .bind(channel)
            .fetch_all(db.pool())
            .await?;
    let mut accounts: Vec<String> = placed
        .into_iter()
        .map(|a| {
            a.or_else(|| legacy.clone())
                .unwrap_or_else(|| "(opened before accounts were recorded)".into())
        })
        .collect();
    accounts.sort();
    accounts.dedup();
    anyhow::ensure!(
        accounts.len() <= 1,
        "the orders of channel {channel} were placed with the accounts {}; a statement is one account's: \
         say which with --account",
        accounts.join(", ")
    );
    Ok(AccountScope::all())
}

/// Reconciles the settlement statement in `path` from `channel`'s account `account` (see
/// [`account_scope`]; format detected from the content, else the channel's own) for `date`
/// against the ledger, and prints the report.
///
/// # Errors
/// An unreadable or malformed file (naming the line), an undeterminable day, no `account` for a
/// channel of several, or the database's error.
pub async fn statement(
    db: &Database,
    path: &std::path::Path,
    channel: &str,
    account: Option<&str>,
    date: Option<chrono::NaiveDate>,
    format: Format,
) -> anyhow::Result<payledger_projections::reconcile::ReconcileReport> {
    use anyhow::Context;

    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    anyhow::ensure!(
        size <= STATEMENT_BYTES_MAX,
        "{} is {size} bytes; statements larger than {STATEMENT_BYTES_MAX} bytes are refused",
        path.display()
    );
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // The whole chain in one message: the file, then what is wrong (a parse error, or which
    // account's statement it must be).
    let (report, parsed) = reconcile_statement(db, &bytes, channel, account, date)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            println!(
                "{} statement of {}{} for {}: {} lines, {} matched, {} discrepancies",
                report.format,
                report.channel,
                report
                    .account
                    .as_deref()
                    .map(|a| format!(" account {a}"))
                    .unwrap_or_default(),
                report.date,
                parsed.lines.len(),
                report.matched,
                report.discrepancies.len()
            );
            let mut totals = Table::new();
            totals.set_header([
                "side",
                "currency",
                "payments",
                "paid (minor)",
                "refunds",
                "refunded (minor)",
            ]);
            for (side, map) in [
                ("statement", &report.statement_totals),
                ("ledger", &report.ledger_totals),
            ] {
                for (currency, t) in map {
                    totals.add_row([
                        side.to_string(),
                        currency.clone(),
                        t.payments.to_string(),
                        t.payments_minor.to_string(),
                        t.refunds.to_string(),
                        t.refunds_minor.to_string(),
                    ]);
                }
            }
            println!("{totals}");
            if !report.discrepancies.is_empty() {
                let mut t = Table::new();
                t.set_header([
                    "discrepancy",
                    "item",
                    "line",
                    "order_id",
                    "reference",
                    "statement",
                    "ledger",
                    "currency",
                    "status",
                ]);
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                for d in &report.discrepancies {
                    t.add_row([
                        serde_json::to_value(d.kind)?.as_str().unwrap_or_default().to_string(),
                        serde_json::to_value(d.item)?.as_str().unwrap_or_default().to_string(),
                        opt(d.line.map(|l| l.to_string())),
                        opt(d.order_id.clone()),
                        opt(d.reference.clone()),
                        opt(d.statement_amount_minor.map(|a| a.to_string())),
                        opt(d.ledger_amount_minor.map(|a| a.to_string())),
                        d.currency.clone(),
                        opt(d.statement_status.clone()),
                    ]);
                }
                println!("{t}");
            }
        }
    }
    Ok(report)
}
