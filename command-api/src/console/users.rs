//! Console users, managed by admins in the console (as `payledger users add` does): the list,
//! adding a user (its one-time password shown once), disabling one (its sessions end).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::Utc;
use payledger_domain::console::{console_user_id, ConsoleRole, ConsoleUserCommand};
use payledger_store::console as store;
use serde::Deserialize;
use uuid::Uuid;

use super::auth;
use super::i18n::Tr;
use super::pages::{html, Layout};
use super::record_action;
use super::{internal, Viewer};
use crate::app::AppState;

struct UserLine {
    user_id: Uuid,
    email: String,
    role: &'static str,
    merchant: String,
    totp: bool,
    disabled: bool,
    is_me: bool,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    t: Tr,
    layout: Option<Layout>,
    csrf: String,
    roles: Vec<&'static str>,
    users: Vec<UserLine>,
    /// Just added: the e-mail address and its one-time password (this answer only).
    added: Option<(String, String)>,
    error: Option<String>,
}

async fn page(state: &AppState, viewer: &Viewer, added: Option<(String, String)>, error: Option<String>) -> Response {
    let t = Tr(viewer.lang);
    let users = match store::users(state.db.pool()).await {
        Ok(users) => users,
        Err(e) => return internal(t.0, &e),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    html(
        status,
        &UsersPage {
            t,
            layout: Layout::new(
                viewer,
                payledger_domain::Mode::Live,
                "/console/users",
                "/console/users",
                "users",
            ),
            csrf: viewer.csrf.clone(),
            roles: ConsoleRole::ALL.iter().map(|r| r.as_str()).collect(),
            users: users
                .into_iter()
                .map(|u| UserLine {
                    is_me: u.user_id == viewer.user.user_id,
                    user_id: u.user_id,
                    email: u.email,
                    role: u.role.as_str(),
                    merchant: u.merchant_id.unwrap_or_default(),
                    totp: u.totp_secret.is_some(),
                    disabled: u.disabled,
                })
                .collect(),
            added,
            error,
        },
    )
}

/// `GET /console/users` (admins).
pub(super) async fn list(State(state): State<AppState>, Extension(viewer): Extension<Viewer>) -> Response {
    page(&state, &viewer, None, None).await
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    email: String,
    role: String,
    #[serde(default)]
    merchant: String,
}

/// `POST /console/users`: adds a user with a one-time password, shown in this answer only (the
/// page is `Cache-Control: no-store`). A merchant role needs an existing merchant; an operator
/// role takes none.
pub(super) async fn add(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<AddForm>,
) -> Response {
    let Some(email) = auth::normalise_email(&form.email) else {
        return page(
            &state,
            &viewer,
            None,
            Some(format!("invalid e-mail address {:?}", form.email)),
        )
        .await;
    };
    let Some(role) = ConsoleRole::parse(&form.role) else {
        return page(&state, &viewer, None, Some(format!("unknown role {:?}", form.role))).await;
    };
    let merchant = Some(form.merchant.trim().to_string()).filter(|m| !m.is_empty());
    if let Some(m) = &merchant {
        match payledger_store::merchants::get(state.db.pool(), &state.keyring, m).await {
            Ok(Some(_)) => {}
            Ok(None) => return page(&state, &viewer, None, Some(format!("no merchant {m:?}"))).await,
            Err(e) => return internal(viewer.lang, &e),
        }
    }
    let password = auth::one_time_password();
    let hash = {
        let password = password.clone();
        match tokio::task::spawn_blocking(move || auth::hash_password(&password)).await {
            Ok(Ok(hash)) => hash,
            Ok(Err(e)) => return internal(viewer.lang, &e),
            Err(e) => return internal(viewer.lang, &e),
        }
    };
    let command = ConsoleUserCommand::AddUser {
        email: email.clone(),
        role,
        merchant_id: merchant.clone(),
        password_hash: hash,
        added_by: viewer.actor(),
        at: Utc::now(),
    };
    let outcome = match store::execute(state.db.pool(), console_user_id(&email), command).await {
        Ok(_) => Ok(()),
        Err(store::ConsoleError::Refused(e)) => Err(e.to_string()),
        Err(store::ConsoleError::Db(e)) => return internal(viewer.lang, &e),
    };
    let detail = format!("{} {}", role.as_str(), merchant.unwrap_or_default());
    if let Err(r) = record_action(&state, &viewer, "add_user", format!("user:{email}"), detail, &outcome).await {
        return r;
    }
    match outcome {
        Ok(()) => page(&state, &viewer, Some((email, password)), None).await,
        Err(e) => page(&state, &viewer, None, Some(e)).await,
    }
}

/// `POST /console/users/{id}/disable`: the user can no longer log in and every session of it ends.
/// An admin cannot disable itself (the console would be left without the one who can undo it).
pub(super) async fn disable(
    State(state): State<AppState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let Ok(user_id) = Uuid::parse_str(&id) else {
        return super::page_error(viewer.lang, StatusCode::NOT_FOUND);
    };
    if user_id == viewer.user.user_id {
        return page(&state, &viewer, None, Some("you cannot disable yourself".into())).await;
    }
    let command = ConsoleUserCommand::Disable {
        by: viewer.actor(),
        at: Utc::now(),
    };
    let outcome = match store::execute(state.db.pool(), user_id, command).await {
        Ok(done) => Ok(done.user.state().map(|u| u.email.clone()).unwrap_or_default()),
        Err(store::ConsoleError::Refused(e)) => Err(e.to_string()),
        Err(store::ConsoleError::Db(e)) => return internal(viewer.lang, &e),
    };
    if outcome.is_ok() {
        if let Err(e) = store::end_sessions_of(state.db.pool(), user_id).await {
            return internal(viewer.lang, &e);
        }
    }
    let target = match &outcome {
        Ok(email) => format!("user:{email}"),
        Err(_) => format!("user:{user_id}"),
    };
    if let Err(r) = record_action(&state, &viewer, "disable_user", target, String::new(), &outcome).await {
        return r;
    }
    match outcome {
        Ok(_) => Redirect::to("/console/users").into_response(),
        Err(e) => page(&state, &viewer, None, Some(e)).await,
    }
}
