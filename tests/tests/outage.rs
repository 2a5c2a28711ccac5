//! Outages of what payledger depends on, without touching the shared servers: the server reaches
//! its PostgreSQL database through a TCP proxy (`TestServer::start_behind_proxy`) that the test
//! stops (every connection cut, the port closed) and starts again. PostgreSQL only: it is the
//! deployment with a database server that can go away. A merchant endpoint that hangs is here too
//! (both backends).
//! NATS outages are in `relay.rs`.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use payledger_projections::{rebuild, JournalProjection, OrderProjection};
use payledger_tests::flows::{create_id, order_body, pay, wait_status, WAIT};
use payledger_tests::{catch_up, eventually, Backend, HangingEndpoint, TestServer, WebhookReceiver};
use serde_json::{json, Value};

/// Concurrent merchant clients during the outage test.
const CLIENTS: usize = 4;
/// How long the database stays away when cut. Longer than the longest stretch a request can
/// spend without touching it (the 2 s read-your-writes wait, then an acquire that outlasts a
/// short outage), so every client meets it.
const OUTAGE_CUT: Duration = Duration::from_secs(5);
/// How long it stays silent: longer than [`ANSWER_MAX`], so a request stuck on a silent
/// connection would break that bound if the request deadline did not end it.
const OUTAGE_SILENT: Duration = Duration::from_secs(10);
/// The whole-request deadline in these tests (`serve`'s default is 30 s).
const REQUEST_TIMEOUT_MS: u64 = 4_000;
/// The pool's acquire timeout in these tests: how long one database operation waits before it
/// fails while the database is away.
const ACQUIRE_TIMEOUT_MS: u64 = 1_500;
/// Longest any request may take, outage or not: the request deadline, generous on top for a
/// loaded 2-core machine.
const ANSWER_MAX: Duration = Duration::from_secs(8);
/// How soon after the database returns the server must answer 2xx again, without a restart.
const RECOVERY_MAX: Duration = Duration::from_secs(15);
/// A client gives up on a request after this long: a request that takes it has hung.
const CLIENT_PATIENCE: Duration = Duration::from_secs(30);

/// One request a load client made.
#[derive(Debug, Clone)]
struct Answer {
    what: &'static str,
    started: Instant,
    elapsed: Duration,
    /// `None`: no answer within [`CLIENT_PATIENCE`], or the connection failed.
    status: Option<u16>,
    retry_after: Option<String>,
    content_type: String,
    body: Value,
}

async fn send(what: &'static str, req: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let (status, retry_after, content_type, body) = match req.send().await {
        Ok(r) => {
            let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (status, retry_after, content_type) =
                (r.status().as_u16(), header("retry-after"), header("content-type"));
            let body = r.json::<Value>().await.unwrap_or(Value::Null);
            (Some(status), retry_after, content_type.unwrap_or_default(), body)
        }
        Err(_) => (None, None, String::new(), Value::Null),
    };
    Answer {
        what,
        started,
        elapsed: started.elapsed(),
        status,
        retry_after,
        content_type,
        body,
    }
}

/// What one client learnt: every answer, and the orders the server accepted (id, amount) and
/// those whose payment it confirmed.
#[derive(Default)]
struct Ledger {
    answers: Vec<Answer>,
    accepted: Vec<(String, i64)>,
    paid: Vec<String>,
}

/// Creates and pays orders for `merchant_key` until `stop`, recording every answer.
async fn client(
    base: String,
    key: String,
    notify_url: String,
    n: usize,
    stop: Arc<Mutex<bool>>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let http = reqwest::Client::builder()
        .timeout(CLIENT_PATIENCE)
        .build()
        .expect("client");
    let mut i = 0;
    while !*stop.lock().expect("lock") {
        i += 1;
        let amount = 100 + i;
        let mut body = order_body(&format!("C{n}-{i}"), amount);
        body["notify_url"] = json!(notify_url);
        let created = send(
            "create",
            http.post(format!("{base}/v1/orders")).bearer_auth(&key).json(&body),
        )
        .await;
        let order_id = matches!(created.status, Some(200 | 201))
            .then(|| created.body["order_id"].as_str().map(str::to_string))
            .flatten();
        let pay_url = created.body["pay_url"].as_str().unwrap_or_default().to_string();
        let failed = order_id.is_none();
        ledger.lock().expect("lock").answers.push(created);
        if let Some(order_id) = order_id {
            ledger.lock().expect("lock").accepted.push((order_id.clone(), amount));
            let paid = send("pay", http.post(pay_url.as_str()).json(&json!({"result": "success"}))).await;
            let ok = paid.status == Some(200);
            let mut l = ledger.lock().expect("lock");
            l.answers.push(paid);
            if ok {
                l.paid.push(order_id);
            }
        }
        if failed {
            // A client backs off a little after a failure, as Retry-After asks.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How the database goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// Every connection cut and new ones refused (a restart, a crash).
    Cut,
    /// Every connection open but silent, new ones too (a network dropping packets: half-open).
    /// Ends with the connections cut, as the operating system eventually does.
    Silent,
}

async fn postgres_outage_under_load_answers_503_fast_and_recovers_by_itself() {
    outage_under_load(Outage::Cut).await;
}

async fn a_silent_database_under_load_holds_no_request_past_the_deadline_and_recovers() {
    outage_under_load(Outage::Silent).await;
}

async fn outage_under_load(outage: Outage) {
    let Some((s, mut proxy)) = TestServer::start_behind_proxy(|c| {
        c.pools.acquire_timeout_ms = ACQUIRE_TIMEOUT_MS;
        c.request_timeout_ms = REQUEST_TIMEOUT_MS;
    })
    .await
    else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    let receiver = WebhookReceiver::start(vec![]).await;
    let stop = Arc::new(Mutex::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(client(
                s.base.clone(),
                m.api_key.clone(),
                receiver.url.clone(),
                n,
                Arc::clone(&stop),
                Arc::clone(&ledger),
            ))
        })
        .collect();
    let paid_before = eventually(WAIT, || async {
        (ledger.lock().expect("lock").paid.len() >= 4).then_some(())
    })
    .await;
    assert!(paid_before.is_some(), "the load never got going");

    // The database goes away, then comes back.
    match outage {
        Outage::Cut => proxy.stop().await,
        Outage::Silent => proxy.freeze(),
    }
    let cut_at = Instant::now();
    tokio::time::sleep(match outage {
        Outage::Cut => OUTAGE_CUT,
        Outage::Silent => OUTAGE_SILENT,
    })
    .await;
    proxy.stop().await;
    proxy.start().await;
    let back_at = Instant::now();

    // The server answers 2xx again, by itself: a request started after the database came back.
    let recovered = eventually(RECOVERY_MAX, || async {
        let l = ledger.lock().expect("lock");
        l.answers
            .iter()
            .find(|a| a.started > back_at && a.status.is_some_and(|c| (200..300).contains(&c)))
            .map(|a| a.started + a.elapsed - back_at)
    })
    .await;
    let recovered_after = recovered.expect("the server answers 2xx again after the database returned, without restart");
    // A little more load on the recovered server, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    *stop.lock().expect("lock") = true;
    for c in clients {
        c.await.expect("client task");
    }

    let ledger = std::mem::take(&mut *ledger.lock().expect("lock"));
    let during: Vec<&Answer> = ledger
        .answers
        .iter()
        .filter(|a| a.started >= cut_at && a.started + a.elapsed <= back_at)
        .collect();
    let slowest = ledger.answers.iter().map(|a| a.elapsed).max().unwrap_or_default();
    eprintln!(
        "{outage:?} outage: {} requests, {} within the outage, {} answered 503, {} ended by the request \
         deadline; slowest {slowest:?}; 2xx again {recovered_after:?} after the database returned",
        ledger.answers.len(),
        during.len(),
        ledger.answers.iter().filter(|a| a.status == Some(503)).count(),
        ledger
            .answers
            .iter()
            .filter(|a| a.elapsed >= Duration::from_millis(REQUEST_TIMEOUT_MS))
            .count(),
    );
    for a in &ledger.answers {
        let status = a
            .status
            .unwrap_or_else(|| panic!("{} got no answer in {:?}: it hung", a.what, a.elapsed));
        assert!(
            a.elapsed <= ANSWER_MAX,
            "{} took {:?} (status {status})",
            a.what,
            a.elapsed
        );
        assert!(
            matches!(status, 200 | 201 | 503),
            "{} answered {status}, expected 2xx or 503: {}",
            a.what,
            a.body
        );
        if status == 503 {
            assert_eq!(
                a.retry_after.as_deref(),
                Some("1"),
                "{} 503 without Retry-After",
                a.what
            );
            assert_eq!(a.content_type, "application/problem+json", "{}", a.what);
            assert_eq!(a.body["status"], 503, "{}", a.body);
        }
    }
    // Every client met the outage. A request can start during it and still succeed once the
    // database returns (sqlx keeps trying to connect until the acquire timeout), but one that
    // started and ended inside it cannot.
    let unavailable = ledger.answers.iter().filter(|a| a.status == Some(503)).count();
    assert!(unavailable >= CLIENTS, "only {unavailable} answers were 503");
    assert!(
        during.iter().all(|a| a.status == Some(503)),
        "a request started and answered while the database was away succeeded: {during:?}"
    );

    // Every order the server accepted is intact, and paid when it said so.
    let paid: HashSet<&String> = ledger.paid.iter().collect();
    for (order_id, amount) in &ledger.accepted {
        let view = if paid.contains(order_id) {
            wait_status(&s, &m.api_key, order_id, "paid").await
        } else {
            let r = s
                .call("GET", &format!("/v1/orders/{order_id}"), Some(&m.api_key), None)
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json
        };
        assert_eq!(view["amount"], *amount, "{view}");
    }

    // The read models are what the event log says, and the journal balances.
    let db = s.database();
    catch_up(db, &OrderProjection::default()).await;
    catch_up(db, &JournalProjection::default()).await;
    let report = rebuild::verify(db, &|_| {}).await.expect("verify");
    assert!(report.is_clean(), "{report:?}");

    // Every paid order's notification was delivered, including those due during the outage.
    let paid_in_log: BTreeSet<String> = sqlx::query_scalar("SELECT order_id FROM order_view WHERE status = 'paid'")
        .fetch_all(db.pool())
        .await
        .expect("paid orders")
        .into_iter()
        .collect();
    assert!(paid_in_log.len() >= ledger.paid.len(), "{paid_in_log:?}");
    let notified = eventually(WAIT, || async {
        let got: BTreeSet<String> = receiver
            .received()
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter(|b| b["type"] == "payment.succeeded")
            .filter_map(|b| b["data"]["order_id"].as_str().map(str::to_string))
            .collect();
        (got == paid_in_log).then_some(())
    })
    .await;
    assert!(notified.is_some(), "not every paid order's notification was delivered");
}

async fn a_request_stuck_on_a_silent_database_answers_503_at_the_deadline() {
    // The pool would wait 20 s for a connection: only the request deadline can end the wait.
    let Some((s, proxy)) = TestServer::start_behind_proxy(|c| {
        c.pools.acquire_timeout_ms = 20_000;
        c.request_timeout_ms = 1_000;
    })
    .await
    else {
        return;
    };
    let m = s.add_merchant("shop1").await;
    proxy.freeze();
    let stuck = send(
        "list",
        s.http.get(format!("{}/v1/orders", s.base)).bearer_auth(&m.api_key),
    )
    .await;
    assert_eq!(stuck.status, Some(503), "{stuck:?}");
    assert_eq!(stuck.retry_after.as_deref(), Some("1"));
    assert_eq!(stuck.content_type, "application/problem+json");
    assert_eq!(stuck.body["detail"], "the request did not finish in time; retry later");
    assert!(
        stuck.elapsed >= Duration::from_millis(1_000) && stuck.elapsed <= ANSWER_MAX,
        "answered after {:?}",
        stuck.elapsed
    );
}

async fn readyz_is_503_while_the_database_is_away_and_200_when_it_returns() {
    let Some((s, mut proxy)) =
        TestServer::start_behind_proxy(|c| c.pools.acquire_timeout_ms = ACQUIRE_TIMEOUT_MS).await
    else {
        return;
    };
    let ready = || send("readyz", s.http.get(format!("{}/readyz", s.base)));
    assert_eq!(ready().await.status, Some(200));

    proxy.stop().await;
    let down = ready().await;
    assert_eq!(down.status, Some(503), "{down:?}");
    assert_eq!(down.retry_after.as_deref(), Some("1"));
    assert!(down.elapsed <= ANSWER_MAX, "/readyz took {:?}", down.elapsed);
    // /healthz says only that the process answers: still 200.
    assert_eq!(
        send("healthz", s.http.get(format!("{}/healthz", s.base))).await.status,
        Some(200)
    );

    proxy.start().await;
    let up = eventually(RECOVERY_MAX, || async {
        (ready().await.status == Some(200)).then_some(())
    })
    .await;
    assert!(
        up.is_some(),
        "/readyz never became 200 again after the database returned"
    );
}

async fn a_hanging_merchant_endpoint_times_out_and_is_retried_while_others_are_delivered(backend: Backend) {
    // Long enough that the other merchant's delivery clearly happens while this one hangs, even
    // on a loaded machine.
    const REQUEST_TIMEOUT_MS: u64 = 10_000;
    let Some(s) = TestServer::start_with_config(backend, |c| c.sender.request_timeout_ms = REQUEST_TIMEOUT_MS).await
    else {
        return;
    };
    let hung_shop = s.add_merchant("hung").await;
    let other_shop = s.add_merchant("other").await;
    let hanging = HangingEndpoint::start().await;
    let other = WebhookReceiver::start(vec![]).await;

    let mut body = order_body("T-1", 100);
    body["notify_url"] = json!(hanging.url);
    let hung_order = create_id(&s, &hung_shop.api_key, &body).await;
    assert_eq!(pay(&s, &hung_order, "success").await.status, 200);
    assert_eq!(
        hanging.wait_for(1, WAIT).await,
        1,
        "the hanging endpoint got the first attempt"
    );

    // While that attempt hangs, the other merchant's notification goes out.
    body["notify_url"] = json!(other.url);
    let other_order = create_id(&s, &other_shop.api_key, &body).await;
    assert_eq!(pay(&s, &other_order, "success").await.status, 200);
    assert_eq!(
        other.wait_for(1, WAIT).await.len(),
        1,
        "the other merchant was notified"
    );
    let hung_list = s.call("GET", "/v1/notifications", Some(&hung_shop.api_key), None).await;
    assert_eq!(hung_list.status, 200, "{}", hung_list.text);
    let hung_note = &hung_list.json["data"][0];
    assert_eq!(
        hung_note["attempts"], 0,
        "the other merchant was delivered while the hung attempt was still open: {hung_note}"
    );

    // The hung attempt ends at the request timeout, recorded as failed, and is retried on the
    // schedule (1 s after it).
    let id = hung_note["notification_id"].as_str().expect("notification_id");
    let failed = eventually(WAIT, || async {
        let r = s
            .call(
                "GET",
                &format!("/v1/notifications/{id}"),
                Some(&hung_shop.api_key),
                None,
            )
            .await;
        (r.json["attempts"].as_i64() >= Some(1)).then_some(r.json)
    })
    .await
    .expect("the hung attempt was recorded");
    let first = &failed["attempt_log"][0];
    assert_eq!(first["status_code"], Value::Null, "{first}");
    let error = first["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("timed out") || error.contains("timeout"), "{first}");
    assert!(
        first["latency_ms"]
            .as_i64()
            .is_some_and(|ms| ms >= REQUEST_TIMEOUT_MS as i64 - 100),
        "it waited the request timeout: {first}"
    );
    assert_eq!(failed["status"], "pending", "{failed}");
    let attempted =
        chrono::DateTime::parse_from_rfc3339(first["attempted_at"].as_str().expect("attempted_at")).expect("RFC 3339");
    let next = chrono::DateTime::parse_from_rfc3339(failed["next_attempt_at"].as_str().expect("next_attempt_at"))
        .expect("RFC 3339");
    assert_eq!(
        (next - attempted).num_seconds(),
        1,
        "the schedule's first delay: {failed}"
    );
    assert_eq!(hanging.wait_for(2, WAIT).await, 2, "the retry reached the endpoint");
}

payledger_tests::both_backends!(a_hanging_merchant_endpoint_times_out_and_is_retried_while_others_are_delivered);

mod behind_proxy {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_outage_under_load_answers_503_fast_and_recovers_by_itself() {
        super::postgres_outage_under_load_answers_503_fast_and_recovers_by_itself().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_database_under_load_holds_no_request_past_the_deadline_and_recovers() {
        super::a_silent_database_under_load_holds_no_request_past_the_deadline_and_recovers().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_stuck_on_a_silent_database_answers_503_at_the_deadline() {
        super::a_request_stuck_on_a_silent_database_answers_503_at_the_deadline().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_is_503_while_the_database_is_away_and_200_when_it_returns() {
        super::readyz_is_503_while_the_database_is_away_and_200_when_it_returns().await
    }
}
