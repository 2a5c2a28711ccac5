//! The console's pages and actions: overview, orders, an order (with refund, close, resend),
//! the audit log; the language switch and the embedded assets.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{Duration, Utc};
use payledger_domain::console::ConsoleUserCommand;
use payledger_domain::{format_minor, parse_major, Mode, OrderStatus};
use payledger_notifier::queries as notifications;
use payledger_projections::console as overview_queries;
use payledger_projections::queries::{self, OrderFilter, OrderScope};
use payledger_projections::OrderView;
use payledger_store::console as store;
use payledger_store::OrderOwner;
use serde::Deserialize;
use uuid::Uuid;

use super::access::Action;
use super::auth;
use super::i18n::{Lang, Tr};
use super::{internal, set_cookie, Viewer};
use crate::app::AppState;

/// What the shared layout (`base.html`) shows of the logged-in user.
pub(super) struct Layout {
    pub email: String,
    pub role: &'static str,
    pub csrf: String,
    /// `live` or `test`.
    pub mode: &'static str,
    pub may_audit: bool,
    /// The page's path, for the mode switch.
    pub path: &'static str,
    /// The page's path and query, URL-encoded, for the language switch's way back.
    pub back: String,
    /// Which navigation entry is current.
    pub active: &'static str,
}

impl Layout {
    fn new(viewer: &Viewer, mode: Mode, path: &'static str, back: &str, active: &'static str) -> Option<Self> {
        Some(Self {
            email: viewer.user.email.clone(),
            role: viewer.role().as_str(),
            csrf: viewer.csrf.clone(),
            mode: mode.as_str(),
            may_audit: viewer.may(Action::ViewAudit),
            path,
            back: url::form_urlencoded::byte_serialize(back.as_bytes()).collect(),
            active,
        })
    }
}

/// Renders `page` as an HTML answer with `status`.
pub(super) fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    t: Tr,
    layout: Option<Layout>,
    status: u16,
    message: &'static str,
    detail: Option<String>,
}

/// The error page of `status` (403, 404, 500, …) with an optional `detail` for a person.
pub(super) fn error_page(t: Tr, status: StatusCode, detail: Option<String>) -> Response {
    let message = match status {
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        _ => "error",
    };
    html(
        status,
        &ErrorPage {
            t,
            layout: None,
            status: status.as_u16(),
            message,
            detail,
        },
    )
}

/// The mode a page shows: `?mode=test`, else live.
#[derive(Deserialize, Default)]
pub(super) struct ModeQuery {
    mode: Option<String>,
}

fn mode_of(raw: Option<&str>) -> Mode {
    match raw {
        Some("test") => Mode::Test,
        _ => Mode::Live,
    }
}

/// What `viewer` sees in `mode`: its merchant, or every merchant (`merchant` narrows an
/// operator's view; a merchant user's own merchant always wins).
fn scope(viewer: &Viewer, mode: Mode, merchant: Option<&str>) -> OrderScope {
    OrderScope {
        mode,
        merchant_id: viewer
            .merchant()
            .or(merchant.filter(|m| !m.is_empty()))
            .map(str::to_string),
    }
}

// ---------------------------------------------------------------------------------------------
// Overview

struct PeriodRow {
    currency: String,
    orders_created: i64,
    orders_paid: i64,
    success_rate: String,
    paid: String,
    refunds_succeeded: i64,
    refunded: String,
}

struct Period {
    label: &'static str,
    rows: Vec<PeriodRow>,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    t: Tr,
    layout: Option<Layout>,
    periods: Vec<Period>,
    failing_notifications: i64,
}

/// `GET /console`: today, 7 and 30 days (UTC days), per currency; failing notifications.
pub(super) async fn overview(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<ModeQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let mode = mode_of(q.mode.as_deref());
    let scope = scope(&viewer, mode, None);
    let today = Utc::now().date_naive();
    let from = (today - Duration::days(29)).to_string();
    if let Err(e) = state.read_models_current().await {
        return internal(t.0, &e);
    }
    let pool = state.db.pool();
    let days = match overview_queries::daily_totals(pool, &scope, &from).await {
        Ok(d) => d,
        Err(e) => return internal(t.0, &e),
    };
    let failing = match overview_queries::failing_notifications(pool, &scope).await {
        Ok(n) => n,
        Err(e) => return internal(t.0, &e),
    };
    let mut periods = Vec::new();
    for (label, span) in [("today", 0), ("last_7_days", 6), ("last_30_days", 29)] {
        let first = (today - Duration::days(span)).to_string();
        let mut rows: Vec<PeriodRow> = Vec::new();
        let mut sums: std::collections::BTreeMap<&str, [i64; 5]> = Default::default();
        for d in days.iter().filter(|d| d.day >= first) {
            let s = sums.entry(d.currency.as_str()).or_default();
            s[0] += d.orders_created;
            s[1] += d.orders_paid;
            s[2] += d.paid_minor;
            s[3] += d.refunds_succeeded;
            s[4] += d.refunded_minor;
        }
        for (currency, s) in sums {
            rows.push(PeriodRow {
                currency: currency.to_string(),
                orders_created: s[0],
                orders_paid: s[1],
                success_rate: if s[0] > 0 {
                    format!("{:.1} %", s[1] as f64 * 100.0 / s[0] as f64)
                } else {
                    "–".into()
                },
                paid: format_minor(s[2], currency),
                refunds_succeeded: s[3],
                refunded: format_minor(s[4], currency),
            });
        }
        if !rows.is_empty() {
            periods.push(Period { label, rows });
        }
    }
    html(
        StatusCode::OK,
        &OverviewPage {
            t,
            layout: Layout::new(&viewer, mode, "/console", &format!("/console?mode={mode}"), "overview"),
            periods,
            failing_notifications: failing,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Orders

/// The order list's filters, as the form sends them (text, echoed back into the form).
#[derive(Deserialize, Default, Clone)]
pub(super) struct OrdersQuery {
    mode: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    merchant: String,
    #[serde(default)]
    out_trade_no: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    amount_min: String,
    #[serde(default)]
    amount_max: String,
    cursor: Option<String>,
}

struct OrderRow {
    order_id: Uuid,
    out_trade_no: String,
    merchant_id: String,
    status: &'static str,
    amount: String,
    channel: String,
    created_at: String,
}

#[derive(Template)]
#[template(path = "console/orders.html")]
struct OrdersPage {
    t: Tr,
    layout: Option<Layout>,
    mode: &'static str,
    f: OrdersQuery,
    /// Each status and whether the filter has it.
    statuses: Vec<(&'static str, bool)>,
    operator: bool,
    rows: Vec<OrderRow>,
    next: Option<String>,
    error: Option<String>,
}

/// Orders per console page.
const ORDERS_PER_PAGE: i64 = 50;

/// `GET /console/orders`: filters (status, channel, merchant for operators, out_trade_no, UTC
/// date range, amount range in major units of any currency with two decimals or fewer), newest
/// first, cursor pages.
pub(super) async fn orders(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<OrdersQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let mode = mode_of(q.mode.as_deref());
    let scope = scope(&viewer, mode, Some(&q.merchant));
    let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let mut error = None;
    let day = |s: &str, error: &mut Option<String>| -> Option<String> {
        let s = some(s)?;
        match chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d") {
            Ok(d) => Some(format!("{d}T00:00:00.000000Z")),
            Err(_) => {
                *error = Some(format!("{s:?}: YYYY-MM-DD"));
                None
            }
        }
    };
    // Amounts in the list's filter: major units with at most two decimals (the common exponent).
    let amount = |s: &str, error: &mut Option<String>| -> Option<i64> {
        let s = some(s)?;
        match parse_major(&s, "CNY") {
            Ok(v) => Some(v),
            Err(e) => {
                *error = Some(e);
                None
            }
        }
    };
    let created_from = day(&q.from, &mut error);
    let created_to = day(&q.to, &mut error).map(|d| {
        // The "to" day is included: before the next day's start.
        let next = chrono::NaiveDate::parse_from_str(&d[..10], "%Y-%m-%d").map(|d| d + Duration::days(1));
        next.map(|n| format!("{n}T00:00:00.000000Z")).unwrap_or(d)
    });
    let status = some(&q.status).filter(|s| OrderStatus::ALL.iter().any(|known| known.as_str() == s));
    let filter = OrderFilter {
        out_trade_no: some(&q.out_trade_no),
        status,
        created_from,
        created_to,
        channel: some(&q.channel),
        amount_min: amount(&q.amount_min, &mut error),
        amount_max: amount(&q.amount_max, &mut error),
    };
    let cursor = q.cursor.as_deref().and_then(|c| queries::decode_cursor(c).ok());
    if let Err(e) = state.read_models_current().await {
        return internal(t.0, &e);
    }
    let page = match queries::list_orders_in(state.db.pool(), &scope, &filter, ORDERS_PER_PAGE, cursor).await {
        Ok(p) => p,
        Err(e) => return internal(t.0, &e),
    };
    let next = page.next_cursor.map(|c| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("mode", mode.as_str());
        for (k, v) in [
            ("status", &q.status),
            ("channel", &q.channel),
            ("merchant", &q.merchant),
            ("out_trade_no", &q.out_trade_no),
            ("from", &q.from),
            ("to", &q.to),
            ("amount_min", &q.amount_min),
            ("amount_max", &q.amount_max),
        ] {
            if !v.is_empty() {
                query.append_pair(k, v);
            }
        }
        query.append_pair("cursor", &c);
        format!("/console/orders?{}", query.finish())
    });
    let rows = page
        .data
        .into_iter()
        .map(|o| OrderRow {
            order_id: o.order_id,
            amount: format!("{} {}", format_minor(o.amount, &o.currency), o.currency),
            out_trade_no: o.out_trade_no,
            merchant_id: o.merchant_id,
            status: o.status.as_str(),
            channel: o.channel,
            created_at: payledger_store::time::fmt_ts(o.created_at),
        })
        .collect();
    html(
        StatusCode::OK,
        &OrdersPage {
            t,
            layout: Layout::new(
                &viewer,
                mode,
                "/console/orders",
                &format!("/console/orders?mode={mode}"),
                "orders",
            ),
            mode: mode.as_str(),
            statuses: OrderStatus::ALL
                .iter()
                .map(|s| (s.as_str(), s.as_str() == q.status))
                .collect(),
            operator: viewer.merchant().is_none(),
            rows,
            next,
            error,
            f: q,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// One order

struct OrderFacts {
    order_id: Uuid,
    out_trade_no: String,
    merchant_id: String,
    status: &'static str,
    currency: String,
    amount: String,
    paid: String,
    refunded: String,
    channel: String,
    method: String,
    channel_trade_no: String,
    subject: String,
    created_at: String,
}

struct RefundRow {
    out_refund_no: String,
    amount: String,
    status: &'static str,
    reason: String,
}

struct AttemptRow {
    at: String,
    outcome: String,
    latency_ms: i64,
}

struct NotificationRow {
    notification_id: String,
    event_type: String,
    status: String,
    resendable: bool,
    attempts: Vec<AttemptRow>,
}

struct TimelineRow {
    sequence: i64,
    event_type: String,
    at: String,
    actor: String,
    payload: String,
}

#[derive(Template)]
#[template(path = "console/order.html")]
struct OrderPage {
    t: Tr,
    layout: Option<Layout>,
    o: OrderFacts,
    csrf: String,
    may_refund: bool,
    may_close: bool,
    may_resend: bool,
    refunds: Vec<RefundRow>,
    notifications: Vec<NotificationRow>,
    timeline: Vec<TimelineRow>,
    done: Option<&'static str>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct OrderQuery {
    done: Option<String>,
    error: Option<String>,
}

/// The order `id` as it stands in the log, with its events, if `viewer` may see it (a merchant
/// user: only its merchant's). `None` is 404 to the caller, the same for missing and not theirs.
async fn visible_order(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
) -> Result<Option<(OrderView, Vec<payledger_store::LogEvent>)>, Response> {
    let Ok(order_id) = Uuid::parse_str(id) else {
        return Ok(None);
    };
    let events = state
        .db
        .log()
        .order_events(order_id)
        .await
        .map_err(|e| internal(viewer.lang, &e))?;
    let view =
        OrderView::from_events(events.iter().map(|e| (e.sequence, &e.event))).map_err(|e| internal(viewer.lang, &e))?;
    Ok(view
        .filter(|v| viewer.merchant().is_none_or(|m| m == v.merchant_id))
        .map(|v| (v, events)))
}

/// `GET /console/orders/{id}`: terms, channel facts, refunds, notifications with every attempt,
/// and every event of the order (type, time, actor, payload); the actions the role allows.
pub(super) async fn order(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(q): Query<OrderQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let (view, events) = match visible_order(&state, &viewer, &id).await {
        Ok(Some(found)) => found,
        Ok(None) => return super::page_error(t.0, StatusCode::NOT_FOUND),
        Err(r) => return r,
    };
    let owner = OrderOwner {
        merchant_id: view.merchant_id.clone(),
        mode: view.mode,
    };
    let pool = state.db.pool();
    let filter = notifications::NotificationFilter {
        status: None,
        order_id: Some(view.order_id),
    };
    let jobs = match notifications::list(pool, &owner, &filter, 100, None).await {
        Ok(page) => page.data,
        Err(e) => return internal(t.0, &e),
    };
    let mut notification_rows = Vec::new();
    for job in jobs {
        let id = Uuid::parse_str(&job.notification_id).unwrap_or_default();
        let attempts = match notifications::detail(pool, &owner, id).await {
            Ok(Some(d)) => d.attempt_log,
            Ok(None) => Vec::new(),
            Err(e) => return internal(t.0, &e),
        };
        notification_rows.push(NotificationRow {
            resendable: matches!(job.status.as_str(), "delivered" | "abandoned"),
            notification_id: job.notification_id,
            event_type: job.kind,
            status: job.status,
            attempts: attempts
                .into_iter()
                .map(|a| AttemptRow {
                    at: a.attempted_at,
                    outcome: a.status_code.map(|c| c.to_string()).or(a.error).unwrap_or_default(),
                    latency_ms: a.latency_ms,
                })
                .collect(),
        });
    }
    let timeline = events
        .iter()
        .map(|e| TimelineRow {
            sequence: e.sequence,
            event_type: e.event_type.clone(),
            at: payledger_store::time::fmt_ts(e.recorded_at),
            actor: e
                .metadata
                .get("actor")
                .and_then(|a| a.as_str())
                .unwrap_or("")
                .to_string(),
            payload: serde_json::to_string_pretty(&e.event).unwrap_or_default(),
        })
        .collect();
    let currency = view.currency.clone();
    let refunds = view
        .refunds
        .iter()
        .map(|r| RefundRow {
            out_refund_no: r.out_refund_no.clone(),
            amount: format_minor(r.amount, &r.currency),
            status: r.status.as_str(),
            reason: r.reason.clone().unwrap_or_default(),
        })
        .collect();
    let done = match q.done.as_deref() {
        Some("refund") => Some("done_refund"),
        Some("close") => Some("done_close"),
        Some("resend") => Some("done_resend"),
        _ => None,
    };
    let status = view.status;
    let path = format!("/console/orders/{}", view.order_id);
    let page = OrderPage {
        layout: Layout::new(&viewer, view.mode, "/console/orders", &path, "orders"),
        csrf: viewer.csrf.clone(),
        may_refund: viewer.may(Action::Refund) && matches!(status, OrderStatus::Paid | OrderStatus::PartiallyRefunded),
        may_close: viewer.may(Action::Close) && status == OrderStatus::AwaitingPayment,
        may_resend: viewer.may(Action::Resend),
        refunds,
        notifications: notification_rows,
        timeline,
        done,
        error: q.error,
        o: OrderFacts {
            order_id: view.order_id,
            out_trade_no: view.out_trade_no,
            merchant_id: view.merchant_id,
            status: status.as_str(),
            amount: format!("{} {currency}", format_minor(view.amount, &currency)),
            paid: format!("{} {currency}", format_minor(view.paid_amount, &currency)),
            refunded: format!("{} {currency}", format_minor(view.refunded_amount, &currency)),
            channel: view.channel,
            method: view.method,
            channel_trade_no: view.channel_trade_no.unwrap_or_default(),
            subject: view.subject,
            created_at: payledger_store::time::fmt_ts(view.created_at),
            currency,
        },
        t,
    };
    html(StatusCode::OK, &page)
}

/// Records what `viewer` did in its audit log (its aggregate's `ActionRecorded`). A failure to
/// record is logged and answered 500: the action happened, the page must not claim otherwise.
async fn audit(
    state: &AppState,
    viewer: &Viewer,
    action: &str,
    target: String,
    detail: String,
    outcome: String,
) -> Result<(), Response> {
    let command = ConsoleUserCommand::RecordAction {
        action: action.to_string(),
        target,
        detail,
        outcome,
        address: viewer.address.clone(),
        at: Utc::now(),
    };
    store::execute(state.db.pool(), viewer.user.user_id, command)
        .await
        .map(|_| ())
        .map_err(|e| internal(viewer.lang, &e))
}

/// Back to the order's page with `done=…` or `error=…`.
fn back_to_order(order_id: Uuid, outcome: Result<&str, String>) -> Response {
    let query = match outcome {
        Ok(done) => format!("done={done}"),
        Err(e) => format!(
            "error={}",
            url::form_urlencoded::byte_serialize(e.as_bytes()).collect::<String>()
        ),
    };
    Redirect::to(&format!("/console/orders/{order_id}?{query}")).into_response()
}

#[derive(Deserialize)]
pub(super) struct RefundForm {
    amount: String,
    #[serde(default)]
    out_refund_no: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/orders/{id}/refund`: `amount` in major units of the order's currency (never
/// rounded), `out_refund_no` (default `console-<random>`), `reason`. Through the same flow as the
/// API's refund, actor `console:<email>`; recorded in the audit log with its outcome.
pub(super) async fn refund(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<RefundForm>,
) -> Response {
    let (view, _) = match visible_order(&state, &viewer, &id).await {
        Ok(Some(found)) => found,
        Ok(None) => return super::page_error(viewer.lang, StatusCode::NOT_FOUND),
        Err(r) => return r,
    };
    let owner = OrderOwner {
        merchant_id: view.merchant_id.clone(),
        mode: view.mode,
    };
    let out_refund_no = Some(form.out_refund_no.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("console-{}", &auth::csrf_token()[..12]));
    let reason = Some(form.reason.trim().to_string()).filter(|s| !s.is_empty());
    let outcome = match parse_major(&form.amount, &view.currency) {
        Err(e) => Err(e),
        Ok(amount_minor) => state
            .flows
            .request_refund(
                &owner,
                view.order_id,
                out_refund_no.clone(),
                amount_minor,
                reason,
                &viewer.actor(),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    let detail = format!("{} {} {out_refund_no}", form.amount.trim(), view.currency);
    let recorded = outcome.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.clone());
    if let Err(r) = audit(
        &state,
        &viewer,
        "refund",
        format!("order:{}", view.order_id),
        detail,
        recorded,
    )
    .await
    {
        return r;
    }
    back_to_order(view.order_id, outcome.map(|_| "refund"))
}

/// `POST /console/orders/{id}/close`: closes an unpaid order (the API's close flow).
pub(super) async fn close(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let (view, _) = match visible_order(&state, &viewer, &id).await {
        Ok(Some(found)) => found,
        Ok(None) => return super::page_error(viewer.lang, StatusCode::NOT_FOUND),
        Err(r) => return r,
    };
    let owner = OrderOwner {
        merchant_id: view.merchant_id.clone(),
        mode: view.mode,
    };
    let outcome = state
        .flows
        .close_order(&owner, view.order_id, &viewer.actor())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let recorded = outcome.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.clone());
    if let Err(r) = audit(
        &state,
        &viewer,
        "close",
        format!("order:{}", view.order_id),
        String::new(),
        recorded,
    )
    .await
    {
        return r;
    }
    back_to_order(view.order_id, outcome.map(|_| "close"))
}

#[derive(Deserialize)]
pub(super) struct ResendForm {
    order_id: String,
}

/// `POST /console/notifications/{id}/resend` (`order_id` in the form): queues a delivered or
/// abandoned notification of that order again.
pub(super) async fn resend(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<ResendForm>,
) -> Response {
    let (view, _) = match visible_order(&state, &viewer, &form.order_id).await {
        Ok(Some(found)) => found,
        Ok(None) => return super::page_error(viewer.lang, StatusCode::NOT_FOUND),
        Err(r) => return r,
    };
    let Ok(notification_id) = Uuid::parse_str(&id) else {
        return super::page_error(viewer.lang, StatusCode::NOT_FOUND);
    };
    let owner = OrderOwner {
        merchant_id: view.merchant_id.clone(),
        mode: view.mode,
    };
    let outcome = notifications::resend(state.db.pool(), &owner, notification_id, &viewer.actor(), Utc::now())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    if outcome.is_ok() {
        state.notify_queued.notify_one();
    }
    let recorded = outcome.as_ref().map(|_| "ok".to_string()).unwrap_or_else(|e| e.clone());
    let target = format!("notification:{notification_id}");
    if let Err(r) = audit(
        &state,
        &viewer,
        "resend",
        target,
        format!("order:{}", view.order_id),
        recorded,
    )
    .await
    {
        return r;
    }
    back_to_order(view.order_id, outcome.map(|_| "resend"))
}

// ---------------------------------------------------------------------------------------------
// Audit log

struct AuditRow {
    at: String,
    actor: String,
    event_type: &'static str,
    action: String,
    target: String,
    detail: String,
    outcome: String,
    address: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    t: Tr,
    layout: Option<Layout>,
    actor: String,
    /// Each event type and whether the filter has it.
    kinds: Vec<(&'static str, bool)>,
    rows: Vec<AuditRow>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default, rename = "type")]
    event_type: String,
    before: Option<i64>,
}

/// Audit entries per page.
const AUDIT_PER_PAGE: i64 = 100;

/// `GET /console/audit`: every console user's events, newest first, by actor and type.
pub(super) async fn audit_log(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<AuditQuery>,
) -> Response {
    use payledger_domain::console::ConsoleUserEvent as E;
    let t = Tr(viewer.lang);
    let filter = store::AuditFilter {
        actor: Some(q.actor.trim().to_string()).filter(|s| !s.is_empty()),
        event_type: Some(q.event_type.clone()).filter(|s| !s.is_empty()),
    };
    let entries = match store::audit(state.db.pool(), &filter, q.before, AUDIT_PER_PAGE).await {
        Ok(e) => e,
        Err(e) => return internal(t.0, &e),
    };
    let next = (entries.len() as i64 == AUDIT_PER_PAGE)
        .then(|| entries.last().map(|e| e.position))
        .flatten()
        .map(|before| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("actor", &q.actor);
            query.append_pair("type", &q.event_type);
            query.append_pair("before", &before.to_string());
            format!("/console/audit?{}", query.finish())
        });
    let rows = entries
        .into_iter()
        .map(|entry| {
            let mut row = AuditRow {
                at: payledger_store::time::fmt_ts(entry.event.at()),
                actor: entry.actor,
                event_type: entry.event.event_type(),
                action: String::new(),
                target: String::new(),
                detail: String::new(),
                outcome: "ok".into(),
                address: String::new(),
            };
            match entry.event {
                E::ActionRecorded {
                    action,
                    target,
                    detail,
                    outcome,
                    address,
                    ..
                } => {
                    (row.action, row.target, row.detail, row.outcome, row.address) =
                        (action, target, detail, outcome, address);
                }
                E::LoginSucceeded { address, .. } => row.address = address,
                E::LoginFailed { address, reason, .. } => {
                    row.address = address;
                    row.outcome = reason;
                }
                E::LoggedOut {
                    address, everywhere, ..
                } => {
                    row.address = address;
                    row.detail = if everywhere { "everywhere".into() } else { String::new() };
                }
                E::UserAdded {
                    role,
                    merchant_id,
                    added_by,
                    ..
                } => {
                    row.detail = format!("{} {} by {added_by}", role.as_str(), merchant_id.unwrap_or_default());
                }
                E::UserDisabled { by, .. } => row.detail = format!("by {by}"),
                E::PasswordChanged { .. } | E::TotpEnrolled { .. } => {}
            }
            row
        })
        .collect();
    html(
        StatusCode::OK,
        &AuditPage {
            t,
            layout: Layout::new(&viewer, Mode::Live, "/console/audit", "/console/audit", "audit"),
            kinds: [
                "ActionRecorded",
                "LoginSucceeded",
                "LoginFailed",
                "LoggedOut",
                "UserAdded",
                "PasswordChanged",
                "TotpEnrolled",
                "UserDisabled",
            ]
            .into_iter()
            .map(|k| (k, k == q.event_type))
            .collect(),
            rows,
            next,
            actor: q.actor,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Language and assets

#[derive(Deserialize, Default)]
pub(super) struct BackQuery {
    back: Option<String>,
}

/// `GET /console/lang/{lang}?back=/console/…`: remembers the language (a year) and goes back.
pub(super) async fn switch_language(
    State(state): State<AppState>,
    Path(lang): Path<String>,
    Query(q): Query<BackQuery>,
) -> Response {
    let Some(lang) = Lang::parse(&lang) else {
        return super::page_error(Lang::En, StatusCode::NOT_FOUND);
    };
    let back = q
        .back
        .filter(|b| b.starts_with("/console") && !b.starts_with("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/console".into());
    let cookie = set_cookie(
        auth::LANG_COOKIE,
        lang.tag(),
        Some(365 * 24 * 3600),
        state.console.secure_cookies,
        false,
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(&back)).into_response()
}

const CONSOLE_CSS: &str = include_str!("../../assets/console/console.css");
const CONSOLE_JS: &str = include_str!("../../assets/console/console.js");

/// `GET /console/assets/{file}`: the stylesheet and the script, embedded in the binary.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CONSOLE_CSS, "text/css; charset=utf-8"),
        "console.js" => (CONSOLE_JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        body,
    )
        .into_response()
}
