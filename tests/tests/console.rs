//! The console (`/console`) over HTTP, as a browser without JavaScript uses it: login with the
//! one-time password, its change, TOTP enrolment and codes; the route × role table walked for
//! every role; CSRF, session expiry, login throttling; a merchant user's view; a refund from the
//! console reaching the merchant's notify_url and the audit log; the Chinese labels.

use chrono::Utc;
use payledger_command_api::console::access::{self, Access};
use payledger_command_api::console::auth;
use payledger_domain::console::{console_user_id, ConsoleRole};
use payledger_tests::console::{add_user, NEW_PASSWORD};
use payledger_tests::flows::{create, create_id, order_body, pay, wait_status, WAIT};
use payledger_tests::{Backend, TestServer, WebhookReceiver};
use serde_json::json;
use std::collections::HashMap;

/// A cookie-keeping client that does not follow redirects.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: String,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn take(&mut self, r: reqwest::Response) -> Page {
        for v in r.headers().get_all("set-cookie") {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string())
                .unwrap_or_default(),
            body: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.take(r).await
    }

    async fn post_multipart(&mut self, path: &str, fields: &[(&str, &str)], file: (&str, &str)) -> Page {
        let boundary = "payledger-test-boundary";
        let mut body = String::new();
        for (k, v) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
            ));
        }
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"statement\"; filename=\"{}\"\r\n\
             Content-Type: text/csv\r\n\r\n{}\r\n--{boundary}--\r\n",
            file.0, file.1
        ));
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body)
            .send()
            .await
            .unwrap();
        self.take(r).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.take(r).await
    }
}

/// The value of the hidden input `name` on `page`.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} on the page:\n{page}"))
        + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_string()
}

/// The text of the element with `id`.
fn by_id(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} on the page:\n{page}"));
    let open_end = start + page[start..].find('>').unwrap() + 1;
    page[open_end..open_end + page[open_end..].find('<').unwrap()].to_string()
}

/// Logs `email` in through every stage; returns the browser and, for operators, the TOTP secret.
async fn log_in(s: &TestServer, email: &str, one_time: &str) -> (Browser, Option<String>) {
    let mut b = Browser::new(&s.base);
    let r = b
        .post("/console/login", &[("email", email), ("password", one_time)])
        .await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (303, "/console/password"),
        "{}",
        r.body
    );
    let page = b.get("/console/password").await;
    let csrf = hidden(&page.body, "csrf");
    let r = b
        .post(
            "/console/password",
            &[("csrf", &csrf), ("password", NEW_PASSWORD), ("repeat", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    if r.location == "/console" {
        return (b, None);
    }
    assert_eq!(r.location, "/console/enrol");
    let page = b.get("/console/enrol").await;
    let secret = by_id(&page.body, "totp-secret");
    let code = auth::totp_code(&secret, Utc::now().timestamp() as u64).unwrap();
    let r = b
        .post(
            "/console/enrol",
            &[
                ("csrf", &hidden(&page.body, "csrf")),
                ("sealed", &hidden(&page.body, "sealed")),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!((r.status, r.location.as_str()), (303, "/console"), "{}", r.body);
    (b, Some(secret))
}

/// An operator enrols a second factor, finds a paid sandbox order by out_trade_no, refunds part
/// of it; the merchant's notify_url receives `refund.succeeded`, the order's timeline names the
/// operator, the audit log shows the action. A `viewer` sees the order without the refund form,
/// and its POST is refused with 403.
async fn operator_refunds_from_the_console(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop_1").await;
    let hook = WebhookReceiver::start(vec![]).await;
    let mut body = order_body("console-1", 1_000);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(&s, &m.api_key, &body).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    wait_status(&s, &m.api_key, &order_id, "paid").await;

    let one_time = add_user(&s, "ops@example.com", ConsoleRole::Admin, None).await;
    let (mut ops, secret) = log_in(&s, "Ops@Example.com", &one_time).await;
    assert!(secret.is_some(), "operators enrol a second factor");

    let list = ops.get("/console/orders?mode=test&out_trade_no=console-1").await;
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains(&format!("/console/orders/{order_id}")),
        "{}",
        list.body
    );
    let live = ops.get("/console/orders?out_trade_no=console-1").await;
    assert!(!live.body.contains(&order_id), "test orders never show in live mode");

    let page = ops.get(&format!("/console/orders/{order_id}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"refund\""));
    let csrf = hidden(&page.body, "csrf");
    let refund_path = format!("/console/orders/{order_id}/refund");
    let r = ops
        .post(
            &refund_path,
            &[("csrf", &csrf), ("amount", "3.50"), ("reason", "damaged")],
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(r.location.ends_with("done=refund"), "{}", r.location);
    // An amount the currency cannot hold is refused, not rounded.
    let r = ops.post(&refund_path, &[("csrf", &csrf), ("amount", "0.001")]).await;
    assert!(r.location.contains("error="), "{}", r.location);

    let got = hook.wait_for(2, WAIT).await;
    let delivered = got
        .iter()
        .find(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["type"] == "refund.succeeded")
        .expect("refund.succeeded delivered");
    let refund: serde_json::Value = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(refund["data"]["refunded_amount"], 350, "{refund}");
    let signature = delivered.headers["payledger-signature"].to_str().unwrap();
    assert!(
        payledger_notifier::verify(
            &m.webhook_secret,
            signature,
            &delivered.body,
            Utc::now().timestamp(),
            300
        ),
        "signed with the merchant's test webhook secret"
    );

    let page = ops.get(&format!("/console/orders/{order_id}")).await;
    assert_eq!(by_id(&page.body, "refunded-amount"), "3.50 CNY", "{}", page.body);
    assert!(
        page.body.contains("console:ops@example.com"),
        "the timeline names the operator"
    );
    let audit = ops.get("/console/audit?type=ActionRecorded").await;
    assert!(audit.body.contains("refund") && audit.body.contains(&format!("order:{order_id}")));
    assert!(audit.body.contains("ops@example.com"));
    assert!(audit.body.contains("3.50 CNY"), "{}", audit.body);
    let logins = ops.get("/console/audit?type=LoginSucceeded").await;
    assert!(logins.body.contains("127.0.0.1"));
    // The overview counts the order, its payment and the refund on its channel, exactly.
    let overview = ops.get("/console?mode=test").await;
    assert!(
        overview.body.contains(
            "<tr><td>CNY</td><th scope=\"row\">sandbox</th><td class=\"num\">1</td><td class=\"num\">1</td>\
             <td class=\"num\">100.0 %</td><td class=\"num\">10.00</td><td class=\"num\">1</td>\
             <td class=\"num\">3.50</td></tr>"
        ),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("id=\"chart-channels\""));
    let live = ops.get("/console").await;
    assert!(!live.body.contains("sandbox"), "test money never shows in live mode");

    let one_time = add_user(&s, "viewer@example.com", ConsoleRole::Viewer, None).await;
    let (mut viewer, _) = log_in(&s, "viewer@example.com", &one_time).await;
    let page = viewer.get(&format!("/console/orders/{order_id}")).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"refund\""), "no refund button for a viewer");
    let csrf = hidden(&page.body, "csrf");
    let r = viewer.post(&refund_path, &[("csrf", &csrf), ("amount", "1.00")]).await;
    assert_eq!(r.status, 403);
}

/// Every route of the table, for every role: a role the table refuses gets 403, one it allows
/// does not; a merchant user sees only its merchant's orders, and another's order id is 404.
async fn the_role_table_is_enforced_for_every_role(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let mine = s.add_merchant("mine").await;
    let theirs = s.add_merchant("theirs").await;
    let my_order = create_id(&s, &mine.api_key, &order_body("m-1", 500)).await;
    let their_order = create_id(&s, &theirs.api_key, &order_body("t-1", 700)).await;

    for role in ConsoleRole::ALL {
        let email = format!("{}@example.com", role.as_str());
        let merchant = (!role.is_operator()).then_some("mine");
        let one_time = add_user(&s, &email, role, merchant).await;
        let (mut b, _) = log_in(&s, &email, &one_time).await;
        let csrf = hidden(&b.get("/console").await.body, "csrf");
        for route in access::routes() {
            let access::Access::Action(action) = route.access else {
                continue;
            };
            let path = route.path.replace("{id}", &my_order);
            let r = if route.method == "GET" {
                b.get(&format!("{path}?mode=test")).await
            } else {
                b.post(&path, &[("csrf", &csrf), ("amount", "0.01"), ("order_id", &my_order)])
                    .await
            };
            if access::allows(role, action) {
                assert_ne!(r.status, 403, "{} may {} {}", role.as_str(), route.method, route.path);
                assert!(
                    r.status < 500,
                    "{} {} {}: {}",
                    role.as_str(),
                    route.method,
                    route.path,
                    r.status
                );
            } else {
                assert_eq!(
                    r.status,
                    403,
                    "{} may not {} {}",
                    role.as_str(),
                    route.method,
                    route.path
                );
            }
        }
        let list = b.get("/console/orders?mode=test").await;
        assert!(list.body.contains(&my_order));
        assert_eq!(
            list.body.contains(&their_order),
            role.is_operator(),
            "{}",
            role.as_str()
        );
        let other = b.get(&format!("/console/orders/{their_order}")).await;
        assert_eq!(
            other.status,
            if role.is_operator() { 200 } else { 404 },
            "{}",
            role.as_str()
        );
    }
    // The stage routes need their stage; logout needs a session; the rest are public.
    assert!(access::routes()
        .iter()
        .all(|r| r.access != Access::Public || !r.path.contains("orders")));
}

/// A POST without the CSRF token is refused; a session idle too long goes back to login; five
/// wrong passwords throttle the account, even for the right password.
async fn csrf_expiry_and_throttling(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop").await;
    let order_id = create_id(&s, &m.api_key, &order_body("c-1", 500)).await;
    let one_time = add_user(&s, "support@example.com", ConsoleRole::MerchantAdmin, Some("shop")).await;
    let (mut b, secret) = log_in(&s, "support@example.com", &one_time).await;
    assert!(secret.is_none(), "merchant users are not made to enrol");

    let close_path = format!("/console/orders/{order_id}/close");
    let r = b.post("/console/logout", &[]).await;
    assert_eq!(r.status, 403, "no CSRF token");
    let r = b.post("/console/logout", &[("csrf", "forged")]).await;
    assert_eq!(r.status, 403, "a wrong CSRF token");
    let r = b.post(&close_path, &[("csrf", "forged")]).await;
    assert_eq!(r.status, 403);

    // Idle past the limit: back to login, and the session is gone.
    let pool = s.database().pool();
    let idle = Utc::now().timestamp() - auth::SESSION_IDLE_SECONDS - 5;
    sqlx::query(&format!("UPDATE console_sessions SET last_seen_at = {idle}"))
        .execute(pool)
        .await
        .unwrap();
    let r = b.get("/console/orders").await;
    assert_eq!(
        (r.status, r.location.as_str()),
        (303, "/console/login?next=%2Fconsole%2Forders")
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_sessions")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0);

    let mut b = Browser::new(&s.base);
    for _ in 0..5 {
        let r = b
            .post(
                "/console/login",
                &[("email", "support@example.com"), ("password", "wrong password!")],
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let r = b
        .post(
            "/console/login",
            &[("email", "support@example.com"), ("password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(r.status, 429, "throttled even with the right password");
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_events WHERE event_type = 'LoginFailed'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(failed, 6, "every failure is an event");
    // Events are facts: the console's too.
    assert!(sqlx::query("DELETE FROM console_events").execute(pool).await.is_err());
}

/// With the language switched to 简体中文, every page shows Chinese labels and no English ones.
async fn every_page_speaks_chinese(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop").await;
    let order_id = create_id(&s, &m.api_key, &order_body("zh-1", 500)).await;
    let one_time = add_user(&s, "zh@example.com", ConsoleRole::Admin, None).await;
    let (mut b, _) = log_in(&s, "zh@example.com", &one_time).await;
    let r = b.get("/console/lang/zh-CN?back=/console/orders").await;
    assert_eq!((r.status, r.location.as_str()), (303, "/console/orders"));
    for path in [
        "/console?mode=test".to_string(),
        "/console/orders?mode=test".to_string(),
        format!("/console/orders/{order_id}"),
        "/console/audit".to_string(),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains("<html lang=\"zh-CN\">"), "{path}");
        for label in ["概览", "订单", "审计日志", "退出登录"] {
            assert!(page.body.contains(label), "{path} shows {label}");
        }
        for english in [">Overview<", ">Orders<", ">Audit log<", ">Log out<"] {
            assert!(!page.body.contains(english), "{path} still shows {english}");
        }
    }
    let mut anonymous = Browser::new(&s.base);
    anonymous.cookies.insert(auth::LANG_COOKIE.into(), "zh-CN".into());
    assert!(anonymous.get("/console/login").await.body.contains("登录"));
}

/// The CSV export streams every matching order with formula-looking cells neutralised; the
/// notification list puts the abandoned first and resends from there; the refund list and the
/// ledger show what the journal holds, amounts from minor units.
async fn export_lists_and_ledger(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop").await;
    let failing_hook = WebhookReceiver::start(vec![500, 500, 500]).await;
    let mut body = order_body("-1", 1_234);
    body["subject"] = json!("=HYPERLINK(\"http://evil.example\")");
    body["notify_url"] = json!(failing_hook.url);
    let order_id = create_id(&s, &m.api_key, &body).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    let paid = wait_status(&s, &m.api_key, &order_id, "paid").await;
    for i in 0..120 {
        create_id(&s, &m.api_key, &order_body(&format!("bulk-{i:03}"), 100 + i)).await;
    }
    let one_time = add_user(&s, "fin@example.com", ConsoleRole::Admin, None).await;
    let (mut b, _) = log_in(&s, "fin@example.com", &one_time).await;

    let csv = b.get("/console/orders.csv?mode=test").await;
    assert_eq!(csv.status, 200);
    let lines: Vec<&str> = csv.body.lines().collect();
    assert_eq!(lines.len(), 1 + 121, "a header and every order, across export pages");
    assert!(lines[0].starts_with("order_id,merchant_id,mode,out_trade_no,status,currency,amount_minor,amount"));
    let line = lines.iter().find(|l| l.contains(&order_id)).unwrap();
    assert!(line.contains(",'-1,"), "{line}");
    assert!(line.contains("\"'=HYPERLINK(\"\"http://evil.example\"\")\""), "{line}");
    assert!(line.contains(",CNY,1234,12.34,1234,0,"), "{line}");
    let filtered = b.get("/console/orders.csv?mode=test&status=paid").await;
    assert_eq!(filtered.body.lines().count(), 2);
    let audit = b.get("/console/audit?type=ActionRecorded").await;
    assert!(audit.body.contains("export"), "exports are audited");

    // The notification fails until abandoned (schedule 1s, 1s): first in the list, resent there.
    let abandoned = payledger_tests::eventually(WAIT, || async {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM notify_job WHERE status = 'abandoned'")
            .fetch_optional(s.database().pool())
            .await
            .unwrap();
        status
    })
    .await;
    assert!(abandoned.is_some(), "the notification was abandoned");
    let list = b.get("/console/notifications?mode=test").await;
    let attention = &list.body[list.body.find("notifications-1").unwrap()..list.body.find("notifications-2").unwrap()];
    assert!(
        attention.contains("abandoned") && attention.contains(&order_id),
        "{attention}"
    );
    let csrf = hidden(&list.body, "csrf");
    let notification_id = {
        let marker = "action=\"/console/notifications/";
        let start = attention.find(marker).unwrap() + marker.len();
        attention[start..start + 36].to_string()
    };
    let r = b
        .post(
            &format!("/console/notifications/{notification_id}/resend"),
            &[("csrf", &csrf), ("order_id", &order_id), ("back", "notifications")],
        )
        .await;
    assert_eq!(r.location, "/console/notifications?mode=test&done=resend");
    assert_eq!(
        failing_hook.wait_for(4, WAIT).await.len(),
        4,
        "three attempts, then the resend"
    );

    // A refund: listed, and in the ledger under the order with the journal's lines.
    let r = payledger_tests::flows::request_refund(&s, &m.api_key, &order_id, "r-1", 234).await;
    assert_eq!(r.status, 201, "{}", r.text);
    wait_status(&s, &m.api_key, &order_id, "partially_refunded").await;
    let refunds = b.get("/console/refunds?mode=test").await;
    assert!(
        refunds.body.contains("r-1") && refunds.body.contains("2.34 CNY"),
        "{}",
        refunds.body
    );
    let trade_no = paid["channel_trade_no"].as_str().unwrap();
    let ledger = b.get(&format!("/console/ledger?mode=test&reference={trade_no}")).await;
    assert_eq!(ledger.status, 200);
    let entries = &ledger.body[ledger.body.find("id=\"entries\"").unwrap()..];
    assert!(
        entries.contains("PaymentSucceeded") && entries.contains("12.34"),
        "{entries}"
    );
    let by_order = b.get(&format!("/console/ledger?mode=test&reference={order_id}")).await;
    assert!(by_order.body.contains("RefundSucceeded") && by_order.body.contains("2.34"));
    assert!(
        ledger.body.contains("merchant_payable:shop") && ledger.body.contains("10.00"),
        "balance 12.34 − 2.34"
    );
}

/// A generic statement of the sandbox with planted differences (one amount differs, one payment
/// the ledger lacks, one the statement lacks) is uploaded; each difference is listed; one is
/// resolved with a kind and a note (an event, in the audit log), and the open count drops. The
/// same file again is the same run. Only admin and finance may upload or resolve.
async fn reconciliation_differences_are_resolved(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let m = s.add_merchant("shop").await;
    let mut paid = Vec::new();
    for (no, amount) in [("rec-a", 1_000), ("rec-b", 2_000), ("rec-d", 500)] {
        let id = create_id(&s, &m.api_key, &order_body(no, amount)).await;
        assert_eq!(pay(&s, &id, "success").await.status, 200);
        let view = wait_status(&s, &m.api_key, &id, "paid").await;
        paid.push((id, view["channel_trade_no"].as_str().unwrap().to_string()));
    }
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let at = Utc::now().to_rfc3339();
    let (a, b) = (&paid[0], &paid[1]);
    let csv = format!(
        "type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at\n\
         payment,{},{},,,1000,CNY,,SUCCESS,{at}\n\
         payment,{},{},,,2100,CNY,,SUCCESS,{at}\n\
         payment,{},SBX-NOT-OURS,,,777,CNY,,SUCCESS,{at}\n",
        a.0, a.1, b.0, b.1, uuid::Uuid::new_v4()
    );
    let one_time = add_user(&s, "fin@example.com", ConsoleRole::Finance, None).await;
    let (mut fin, _) = log_in(&s, "fin@example.com", &one_time).await;
    let page = fin.get("/console/reconciliation").await;
    let csrf = hidden(&page.body, "csrf").to_string();
    assert!(page.body.contains("id=\"upload\""));
    let upload_path = format!("/console/reconciliation?csrf={csrf}");
    let fields = [("channel", "sandbox"), ("date", today.as_str())];
    let refused = fin
        .post_multipart("/console/reconciliation", &fields, ("s.csv", &csv))
        .await;
    assert_eq!(refused.status, 403, "no CSRF token");
    let r = fin.post_multipart(&upload_path, &fields, ("s.csv", &csv)).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let run_path = r.location.clone();
    assert!(run_path.starts_with("/console/reconciliation/"), "{run_path}");
    let run = fin.get(&run_path).await;
    assert_eq!(by_id(&run.body, "run-open"), "3", "{}", run.body);
    for kind in ["amount_differs", "missing_in_ledger", "missing_at_channel"] {
        assert!(run.body.contains(kind), "{kind} listed");
    }
    assert!(
        run.body.contains("21.00 CNY") && run.body.contains("20.00 CNY"),
        "amounts from minor units"
    );
    assert_eq!(
        by_id(&fin.get("/console?mode=test").await.body, "overview-open-differences"),
        "3"
    );

    let resolve_path = format!("{run_path}/resolve");
    let csrf = hidden(&run.body, "csrf");
    let r = fin
        .post(
            &resolve_path,
            &[("csrf", &csrf), ("index", "0"), ("kind", "timing"), ("note", " ")],
        )
        .await;
    assert!(r.location.contains("error="), "a note is required: {}", r.location);
    let r = fin
        .post(
            &resolve_path,
            &[
                ("csrf", &csrf),
                ("index", "0"),
                ("kind", "channel_error"),
                ("note", "raised with the channel"),
            ],
        )
        .await;
    assert_eq!((r.status, r.location.as_str()), (303, run_path.as_str()));
    let run = fin.get(&run_path).await;
    assert_eq!(by_id(&run.body, "run-open"), "2");
    assert!(run.body.contains("channel_error: raised with the channel"));
    let again = fin
        .post(
            &resolve_path,
            &[("csrf", &csrf), ("index", "0"), ("kind", "timing"), ("note", "again")],
        )
        .await;
    assert!(again.location.contains("error="), "resolved once: {}", again.location);
    let audit = fin.get("/console/audit?type=ActionRecorded").await;
    assert!(audit.body.contains("resolve") && audit.body.contains("raised with the channel"));
    // The same file again: the same run, nothing recorded twice.
    let r = fin.post_multipart(&upload_path, &fields, ("s.csv", &csv)).await;
    assert_eq!(r.location, run_path);
    assert_eq!(by_id(&fin.get(&run_path).await.body, "run-open"), "2");

    let one_time = add_user(&s, "sup@example.com", ConsoleRole::Support, None).await;
    let (mut support, _) = log_in(&s, "sup@example.com", &one_time).await;
    let page = support.get(&run_path).await;
    assert_eq!(page.status, 200, "support sees runs");
    assert!(!page.body.contains("id=\"resolve-1\""), "but has no resolve form");
    let csrf = hidden(&page.body, "csrf");
    let r = support
        .post(
            &resolve_path,
            &[("csrf", &csrf), ("index", "1"), ("kind", "timing"), ("note", "x")],
        )
        .await;
    assert_eq!(r.status, 403);
}

/// An admin adds a user in the console (its one-time password shown once), the user logs in
/// with it; the admin disables the user, whose session ends at once; the audit log has both.
async fn admins_add_and_disable_users(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    s.add_merchant("shop").await;
    let one_time = add_user(&s, "root@example.com", ConsoleRole::Admin, None).await;
    let (mut admin, _) = log_in(&s, "root@example.com", &one_time).await;
    let page = admin.get("/console/users").await;
    assert_eq!(page.status, 200);
    let csrf = hidden(&page.body, "csrf");
    let refused = admin
        .post(
            "/console/users",
            &[
                ("csrf", &csrf),
                ("email", "staff@shop.example"),
                ("role", "merchant_viewer"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422, "a merchant role needs a merchant");
    let missing = admin
        .post(
            "/console/users",
            &[
                ("csrf", &csrf),
                ("email", "staff@shop.example"),
                ("role", "merchant_viewer"),
                ("merchant", "nope"),
            ],
        )
        .await;
    assert!(missing.body.contains("no merchant"), "{}", missing.body);
    let added = admin
        .post(
            "/console/users",
            &[
                ("csrf", &csrf),
                ("email", "Staff@Shop.example"),
                ("role", "merchant_viewer"),
                ("merchant", "shop"),
            ],
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let password = by_id(&added.body, "one-time-password");
    assert!(
        !admin.get("/console/users").await.body.contains(&password),
        "shown once"
    );

    let (mut staff, _) = log_in(&s, "staff@shop.example", &password).await;
    assert_eq!(staff.get("/console/orders?mode=test").await.status, 200);
    let user_id = console_user_id("staff@shop.example");
    let r = admin
        .post(&format!("/console/users/{user_id}/disable"), &[("csrf", &csrf)])
        .await;
    assert_eq!((r.status, r.location.as_str()), (303, "/console/users"));
    let r = staff.get("/console/orders?mode=test").await;
    assert_eq!(r.status, 303, "a disabled user's session ends");
    let again = Browser::new(&s.base)
        .post(
            "/console/login",
            &[("email", "staff@shop.example"), ("password", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(again.status, 401, "and it cannot log in");
    let me = admin
        .post(
            &format!("/console/users/{}/disable", console_user_id("root@example.com")),
            &[("csrf", &csrf)],
        )
        .await;
    assert!(me.body.contains("cannot disable yourself"));
    let audit = admin.get("/console/audit").await;
    assert!(audit.body.contains("add_user") && audit.body.contains("disable_user"));
    assert!(audit.body.contains("UserDisabled") && audit.body.contains("by console:root@example.com"));
}

/// An admin adds a merchant in the console and gets its credentials once; rotating the test API
/// key retires the old one; rotating the test webhook secret signs notifications with both
/// secrets during the overlap; disabling refuses the merchant's keys until it is enabled. A
/// merchant admin rotates its own credentials only; each change is a `Merchant` event.
async fn merchants_are_managed_in_the_console(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let one_time = add_user(&s, "root@example.com", ConsoleRole::Admin, None).await;
    let (mut admin, _) = log_in(&s, "root@example.com", &one_time).await;
    let csrf = hidden(&admin.get("/console/merchants").await.body, "csrf");
    let added = admin
        .post("/console/merchants", &[("csrf", &csrf), ("merchant_id", "m2")])
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let old_key = by_id(&added.body, "cred-test_api_key");
    let old_secret = by_id(&added.body, "cred-test_webhook_secret");
    assert!(old_key.starts_with("plk_test_") && old_secret.starts_with("whsec_test_"));
    assert!(
        !admin.get("/console/merchants").await.body.contains(&old_key),
        "shown once"
    );
    let dup = admin
        .post("/console/merchants", &[("csrf", &csrf), ("merchant_id", "m2")])
        .await;
    assert!(dup.body.contains("exists"), "{}", dup.body);
    assert_eq!(create(&s, &old_key, &order_body("m2-1", 100)).await.status, 201);

    let r = admin
        .post("/console/merchants/m2/api-key", &[("csrf", &csrf), ("mode", "test")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_key = by_id(&r.body, "cred-test_api_key");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await; // the key cache's TTL
    assert_eq!(
        create(&s, &old_key, &order_body("m2-2", 100)).await.status,
        401,
        "the old key is retired"
    );
    assert_eq!(create(&s, &new_key, &order_body("m2-3", 100)).await.status, 201);

    let r = admin
        .post(
            "/console/merchants/m2/webhook-secret",
            &[("csrf", &csrf), ("mode", "test"), ("overlap_hours", "24")],
        )
        .await;
    let new_secret = by_id(&r.body, "cred-test_webhook_secret");
    let hook = WebhookReceiver::start(vec![]).await;
    let mut body = order_body("m2-4", 100);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(&s, &new_key, &body).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    let got = hook.wait_for(1, WAIT).await;
    let header = got[0].headers["payledger-signature"].to_str().unwrap();
    assert_eq!(header.matches("v1=").count(), 2, "{header}");
    for secret in [&old_secret, &new_secret] {
        assert!(payledger_notifier::verify(
            secret,
            header,
            &got[0].body,
            Utc::now().timestamp(),
            300
        ));
    }

    let r = admin.post("/console/merchants/m2/disable", &[("csrf", &csrf)]).await;
    assert_eq!((r.status, r.location.as_str()), (303, "/console/merchants/m2"));
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(
        create(&s, &new_key, &order_body("m2-5", 100)).await.status,
        401,
        "disabled"
    );
    admin.post("/console/merchants/m2/enable", &[("csrf", &csrf)]).await;
    assert_eq!(
        create(&s, &new_key, &order_body("m2-6", 100)).await.status,
        201,
        "enabled again"
    );
    let page = admin.get("/console/merchants/m2").await;
    for event in [
        "MerchantAdded",
        "ApiKeyRotated",
        "WebhookSecretRotated",
        "MerchantDisabled",
        "MerchantEnabled",
    ] {
        assert!(page.body.contains(event), "{event} in the merchant's history");
    }

    s.add_merchant("other").await;
    let one_time = add_user(&s, "owner@m2.example", ConsoleRole::MerchantAdmin, Some("m2")).await;
    let (mut owner, _) = log_in(&s, "owner@m2.example", &one_time).await;
    let list = owner.get("/console/merchants").await;
    assert!(list.body.contains("/console/merchants/m2") && !list.body.contains("/console/merchants/other"));
    assert_eq!(owner.get("/console/merchants/other").await.status, 404);
    let csrf = hidden(&list.body, "csrf");
    let r = owner
        .post("/console/merchants/m2/api-key", &[("csrf", &csrf), ("mode", "test")])
        .await;
    assert_eq!(r.status, 200, "a merchant admin rotates its own key");
    let r = owner
        .post("/console/merchants/other/api-key", &[("csrf", &csrf), ("mode", "test")])
        .await;
    assert_eq!(r.status, 404, "not another merchant's");
    assert_eq!(
        owner
            .post("/console/merchants/m2/disable", &[("csrf", &csrf)])
            .await
            .status,
        403
    );
}

payledger_tests::both_backends!(
    merchants_are_managed_in_the_console,
    admins_add_and_disable_users,
    reconciliation_differences_are_resolved,
    export_lists_and_ledger,
    operator_refunds_from_the_console,
    the_role_table_is_enforced_for_every_role,
    csrf_expiry_and_throttling,
    every_page_speaks_chinese,
);
