//! Reconciliation of a channel settlement statement with the ledger (`payledger reconcile
//! --statement FILE --channel C [--date D]`).
//!
//! The ledger side is the journal: every payment the channel holds for us is a debit of
//! `channel_clearing:<channel>`, every refund a credit, each with the channel's document as its
//! `reference` (a payment's `channel_trade_no`, a refund's `refund_id`). A statement line is
//! matched by that reference wherever it sits in the ledger (a payment just before midnight is
//! still found); ledger items of the statement's day that no line names are "missing at the
//! channel". Amounts are integer minor units throughout.
//!
//! A statement is one channel account's (one WeChat Pay merchant, one Alipay application): with
//! an [`AccountScope`], only the ledger items of that account's orders are compared
//! (`order_view.channel_account`), so another account's payments are not "missing at the
//! channel".
//!
//! The statement's day is in the channel's own time zone (China Standard Time, UTC+8, for
//! `wechatpay` and `alipay`; UTC otherwise).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone, Utc};
use payledger_channel_adapters::statement::{LineKind, Statement, StatementLine};
use payledger_store::time::fmt_ts;
use serde::Serialize;
use sqlx::AnyPool;
use uuid::Uuid;

use crate::journal::clearing_account;

/// Whether money came in or went back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Payment,
    Refund,
}

impl From<LineKind> for ItemKind {
    fn from(k: LineKind) -> Self {
        match k {
            LineKind::Payment => ItemKind::Payment,
            LineKind::Refund => ItemKind::Refund,
        }
    }
}

/// One channel movement as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerItem {
    pub kind: ItemKind,
    pub order_id: String,
    /// `channel_trade_no` (payment) or `refund_id` (refund).
    pub reference: String,
    /// Minor units, positive.
    pub amount_minor: i64,
    pub currency: String,
    /// The event that recorded it (`PaymentSucceeded`, `DuplicatePayment`, `RefundSucceeded`, …).
    pub event_type: String,
    /// RFC 3339 UTC.
    pub occurred_at: String,
}

/// What is wrong with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscrepancyKind {
    /// The channel settled it; the ledger has no such payment or refund.
    MissingInLedger,
    /// The ledger has it on the statement's day; the statement does not.
    MissingAtChannel,
    /// Both have it, with different amounts or currencies.
    AmountDiffers,
    /// Both have it, but the channel's status is not final (e.g. a refund still `PROCESSING`).
    StatusDiffers,
}

/// One discrepancy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    pub kind: DiscrepancyKind,
    pub item: ItemKind,
    /// The statement's line, when the statement has the item.
    pub line: Option<usize>,
    /// Our order id (from the statement's `out_trade_no` or the ledger).
    pub order_id: Option<String>,
    /// `channel_trade_no` or refund id.
    pub reference: Option<String>,
    /// The statement's amount, minor units.
    pub statement_amount_minor: Option<i64>,
    /// The ledger's amount, minor units.
    pub ledger_amount_minor: Option<i64>,
    pub currency: String,
    /// The statement's status text.
    pub statement_status: Option<String>,
}

/// Counts and sums of one side, per kind and currency (minor units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SideTotals {
    pub payments: i64,
    pub payments_minor: i64,
    pub refunds: i64,
    pub refunds_minor: i64,
}

impl SideTotals {
    fn add(&mut self, kind: ItemKind, amount_minor: i64) {
        match kind {
            ItemKind::Payment => {
                self.payments += 1;
                self.payments_minor += amount_minor;
            }
            ItemKind::Refund => {
                self.refunds += 1;
                self.refunds_minor += amount_minor;
            }
        }
    }
}

/// The outcome of reconciling one statement.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub channel: String,
    /// The channel account whose statement it is; `None`: every account of the channel.
    pub account: Option<String>,
    /// The statement's day (`YYYY-MM-DD`, channel time).
    pub date: String,
    pub format: String,
    /// Lines matched with the ledger and equal.
    pub matched: usize,
    pub discrepancies: Vec<Discrepancy>,
    /// Per currency: what the statement says.
    pub statement_totals: BTreeMap<String, SideTotals>,
    /// Per currency: what the ledger has on the statement's day.
    pub ledger_totals: BTreeMap<String, SideTotals>,
}

impl ReconcileReport {
    /// No discrepancy.
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

/// Why a reconciliation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The statement's day cannot be told.
    #[error("{0}")]
    Date(String),
}

/// The channel's time zone: UTC+8 for the Chinese channels, UTC otherwise.
pub fn channel_offset(channel: &str) -> FixedOffset {
    match channel {
        "wechatpay" | "alipay" => FixedOffset::east_opt(8 * 3600).expect("UTC+8"),
        _ => FixedOffset::east_opt(0).expect("UTC"),
    }
}

/// The statement's day: `date` when given, else the one channel-time day of its lines.
///
/// # Errors
/// [`ReconcileError::Date`] when the lines span several days or carry no times.
pub fn statement_day(
    statement: &Statement,
    channel: &str,
    date: Option<NaiveDate>,
) -> Result<NaiveDate, ReconcileError> {
    if let Some(d) = date {
        return Ok(d);
    }
    let offset = channel_offset(channel);
    let days: std::collections::BTreeSet<NaiveDate> = statement
        .lines
        .iter()
        .filter_map(|l| l.occurred_at)
        .map(|t| t.with_timezone(&offset).date_naive())
        .collect();
    match days.len() {
        1 => Ok(*days.iter().next().expect("one day")),
        0 => Err(ReconcileError::Date(
            "the statement's lines carry no times; give --date".into(),
        )),
        _ => Err(ReconcileError::Date(format!(
            "the statement spans {} days ({} to {}); give --date",
            days.len(),
            days.first().expect("first"),
            days.last().expect("last")
        ))),
    }
}

/// `[start, end)` of `day` in `channel`'s time zone, in UTC.
pub fn day_window(channel: &str, day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let offset = channel_offset(channel);
    let start = offset
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
        .single()
        .expect("a fixed offset has one midnight");
    (
        start.with_timezone(&Utc),
        (start + chrono::Duration::days(1)).with_timezone(&Utc),
    )
}

const ITEM_COLUMNS: &str = "debit_minor, credit_minor, order_id, reference, currency, event_type, occurred_at";

fn item((debit, credit, order_id, reference, currency, event_type, occurred_at): ItemRow) -> LedgerItem {
    LedgerItem {
        kind: if debit > 0 { ItemKind::Payment } else { ItemKind::Refund },
        amount_minor: debit.max(credit),
        order_id,
        reference,
        currency,
        event_type,
        occurred_at,
    }
}

type ItemRow = (i64, i64, String, String, String, String, String);

/// Which of a channel's orders a statement covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountScope {
    /// The channel account that issued the statement; `None`: every account of the channel.
    pub account: Option<String>,
    /// With `account`: it is the channel's legacy account, so the orders opened before accounts
    /// were recorded (no account in `order_view`) are its orders too.
    pub with_legacy: bool,
}

impl AccountScope {
    /// Every account of the channel.
    pub fn all() -> Self {
        Self::default()
    }

    /// `AND order_id IN (…)` restricting ledger rows to the scope's orders, its account bound as
    /// parameter `$n`; empty for every account.
    fn filter(&self, n: usize) -> String {
        match (&self.account, self.with_legacy) {
            (None, _) => String::new(),
            (Some(_), false) => {
                format!(" AND order_id IN (SELECT order_id FROM order_view WHERE channel_account = ${n})")
            }
            (Some(_), true) => format!(
                " AND order_id IN (SELECT order_id FROM order_view WHERE channel_account = ${n} OR channel_account IS NULL)"
            ),
        }
    }
}

/// The ledger's movements of `channel`'s orders in `scope` from `from` (inclusive) to `to`
/// (exclusive).
///
/// # Errors
/// The database's error.
pub async fn ledger_items(
    pool: &AnyPool,
    channel: &str,
    scope: &AccountScope,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<LedgerItem>, sqlx::Error> {
    let sql = format!(
        "SELECT {ITEM_COLUMNS} FROM ledger_entry WHERE account = $1 AND occurred_at >= $2 AND occurred_at < $3{} \
         ORDER BY occurred_at, entry_id",
        scope.filter(4)
    );
    let mut query = sqlx::query_as::<_, ItemRow>(&sql)
        .bind(clearing_account(channel))
        .bind(fmt_ts(from))
        .bind(fmt_ts(to));
    if let Some(account) = &scope.account {
        query = query.bind(account);
    }
    Ok(query.fetch_all(pool).await?.into_iter().map(item).collect())
}

/// The ledger's movements of `channel`'s orders in `scope` whose reference is one of
/// `references`, at any time.
///
/// # Errors
/// The database's error.
pub async fn ledger_items_by_reference(
    pool: &AnyPool,
    channel: &str,
    scope: &AccountScope,
    references: &[String],
) -> Result<Vec<LedgerItem>, sqlx::Error> {
    let mut items = vec![];
    for chunk in references.chunks(crate::sql::PARAMS_PER_STATEMENT_MAX - 2) {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM ledger_entry WHERE account = $1 AND reference IN ({}){}",
            crate::sql::placeholders(2, chunk.len()),
            scope.filter(chunk.len() + 2)
        );
        let mut q = sqlx::query_as::<_, ItemRow>(&sql).bind(clearing_account(channel));
        for r in chunk {
            q = q.bind(r);
        }
        if let Some(account) = &scope.account {
            q = q.bind(account);
        }
        items.extend(q.fetch_all(pool).await?.into_iter().map(item));
    }
    Ok(items)
}

/// Statuses that mean the channel considers the line final and successful.
fn is_final_status(status: &str) -> bool {
    let s = status.trim();
    ["SUCCESS", "REFUND", "SUCCEEDED", "PAID", "REFUNDED", "交易", "退款"]
        .iter()
        .any(|f| s.eq_ignore_ascii_case(f))
}

/// The ledger reference a statement line names: the payment's `channel_trade_no`, or the
/// refund id in `out_refund_no` (payledger sends its refund id as the channel's refund key, in
/// any UUID spelling).
pub fn line_reference(line: &StatementLine) -> Option<String> {
    match line.kind {
        LineKind::Payment => line.channel_trade_no.clone().filter(|s| !s.is_empty()),
        LineKind::Refund => line
            .out_refund_no
            .as_deref()
            .and_then(|r| Uuid::parse_str(r).ok())
            .map(|u| u.to_string()),
    }
}

fn order_id_of(line: &StatementLine) -> Option<String> {
    Uuid::parse_str(&line.out_trade_no).ok().map(|u| u.to_string())
}

/// Compares the statement's lines with the ledger: `referenced` are the ledger items any line
/// names (at any time), `of_day` those on the statement's day. Pure.
pub fn compare(
    statement: &Statement,
    referenced: &[LedgerItem],
    of_day: &[LedgerItem],
) -> (
    usize,
    Vec<Discrepancy>,
    BTreeMap<String, SideTotals>,
    BTreeMap<String, SideTotals>,
) {
    let by_ref: HashMap<(ItemKind, &str), &LedgerItem> =
        referenced.iter().map(|i| ((i.kind, i.reference.as_str()), i)).collect();
    let mut matched = 0;
    let mut discrepancies = vec![];
    let mut seen: HashSet<(ItemKind, String)> = HashSet::new();
    let mut statement_totals: BTreeMap<String, SideTotals> = BTreeMap::new();
    for line in &statement.lines {
        let kind = ItemKind::from(line.kind);
        let currency = line.amount.currency.code().to_string();
        let reference = line_reference(line);
        let final_status = is_final_status(&line.status);
        if final_status {
            statement_totals
                .entry(currency.clone())
                .or_default()
                .add(kind, line.amount.amount_minor);
        }
        let found = reference.as_deref().and_then(|r| by_ref.get(&(kind, r)).copied());
        let discrepancy = |k: DiscrepancyKind, ledger: Option<&LedgerItem>| Discrepancy {
            kind: k,
            item: kind,
            line: Some(line.line),
            order_id: order_id_of(line).or_else(|| ledger.map(|l| l.order_id.clone())),
            reference: reference.clone(),
            statement_amount_minor: Some(line.amount.amount_minor),
            ledger_amount_minor: ledger.map(|l| l.amount_minor),
            currency: currency.clone(),
            statement_status: Some(line.status.clone()),
        };
        match found {
            None if final_status => discrepancies.push(discrepancy(DiscrepancyKind::MissingInLedger, None)),
            // Not final at the channel and not in our ledger: both sides agree nothing moved yet.
            None => {}
            Some(l) => {
                seen.insert((kind, l.reference.clone()));
                if l.amount_minor != line.amount.amount_minor || l.currency != currency {
                    discrepancies.push(discrepancy(DiscrepancyKind::AmountDiffers, Some(l)));
                } else if !final_status {
                    discrepancies.push(discrepancy(DiscrepancyKind::StatusDiffers, Some(l)));
                } else {
                    matched += 1;
                }
            }
        }
    }
    let mut ledger_totals: BTreeMap<String, SideTotals> = BTreeMap::new();
    for l in of_day {
        ledger_totals
            .entry(l.currency.clone())
            .or_default()
            .add(l.kind, l.amount_minor);
        if !seen.contains(&(l.kind, l.reference.clone())) {
            discrepancies.push(Discrepancy {
                kind: DiscrepancyKind::MissingAtChannel,
                item: l.kind,
                line: None,
                order_id: Some(l.order_id.clone()),
                reference: Some(l.reference.clone()),
                statement_amount_minor: None,
                ledger_amount_minor: Some(l.amount_minor),
                currency: l.currency.clone(),
                statement_status: None,
            });
        }
    }
    (matched, discrepancies, statement_totals, ledger_totals)
}

/// Reconciles `statement` of `channel` (the orders of `scope`: the account that issued it) for
/// its day (`date` or the lines' own day) against the ledger.
///
/// # Errors
/// [`ReconcileError`] when the day cannot be told or the database fails.
pub async fn reconcile(
    pool: &AnyPool,
    channel: &str,
    scope: &AccountScope,
    statement: &Statement,
    date: Option<NaiveDate>,
) -> Result<ReconcileReport, ReconcileError> {
    let day = statement_day(statement, channel, date)?;
    let (from, to) = day_window(channel, day);
    let references: Vec<String> = statement.lines.iter().filter_map(line_reference).collect();
    let referenced = ledger_items_by_reference(pool, channel, scope, &references).await?;
    let of_day = ledger_items(pool, channel, scope, from, to).await?;
    let (matched, discrepancies, statement_totals, ledger_totals) = compare(statement, &referenced, &of_day);
    Ok(ReconcileReport {
        channel: channel.to_string(),
        account: scope.account.clone(),
        date: day.to_string(),
        format: statement.format.name().to_string(),
        matched,
        discrepancies,
        statement_totals,
        ledger_totals,
    })
}
