//! The console in a real browser: headless Chromium (Debian's) driven over WebDriver
//! (chromedriver, `thirtyfour`), against the running server. Every page is saved as a screenshot
//! under `target/ci-artifacts/console/` (English and 简体中文).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::Utc;
use payledger_command_api::console::auth;
use payledger_domain::console::ConsoleRole;
use payledger_tests::console::{add_user, NEW_PASSWORD};
use payledger_tests::flows::{create_id, order_body, pay, wait_status, WAIT};
use payledger_tests::{eventually, Backend, TestServer, WebhookReceiver};
use serde_json::json;
use thirtyfour::prelude::*;

/// chromedriver and one browser session; both end on drop.
struct Chrome {
    driver: Option<WebDriver>,
    chromedriver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.chromedriver.kill();
        let _ = self.chromedriver.wait();
    }
}

impl Chrome {
    /// A new headless browser with no network but loopback; `None` when Chromium is missing
    /// outside CI.
    async fn start() -> Option<Self> {
        let (browser, chromedriver) = payledger_testkit::chromium("the console's browser tests")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chromedriver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(&browser.display().to_string()).unwrap();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            "--lang=en-US",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            &format!("--user-data-dir={}", profile.path().display()),
        ] {
            caps.add_arg(arg).unwrap();
        }
        let url = format!("http://127.0.0.1:{port}");
        let driver = eventually(Duration::from_secs(20), || {
            let (caps, url) = (caps.clone(), url.clone());
            async move { WebDriver::new(url, caps).await.ok() }
        })
        .await
        .expect("a WebDriver session");
        Some(Self {
            driver: Some(driver),
            chromedriver,
            _profile: profile,
        })
    }

    fn c(&self) -> &WebDriver {
        self.driver.as_ref().expect("open")
    }

    async fn goto(&self, url: &str) {
        self.c().goto(url).await.unwrap();
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.c().find(By::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks `css` and waits for the page it loads (every click here submits a form or
    /// follows a link).
    async fn click(&self, css: &str) {
        self.run("window.__payledger_before = true;", vec![]).await;
        self.c().find(By::Css(css)).await.unwrap().click().await.unwrap();
        self.wait_for_new_page().await;
    }

    /// Waits until the document marked before a click is replaced.
    async fn wait_for_new_page(&self) {
        let loaded = eventually(WAIT, || async move {
            let ret = self
                .c()
                .execute(
                    "return window.__payledger_before === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .ok()?;
            (ret.json() == &serde_json::Value::Bool(true)).then_some(())
        })
        .await;
        assert!(loaded.is_some(), "no new page after a click");
    }

    async fn text(&self, css: &str) -> String {
        self.c().find(By::Css(css)).await.unwrap().text().await.unwrap()
    }

    async fn has(&self, css: &str) -> bool {
        self.c().find(By::Css(css)).await.is_ok()
    }

    async fn path(&self) -> String {
        let url = self.c().current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Runs `script` in the page with `args`.
    async fn run(&self, script: &str, args: Vec<serde_json::Value>) {
        self.c().execute(script, args).await.unwrap();
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    /// Saves the page as `target/ci-artifacts/console/<name>.png`.
    async fn shot(&self, name: &str) {
        let png = self.c().screenshot_as_png().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artifacts/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(mut self) {
        if let Some(d) = self.driver.take() {
            let _ = d.quit().await;
        }
    }
}

/// The first login through the browser: one-time password, new password, TOTP enrolment.
/// Returns the TOTP secret (operators) read off the page.
async fn first_login(b: &Chrome, base: &str, email: &str, one_time: &str, shots: bool) -> Option<String> {
    b.goto(&format!("{base}/console/login")).await;
    if shots {
        b.shot("login").await;
    }
    b.fill("#email", email).await;
    b.fill("#password", one_time).await;
    b.click("#sign-in").await;
    assert_eq!(b.path().await, "/console/password", "{}", b.body().await);
    if shots {
        b.shot("password").await;
    }
    b.fill("#password", NEW_PASSWORD).await;
    b.fill("#repeat", NEW_PASSWORD).await;
    b.click("#save-password").await;
    if b.path().await != "/console/enrol" {
        return None;
    }
    if shots {
        b.shot("enrol").await;
    }
    let secret = b.text("#totp-secret").await;
    let code = auth::totp_code(&secret, Utc::now().timestamp() as u64).unwrap();
    b.fill("#code", &code).await;
    b.click("#verify").await;
    assert_eq!(b.path().await, "/console");
    Some(secret)
}

/// The operator's whole path: password + TOTP, the paid sandbox order found by out_trade_no,
/// part of it refunded from the console, `refund.succeeded` signed at the merchant's notify_url,
/// the audit log naming the operator; then logging in again with a code, in Chinese, every page.
/// A viewer sees no refund button and its forged POST is refused; a POST without the CSRF token
/// is refused; an expired session goes back to login; five wrong passwords throttle.
async fn the_console_in_a_browser(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let Some(b) = Chrome::start().await else { return };
    let base = s.base.clone();
    let m = s.add_merchant("shop_1").await;
    let hook = WebhookReceiver::start(vec![]).await;
    let mut body = order_body("browser-1", 1_000);
    body["notify_url"] = json!(hook.url);
    let order_id = create_id(&s, &m.api_key, &body).await;
    assert_eq!(pay(&s, &order_id, "success").await.status, 200);
    wait_status(&s, &m.api_key, &order_id, "paid").await;
    create_id(&s, &m.api_key, &order_body("browser-2", 2_000)).await;

    let one_time = add_user(&s, "ops@example.com", ConsoleRole::Admin, None).await;
    let secret = first_login(&b, &base, "ops@example.com", &one_time, true)
        .await
        .expect("operators enrol");
    b.goto(&format!("{base}/console?mode=test")).await;
    assert!(b.text("#who").await.contains("ops@example.com"));
    b.shot("overview").await;

    // Find the order by out_trade_no and refund part of it.
    b.goto(&format!("{base}/console/orders?mode=test")).await;
    b.shot("orders").await;
    b.fill("#f-otn", "browser-1").await;
    b.click("#filter").await;
    let rows = b.text("#orders tbody").await;
    assert!(rows.contains("browser-1") && !rows.contains("browser-2"), "{rows}");
    b.click("#orders tbody a").await;
    assert_eq!(b.path().await, format!("/console/orders/{order_id}"));
    b.fill("#r-amount", "2.50").await;
    b.fill("#r-reason", "one cup broken").await;
    b.click("#refund").await;
    assert!(b.has("#done").await, "{}", b.body().await);
    let (page, chrome) = (format!("{base}/console/orders/{order_id}"), &b);
    let refunded = eventually(WAIT, || {
        let page = page.clone();
        async move {
            chrome.goto(&page).await;
            let shown = chrome.text("#refunded-amount").await;
            (shown == "2.50 CNY").then_some(shown)
        }
    })
    .await;
    assert_eq!(refunded.as_deref(), Some("2.50 CNY"));
    assert!(b.text("#timeline").await.contains("console:ops@example.com"));
    b.shot("order").await;
    let got = hook.wait_for(2, WAIT).await;
    let delivered = got
        .iter()
        .find(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["type"] == "refund.succeeded")
        .expect("refund.succeeded at the notify_url");
    let signature = delivered.headers["payledger-signature"].to_str().unwrap();
    assert!(payledger_notifier::verify(
        &m.webhook_secret,
        signature,
        &delivered.body,
        Utc::now().timestamp(),
        300
    ));
    b.goto(&format!("{base}/console?mode=test")).await;
    assert!(b.has("#chart-orders canvas").await, "uPlot drew the orders chart");
    assert!(
        b.has("#chart-channels canvas").await,
        "uPlot drew the per-channel chart"
    );
    assert!(b.has("#chart-volume canvas").await, "uPlot drew the volume chart");
    let today = b.text("#period-1 + table tbody").await;
    assert!(today.contains("sandbox"), "today's figures per channel: {today}");
    b.shot("overview-charts").await;
    for (name, path) in [
        ("merchants", "/console/merchants".to_string()),
        ("merchant", "/console/merchants/shop_1".to_string()),
        ("users", "/console/users".to_string()),
        ("channels", "/console/channels".to_string()),
        ("refunds", "/console/refunds?mode=test".to_string()),
        ("notifications", "/console/notifications?mode=test".to_string()),
        ("ledger", format!("/console/ledger?mode=test&reference={order_id}")),
    ] {
        b.goto(&format!("{base}{path}")).await;
        b.shot(name).await;
    }
    assert!(b.text("#entries").await.contains("RefundSucceeded"));
    b.goto(&format!("{base}/console/channels")).await;
    let calls = b.text("#calls").await;
    assert!(
        calls.contains("create") && calls.contains("refund") && calls.contains("ok"),
        "{calls}"
    );
    b.goto(&format!("{base}/console/audit")).await;
    let audit = b.text("#audit").await;
    assert!(audit.contains("ops@example.com") && audit.contains("refund"), "{audit}");
    assert!(
        audit.contains(&format!("order:{order_id}")) && audit.contains("2.50 CNY"),
        "{audit}"
    );
    b.shot("audit").await;

    // A statement with planted differences: uploaded, listed, one resolved, the open count drops.
    let trade_no = payledger_tests::flows::get_order(&s, &m.api_key, &order_id).await.json["channel_trade_no"]
        .as_str()
        .unwrap()
        .to_string();
    let at = Utc::now().to_rfc3339();
    let csv = format!(
        "type,out_trade_no,channel_trade_no,out_refund_no,channel_refund_no,amount_minor,currency,fee_minor,status,occurred_at\n\
         payment,{order_id},{trade_no},,,1100,CNY,,SUCCESS,{at}\n\
         payment,{},SBX-NOT-OURS,,,777,CNY,,SUCCESS,{at}\n",
        uuid::Uuid::new_v4()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sandbox-statement.csv");
    std::fs::write(&file, csv).unwrap();
    b.goto(&format!("{base}/console/reconciliation")).await;
    b.run("document.getElementById('s-channel').value = 'sandbox';", vec![])
        .await;
    b.c()
        .find(By::Css("#s-file"))
        .await
        .unwrap()
        .send_keys(file.display().to_string())
        .await
        .unwrap();
    b.click("#upload").await;
    assert!(
        b.path().await.starts_with("/console/reconciliation/"),
        "{}",
        b.body().await
    );
    let differences = b.text("#differences").await;
    assert!(
        differences.contains("amount_differs") && differences.contains("missing_in_ledger"),
        "{differences}"
    );
    let open: usize = b.text("#run-open").await.parse().unwrap();
    assert!(
        open >= 3,
        "the amount, the unknown payment, the refund the statement lacks: {open}"
    );
    b.shot("reconciliation-run").await;
    b.fill("#n-0", "raised with the channel").await;
    b.click("#resolve-0").await;
    assert_eq!(b.text("#run-open").await.parse::<usize>().unwrap(), open - 1);
    assert!(b.text("#difference-0").await.contains("raised with the channel"));
    b.goto(&format!("{base}/console/reconciliation")).await;
    assert_eq!(b.text("#open-differences").await.parse::<usize>().unwrap(), open - 1);
    b.shot("reconciliation").await;

    // A form posted without its CSRF token is refused.
    b.run(
        "window.__payledger_before = true;\
         document.querySelector('form[action=\"/console/logout\"] input[name=csrf]').remove();\
         document.querySelector('form[action=\"/console/logout\"] button').click();",
        vec![],
    )
    .await;
    b.wait_for_new_page().await;
    assert_eq!(b.path().await, "/console/logout");
    assert_eq!(b.text("h1").await, "403");
    b.goto(&format!("{base}/console")).await;
    b.click("form[action=\"/console/logout\"] button").await;
    assert_eq!(b.path().await, "/console/login");

    // In again with a code (of the next step: the enrolment's was used), in Chinese.
    b.click("a[hreflang=zh-CN]").await;
    assert_eq!(b.text("h1").await, "登录");
    b.fill("#email", "ops@example.com").await;
    b.fill("#password", NEW_PASSWORD).await;
    b.click("#sign-in").await;
    assert_eq!(b.path().await, "/console/totp");
    let code = auth::totp_code(&secret, Utc::now().timestamp() as u64 + 30).unwrap();
    b.fill("#code", &code).await;
    b.click("#verify").await;
    assert_eq!(b.path().await, "/console");
    for (name, path) in [
        ("overview", "/console?mode=test".to_string()),
        ("orders", "/console/orders?mode=test".to_string()),
        ("order", format!("/console/orders/{order_id}")),
        ("audit", "/console/audit".to_string()),
        ("refunds", "/console/refunds?mode=test".to_string()),
        ("notifications", "/console/notifications?mode=test".to_string()),
        ("ledger", format!("/console/ledger?mode=test&reference={order_id}")),
        ("channels", "/console/channels".to_string()),
        ("reconciliation", "/console/reconciliation".to_string()),
        ("users", "/console/users".to_string()),
        ("merchants", "/console/merchants".to_string()),
    ] {
        b.goto(&format!("{base}{path}")).await;
        let text = b.body().await;
        for label in ["概览", "订单", "审计日志", "退出登录"] {
            assert!(text.contains(label), "{path} shows {label}");
        }
        assert!(!text.contains("Log out"), "{path} has no English label left");
        b.shot(&format!("{name}-zh")).await;
    }

    // A viewer: no refund button, and a forged refund form is refused.
    let b = {
        b.close().await;
        Chrome::start().await.expect("a second browser")
    };
    let one_time = add_user(&s, "viewer@example.com", ConsoleRole::Viewer, None).await;
    first_login(&b, &base, "viewer@example.com", &one_time, false).await;
    b.goto(&format!("{base}/console/orders/{order_id}")).await;
    assert!(!b.has("#refund").await, "a viewer has no refund button");
    b.run(
            "window.__payledger_before = true; const f = document.createElement('form'); f.method = 'post';\
             f.action = arguments[0];\
             for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value], ['amount', '1.00']]) {\
               const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }\
             document.body.appendChild(f); f.submit();",
            vec![json!(format!("/console/orders/{order_id}/refund"))],
        )
        .await;
    b.wait_for_new_page().await;
    assert_eq!(b.path().await, format!("/console/orders/{order_id}/refund"));
    assert_eq!(b.text("h1").await, "403", "{}", b.body().await);
    b.shot("forbidden").await;

    // Idle past the limit: the next page is the login page.
    let idle = Utc::now().timestamp() - auth::SESSION_IDLE_SECONDS - 5;
    sqlx::query(&format!("UPDATE console_sessions SET last_seen_at = {idle}"))
        .execute(s.database().pool())
        .await
        .unwrap();
    b.goto(&format!("{base}/console/orders?mode=test")).await;
    assert!(b.path().await.starts_with("/console/login?next="), "{}", b.path().await);

    // Five wrong passwords: the sixth try is throttled, even with the right password.
    for _ in 0..5 {
        b.goto(&format!("{base}/console/login")).await;
        b.fill("#email", "viewer@example.com").await;
        b.fill("#password", "not the password").await;
        b.click("#sign-in").await;
        assert!(b.text("#error").await.contains("wrong"));
    }
    b.goto(&format!("{base}/console/login")).await;
    b.fill("#email", "viewer@example.com").await;
    b.fill("#password", NEW_PASSWORD).await;
    b.click("#sign-in").await;
    assert!(b.text("#error").await.contains("Too many"), "{}", b.body().await);
    b.shot("throttled").await;
    b.close().await;
}

/// A merchant user sees its own merchant's orders only.
async fn a_merchant_user_sees_only_its_orders(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let Some(b) = Chrome::start().await else { return };
    let mine = s.add_merchant("mine").await;
    let theirs = s.add_merchant("theirs").await;
    create_id(&s, &mine.api_key, &order_body("mine-1", 100)).await;
    let their_order = create_id(&s, &theirs.api_key, &order_body("theirs-1", 100)).await;
    let one_time = add_user(&s, "staff@mine.example", ConsoleRole::MerchantViewer, Some("mine")).await;
    assert!(first_login(&b, &s.base, "staff@mine.example", &one_time, false)
        .await
        .is_none());
    b.goto(&format!("{}/console/orders?mode=test", s.base)).await;
    let rows = b.text("#orders tbody").await;
    assert!(rows.contains("mine-1") && !rows.contains("theirs-1"), "{rows}");
    assert!(!b.has("#f-merchant").await, "no merchant filter for a merchant user");
    assert!(!b.has("a[href=\"/console/audit\"]").await);
    b.shot("orders-merchant").await;
    b.goto(&format!("{}/console/orders/{their_order}", s.base)).await;
    assert_eq!(b.text("h1").await, "404");
    b.close().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_console_in_a_browser() {
        super::the_console_in_a_browser(payledger_tests::Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_merchant_user_sees_only_its_orders() {
        super::a_merchant_user_sees_only_its_orders(payledger_tests::Backend::Sqlite).await
    }
}
