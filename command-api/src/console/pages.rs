//! The console's pages and actions: overview, orders, an order (with refund, close, resend),
//! the audit log; the language switch and the embedded assets.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Extension;
use chrono::{Duration, Utc};
use payledger_domain::{format_minor, Mode};
use payledger_projections::console as overview_queries;
use payledger_projections::queries::OrderScope;
use serde::Deserialize;

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
    pub may_ledger: bool,
    pub may_channels: bool,
    pub may_reconciliation: bool,
    pub may_users: bool,
    /// The page's path, for the mode switch.
    pub path: &'static str,
    /// The page's path and query, URL-encoded, for the language switch's way back.
    pub back: String,
    /// Which navigation entry is current.
    pub active: &'static str,
}

impl Layout {
    pub(super) fn new(
        viewer: &Viewer,
        mode: Mode,
        path: &'static str,
        back: &str,
        active: &'static str,
    ) -> Option<Self> {
        Some(Self {
            email: viewer.user.email.clone(),
            role: viewer.role().as_str(),
            csrf: viewer.csrf.clone(),
            mode: mode.as_str(),
            may_audit: viewer.may(Action::ViewAudit),
            may_ledger: viewer.may(Action::ViewLedger),
            may_channels: viewer.may(Action::ViewChannels),
            may_reconciliation: viewer.may(Action::ViewReconciliation),
            may_users: viewer.may(Action::ManageUsers),
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

pub(super) fn mode_of(raw: Option<&str>) -> Mode {
    match raw {
        Some("test") => Mode::Test,
        _ => Mode::Live,
    }
}

/// What `viewer` sees in `mode`: its merchant, or every merchant (`merchant` narrows an
/// operator's view; a merchant user's own merchant always wins).
pub(super) fn scope(viewer: &Viewer, mode: Mode, merchant: Option<&str>) -> OrderScope {
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

/// One line of a period's table: one currency on one channel, or (`channel: None`) every channel
/// of that currency together.
struct PeriodRow {
    currency: String,
    channel: Option<String>,
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

/// The five sums of [`overview_queries::DayTotals`], in its order. Amounts in minor units.
#[derive(Default, Clone, Copy)]
struct Sums([i64; 5]);

impl Sums {
    fn add(&mut self, d: &overview_queries::DayTotals) {
        let s = &mut self.0;
        s[0] += d.orders_created;
        s[1] += d.orders_paid;
        s[2] += d.paid_minor;
        s[3] += d.refunds_succeeded;
        s[4] += d.refunded_minor;
    }

    fn row(self, currency: &str, channel: Option<&str>) -> PeriodRow {
        let s = self.0;
        PeriodRow {
            currency: currency.to_string(),
            channel: channel.map(str::to_string),
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
        }
    }
}

/// A period's table from the days since `first` (`YYYY-MM-DD`): per currency, each channel, then
/// (when the currency has more than one) every channel together.
fn period_rows(days: &[overview_queries::DayTotals], first: &str) -> Vec<PeriodRow> {
    let mut sums: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, Sums>> = Default::default();
    for d in days.iter().filter(|d| d.day.as_str() >= first) {
        sums.entry(d.currency.as_str())
            .or_default()
            .entry(d.channel.as_str())
            .or_default()
            .add(d);
    }
    let mut rows = Vec::new();
    for (currency, channels) in sums {
        let mut total = Sums::default();
        for (channel, s) in &channels {
            for (t, v) in total.0.iter_mut().zip(s.0) {
                *t += v;
            }
            rows.push(s.row(currency, Some(channel)));
        }
        if channels.len() > 1 {
            rows.push(total.row(currency, None));
        }
    }
    rows
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    t: Tr,
    layout: Option<Layout>,
    mode: &'static str,
    periods: Vec<Period>,
    failing_notifications: i64,
    /// Operators: open reconciliation differences.
    open_differences: Option<usize>,
    has_chart: bool,
    /// The charts' data (see `assets/console/console.js`), safe inside a `<script>` element.
    chart_json: String,
}

/// The overview's chart data: one point per UTC day from `first` to `today` (unix seconds);
/// orders created and paid (all currencies), orders paid per channel, and the paid volume per
/// currency in major units (a float for drawing only: the tables carry the exact minor units).
fn chart_json(
    t: Tr,
    days: &[overview_queries::DayTotals],
    first: chrono::NaiveDate,
    today: chrono::NaiveDate,
) -> String {
    let dates: Vec<chrono::NaiveDate> = first.iter_days().take_while(|d| *d <= today).collect();
    let index = |day: &str| dates.iter().position(|d| d.to_string() == day);
    let mut created = vec![0_i64; dates.len()];
    let mut paid = vec![0_i64; dates.len()];
    let mut by_channel: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    let mut volume: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for d in days {
        let Some(i) = index(&d.day) else { continue };
        created[i] += d.orders_created;
        paid[i] += d.orders_paid;
        by_channel
            .entry(d.channel.as_str())
            .or_insert_with(|| vec![0; dates.len()])[i] += d.orders_paid;
        let scale = payledger_domain::Currency::from_code(&d.currency)
            .and_then(|c| c.exponent())
            .map_or(1.0, |e| 10_f64.powi(i32::from(e)));
        volume
            .entry(d.currency.as_str())
            .or_insert_with(|| vec![0.0; dates.len()])[i] += d.paid_minor as f64 / scale;
    }
    let json = serde_json::json!({
        "days": dates.iter().map(|d| d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp())).collect::<Vec<_>>(),
        "orders": [
            {"label": t.t("orders_created"), "values": created},
            {"label": t.t("orders_paid"), "values": paid},
        ],
        "channels": by_channel.into_iter().map(|(c, v)| serde_json::json!({"label": c, "values": v})).collect::<Vec<_>>(),
        "volume": volume.into_iter().map(|(c, v)| serde_json::json!({"label": c, "values": v})).collect::<Vec<_>>(),
    });
    json.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// `GET /console`: today, 7 and 30 days (UTC days), per currency and channel; failing
/// notifications; open reconciliation differences (operators).
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
    let open_differences = if viewer.may(Action::ViewReconciliation) {
        match super::reconciliation::open_differences(&state).await {
            Ok(n) => Some(n),
            Err(e) => return internal(t.0, &e),
        }
    } else {
        None
    };
    let periods = [("today", 0), ("last_7_days", 6), ("last_30_days", 29)]
        .into_iter()
        .map(|(label, span)| Period {
            label,
            rows: period_rows(&days, &(today - Duration::days(span)).to_string()),
        })
        .filter(|p| !p.rows.is_empty())
        .collect();
    html(
        StatusCode::OK,
        &OverviewPage {
            t,
            layout: Layout::new(&viewer, mode, "/console", &format!("/console?mode={mode}"), "overview"),
            open_differences,
            mode: mode.as_str(),
            has_chart: !days.is_empty(),
            chart_json: chart_json(t, &days, today - Duration::days(29), today),
            periods,
            failing_notifications: failing,
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
/// uPlot, vendored (`assets/console/vendor/README.md`).
const UPLOT_JS: &str = include_str!("../../assets/console/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/console/vendor/uPlot.min.css");

/// `GET /console/assets/{file}`: the stylesheet and the script, embedded in the binary.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CONSOLE_CSS, "text/css; charset=utf-8"),
        "console.js" => (CONSOLE_JS, "text/javascript; charset=utf-8"),
        "uPlot.iife.min.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uPlot.min.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
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

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The vendored files are the ones the vendor README names, byte for byte.
    #[test]
    fn vendored_assets_match_their_recorded_hashes() {
        let readme = include_str!("../../assets/console/vendor/README.md");
        for (name, body) in [
            ("uPlot.iife.min.js", super::UPLOT_JS),
            ("uPlot.min.css", super::UPLOT_CSS),
        ] {
            let digest = hex::encode(Sha256::digest(body.as_bytes()));
            let line = readme.lines().find(|l| l.contains(name)).expect("listed");
            assert!(line.contains(&digest), "{name}: {digest} is not the recorded hash");
        }
    }

    fn totals(day: &str, currency: &str, channel: &str, n: [i64; 5]) -> payledger_projections::console::DayTotals {
        payledger_projections::console::DayTotals {
            day: day.into(),
            currency: currency.into(),
            channel: channel.into(),
            orders_created: n[0],
            orders_paid: n[1],
            paid_minor: n[2],
            refunds_succeeded: n[3],
            refunded_minor: n[4],
        }
    }

    #[test]
    fn chart_data_per_channel_cannot_close_its_script_element() {
        let day = chrono::NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let hostile = "</script><script>alert(1)</script>";
        let days = [
            totals("2026-12-03", "CNY", "alipay", [1, 1, 5, 0, 0]),
            totals("2026-12-04", "CNY", "alipay", [2, 1, 12_350, 0, 0]),
            totals("2026-12-04", "CNY", hostile, [1, 1, 100, 0, 0]),
            totals("2026-12-04", "JPY", "wechatpay", [4, 3, 700, 0, 0]),
        ];
        let json = super::chart_json(super::Tr(super::Lang::En), &days, day - chrono::Duration::days(1), day);
        assert!(!json.contains('<') && !json.contains('>'), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["days"].as_array().unwrap().len(), 2);
        assert_eq!(parsed["orders"][0]["values"], serde_json::json!([1, 7]));
        assert_eq!(parsed["orders"][1]["values"], serde_json::json!([1, 5]));
        assert_eq!(
            parsed["channels"],
            serde_json::json!([
                {"label": hostile, "values": [0, 1]},
                {"label": "alipay", "values": [1, 1]},
                {"label": "wechatpay", "values": [0, 3]},
            ])
        );
        // Volume per currency, in major units: JPY has no minor unit.
        assert_eq!(parsed["volume"][0]["values"], serde_json::json!([0.05, 124.5]));
        assert_eq!(parsed["volume"][1]["values"], serde_json::json!([0.0, 700.0]));
    }

    #[test]
    fn periods_have_a_row_per_channel_and_a_total_per_currency() {
        let days = [
            totals("2026-11-20", "CNY", "alipay", [9, 9, 900, 0, 0]),
            totals("2026-12-04", "CNY", "alipay", [4, 1, 250, 1, 50]),
            totals("2026-12-04", "CNY", "wechatpay", [1, 1, 1_001, 0, 0]),
            totals("2026-12-04", "USD", "sandbox", [2, 0, 0, 0, 0]),
        ];
        let rows = super::period_rows(&days, "2026-12-01");
        let got: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {} {}",
                    r.currency,
                    r.channel.as_deref().unwrap_or("(all)"),
                    r.orders_created,
                    r.orders_paid,
                    r.success_rate,
                    r.paid,
                    r.refunded
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "CNY alipay 4 1 25.0 % 2.50 0.50",
                "CNY wechatpay 1 1 100.0 % 10.01 0.00",
                "CNY (all) 5 2 40.0 % 12.51 0.50",
                "USD sandbox 2 0 0.0 % 0.00 0.00",
            ]
        );
        assert!(super::period_rows(&days, "2026-12-05").is_empty());
    }
}
