//! Logging in and out: password, the one-time password's change, TOTP enrolment and codes.
//! Every outcome for a known user is an event of its aggregate (`LoginSucceeded`, `LoginFailed`,
//! `PasswordChanged`, `TotpEnrolled`, `LoggedOut`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::Utc;
use payledger_domain::console::{console_user_id, ConsoleUserCommand, ConsoleUserError};
use payledger_store::console as store;
use serde::Deserialize;

use super::auth;
use super::i18n::Tr;
use super::pages::{html, Layout};
use super::{internal, lang_of, set_cookie, Viewer};
use crate::app::AppState;
use crate::http::rate_limit::ClientAddr;

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    t: Tr,
    layout: Option<Layout>,
    error: Option<&'a str>,
    next: String,
}

#[derive(Template)]
#[template(path = "console/password.html")]
struct PasswordPage<'a> {
    t: Tr,
    layout: Option<Layout>,
    error: Option<&'a str>,
    csrf: String,
}

#[derive(Template)]
#[template(path = "console/totp.html")]
struct TotpPage<'a> {
    t: Tr,
    layout: Option<Layout>,
    error: Option<&'a str>,
    csrf: String,
    /// Enrolment only: the new secret (base32), its URI, and the sealed copy the form posts back.
    secret: Option<String>,
    uri: String,
    sealed: String,
    action: &'static str,
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

/// Where to go after login: a console path of ours only (never another site).
fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/console".to_string(),
    }
}

/// `GET /console/login`.
pub(super) async fn page(headers: axum::http::HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let t = Tr(lang_of(&headers));
    html(
        StatusCode::OK,
        &LoginPage {
            t,
            layout: None,
            error: None,
            next: local_next(q.next.as_deref()),
        },
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// `POST /console/login`: the password. Refused (the same answer for an unknown address and a
/// wrong password): 401; throttled (the account's failures in a row, or the address's): 429.
/// Accepted: a new session at its first stage (the one-time password's change, the TOTP code or
/// its enrolment, or in), in a fresh cookie.
pub(super) async fn submit(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: axum::http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let t = Tr(lang_of(&headers));
    let next = local_next(form.next.as_deref());
    let refuse = |status: StatusCode, error: &'static str| {
        html(
            status,
            &LoginPage {
                t,
                layout: None,
                error: Some(error),
                next: next.clone(),
            },
        )
    };
    if state.console.address_refused(addr) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "throttled");
    }
    let address = addr.map(|a| a.to_string()).unwrap_or_default();
    let pool = state.db.pool();
    let now = Utc::now();
    let user_id = console_user_id(&form.email);
    let user = match store::load(pool, user_id).await {
        Ok((user, _)) => user,
        Err(e) => return internal(t.0, &e),
    };
    let record_failure = |reason: &'static str| {
        let (pool, address) = (pool.clone(), address.clone());
        async move {
            let failed = ConsoleUserCommand::RecordFailedLogin {
                address,
                reason: reason.to_string(),
                at: now,
            };
            if let Err(e) = store::execute(&pool, user_id, failed).await {
                tracing::error!(error = %e, "recording a failed console login");
            }
        }
    };
    let Some(account) = user.state().cloned() else {
        // Hash anyway, so an unknown address takes as long as a wrong password.
        let _ = tokio::task::spawn_blocking(|| auth::verify_password(&DUMMY_HASH, "x")).await;
        state.console.charge_failure(addr);
        tracing::info!(%address, "console login for an unknown address");
        return refuse(StatusCode::UNAUTHORIZED, "invalid_login");
    };
    if user.throttled_until(now).is_some() {
        record_failure("throttled").await;
        return refuse(StatusCode::TOO_MANY_REQUESTS, "throttled");
    }
    let (hash, password) = (account.password_hash.clone(), form.password.clone());
    let matches = tokio::task::spawn_blocking(move || auth::verify_password(&hash, &password))
        .await
        .unwrap_or(false);
    if !matches || account.disabled {
        state.console.charge_failure(addr);
        record_failure(if account.disabled { "disabled" } else { "password" }).await;
        return refuse(StatusCode::UNAUTHORIZED, "invalid_login");
    }
    let stage = if account.must_change_password {
        "password"
    } else if account.totp_secret.is_some() {
        "totp"
    } else if account.role.is_operator() {
        "enrol"
    } else {
        "full"
    };
    if stage == "full" {
        let login = ConsoleUserCommand::RecordLogin {
            address: address.clone(),
            totp_step: None,
            at: now,
        };
        if let Err(e) = store::execute(pool, user_id, login).await {
            return internal(t.0, &e);
        }
    }
    let token = auth::session_token();
    let created = store::create_session(
        pool,
        &auth::token_hash(&token),
        user_id,
        stage,
        &auth::csrf_token(),
        &address,
        now,
    )
    .await;
    if let Err(e) = created {
        return internal(t.0, &e);
    }
    let target = if stage == "full" {
        next
    } else {
        super::stage_page(stage).to_string()
    };
    let cookie = set_cookie(auth::SESSION_COOKIE, &token, None, state.console.secure_cookies, true);
    ([(header::SET_COOKIE, cookie)], Redirect::to(&target)).into_response()
}

/// An argon2id hash of a random password no one knows, verified for unknown addresses.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| auth::hash_password(&auth::session_token()).unwrap_or_default());

/// `GET /console/password`.
pub(super) async fn password_page(Extension(viewer): Extension<Viewer>) -> Response {
    html(
        StatusCode::OK,
        &PasswordPage {
            t: Tr(viewer.lang),
            layout: None,
            error: None,
            csrf: viewer.csrf.clone(),
        },
    )
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    password: String,
    repeat: String,
}

/// `POST /console/password`: replaces the one-time password (at least
/// [`auth::PASSWORD_CHARS_MIN`] characters, typed twice), then on to the second factor.
pub(super) async fn password_submit(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let t = Tr(viewer.lang);
    let chars = form.password.chars().count();
    if form.password != form.repeat || !(auth::PASSWORD_CHARS_MIN..=auth::PASSWORD_CHARS_MAX).contains(&chars) {
        return html(
            StatusCode::UNPROCESSABLE_ENTITY,
            &PasswordPage {
                t,
                layout: None,
                error: Some("password_rules"),
                csrf: viewer.csrf.clone(),
            },
        );
    }
    let password = form.password;
    let hash = match tokio::task::spawn_blocking(move || auth::hash_password(&password)).await {
        Ok(Ok(hash)) => hash,
        Ok(Err(e)) => return internal(t.0, &e),
        Err(e) => return internal(t.0, &e),
    };
    let now = Utc::now();
    let changed = ConsoleUserCommand::ChangePassword {
        password_hash: hash,
        at: now,
    };
    let pool = state.db.pool();
    if let Err(e) = store::execute(pool, viewer.user.user_id, changed).await {
        return internal(t.0, &e);
    }
    let stage = if viewer.user.totp_secret.is_some() {
        "totp"
    } else if viewer.user.role.is_operator() {
        "enrol"
    } else {
        let login = ConsoleUserCommand::RecordLogin {
            address: viewer.address.clone(),
            totp_step: None,
            at: now,
        };
        if let Err(e) = store::execute(pool, viewer.user.user_id, login).await {
            return internal(t.0, &e);
        }
        "full"
    };
    if let Err(e) = store::touch_session(pool, &viewer.token_hash, stage, now).await {
        return internal(t.0, &e);
    }
    Redirect::to(super::stage_page(stage)).into_response()
}

fn totp_context(viewer: &Viewer) -> String {
    format!("console-totp:{}", viewer.user.user_id)
}

/// `GET /console/enrol`: a new TOTP secret to add to an authenticator app. The secret travels
/// sealed in the form (bound to this user), so nothing is stored before a code proves it works.
pub(super) async fn enrol_page(State(state): State<AppState>, Extension(viewer): Extension<Viewer>) -> Response {
    let secret = auth::new_totp_secret();
    enrol_form(&state, &viewer, secret, None, StatusCode::OK)
}

fn enrol_form(state: &AppState, viewer: &Viewer, secret: String, error: Option<&str>, status: StatusCode) -> Response {
    let sealed = state.keyring.seal(&secret, &totp_context(viewer));
    html(
        status,
        &TotpPage {
            t: Tr(viewer.lang),
            layout: None,
            error,
            csrf: viewer.csrf.clone(),
            uri: auth::otpauth_uri(&viewer.user.email, &secret),
            secret: Some(secret),
            sealed,
            action: "/console/enrol",
        },
    )
}

#[derive(Deserialize)]
pub(super) struct CodeForm {
    code: String,
    #[serde(default)]
    sealed: String,
}

/// `POST /console/enrol`: the first code from the new secret; right, and the secret is enrolled
/// (sealed) and the user is in.
pub(super) async fn enrol_submit(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<CodeForm>,
) -> Response {
    let t = Tr(viewer.lang);
    let Ok(secret) = state.keyring.open(&form.sealed, &totp_context(&viewer)) else {
        return super::page_error(t.0, StatusCode::BAD_REQUEST);
    };
    let now = Utc::now();
    let Some(step) = auth::totp_step(&secret, &form.code, now.timestamp().unsigned_abs()) else {
        return enrol_form(
            &state,
            &viewer,
            secret,
            Some("wrong_code"),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    };
    let pool = state.db.pool();
    let enrol = ConsoleUserCommand::EnrolTotp {
        sealed_secret: state.keyring.seal(&secret, &totp_context(&viewer)),
        at: now,
    };
    match store::execute(pool, viewer.user.user_id, enrol).await {
        Ok(_) | Err(store::ConsoleError::Refused(ConsoleUserError::TotpAlreadyEnrolled)) => {}
        Err(e) => return internal(t.0, &e),
    }
    finish_with_code(&state, &viewer, step, now).await
}

/// `GET /console/totp`.
pub(super) async fn totp_page(Extension(viewer): Extension<Viewer>) -> Response {
    totp_form(&viewer, None, StatusCode::OK)
}

fn totp_form(viewer: &Viewer, error: Option<&str>, status: StatusCode) -> Response {
    html(
        status,
        &TotpPage {
            t: Tr(viewer.lang),
            layout: None,
            error,
            csrf: viewer.csrf.clone(),
            secret: None,
            uri: String::new(),
            sealed: String::new(),
            action: "/console/totp",
        },
    )
}

/// `POST /console/totp`: the code of the enrolled secret. A wrong code counts as a failed login
/// (towards the account's throttle); a code is accepted once.
pub(super) async fn totp_submit(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    ClientAddr(addr): ClientAddr,
    Form(form): Form<CodeForm>,
) -> Response {
    let t = Tr(viewer.lang);
    let pool = state.db.pool();
    let now = Utc::now();
    let user = match store::load(pool, viewer.user.user_id).await {
        Ok((user, _)) => user,
        Err(e) => return internal(t.0, &e),
    };
    if user.throttled_until(now).is_some() {
        return totp_form(&viewer, Some("throttled"), StatusCode::TOO_MANY_REQUESTS);
    }
    let secret = viewer
        .user
        .totp_secret
        .as_deref()
        .and_then(|sealed| state.keyring.open(sealed, &totp_context(&viewer)).ok());
    let Some(secret) = secret else {
        return internal(t.0, &"the enrolled TOTP secret does not open");
    };
    let Some(step) = auth::totp_step(&secret, &form.code, now.timestamp().unsigned_abs()) else {
        state.console.charge_failure(addr);
        let failed = ConsoleUserCommand::RecordFailedLogin {
            address: viewer.address.clone(),
            reason: "totp".into(),
            at: now,
        };
        if let Err(e) = store::execute(pool, viewer.user.user_id, failed).await {
            return internal(t.0, &e);
        }
        return totp_form(&viewer, Some("wrong_code"), StatusCode::UNAUTHORIZED);
    };
    finish_with_code(&state, &viewer, step, now).await
}

/// Records the login with the code's step (refused if that step was used) and lets the session in.
async fn finish_with_code(state: &AppState, viewer: &Viewer, step: u64, now: chrono::DateTime<Utc>) -> Response {
    let t = Tr(viewer.lang);
    let pool = state.db.pool();
    let login = ConsoleUserCommand::RecordLogin {
        address: viewer.address.clone(),
        totp_step: Some(step),
        at: now,
    };
    match store::execute(pool, viewer.user.user_id, login).await {
        Ok(_) => {}
        Err(store::ConsoleError::Refused(ConsoleUserError::TotpReplayed)) => {
            return totp_form(viewer, Some("wrong_code"), StatusCode::UNAUTHORIZED);
        }
        Err(e) => return internal(t.0, &e),
    }
    if let Err(e) = store::touch_session(pool, &viewer.token_hash, "full", now).await {
        return internal(t.0, &e);
    }
    Redirect::to("/console").into_response()
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    everywhere: Option<String>,
}

/// `POST /console/logout`: ends this session, or with `everywhere` every session of the user.
pub(super) async fn logout(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<LogoutForm>,
) -> Response {
    let t = Tr(viewer.lang);
    let pool = state.db.pool();
    let everywhere = form.everywhere.is_some();
    let ended = if everywhere {
        store::end_sessions_of(pool, viewer.user.user_id).await.map(|_| ())
    } else {
        store::end_session(pool, &viewer.token_hash).await
    };
    if let Err(e) = ended {
        return internal(t.0, &e);
    }
    let out = ConsoleUserCommand::RecordLogout {
        address: viewer.address.clone(),
        everywhere,
        at: Utc::now(),
    };
    if let Err(e) = store::execute(pool, viewer.user.user_id, out).await {
        return internal(t.0, &e);
    }
    let cookie = set_cookie(auth::SESSION_COOKIE, "", Some(0), state.console.secure_cookies, true);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console/login")).into_response()
}
