//! Merchants in the console: the list, adding one (credentials shown once), rotating an API key
//! or a webhook secret (the previous secret keeps signing beside the new one for an overlap),
//! disabling and enabling. Each change is a `Merchant` event appended in the same transaction
//! as the credential change (`payledger_store::console::execute_merchant`).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{Duration, Utc};
use payledger_domain::merchant::{MerchantCommand, MerchantEvent};
use payledger_domain::Mode;
use payledger_store::console as store;
use payledger_store::merchants::{self, CredentialChange, Credentials};
use rand::RngCore;
use serde::Deserialize;

use super::access::Action;
use super::i18n::Tr;
use super::pages::{html, Layout};
use super::record_action;
use super::{internal, Viewer};
use crate::app::AppState;

/// Longest overlap a rotated webhook secret may keep signing, hours (a week).
pub const OVERLAP_HOURS_MAX: i64 = 7 * 24;

/// A new credential: `prefix` + 256 random bits, base64url (as `payledger merchants add`).
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[derive(Template)]
#[template(path = "console/merchants.html")]
struct ListPage {
    t: Tr,
    layout: Option<Layout>,
    csrf: String,
    may_manage: bool,
    merchants: Vec<merchants::MerchantSummary>,
    /// Credentials just issued (name, value): this answer only.
    shown: Vec<(&'static str, String)>,
    error: Option<String>,
}

async fn list_page(
    state: &AppState,
    viewer: &Viewer,
    shown: Vec<(&'static str, String)>,
    error: Option<String>,
) -> Response {
    let list = match merchants::list(state.db.pool(), viewer.merchant()).await {
        Ok(list) => list,
        Err(e) => return internal(viewer.lang, &e),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    html(
        status,
        &ListPage {
            t: Tr(viewer.lang),
            layout: Layout::new(
                viewer,
                Mode::Live,
                "/console/merchants",
                "/console/merchants",
                "merchants",
            ),
            csrf: viewer.csrf.clone(),
            may_manage: viewer.may(Action::ManageMerchants),
            merchants: list,
            shown,
            error,
        },
    )
}

/// `GET /console/merchants`: every merchant (a merchant user: its own).
pub(super) async fn list(State(state): State<AppState>, Extension(viewer): Extension<Viewer>) -> Response {
    list_page(&state, &viewer, Vec::new(), None).await
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    merchant_id: String,
}

/// `POST /console/merchants` (admins): a new merchant with both modes' API keys and webhook
/// secrets, shown in this answer only.
pub(super) async fn add(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<AddForm>,
) -> Response {
    let merchant_id = form.merchant_id.trim().to_string();
    let mut e = crate::validate::FieldErrors::default();
    crate::validate::merchant_no(&mut e, "merchant_id", &merchant_id);
    if let Some((_, messages)) = e.0.into_iter().next() {
        return list_page(&state, &viewer, Vec::new(), Some(messages.join("; "))).await;
    }
    let shown = vec![
        ("test_api_key", random_token("plk_test_")),
        ("live_api_key", random_token("plk_live_")),
        ("test_webhook_secret", random_token("whsec_test_")),
        ("webhook_secret", random_token("whsec_")),
    ];
    let credentials = Credentials {
        test_api_key: &shown[0].1,
        live_api_key: &shown[1].1,
        test_webhook_secret: &shown[2].1,
        webhook_secret: &shown[3].1,
    };
    let added = store::add_merchant(
        &state.db,
        &state.keyring,
        &merchant_id,
        credentials,
        &viewer.user.email,
        &viewer.actor(),
        Utc::now(),
    )
    .await;
    let outcome = match added {
        Ok(()) => Ok(()),
        Err(store::MerchantOpError::Db(e)) => return internal(viewer.lang, &e),
        Err(e) => Err(e.to_string()),
    };
    let target = format!("merchant:{merchant_id}");
    if let Err(r) = record_action(&state, &viewer, "add_merchant", target, String::new(), &outcome).await {
        return r;
    }
    match outcome {
        Ok(()) => list_page(&state, &viewer, shown, None).await,
        Err(e) => list_page(&state, &viewer, Vec::new(), Some(e)).await,
    }
}

#[derive(Template)]
#[template(path = "console/merchant.html")]
struct MerchantPage {
    t: Tr,
    layout: Option<Layout>,
    merchant_id: String,
    disabled: bool,
    csrf: String,
    may_rotate: bool,
    may_manage: bool,
    /// (time, event type, detail), oldest first.
    history: Vec<(String, &'static str, String)>,
    shown: Vec<(&'static str, String)>,
    error: Option<String>,
}

/// The page of merchant `id` if `viewer` may see it (a merchant user: its own); `None`: 404.
async fn merchant_page(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    shown: Vec<(&'static str, String)>,
    error: Option<String>,
) -> Response {
    if viewer.merchant().is_some_and(|m| m != id) {
        return super::page_error(viewer.lang, StatusCode::NOT_FOUND);
    }
    let found = match merchants::list(state.db.pool(), Some(id)).await {
        Ok(mut list) => list.pop(),
        Err(e) => return internal(viewer.lang, &e),
    };
    let Some(summary) = found else {
        return super::page_error(viewer.lang, StatusCode::NOT_FOUND);
    };
    let history = match store::merchant_events(state.db.pool(), id).await {
        Ok(events) => events
            .into_iter()
            .map(|e| {
                let detail = match &e {
                    MerchantEvent::MerchantAdded { by, .. }
                    | MerchantEvent::MerchantDisabled { by, .. }
                    | MerchantEvent::MerchantEnabled { by, .. } => format!("by {by}"),
                    MerchantEvent::ApiKeyRotated { mode, by, .. } => format!("{mode}, by {by}"),
                    MerchantEvent::WebhookSecretRotated {
                        mode,
                        previous_valid_until,
                        by,
                        ..
                    } => format!(
                        "{mode}, previous signs until {}, by {by}",
                        payledger_store::time::fmt_ts(*previous_valid_until)
                    ),
                };
                (payledger_store::time::fmt_ts(e.at()), e.event_type(), detail)
            })
            .collect(),
        Err(e) => return internal(viewer.lang, &e),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let path = format!("/console/merchants/{id}");
    html(
        status,
        &MerchantPage {
            t: Tr(viewer.lang),
            layout: Layout::new(viewer, Mode::Live, "/console/merchants", &path, "merchants"),
            merchant_id: summary.merchant_id,
            disabled: summary.disabled_at.is_some(),
            csrf: viewer.csrf.clone(),
            may_rotate: viewer.may(Action::RotateCredentials),
            may_manage: viewer.may(Action::ManageMerchants),
            history,
            shown,
            error,
        },
    )
}

/// `GET /console/merchants/{id}`: state, credential rotation, lifecycle history.
pub(super) async fn merchant(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    merchant_page(&state, &viewer, &id, Vec::new(), None).await
}

#[derive(Deserialize)]
pub(super) struct RotateForm {
    mode: String,
    #[serde(default)]
    overlap_hours: Option<String>,
}

/// Runs one merchant command with its credential change, audits it, and shows the merchant's page
/// (with `shown` on success).
async fn change(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    action: &str,
    command: MerchantCommand,
    credential: Option<CredentialChange<'_>>,
    shown: Vec<(&'static str, String)>,
) -> Response {
    if viewer.merchant().is_some_and(|m| m != id) {
        return super::page_error(viewer.lang, StatusCode::NOT_FOUND);
    }
    let outcome =
        match store::execute_merchant(&state.db, &state.keyring, id, &viewer.user.email, command, credential).await {
            Ok(_) => Ok(()),
            Err(store::MerchantOpError::NotFound(_)) => return super::page_error(viewer.lang, StatusCode::NOT_FOUND),
            Err(store::MerchantOpError::Db(e)) => return internal(viewer.lang, &e),
            Err(e) => Err(e.to_string()),
        };
    if let Err(r) = record_action(state, viewer, action, format!("merchant:{id}"), String::new(), &outcome).await {
        return r;
    }
    match outcome {
        Ok(()) if shown.is_empty() => Redirect::to(&format!("/console/merchants/{id}")).into_response(),
        Ok(()) => merchant_page(state, viewer, id, shown, None).await,
        Err(e) => merchant_page(state, viewer, id, Vec::new(), Some(e)).await,
    }
}

fn mode_of(form: &RotateForm) -> Option<Mode> {
    Mode::parse(&form.mode)
}

/// `POST /console/merchants/{id}/api-key` (`mode`): a new API key for that mode, shown once; the
/// old one stops working (within a second in processes that saw it just before).
pub(super) async fn rotate_api_key(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<RotateForm>,
) -> Response {
    let Some(mode) = mode_of(&form) else {
        return merchant_page(&state, &viewer, &id, Vec::new(), Some("mode: test or live".into())).await;
    };
    let key = random_token(match mode {
        Mode::Live => "plk_live_",
        Mode::Test => "plk_test_",
    });
    let command = MerchantCommand::RotateApiKey {
        mode,
        by: viewer.actor(),
        at: Utc::now(),
    };
    let credential = CredentialChange::ApiKey { mode, api_key: &key };
    let name = match mode {
        Mode::Live => "live_api_key",
        Mode::Test => "test_api_key",
    };
    let shown = vec![(name, key.clone())];
    change(&state, &viewer, &id, "rotate_api_key", command, Some(credential), shown).await
}

/// `POST /console/merchants/{id}/webhook-secret` (`mode`, `overlap_hours` 0..=168, default 24): a
/// new webhook secret, shown once; notifications are signed with both until the overlap ends.
pub(super) async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(form): Form<RotateForm>,
) -> Response {
    let Some(mode) = mode_of(&form) else {
        return merchant_page(&state, &viewer, &id, Vec::new(), Some("mode: test or live".into())).await;
    };
    let hours = match form.overlap_hours.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
        None => 24,
        Some(h) => match h.parse::<i64>() {
            Ok(h) if (0..=OVERLAP_HOURS_MAX).contains(&h) => h,
            _ => {
                let e = format!("overlap: whole hours from 0 to {OVERLAP_HOURS_MAX}");
                return merchant_page(&state, &viewer, &id, Vec::new(), Some(e)).await;
            }
        },
    };
    let now = Utc::now();
    let until = now + Duration::hours(hours);
    let secret = random_token(match mode {
        Mode::Live => "whsec_",
        Mode::Test => "whsec_test_",
    });
    let command = MerchantCommand::RotateWebhookSecret {
        mode,
        previous_valid_until: until,
        by: viewer.actor(),
        at: now,
    };
    let credential = CredentialChange::WebhookSecret {
        mode,
        secret: &secret,
        previous_until: until,
    };
    let name = match mode {
        Mode::Live => "webhook_secret",
        Mode::Test => "test_webhook_secret",
    };
    let shown = vec![(name, secret.clone())];
    change(
        &state,
        &viewer,
        &id,
        "rotate_webhook_secret",
        command,
        Some(credential),
        shown,
    )
    .await
}

/// `POST /console/merchants/{id}/disable` (admins): its API keys are refused (within a second
/// everywhere); its orders, notifications and refunds go on.
pub(super) async fn disable(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let now = Utc::now();
    let command = MerchantCommand::Disable {
        by: viewer.actor(),
        at: now,
    };
    let credential = CredentialChange::Disabled(Some(now));
    change(
        &state,
        &viewer,
        &id,
        "disable_merchant",
        command,
        Some(credential),
        Vec::new(),
    )
    .await
}

/// `POST /console/merchants/{id}/enable` (admins).
pub(super) async fn enable(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let command = MerchantCommand::Enable {
        by: viewer.actor(),
        at: Utc::now(),
    };
    change(
        &state,
        &viewer,
        &id,
        "enable_merchant",
        command,
        Some(CredentialChange::Disabled(None)),
        Vec::new(),
    )
    .await
}
