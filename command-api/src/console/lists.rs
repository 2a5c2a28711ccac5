//! The console's refund and notification lists (what needs a person first, then the most recent)
//! and the ledger (balances, journal lines by reference).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use payledger_domain::format_minor;
use payledger_notifier::queries as notifications;
use payledger_projections::console as read;
use serde::Deserialize;

use super::access::Action;
use super::i18n::Tr;
use super::pages::{html, mode_of, scope, Layout};
use super::{internal, Viewer};
use crate::app::AppState;

/// Rows in each section of the lists.
const LIST_ROWS: i64 = 50;

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    mode: Option<String>,
    #[serde(default)]
    merchant: String,
    done: Option<String>,
    error: Option<String>,
}

struct RefundLine {
    order_id: String,
    merchant_id: String,
    out_refund_no: String,
    status: String,
    amount: String,
    created_at: String,
}

#[derive(Template)]
#[template(path = "console/refunds.html")]
struct RefundsPage {
    t: Tr,
    layout: Option<Layout>,
    operator: bool,
    sections: Vec<(&'static str, Vec<RefundLine>)>,
}

/// `GET /console/refunds`: pending and failed refunds, then the most recent.
pub(super) async fn refunds(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<ListQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let mode = mode_of(q.mode.as_deref());
    let scope = scope(&viewer, mode, Some(&q.merchant));
    if let Err(e) = state.read_models_current().await {
        return internal(t.0, &e);
    }
    let mut sections = Vec::new();
    for (title, open) in [("needs_attention", true), ("recent", false)] {
        let rows = match read::refunds(state.db.pool(), &scope, open, LIST_ROWS).await {
            Ok(rows) => rows,
            Err(e) => return internal(t.0, &e),
        };
        let lines = rows
            .into_iter()
            .map(|r| RefundLine {
                amount: format!("{} {}", format_minor(r.amount_minor, &r.currency), r.currency),
                order_id: r.order_id,
                merchant_id: r.merchant_id,
                out_refund_no: r.out_refund_no,
                status: r.status,
                created_at: r.created_at,
            })
            .collect();
        sections.push((title, lines));
    }
    let back = format!("/console/refunds?mode={mode}");
    html(
        StatusCode::OK,
        &RefundsPage {
            t,
            layout: Layout::new(&viewer, mode, "/console/refunds", &back, "refunds"),
            operator: viewer.merchant().is_none(),
            sections,
        },
    )
}

struct NotificationLine {
    notification_id: String,
    order_id: String,
    merchant_id: String,
    kind: String,
    status: String,
    attempts: i64,
    last_status_code: String,
    last_error: String,
    created_at: String,
    resendable: bool,
}

#[derive(Template)]
#[template(path = "console/notifications.html")]
struct NotificationsPage {
    t: Tr,
    layout: Option<Layout>,
    operator: bool,
    csrf: String,
    may_resend: bool,
    sections: Vec<(&'static str, Vec<NotificationLine>)>,
    done: Option<&'static str>,
    error: Option<String>,
}

/// `GET /console/notifications`: abandoned and failing notifications, then the most recent; a
/// resend for each finished one the role may resend.
pub(super) async fn notifications(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<ListQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let mode = mode_of(q.mode.as_deref());
    let scope = scope(&viewer, mode, Some(&q.merchant));
    let mut sections = Vec::new();
    for (title, failing) in [("needs_attention", true), ("recent", false)] {
        let rows = match notifications::list_for_console(
            state.db.pool(),
            mode,
            scope.merchant_id.as_deref(),
            failing,
            LIST_ROWS,
        )
        .await
        {
            Ok(rows) => rows,
            Err(e) => return internal(t.0, &e),
        };
        let lines = rows
            .into_iter()
            .map(|(merchant_id, n)| NotificationLine {
                resendable: matches!(n.status.as_str(), "delivered" | "abandoned"),
                notification_id: n.notification_id,
                order_id: n.order_id,
                merchant_id,
                kind: n.kind,
                status: n.status,
                attempts: n.attempts,
                last_status_code: n.last_status_code.map(|c| c.to_string()).unwrap_or_default(),
                last_error: n.last_error.unwrap_or_default(),
                created_at: n.created_at,
            })
            .collect();
        sections.push((title, lines));
    }
    let back = format!("/console/notifications?mode={mode}");
    html(
        StatusCode::OK,
        &NotificationsPage {
            t,
            layout: Layout::new(&viewer, mode, "/console/notifications", &back, "notifications"),
            operator: viewer.merchant().is_none(),
            csrf: viewer.csrf.clone(),
            may_resend: viewer.may(Action::Resend),
            sections,
            done: (q.done.as_deref() == Some("resend")).then_some("done_resend"),
            error: q.error,
        },
    )
}

#[derive(Deserialize, Default)]
pub(super) struct LedgerQuery {
    mode: Option<String>,
    #[serde(default)]
    merchant: String,
    #[serde(default)]
    reference: String,
}

struct BalanceLine {
    merchant_id: String,
    account: String,
    currency: String,
    debit: String,
    credit: String,
    balance: String,
}

struct EntryLine {
    occurred_at: String,
    event_type: String,
    account: String,
    debit: String,
    credit: String,
    order_id: String,
}

#[derive(Template)]
#[template(path = "console/ledger.html")]
struct LedgerPage {
    t: Tr,
    layout: Option<Layout>,
    mode: &'static str,
    operator: bool,
    merchant: String,
    reference: String,
    balances: Vec<BalanceLine>,
    entries: Vec<EntryLine>,
}

/// `GET /console/ledger`: every account's balance of the scope's books (one book per merchant
/// and mode), and the journal lines of a reference (`channel_trade_no`, `refund_id`) or order id.
pub(super) async fn ledger(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<LedgerQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let mode = mode_of(q.mode.as_deref());
    let scope = scope(&viewer, mode, Some(&q.merchant));
    if let Err(e) = state.read_models_current().await {
        return internal(t.0, &e);
    }
    let pool = state.db.pool();
    let balances = match read::balances(pool, &scope).await {
        Ok(rows) => rows,
        Err(e) => return internal(t.0, &e),
    };
    let reference = q.reference.trim().to_string();
    let entries = if reference.is_empty() {
        Vec::new()
    } else {
        match read::entries(pool, &scope, &reference).await {
            Ok(rows) => rows,
            Err(e) => return internal(t.0, &e),
        }
    };
    let back = format!("/console/ledger?mode={mode}");
    html(
        StatusCode::OK,
        &LedgerPage {
            t,
            layout: Layout::new(&viewer, mode, "/console/ledger", &back, "ledger"),
            mode: mode.as_str(),
            operator: viewer.merchant().is_none(),
            merchant: q.merchant,
            balances: balances
                .into_iter()
                .map(|b| BalanceLine {
                    debit: format_minor(b.debit_minor, &b.currency),
                    credit: format_minor(b.credit_minor, &b.currency),
                    balance: format_minor(b.credit_minor - b.debit_minor, &b.currency),
                    merchant_id: b.merchant_id,
                    account: b.account,
                    currency: b.currency,
                })
                .collect(),
            entries: entries
                .into_iter()
                .map(|e| EntryLine {
                    debit: format_minor(e.debit_minor, &e.currency),
                    credit: format_minor(e.credit_minor, &e.currency),
                    occurred_at: e.occurred_at,
                    event_type: e.event_type,
                    account: e.account,
                    order_id: e.order_id,
                })
                .collect(),
            reference,
        },
    )
}

struct AccountLine {
    channel: &'static str,
    id: String,
    /// The channel-side identity (`app_id=… mch_id=…`): identifiers, never key material.
    identity: String,
    new_orders: bool,
    methods: String,
    calls: usize,
    ok_share: String,
    latency: String,
}

struct CallLine {
    at: String,
    channel: String,
    account: String,
    operation: &'static str,
    outcome: &'static str,
    latency: String,
}

#[derive(Template)]
#[template(path = "console/channels.html")]
struct ChannelsPage {
    t: Tr,
    layout: Option<Layout>,
    accounts: Vec<AccountLine>,
    calls: Vec<CallLine>,
}

/// Calls listed on the channel page, newest first.
const CALLS_LISTED: usize = 50;

/// `GET /console/channels` (operators): every configured channel account (which take new
/// orders, their methods) with this process's recent calls to it (count, share succeeded,
/// latency p50/p99), and the most recent calls. No key material is ever shown: only the
/// account's ids.
pub(super) async fn channels(State(state): State<AppState>, Extension(viewer): Extension<Viewer>) -> Response {
    let t = Tr(viewer.lang);
    let recent = state.flows.calls.recent();
    let ms = |d: std::time::Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let accounts = state
        .channels
        .accounts()
        .into_iter()
        .map(|(channel, account, usage)| {
            let mut latencies: Vec<std::time::Duration> = recent
                .iter()
                .filter(|c| c.channel == channel && c.account == account.id)
                .map(|c| c.latency)
                .collect();
            let ok = recent
                .iter()
                .filter(|c| c.channel == channel && c.account == account.id && c.outcome == "ok")
                .count();
            latencies.sort();
            let at = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
            AccountLine {
                channel,
                identity: account.identity(),
                new_orders: usage.new_orders,
                methods: payledger_channel_adapters::CAPABILITIES
                    .iter()
                    .find(|c| c.channel == channel)
                    .map(|c| c.methods.join(", "))
                    .unwrap_or_default(),
                calls: latencies.len(),
                ok_share: if latencies.is_empty() {
                    "–".into()
                } else {
                    format!("{:.1} %", ok as f64 * 100.0 / latencies.len() as f64)
                },
                latency: if latencies.is_empty() {
                    "–".into()
                } else {
                    format!("{} / {}", ms(at(0.5)), ms(at(0.99)))
                },
                id: account.id,
            }
        })
        .collect();
    let calls = recent
        .into_iter()
        .rev()
        .take(CALLS_LISTED)
        .map(|c| CallLine {
            at: payledger_store::time::fmt_ts(c.at),
            latency: ms(c.latency),
            channel: c.channel,
            account: c.account,
            operation: c.operation,
            outcome: c.outcome,
        })
        .collect();
    html(
        StatusCode::OK,
        &ChannelsPage {
            t,
            layout: Layout::new(
                &viewer,
                payledger_domain::Mode::Live,
                "/console/channels",
                "/console/channels",
                "channels",
            ),
            accounts,
            calls,
        },
    )
}
