//! Who may do what in the console: one table, [`routes`], of every console route with the access
//! it needs, and [`allows`], the action × role rule. The router is built from the table and the
//! one authorisation middleware (`console::authorise`) looks every request up in it, so a route
//! cannot exist without an entry; `tests/tests/console.rs` walks the whole table for every role.

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{get, post, MethodRouter};
use payledger_domain::console::ConsoleRole;

use super::{audit, lists, login, merchants, orders, pages, reconciliation, users};
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
    /// The ledger: balances and journal lines (merchant users: their merchant's books).
    ViewLedger,
    /// The channel accounts and their recent calls.
    ViewChannels,
    /// Reconciliation runs and their differences.
    ViewReconciliation,
    /// Upload a statement, resolve a difference.
    Reconcile,
    /// Add and disable console users.
    ManageUsers,
    /// The merchants (merchant users: their own).
    ViewMerchants,
    /// Add, disable and enable merchants.
    ManageMerchants,
    /// Rotate a merchant's API key or webhook secret (merchant admins: their own).
    RotateCredentials,
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
/// | ledger | ✓ | ✓ | | ✓ | ✓ own | ✓ own |
/// | channel accounts | ✓ | ✓ | ✓ | ✓ | | |
/// | reconciliation runs | ✓ | ✓ | ✓ | ✓ | | |
/// | upload a statement, resolve a difference | ✓ | ✓ | | | | |
/// | console users | ✓ | | | | | |
/// | merchants | ✓ | ✓ | ✓ | ✓ | ✓ own | ✓ own |
/// | add, disable, enable merchants | ✓ | | | | | |
/// | rotate API key, webhook secret | ✓ | | | | ✓ own | |
pub fn allows(role: ConsoleRole, action: Action) -> bool {
    use ConsoleRole::*;
    match action {
        Action::ViewOrders => true,
        Action::Refund => matches!(role, Admin | Finance | MerchantAdmin),
        Action::Close => matches!(role, Admin | Support),
        Action::Resend => matches!(role, Admin | Support | MerchantAdmin),
        Action::ViewAudit | Action::ViewChannels | Action::ViewReconciliation => role.is_operator(),
        Action::Reconcile => matches!(role, Admin | Finance),
        Action::ManageUsers | Action::ManageMerchants => role == Admin,
        Action::ViewMerchants => true,
        Action::RotateCredentials => matches!(role, Admin | MerchantAdmin),
        Action::ViewLedger => role != Support,
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
    use Method as M;
    let view = Access::Action(Action::ViewOrders);
    vec![
        route(M::GET, "/console/login", Public, || get(login::page)),
        route(M::POST, "/console/login", Public, || post(login::submit)),
        route(M::GET, "/console/lang/{lang}", Public, || get(pages::switch_language)),
        route(M::GET, "/console/assets/{file}", Public, || get(pages::asset)),
        route(M::GET, "/console/password", Stage("password"), || {
            get(login::password_page)
        }),
        route(M::POST, "/console/password", Stage("password"), || {
            post(login::password_submit)
        }),
        route(M::GET, "/console/totp", Stage("totp"), || get(login::totp_page)),
        route(M::POST, "/console/totp", Stage("totp"), || post(login::totp_submit)),
        route(M::GET, "/console/enrol", Stage("enrol"), || get(login::enrol_page)),
        route(M::POST, "/console/enrol", Stage("enrol"), || post(login::enrol_submit)),
        route(M::POST, "/console/logout", Session, || post(login::logout)),
        route(M::GET, "/console", view, || get(pages::overview)),
        route(M::GET, "/console/orders", view, || get(orders::orders)),
        route(M::GET, "/console/orders.csv", view, || get(orders::export_csv)),
        route(M::GET, "/console/orders/{id}", view, || get(orders::order)),
        route(
            M::POST,
            "/console/orders/{id}/refund",
            Access::Action(Action::Refund),
            || post(orders::refund),
        ),
        route(
            M::POST,
            "/console/orders/{id}/close",
            Access::Action(Action::Close),
            || post(orders::close),
        ),
        route(M::GET, "/console/refunds", view, || get(lists::refunds)),
        route(M::GET, "/console/notifications", view, || get(lists::notifications)),
        route(
            M::POST,
            "/console/notifications/{id}/resend",
            Access::Action(Action::Resend),
            || post(orders::resend),
        ),
        route(M::GET, "/console/ledger", Access::Action(Action::ViewLedger), || {
            get(lists::ledger)
        }),
        route(
            M::GET,
            "/console/channels",
            Access::Action(Action::ViewChannels),
            || get(lists::channels),
        ),
        route(
            M::GET,
            "/console/reconciliation",
            Access::Action(Action::ViewReconciliation),
            || get(reconciliation::runs),
        ),
        route(
            M::POST,
            "/console/reconciliation",
            Access::Action(Action::Reconcile),
            || post(reconciliation::upload).layer(DefaultBodyLimit::max(reconciliation::UPLOAD_BYTES_MAX)),
        ),
        route(
            M::GET,
            "/console/reconciliation/{id}",
            Access::Action(Action::ViewReconciliation),
            || get(reconciliation::run),
        ),
        route(
            M::POST,
            "/console/reconciliation/{id}/resolve",
            Access::Action(Action::Reconcile),
            || post(reconciliation::resolve),
        ),
        route(
            M::GET,
            "/console/merchants",
            Access::Action(Action::ViewMerchants),
            || get(merchants::list),
        ),
        route(
            M::POST,
            "/console/merchants",
            Access::Action(Action::ManageMerchants),
            || post(merchants::add),
        ),
        route(
            M::GET,
            "/console/merchants/{id}",
            Access::Action(Action::ViewMerchants),
            || get(merchants::merchant),
        ),
        route(
            M::POST,
            "/console/merchants/{id}/api-key",
            Access::Action(Action::RotateCredentials),
            || post(merchants::rotate_api_key),
        ),
        route(
            M::POST,
            "/console/merchants/{id}/webhook-secret",
            Access::Action(Action::RotateCredentials),
            || post(merchants::rotate_webhook_secret),
        ),
        route(
            M::POST,
            "/console/merchants/{id}/disable",
            Access::Action(Action::ManageMerchants),
            || post(merchants::disable),
        ),
        route(
            M::POST,
            "/console/merchants/{id}/enable",
            Access::Action(Action::ManageMerchants),
            || post(merchants::enable),
        ),
        route(M::GET, "/console/users", Access::Action(Action::ManageUsers), || {
            get(users::list)
        }),
        route(M::POST, "/console/users", Access::Action(Action::ManageUsers), || {
            post(users::add)
        }),
        route(
            M::POST,
            "/console/users/{id}/disable",
            Access::Action(Action::ManageUsers),
            || post(users::disable),
        ),
        route(M::GET, "/console/audit", Access::Action(Action::ViewAudit), || {
            get(audit::audit_log)
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
