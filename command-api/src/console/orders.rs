//! The console's orders: the list (filters, cursor pages, CSV export), an order's page, and the
//! actions on it (refund, close, resend a notification).

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{Duration, Utc};
use payledger_domain::{format_minor, parse_major, OrderStatus};
use payledger_notifier::queries as notifications;
use payledger_projections::queries::{self, OrderFilter, OrderScope};
use payledger_projections::OrderView;
use payledger_store::OrderOwner;
use serde::Deserialize;
use uuid::Uuid;

use super::access::Action;
use super::auth;
use super::i18n::Tr;
use super::pages::{html, mode_of, scope, Layout};
use super::{internal, record_action, Viewer};
use crate::app::AppState;

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

impl OrdersQuery {
    /// The scope and filter the form asks for, and what in it was refused (the rest applies).
    fn filters(&self, viewer: &Viewer) -> (OrderScope, OrderFilter, Option<String>) {
        let mode = mode_of(self.mode.as_deref());
        let scope = scope(viewer, mode, Some(&self.merchant));
        let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let mut error = None;
        let day = |s: &str, error: &mut Option<String>| -> Option<chrono::NaiveDate> {
            let s = some(s)?;
            chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                .map_err(|_| *error = Some(format!("{s:?}: YYYY-MM-DD")))
                .ok()
        };
        // Amounts in the list's filter: major units with at most two decimals (the orders of a
        // list may have several currencies; two is the common exponent), never rounded.
        let amount = |s: &str, error: &mut Option<String>| -> Option<i64> {
            let s = some(s)?;
            parse_major(&s, "CNY").map_err(|e| *error = Some(e)).ok()
        };
        let start = |d: chrono::NaiveDate| format!("{d}T00:00:00.000000Z");
        let filter = OrderFilter {
            out_trade_no: some(&self.out_trade_no),
            status: some(&self.status).filter(|s| OrderStatus::ALL.iter().any(|known| known.as_str() == s)),
            created_from: day(&self.from, &mut error).map(start),
            // The "to" day is included: before the next day's start.
            created_to: day(&self.to, &mut error).map(|d| start(d + Duration::days(1))),
            channel: some(&self.channel),
            amount_min: amount(&self.amount_min, &mut error),
            amount_max: amount(&self.amount_max, &mut error),
        };
        (scope, filter, error)
    }

    /// The filters as a query string (for the next page with `cursor`, and the CSV export).
    fn query_string(&self, cursor: Option<&str>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("mode", mode_of(self.mode.as_deref()).as_str());
        for (k, v) in [
            ("status", &self.status),
            ("channel", &self.channel),
            ("merchant", &self.merchant),
            ("out_trade_no", &self.out_trade_no),
            ("from", &self.from),
            ("to", &self.to),
            ("amount_min", &self.amount_min),
            ("amount_max", &self.amount_max),
        ] {
            if !v.is_empty() {
                query.append_pair(k, v);
            }
        }
        if let Some(c) = cursor {
            query.append_pair("cursor", c);
        }
        query.finish()
    }
}

/// Orders per page of the CSV export's reads.
const CSV_PAGE: i64 = 100;

/// A CSV cell of free text that a spreadsheet would read as a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return: OWASP's list) gets a leading `'`, so it stays text.
fn csv_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The CSV lines of `orders` (amounts in minor units and in major units with the currency).
fn csv_lines(orders: &[OrderView], header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        w.write_record([
            "order_id",
            "merchant_id",
            "mode",
            "out_trade_no",
            "status",
            "currency",
            "amount_minor",
            "amount",
            "paid_minor",
            "refunded_minor",
            "channel",
            "method",
            "channel_trade_no",
            "subject",
            "created_at",
        ])?;
    }
    for o in orders {
        w.write_record([
            o.order_id.to_string().as_str(),
            &csv_text(&o.merchant_id),
            o.mode.as_str(),
            &csv_text(&o.out_trade_no),
            o.status.as_str(),
            &o.currency,
            &o.amount.to_string(),
            &format_minor(o.amount, &o.currency),
            &o.paid_amount.to_string(),
            &o.refunded_amount.to_string(),
            &csv_text(&o.channel),
            &csv_text(&o.method),
            &csv_text(o.channel_trade_no.as_deref().unwrap_or("")),
            &csv_text(&o.subject),
            &payledger_store::time::fmt_ts(o.created_at),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// `GET /console/orders.csv` (the list's filters): every matching order, newest first, streamed
/// page by page as CSV (UTF-8, a header line). Free-text cells are kept from being read as
/// formulas ([`csv_text`]). The export is recorded in the audit log.
pub(super) async fn export_csv(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<OrdersQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let (scope, filter, error) = q.filters(&viewer);
    if let Some(e) = error {
        return super::pages::error_page(t, StatusCode::UNPROCESSABLE_ENTITY, Some(e));
    }
    if let Err(e) = state.read_models_current().await {
        return internal(t.0, &e);
    }
    let recorded = record_action(
        &state,
        &viewer,
        "export",
        "orders".into(),
        q.query_string(None),
        &Ok::<(), String>(()),
    )
    .await;
    if let Err(r) = recorded {
        return r;
    }
    let pool = state.db.pool().clone();
    let mode = scope.mode;
    // (cursor, first page, finished)
    let pages = futures::stream::unfold((None, true, false), move |(cursor, first, finished)| {
        let (pool, scope, filter) = (pool.clone(), scope.clone(), filter.clone());
        async move {
            if finished {
                return None;
            }
            let page = match queries::list_orders_in(&pool, &scope, &filter, CSV_PAGE, cursor).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "CSV export stopped");
                    return Some((Err(std::io::Error::other(e.to_string())), (None, false, true)));
                }
            };
            let bytes = csv_lines(&page.data, first).map_err(|e| std::io::Error::other(e.to_string()));
            let next = page.next_cursor.and_then(|c| queries::decode_cursor(&c).ok());
            let finished = next.is_none();
            Some((bytes, (next, false, finished)))
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"orders-{mode}.csv\""),
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response()
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
    /// The CSV export of the same filters.
    csv: String,
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
    let (scope, filter, error) = q.filters(&viewer);
    let cursor = q.cursor.as_deref().and_then(|c| queries::decode_cursor(c).ok());
    if let Err(e) = state.read_models_current().await {
        return internal(t.0, &e);
    }
    let page = match queries::list_orders_in(state.db.pool(), &scope, &filter, ORDERS_PER_PAGE, cursor).await {
        Ok(p) => p,
        Err(e) => return internal(t.0, &e),
    };
    let next = page
        .next_cursor
        .map(|c| format!("/console/orders?{}", q.query_string(Some(&c))));
    let csv = format!("/console/orders.csv?{}", q.query_string(None));
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
            csv,
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

/// The order an action names, with its owner (whose flows it goes through), if `viewer` may see
/// it; 404 otherwise (missing and another merchant's alike).
async fn order_to_act_on(state: &AppState, viewer: &Viewer, id: &str) -> Result<(OrderView, OrderOwner), Response> {
    match visible_order(state, viewer, id).await? {
        Some((view, _)) => {
            let owner = OrderOwner {
                merchant_id: view.merchant_id.clone(),
                mode: view.mode,
            };
            Ok((view, owner))
        }
        None => Err(super::page_error(viewer.lang, StatusCode::NOT_FOUND)),
    }
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
    let (view, owner) = match order_to_act_on(&state, &viewer, &id).await {
        Ok(found) => found,
        Err(r) => return r,
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
    if let Err(r) = record_action(
        &state,
        &viewer,
        "refund",
        format!("order:{}", view.order_id),
        detail,
        &outcome,
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
    let (view, owner) = match order_to_act_on(&state, &viewer, &id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let outcome = state
        .flows
        .close_order(&owner, view.order_id, &viewer.actor())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    if let Err(r) = record_action(
        &state,
        &viewer,
        "close",
        format!("order:{}", view.order_id),
        String::new(),
        &outcome,
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
    /// `notifications`: back to the notification list rather than the order's page.
    #[serde(default)]
    back: String,
}

/// `POST /console/notifications/{id}/resend` (`order_id` in the form): queues a delivered or
/// abandoned notification of that order again.
pub(super) async fn resend(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<ResendForm>,
) -> Response {
    let (view, owner) = match order_to_act_on(&state, &viewer, &form.order_id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let Ok(notification_id) = Uuid::parse_str(&id) else {
        return super::page_error(viewer.lang, StatusCode::NOT_FOUND);
    };
    let outcome = notifications::resend(state.db.pool(), &owner, notification_id, &viewer.actor(), Utc::now())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    if outcome.is_ok() {
        state.notify_queued.notify_one();
    }
    let target = format!("notification:{notification_id}");
    if let Err(r) = record_action(
        &state,
        &viewer,
        "resend",
        target,
        format!("order:{}", view.order_id),
        &outcome,
    )
    .await
    {
        return r;
    }
    if form.back == "notifications" {
        let query = match outcome {
            Ok(()) => "done=resend".to_string(),
            Err(e) => format!(
                "error={}",
                url::form_urlencoded::byte_serialize(e.as_bytes()).collect::<String>()
            ),
        };
        return Redirect::to(&format!("/console/notifications?mode={}&{query}", view.mode)).into_response();
    }
    back_to_order(view.order_id, outcome.map(|_| "resend"))
}
