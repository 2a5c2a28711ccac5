//! The console's reconciliation: upload a channel's statement, see every difference with the
//! ledger, resolve each with a kind and a note. A run is a `ReconciliationRun` aggregate (the
//! same file again is the same run); its resolutions are events; open differences stay listed
//! until resolved.

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::Utc;
use payledger_domain::format_minor;
use payledger_domain::reconciliation::{self as domain, Difference, ReconciliationCommand, ResolutionKind};
use payledger_store::console as store;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::access::Action;
use super::i18n::Tr;
use super::pages::{html, Layout};
use super::record_action;
use super::{internal, Viewer};
use crate::app::AppState;

/// Largest statement the console takes, bytes (the command line takes up to
/// [`crate::ops::STATEMENT_BYTES_MAX`]).
pub const UPLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

struct RunLine {
    id: Uuid,
    date: String,
    channel: String,
    file_name: String,
    matched: usize,
    open: usize,
    total: usize,
    by: String,
    at: String,
}

#[derive(Template)]
#[template(path = "console/reconciliation.html")]
struct RunsPage {
    t: Tr,
    layout: Option<Layout>,
    csrf: String,
    may_reconcile: bool,
    channels: Vec<&'static str>,
    open_total: usize,
    runs: Vec<RunLine>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct ErrorQuery {
    error: Option<String>,
}

/// Open differences over every run (the overview's count).
///
/// # Errors
/// The store's.
pub(super) async fn open_differences(state: &AppState) -> Result<usize, payledger_store::DbError> {
    Ok(store::runs(state.db.pool()).await?.iter().map(|(_, r)| r.open()).sum())
}

/// `GET /console/reconciliation`: the upload form (roles that may reconcile) and every run,
/// newest first, with its open differences.
pub(super) async fn runs(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<ErrorQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let runs = match store::runs(state.db.pool()).await {
        Ok(runs) => runs,
        Err(e) => return internal(t.0, &e),
    };
    let open_total = runs.iter().map(|(_, r)| r.open()).sum();
    let runs = runs
        .into_iter()
        .map(|(id, r)| RunLine {
            id,
            open: r.open(),
            total: r.differences.len(),
            date: r.date,
            channel: r.channel,
            file_name: r.file_name,
            matched: r.matched,
            by: r.by,
            at: payledger_store::time::fmt_ts(r.at),
        })
        .collect();
    html(
        StatusCode::OK,
        &RunsPage {
            t,
            layout: Layout::new(
                &viewer,
                payledger_domain::Mode::Live,
                "/console/reconciliation",
                "/console/reconciliation",
                "reconciliation",
            ),
            csrf: viewer.csrf.clone(),
            may_reconcile: viewer.may(Action::Reconcile),
            channels: state.channels.names(),
            open_total,
            runs,
            error: q.error,
        },
    )
}

fn back_with_error(path: &str, e: &str) -> Response {
    let e: String = url::form_urlencoded::byte_serialize(e.as_bytes()).collect();
    Redirect::to(&format!("{path}?error={e}")).into_response()
}

/// `POST /console/reconciliation` (multipart: `channel`, `account`, `date`, `statement`; the
/// CSRF token in the query): compares the statement with the ledger (as `payledger reconcile
/// --statement`) and records the run; the same file again finds the same run. Audited.
pub(super) async fn upload(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    mut form: Multipart,
) -> Response {
    let (mut channel, mut account, mut date, mut file) = (String::new(), String::new(), String::new(), None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return back_with_error("/console/reconciliation", &e.body_text()),
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => return back_with_error("/console/reconciliation", &e.body_text()),
        };
        let text = || String::from_utf8_lossy(&bytes).trim().to_string();
        match name.as_str() {
            "channel" => channel = text(),
            "account" => account = text(),
            "date" => date = text(),
            "statement" => file = Some((file_name.unwrap_or_else(|| "statement".into()), bytes)),
            _ => {}
        }
    }
    let Some((file_name, bytes)) = file.filter(|(_, b)| !b.is_empty()) else {
        return back_with_error("/console/reconciliation", "choose a statement file");
    };
    let day = if date.is_empty() {
        None
    } else {
        match chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => return back_with_error("/console/reconciliation", "the day is YYYY-MM-DD"),
        }
    };
    if !state.channels.names().contains(&channel.as_str()) {
        return back_with_error("/console/reconciliation", &format!("no channel {channel:?}"));
    }
    // The journal must hold every payment and refund committed before the upload.
    if let Err(e) = state.read_models_current().await {
        return internal(viewer.lang, &e);
    }
    let account_arg = Some(account.as_str()).filter(|a| !a.is_empty());
    let (report, _) = match crate::ops::reconcile_statement(&state.db, &bytes, &channel, account_arg, day).await {
        Ok(done) => done,
        Err(e) => {
            let message = format!("{e:#}");
            let _ = record_action(
                &state,
                &viewer,
                "reconcile",
                file_name.clone(),
                String::new(),
                &Err::<(), String>(message.clone()),
            )
            .await;
            return back_with_error("/console/reconciliation", &message);
        }
    };
    let sha = hex::encode(Sha256::digest(&bytes));
    let run_id = domain::run_id(&channel, &account, &report.date, &sha);
    let differences = report
        .discrepancies
        .iter()
        .map(|d| Difference {
            kind: serde_json::to_value(d.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            item: serde_json::to_value(d.item)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            line: d.line,
            order_id: d.order_id.clone(),
            reference: d.reference.clone(),
            statement_amount_minor: d.statement_amount_minor,
            ledger_amount_minor: d.ledger_amount_minor,
            currency: d.currency.clone(),
            statement_status: d.statement_status.clone(),
        })
        .collect::<Vec<_>>();
    let total = differences.len();
    let record = ReconciliationCommand::Record {
        channel: channel.clone(),
        account,
        date: report.date.clone(),
        format: report.format.clone(),
        file_name,
        file_sha256: sha,
        matched: report.matched,
        differences,
        totals: serde_json::json!({"statement": report.statement_totals, "ledger": report.ledger_totals}),
        by: viewer.actor(),
        at: Utc::now(),
    };
    if let Err(e) = store::execute_run(state.db.pool(), run_id, &viewer.user.email, record).await {
        return internal(viewer.lang, &e);
    }
    let detail = format!("{channel} {} {} differences", report.date, total);
    if let Err(r) = record_action(
        &state,
        &viewer,
        "reconcile",
        format!("run:{run_id}"),
        detail,
        &Ok::<(), String>(()),
    )
    .await
    {
        return r;
    }
    Redirect::to(&format!("/console/reconciliation/{run_id}")).into_response()
}

struct DifferenceLine {
    index: usize,
    kind: String,
    item: String,
    reference: String,
    statement_amount: String,
    ledger_amount: String,
    statement_status: String,
    /// `kind: note (by, time)` once resolved.
    resolution: Option<String>,
}

#[derive(Template)]
#[template(path = "console/run.html")]
struct RunPage {
    t: Tr,
    layout: Option<Layout>,
    id: Uuid,
    run: domain::RunState,
    open: usize,
    rows: Vec<DifferenceLine>,
    kinds: Vec<&'static str>,
    csrf: String,
    may_reconcile: bool,
    error: Option<String>,
}

/// `GET /console/reconciliation/{id}`: a run's differences, each resolved or with its resolve form.
pub(super) async fn run(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(q): Query<ErrorQuery>,
) -> Response {
    let t = Tr(viewer.lang);
    let Ok(id) = Uuid::parse_str(&id) else {
        return super::page_error(t.0, StatusCode::NOT_FOUND);
    };
    let run = match store::run(state.db.pool(), id).await {
        Ok(Some(run)) => run,
        Ok(None) => return super::page_error(t.0, StatusCode::NOT_FOUND),
        Err(e) => return internal(t.0, &e),
    };
    let amount = |a: Option<i64>, currency: &str| a.map(|v| format!("{} {currency}", format_minor(v, currency)));
    let rows = run
        .differences
        .iter()
        .zip(&run.resolutions)
        .enumerate()
        .map(|(index, (d, r))| DifferenceLine {
            index,
            kind: d.kind.clone(),
            item: d.item.clone(),
            reference: d.reference.clone().or_else(|| d.order_id.clone()).unwrap_or_default(),
            statement_amount: amount(d.statement_amount_minor, &d.currency).unwrap_or_default(),
            ledger_amount: amount(d.ledger_amount_minor, &d.currency).unwrap_or_default(),
            statement_status: d.statement_status.clone().unwrap_or_default(),
            resolution: r.as_ref().map(|r| {
                format!(
                    "{}: {} ({}, {})",
                    r.kind.as_str(),
                    r.note,
                    r.by,
                    payledger_store::time::fmt_ts(r.at)
                )
            }),
        })
        .collect();
    let path = format!("/console/reconciliation/{id}");
    html(
        StatusCode::OK,
        &RunPage {
            layout: Layout::new(
                &viewer,
                payledger_domain::Mode::Live,
                "/console/reconciliation",
                &path,
                "reconciliation",
            ),
            t,
            id,
            open: run.open(),
            run,
            rows,
            kinds: ResolutionKind::ALL.iter().map(|k| k.as_str()).collect(),
            csrf: viewer.csrf.clone(),
            may_reconcile: viewer.may(Action::Reconcile),
            error: q.error,
        },
    )
}

#[derive(Deserialize)]
pub(super) struct ResolveForm {
    index: usize,
    kind: String,
    #[serde(default)]
    note: String,
}

/// `POST /console/reconciliation/{id}/resolve`: settles one difference with a kind and a note (a
/// `DifferenceResolved` event of the run); refused when resolved already or without a note.
/// Audited.
pub(super) async fn resolve(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<ResolveForm>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return super::page_error(viewer.lang, StatusCode::NOT_FOUND);
    };
    let path = format!("/console/reconciliation/{id}");
    let Some(kind) = ResolutionKind::parse(&form.kind) else {
        return back_with_error(&path, &format!("no resolution kind {:?}", form.kind));
    };
    let command = ReconciliationCommand::Resolve {
        index: form.index,
        kind,
        note: form.note.clone(),
        by: viewer.actor(),
        at: Utc::now(),
    };
    let outcome = match store::execute_run(state.db.pool(), id, &viewer.user.email, command).await {
        Ok(_) => Ok(()),
        Err(store::RunError::Refused(e)) => Err(e.to_string()),
        Err(store::RunError::Db(e)) => return internal(viewer.lang, &e),
    };
    let detail = format!("#{} {}: {}", form.index, kind.as_str(), form.note.trim());
    if let Err(r) = record_action(&state, &viewer, "resolve", format!("run:{id}"), detail, &outcome).await {
        return r;
    }
    match outcome {
        Ok(()) => Redirect::to(&path).into_response(),
        Err(e) => back_with_error(&path, &e),
    }
}
