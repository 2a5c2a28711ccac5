//! The console: operators and merchants' staff in the browser, at `/console`.
//!
//! Pages are rendered on the server (askama templates in `templates/console/`, checked at compile
//! time) and work without JavaScript: forms post, links carry the filters. One small script,
//! embedded like the stylesheet, only shows times in the viewer's time zone. Every route is in
//! [`access::routes`], and one middleware, [`authorise`], checks each request against it: the
//! session (server-side, [`auth::SESSION_COOKIE`]), its login stage, the CSRF token of every POST,
//! the role. What a user does is recorded as events of its [`ConsoleUser`] aggregate (the audit log);
//! what it does to an order goes through the same flows as the API, with the user as actor.
//!
//! [`ConsoleUser`]: payledger_domain::console::ConsoleUser

pub mod access;
mod audit;
pub mod auth;
pub mod i18n;
mod lists;
mod login;
pub mod merchants;
mod orders;
mod pages;
mod reconciliation;
mod users;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Router;
use chrono::Utc;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use payledger_domain::console::{ConsoleRole, UserState};
use payledger_store::console as store;

use crate::app::AppState;
use crate::http::rate_limit::{address_key, ClientAddr};
use access::{Access, Action};
use i18n::{Lang, Tr};

/// Failed logins per client address per minute before the address is refused for a while (on
/// top of each account's own throttle, `payledger_domain::console::FAILED_LOGINS_MAX`).
pub const LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE: u32 = 10;
/// Largest console form body read for its CSRF token, bytes.
const FORM_BODY_LIMIT_BYTES: usize = 64 * 1024;

/// The console's own state: the per-address login throttle.
#[derive(Clone)]
pub struct ConsoleState {
    login_failures: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses over their limit, and until when they are refused.
    refused: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>>,
    /// Whether cookies get `Secure` (the public URL is https).
    secure_cookies: bool,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("secure_cookies", &self.secure_cookies)
            .finish()
    }
}

impl ConsoleState {
    /// `secure_cookies`: the console is served over https.
    pub fn new(secure_cookies: bool) -> Self {
        let per_minute = NonZeroU32::new(LOGIN_FAILURES_PER_ADDRESS_PER_MINUTE).expect("a positive constant");
        Self {
            login_failures: Arc::new(RateLimiter::dashmap(Quota::per_minute(per_minute))),
            refused: Arc::default(),
            secure_cookies,
        }
    }

    /// Charges a failed login to `addr`. Past the limit the address is refused for a minute.
    fn charge_failure(&self, addr: Option<IpAddr>) {
        let Some(addr) = addr.map(address_key) else { return };
        if self.login_failures.check_key(&addr).is_err() {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            self.refused.lock().expect("not poisoned").insert(addr, until);
        }
    }

    /// Whether logins from `addr` are refused now (it failed too often).
    fn address_refused(&self, addr: Option<IpAddr>) -> bool {
        let Some(addr) = addr.map(address_key) else {
            return false;
        };
        let mut refused = self.refused.lock().expect("not poisoned");
        match refused.get(&addr) {
            Some(until) if *until > std::time::Instant::now() => true,
            Some(_) => {
                refused.remove(&addr);
                false
            }
            None => false,
        }
    }

    /// Drops idle buckets (called with the API's limits' retention).
    pub fn retain_recent(&self) {
        self.login_failures.retain_recent();
        let now = std::time::Instant::now();
        self.refused
            .lock()
            .expect("not poisoned")
            .retain(|_, until| *until > now);
    }
}

/// The logged-in user of a console request, put there by [`authorise`].
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user: UserState,
    /// The session's token hash (logout ends it).
    pub token_hash: String,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// The client's address, for the audit log.
    pub address: String,
    pub lang: Lang,
}

impl Viewer {
    /// Who the flows record as actor: `console:<email>`.
    pub fn actor(&self) -> String {
        format!("console:{}", self.user.email)
    }

    /// The merchant the user is bound to (`None`: an operator, every merchant).
    pub fn merchant(&self) -> Option<&str> {
        self.user.merchant_id.as_deref()
    }

    /// Whether the role may take `action`.
    pub fn may(&self, action: Action) -> bool {
        access::allows(self.user.role, action)
    }

    pub fn role(&self) -> ConsoleRole {
        self.user.role
    }
}

/// The console's routes, each with its handler and access ([`access::routes`]), behind
/// [`authorise`].
pub fn router(state: AppState) -> Router<AppState> {
    let mut router = Router::new();
    for route in access::routes() {
        router = router.route(route.path, (route.handler)());
    }
    router.layer(axum::middleware::from_fn_with_state(state, authorise))
}

/// The console's content security policy: our own script and stylesheet only, forms only to us.
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                           form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Checks every console request against [`access::routes`]: unknown → 404; `Public` passes;
/// otherwise a live session (idle and absolute expiry) of a user still enabled, the CSRF token on
/// every POST (form field `csrf` or header `X-CSRF-Token`) and a same-origin `Origin` when sent,
/// the login stage the route needs, and for actions the role ([`access::allows`]). No session:
/// back to the login page; a role without the right: 403.
pub async fn authorise(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = match check(&state, req, next).await {
        Ok(r) | Err(r) => r,
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONSOLE_CSP));
    // Not the API's `no-referrer`: under it browsers send `Origin: null` with the console's own
    // form posts, which the origin check refuses. Nothing leaves for another site either way.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn check(state: &AppState, req: Request, next: Next) -> Result<Response, Response> {
    let lang = lang_of(req.headers());
    let path = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let Some(access) = path.and_then(|p| access::access_of(req.method(), &p)) else {
        return Err(page_error(lang, StatusCode::NOT_FOUND));
    };
    if req.method() == Method::POST && !same_origin(req.headers()) {
        return Err(page_error(lang, StatusCode::FORBIDDEN));
    }
    if access == Access::Public {
        return Ok(next.run(req).await);
    }
    let Some(token) = cookie(req.headers(), auth::SESSION_COOKIE) else {
        return Err(to_login(&req));
    };
    let token_hash = auth::token_hash(&token);
    let pool = state.db.pool();
    let session = store::session(pool, &token_hash)
        .await
        .map_err(|e| internal(lang, &e))?;
    let Some(session) = session else {
        return Err(to_login(&req));
    };
    let now = Utc::now().timestamp();
    if now - session.last_seen_at > auth::SESSION_IDLE_SECONDS
        || now - session.created_at > auth::SESSION_ABSOLUTE_SECONDS
    {
        store::end_session(pool, &token_hash)
            .await
            .map_err(|e| internal(lang, &e))?;
        return Err(to_login(&req));
    }
    let (user, _) = store::load(pool, session.user_id)
        .await
        .map_err(|e| internal(lang, &e))?;
    let Some(user) = user.state().filter(|u| !u.disabled).cloned() else {
        store::end_session(pool, &token_hash)
            .await
            .map_err(|e| internal(lang, &e))?;
        return Err(to_login(&req));
    };
    let req = if req.method() == Method::POST {
        with_csrf_checked(req, &session.csrf_token, lang).await?
    } else {
        req
    };
    match access {
        Access::Public | Access::Session => {}
        Access::Stage(stage) if session.stage != stage => {
            return Err(Redirect::to(stage_page(&session.stage)).into_response())
        }
        Access::Stage(_) => {}
        Access::Action(_) if session.stage != "full" => {
            return Err(Redirect::to(stage_page(&session.stage)).into_response())
        }
        Access::Action(action) if !access::allows(user.role, action) => {
            return Err(page_error(lang, StatusCode::FORBIDDEN));
        }
        Access::Action(_) => {}
    }
    // Idle time is counted in minutes: one write per session per minute at most.
    if now - session.last_seen_at >= 60 {
        store::touch_session(pool, &token_hash, &session.stage, Utc::now())
            .await
            .map_err(|e| internal(lang, &e))?;
    }
    let address = ClientAddr::of_request(&req).map(|a| a.to_string()).unwrap_or_default();
    let mut req = req;
    req.extensions_mut().insert(Viewer {
        user,
        token_hash,
        csrf: session.csrf_token,
        address,
        lang,
    });
    Ok(next.run(req).await)
}

/// Records what `viewer` did, and how it ended (`ok`, or the refusal's text), in its audit log:
/// an `ActionRecorded` event of its `ConsoleUser`. A failure to record is logged and answered
/// 500: the action may have happened, and the page must not claim it was recorded.
async fn record_action<T>(
    state: &AppState,
    viewer: &Viewer,
    action: &str,
    target: String,
    detail: String,
    outcome: &Result<T, String>,
) -> Result<(), Response> {
    let command = payledger_domain::console::ConsoleUserCommand::RecordAction {
        action: action.to_string(),
        target,
        detail,
        outcome: match outcome {
            Ok(_) => "ok".to_string(),
            Err(e) => e.clone(),
        },
        address: viewer.address.clone(),
        at: Utc::now(),
    };
    store::execute(state.db.pool(), viewer.user.user_id, command)
        .await
        .map(|_| ())
        .map_err(|e| internal(viewer.lang, &e))
}

/// The page a session at `stage` goes to next.
fn stage_page(stage: &str) -> &'static str {
    match stage {
        "password" => "/console/password",
        "totp" => "/console/totp",
        "enrol" => "/console/enrol",
        _ => "/console",
    }
}

/// To the login page, remembering where a GET was going.
fn to_login(req: &Request) -> Response {
    if req.method() == Method::GET {
        let back = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/console");
        let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
        Redirect::to(&format!("/console/login?next={next}")).into_response()
    } else {
        Redirect::to("/console/login").into_response()
    }
}

/// Checks a POST's CSRF token against the session's: the `X-CSRF-Token` header, else the form
/// field `csrf` of a URL-encoded body (read here and handed on intact), else the query's `csrf`
/// (multipart uploads, whose body is left to the handler). 403 when missing or different.
async fn with_csrf_checked(req: Request, expected: &str, lang: Lang) -> Result<Request, Response> {
    let header = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_query = || {
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
    };
    let url_encoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let (req, given) = match header {
        Some(token) => (req, Some(token)),
        None if url_encoded => {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, FORM_BODY_LIMIT_BYTES)
                .await
                .map_err(|_| page_error(lang, StatusCode::PAYLOAD_TOO_LARGE))?;
            let given = url::form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned());
            (Request::from_parts(parts, Body::from(bytes)), given)
        }
        None => {
            let given = from_query();
            (req, given)
        }
    };
    match given {
        Some(token) if auth::same_secret(&token, expected) => Ok(req),
        _ => Err(page_error(lang, StatusCode::FORBIDDEN)),
    }
}

/// A POST's `Origin`, when the browser sends one, must be this server (`Host`); `null` (an
/// opaque origin: a sandboxed frame, a `data:` page) is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    url::Url::parse(origin).is_ok_and(|o| {
        let authority = match o.port() {
            Some(p) => format!("{}:{p}", o.host_str().unwrap_or("")),
            None => o.host_str().unwrap_or("").to_string(),
        };
        authority.eq_ignore_ascii_case(host)
    })
}

/// The value of cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// The language of the request: the language cookie, else `Accept-Language` preferring Chinese,
/// else English.
pub fn lang_of(headers: &HeaderMap) -> Lang {
    if let Some(lang) = cookie(headers, auth::LANG_COOKIE).and_then(|c| Lang::parse(&c)) {
        return lang;
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.trim_start().to_ascii_lowercase().starts_with("zh") {
        Lang::ZhCn
    } else {
        Lang::En
    }
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict; Path=/console`, `Secure` behind https,
/// `max_age` seconds (0 deletes it; `None`: a session cookie).
fn set_cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool, http_only: bool) -> HeaderValue {
    let mut c = cookie::Cookie::build((name.to_string(), value.to_string()))
        .path("/console")
        .http_only(http_only)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .build();
    if let Some(age) = max_age {
        c.set_max_age(cookie::time::Duration::seconds(age));
    }
    HeaderValue::from_str(&c.to_string()).expect("cookie values are base64url or tags")
}

/// An error page with `status` (403, 404, …).
fn page_error(lang: Lang, status: StatusCode) -> Response {
    pages::error_page(Tr(lang), status, None)
}

/// Every minute: drops expired sessions and the login throttle's idle buckets. Runs until
/// aborted.
pub fn spawn_housekeeping(db: payledger_store::Database, console: ConsoleState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            console.retain_recent();
            let now = Utc::now().timestamp();
            let pruned = store::prune_sessions(
                db.pool(),
                now - auth::SESSION_IDLE_SECONDS,
                now - auth::SESSION_ABSOLUTE_SECONDS,
            )
            .await;
            if let Err(e) = pruned {
                tracing::warn!(error = %e, "pruning console sessions");
            }
        }
    })
}

fn internal(lang: Lang, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console request failed");
    page_error(lang, StatusCode::INTERNAL_SERVER_ERROR)
}
