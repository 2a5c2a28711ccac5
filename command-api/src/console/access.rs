//! Who may do what in the console: one table, [`routes`], of every console route with the access
//! it needs, and [`allows`], the action × role rule. The router is built from the table and the
//! one authorisation middleware (`console::authorise`) looks every request up in it, so a route
//! cannot exist without an entry; `tests/tests/console.rs` walks the whole table for every role.

use axum::http::Method;
use axum::routing::{get, post, MethodRouter};
use payledger_domain::console::ConsoleRole;

use super::{login, pages};
use crate::app::AppState;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the login page, the assets, the language switch).
    Public,
    /// A session half way through logging in, at this stage (`password`, `totp`, `enrol`).
    Stage(&'static str),
    /// A logged-in user, any role (logout).
    Session,
    /// A logged-in user whose role [`allows`] the action.
    Action(Action),
}

/// What a console user does; each is allowed to some roles by [`allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The overview, the order list and an order's page (merchant users: their merchant's).
    ViewOrders,
    /// A (partial) refund of an order.
    Refund,
    /// Close an unpaid order.
    Close,
    /// Send a notification again.
    Resend,
    /// The audit log.
    ViewAudit,
}

/// Whether `role` may take `action`. The table of the issue that asked for the console:
///
/// | action | admin | finance | support | viewer | merchant_admin | merchant_viewer |
/// |---|---|---|---|---|---|---|
/// | view orders | ✓ | ✓ | ✓ | ✓ | ✓ own | ✓ own |
/// | refund | ✓ | ✓ | | | ✓ own | |
/// | close | ✓ | | ✓ | | | |
/// | resend | ✓ | | ✓ | | ✓ own | |
/// | audit log | ✓ | ✓ | ✓ | ✓ | | |
pub fn allows(role: ConsoleRole, action: Action) -> bool {
    use ConsoleRole::*;
    match action {
        Action::ViewOrders => true,
        Action::Refund => matches!(role, Admin | Finance | MerchantAdmin),
        Action::Close => matches!(role, Admin | Support),
        Action::Resend => matches!(role, Admin | Support | MerchantAdmin),
        Action::ViewAudit => role.is_operator(),
    }
}

/// One console route.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    /// As given to the router (`{id}` for a path parameter).
    pub path: &'static str,
    pub access: Access,
    /// Its handler, for the router.
    pub handler: fn() -> MethodRouter<AppState>,
}

fn route(method: Method, path: &'static str, access: Access, handler: fn() -> MethodRouter<AppState>) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every console route. The router ([`crate::console::router`]) serves exactly these; a request
/// the table does not name is 404.
pub fn routes() -> Vec<Route> {
    use Access::{Public, Session, Stage};
    vec![
        route(Method::GET, "/console/login", Public, || get(login::page)),
        route(Method::POST, "/console/login", Public, || post(login::submit)),
        route(Method::GET, "/console/lang/{lang}", Public, || {
            get(pages::switch_language)
        }),
        route(Method::GET, "/console/assets/{file}", Public, || get(pages::asset)),
        route(Method::GET, "/console/password", Stage("password"), || {
            get(login::password_page)
        }),
        route(Method::POST, "/console/password", Stage("password"), || {
            post(login::password_submit)
        }),
        route(Method::GET, "/console/totp", Stage("totp"), || get(login::totp_page)),
        route(Method::POST, "/console/totp", Stage("totp"), || {
            post(login::totp_submit)
        }),
        route(Method::GET, "/console/enrol", Stage("enrol"), || get(login::enrol_page)),
        route(Method::POST, "/console/enrol", Stage("enrol"), || {
            post(login::enrol_submit)
        }),
        route(Method::POST, "/console/logout", Session, || post(login::logout)),
        route(Method::GET, "/console", Access::Action(Action::ViewOrders), || {
            get(pages::overview)
        }),
        route(
            Method::GET,
            "/console/orders",
            Access::Action(Action::ViewOrders),
            || get(pages::orders),
        ),
        route(
            Method::GET,
            "/console/orders/{id}",
            Access::Action(Action::ViewOrders),
            || get(pages::order),
        ),
        route(
            Method::POST,
            "/console/orders/{id}/refund",
            Access::Action(Action::Refund),
            || post(pages::refund),
        ),
        route(
            Method::POST,
            "/console/orders/{id}/close",
            Access::Action(Action::Close),
            || post(pages::close),
        ),
        route(
            Method::POST,
            "/console/notifications/{id}/resend",
            Access::Action(Action::Resend),
            || post(pages::resend),
        ),
        route(Method::GET, "/console/audit", Access::Action(Action::ViewAudit), || {
            get(pages::audit_log)
        }),
    ]
}

/// The access of `method` on the router's `path` pattern; `None` when the table has no such route.
pub fn access_of(method: &Method, path: &str) -> Option<Access> {
    routes()
        .into_iter()
        .find(|r| r.method == *method && r.path == path)
        .map(|r| r.access)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_listed_once() {
        let all = routes();
        for (i, a) in all.iter().enumerate() {
            assert!(a.path.starts_with("/console"), "{}", a.path);
            assert!(
                all[i + 1..].iter().all(|b| !(b.method == a.method && b.path == a.path)),
                "{} {} twice",
                a.method,
                a.path
            );
        }
    }

    #[test]
    fn merchant_viewers_and_viewers_only_read() {
        for role in [ConsoleRole::Viewer, ConsoleRole::MerchantViewer] {
            for action in [Action::Refund, Action::Close, Action::Resend] {
                assert!(!allows(role, action), "{role:?} {action:?}");
            }
            assert!(allows(role, Action::ViewOrders));
        }
        assert!(!allows(ConsoleRole::MerchantAdmin, Action::ViewAudit));
        assert!(allows(ConsoleRole::Finance, Action::Refund));
        assert!(!allows(ConsoleRole::Finance, Action::Close));
    }
}
