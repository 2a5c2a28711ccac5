//! The console's audit log: every console user's events, newest first.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use payledger_domain::Mode;
use payledger_store::console as store;
use serde::Deserialize;

use super::i18n::Tr;
use super::pages::{html, Layout};
use super::{internal, Viewer};
use crate::app::AppState;

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
