//! Crash test: the real `payledger` binary under load, killed with SIGKILL at random moments and
//! restarted on the same database and port, on SQLite (a file in a temp dir) and on a fresh
//! PostgreSQL database.
//!
//! Several clients run create order → sandbox payment → (30%) refund, each with a
//! `notify_url` at a receiver in this test. A request cut off by a kill is sent again after the
//! restart with the same `out_trade_no` / `out_refund_no` (idempotent), until it gets an answer;
//! any answer but a 2xx (or a 502/503/504 while the server comes back) is a failure. After the
//! last restart the load stops and the test checks, polling with deadlines:
//! 1. every command that got a 2xx is in the event store: an `OrderCreated` for each
//!    acknowledged create, one `PaymentSucceeded` for each acknowledged payment, the
//!    `RefundRequested` of each acknowledged refund and, once the refund worker has resumed,
//!    its outcome; and nothing else (no order, payment or refund nobody asked for);
//! 2. no order has two `PaymentSucceeded`;
//! 3. `payledger reconcile --verify` exits 0: every read table equals a replay of the events,
//!    and the journal balances;
//! 4. every merchant notification due (one per outcome event of an order with a `notify_url`)
//!    is in the notify queue as `delivered` and reached the receiver at least once.
//!
//! 5. every event reached NATS exactly once after de-duplication: the server runs the relay
//!    (`--nats-url`, a stream and subject prefix of this run's own) and, once it has caught up,
//!    the stream holds exactly one message per event, with `Nats-Msg-Id` `<order_id>:<sequence>`.
//!    When NATS is unreachable this part fails under `CI=true` and is skipped loudly otherwise.
//!
//! Short form (the default, run in CI): 3 kills per backend. Long form: `CRASH_KILLS=20`. The
//! seed of the kill moments and of the load is printed; `CRASH_SEED=<n>` replays the same
//! choices (the timings still vary with the machine).
//!
//! PostgreSQL: `PAYLEDGER_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`), where the test creates and
//! drops a database (`payledger_testkit::TestDb`). When it is unreachable the PostgreSQL run fails
//! if `CI=true` and is skipped with a loud message otherwise; the same holds for NATS.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use payledger_domain::PaymentOrderEvent;
use payledger_store::{Database, LogEvent, LogPosition, PoolConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Kills per backend in the short form.
const SHORT_KILLS: usize = 3;
/// Concurrent load clients.
const CLIENTS: usize = 4;
/// How long a client keeps re-sending one request before it counts as a failure.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long the server may take to answer `/readyz` after a (re)start.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long the system may take to settle after the load stopped: refunds completed, read
/// tables caught up, notifications delivered (a delivery cut off by a kill waits for its lease,
/// 6 s here).
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// The notification retry schedule: short, so that every notification finishes in the test.
const NOTIFY_SCHEDULE: &str = "200ms,200ms,500ms,1s,1s,2s";

use payledger_testkit::{Backend, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_kill_9_under_load() {
    crash_test(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_kill_9_under_load() {
    crash_test(Backend::Postgres).await;
}

fn kills() -> usize {
    std::env::var("CRASH_KILLS")
        .ok()
        .map(|v| v.parse().expect("CRASH_KILLS is a number"))
        .unwrap_or(SHORT_KILLS)
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED").ok().map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
        },
        |v| v.parse().expect("CRASH_SEED is a number"),
    )
}

async fn crash_test(backend: Backend) {
    let kills = kills();
    let seed = seed();
    eprintln!("crash test {backend:?}: {kills} kills, CRASH_SEED={seed}");
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    // A hard bound on the whole run: startup, the kills with their restarts, settling.
    let limit = Duration::from_secs(90) + Duration::from_secs(3) * kills as u32;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    let run = run(backend, &db.url, dir.path(), &log, kills, seed);
    let outcome = tokio::time::timeout(limit, run).await;
    let tail = server_log_tail(&log);
    match outcome {
        Err(_) => panic!("crash test {backend:?} (CRASH_SEED={seed}) took longer than {limit:?}\n{tail}"),
        Ok(Err(e)) => panic!("crash test {backend:?} (CRASH_SEED={seed}) failed: {e}\n{tail}"),
        Ok(Ok(summary)) => eprintln!("crash test {backend:?} (CRASH_SEED={seed}): {summary}"),
    }
}

fn server_log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    format!("--- last lines of the server log ---\n{}", lines[from..].join("\n"))
}

/// Everything the clients were told, and what went wrong.
#[derive(Default)]
struct Acknowledged {
    /// out_trade_no → order_id, from a 2xx on `POST /v1/orders`.
    creates: HashMap<String, String>,
    /// order ids with a 2xx on `POST /sandbox/pay/{id}`.
    pays: HashSet<String>,
    /// refund_id → (order_id, out_refund_no), from a 2xx on `POST /v1/orders/{id}/refunds`.
    refunds: HashMap<String, (String, String)>,
    /// Answers that must not happen.
    failures: Vec<String>,
}

#[derive(Default)]
struct Counters {
    /// Requests sent again because the server was down or answered 502/503/504.
    resent: AtomicU64,
    /// Flows (create → pay → maybe refund) finished.
    flows: AtomicU64,
    /// Creates and refunds resent after a kill and answered 200 (already there): the first
    /// attempt was committed, its answer lost.
    answers_lost: AtomicU64,
}

async fn run(backend: Backend, url: &str, dir: &Path, log: &Path, kills: usize, seed: u64) -> Result<String, String> {
    let started = Instant::now();
    let creds = merchants_add(dir, url, "crash_shop")?;
    let api_key = creds["test_api_key"]
        .as_str()
        .ok_or("merchants add printed no test_api_key")?
        .to_string();
    let receiver = Receiver::start().await;

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| e.to_string())?;
    let nats = NatsCheck::create().await;
    let nats_args = nats.as_ref().map(NatsCheck::serve_args).unwrap_or_default();
    let mut server = Server::start(dir, url, port, log, &nats_args)?;
    wait_ready(&http, &base).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    let counters = Arc::new(Counters::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let client = Client {
                n,
                http: http.clone(),
                base: base.clone(),
                api_key: api_key.clone(),
                notify_url: receiver.url.clone(),
                acked: Arc::clone(&acked),
                counters: Arc::clone(&counters),
                rng: StdRng::seed_from_u64(seed ^ (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            };
            tokio::spawn(client.run(Arc::clone(&stop)))
        })
        .collect();

    // Kill at random moments, restart on the same port (the sandbox calls back to it). About
    // one kill in four (not the first) hits a server still starting: subscribers catching up,
    // the notifier's first scan, the first requests.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut during_startup = 0;
    for k in 1..=kills {
        let early = rng.gen_bool(0.25) && k > 1;
        let delay = Duration::from_millis(if early {
            rng.gen_range(0..=300)
        } else {
            rng.gen_range(200..=1500)
        });
        if early {
            during_startup += 1;
        } else if k > 1 {
            wait_ready(&http, &base).await?;
        }
        tokio::time::sleep(delay).await;
        let flows = counters.flows.load(Ordering::Relaxed);
        server.kill();
        let when = if early { "after its start" } else { "after it was ready" };
        eprintln!("{backend:?}: kill {k}/{kills} {delay:?} {when} ({flows} flows done)");
        server = Server::start(dir, url, port, log, &nats_args)?;
    }
    wait_ready(&http, &base).await?;
    // Some load on the last server, then stop it: clients finish the flow they are in.
    let flows = counters.flows.load(Ordering::Relaxed);
    poll(Duration::from_secs(10), "load after the last restart", || async {
        (counters.flows.load(Ordering::Relaxed) >= flows + 2 * CLIENTS as u64)
            .then_some(())
            .ok_or_else(|| "clients still busy".to_string())
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        tokio::time::timeout(RETRY_FOR + Duration::from_secs(10), c)
            .await
            .map_err(|_| "a client did not finish".to_string())?
            .map_err(|e| format!("a client panicked: {e}"))?;
    }
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    if !acked.failures.is_empty() {
        return Err(format!(
            "{} requests got answers they must not get:\n{}",
            acked.failures.len(),
            acked.failures.join("\n")
        ));
    }

    let store = Database::connect(Some(url), PoolConfig::default())
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;

    // 4 (and the refund worker's resumption): every notification due is delivered.
    let delivered = poll(SETTLE_WITHIN, "every due notification delivered", || {
        notifications_delivered(&store, &acked, &receiver)
    })
    .await?;

    // 3: the read tables equal a replay, the journal balances.
    poll(SETTLE_WITHIN, "reconcile --verify clean", || {
        let (dir, url) = (dir.to_path_buf(), url.to_string());
        async move {
            tokio::task::spawn_blocking(move || reconcile_verify(&dir, &url))
                .await
                .map_err(|e| e.to_string())?
        }
    })
    .await?;

    // 1 and 2 over the settled store.
    let events = all_events(&store).await?;
    check_acknowledged_in_store(&acked, &events)?;
    let doubles: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, COUNT(*) FROM events WHERE event_type = 'PaymentSucceeded' \
         GROUP BY aggregate_id HAVING COUNT(*) > 1",
    )
    .fetch_all(store.pool())
    .await
    .map_err(|e| e.to_string())?;
    if !doubles.is_empty() {
        return Err(format!("orders with more than one PaymentSucceeded: {doubles:?}"));
    }
    // 5: every event in NATS exactly once.
    let published = match &nats {
        Some(n) => n.exactly_once(&store, &events).await?.to_string(),
        None => "not checked (NATS unreachable)".to_string(),
    };
    store.close().await;
    server.kill();

    Ok(format!(
        "{kills} kills ({during_startup} while starting) in {:.1?}; acknowledged {} creates, {} payments, {} refunds ({} requests resent, {} answers lost and recovered); \
         store: {} orders, {} events; NATS messages: {}; notifications: {} delivered, {} deliveries received",
        started.elapsed(),
        acked.creates.len(),
        acked.pays.len(),
        acked.refunds.len(),
        counters.resent.load(Ordering::Relaxed),
        counters.answers_lost.load(Ordering::Relaxed),
        events.iter().map(|e| e.order_id).collect::<HashSet<_>>().len(),
        events.len(),
        published,
        delivered,
        receiver.deliveries(),
    ))
}

/// The NATS part: a stream and subject prefix of this run's own, deleted afterwards.
struct NatsCheck {
    js: async_nats::jetstream::Context,
    url: String,
    stream: String,
    prefix: String,
    /// The channel service's subject prefix: this run's channel calls reach only its own server.
    channel_prefix: String,
}

impl NatsCheck {
    /// `None` (after a loud message) when NATS is unreachable outside CI.
    ///
    /// # Panics
    /// When NATS is unreachable and `CI=true`.
    async fn create() -> Option<Self> {
        let client = payledger_testkit::connect_nats("the crash test's NATS check").await?;
        let url = payledger_testkit::nats_url();
        let id = uuid::Uuid::new_v4().simple().to_string();
        Some(Self {
            js: async_nats::jetstream::new(client),
            url,
            stream: format!("PAYLEDGER_CRASH_{}", id.to_uppercase()),
            prefix: format!("payledger_crash.{id}.events"),
            channel_prefix: format!("payledger_crash.{id}.channel"),
        })
    }

    fn serve_args(&self) -> Vec<String> {
        [
            "--nats-url",
            &self.url,
            "--nats-stream",
            &self.stream,
            "--nats-subject-prefix",
            &self.prefix,
            "--channel-subject-prefix",
            &self.channel_prefix,
        ]
        .map(str::to_string)
        .to_vec()
    }

    /// Waits until the relay's checkpoint is at the log's end, then checks that the stream
    /// holds exactly one message per event, each with its `<order_id>:<sequence>` id. Returns
    /// the number of messages.
    async fn exactly_once(&self, store: &Database, events: &[LogEvent]) -> Result<usize, String> {
        let last = events.last().map_or(LogPosition::default(), |e| e.position);
        poll(SETTLE_WITHIN, "the relay at the end of the log", || async {
            let at = payledger_store::subscription::checkpoint(store.pool(), "nats_relay")
                .await
                .map_err(|e| e.to_string())?;
            (at >= last)
                .then_some(())
                .ok_or_else(|| format!("relay at {at:?}, log at {last:?}"))
        })
        .await?;
        let mut stream = self.js.get_stream(&self.stream).await.map_err(|e| e.to_string())?;
        let state = stream.info().await.map_err(|e| e.to_string())?.state.clone();
        let mut ids = HashSet::new();
        for seq in state.first_sequence..=state.last_sequence {
            let m = stream.get_raw_message(seq).await.map_err(|e| e.to_string())?;
            let id = m
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_string())
                .ok_or_else(|| format!("message {seq} has no Nats-Msg-Id"))?;
            if !ids.insert(id.clone()) {
                return Err(format!("{id} stored twice in NATS"));
            }
        }
        let expected: HashSet<String> = events
            .iter()
            .map(|e| format!("{}:{}", e.order_id, e.sequence))
            .collect();
        if ids != expected {
            let missing: Vec<_> = expected.difference(&ids).take(10).collect();
            let extra: Vec<_> = ids.difference(&expected).take(10).collect();
            return Err(format!(
                "NATS holds {} messages for {} events; missing {missing:?}, extra {extra:?}",
                ids.len(),
                expected.len()
            ));
        }
        Ok(ids.len())
    }
}

impl Drop for NatsCheck {
    fn drop(&mut self) {
        // Best effort, on a thread of its own: Drop cannot await inside the test's runtime.
        let (url, name) = (self.url.clone(), self.stream.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let client = async_nats::connect(url.as_str()).await.ok()?;
                async_nats::jetstream::new(client).delete_stream(&name).await.ok()
            })
        })
        .join();
    }
}

/// Every event in the store, in log order.
/// Every committed event, in log order. Waits out events held back by another session's open
/// transaction (a server's read-model batch, say): an answer does not wait for the projection,
/// so its events may still be behind the log's horizon for a few milliseconds.
async fn all_events(store: &Database) -> Result<Vec<LogEvent>, String> {
    let log = store.log();
    let mut events: Vec<LogEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let after = events.last().map_or(LogPosition::default(), |e| e.position);
        let page = log.read_after(after, 1_000).await.map_err(|e| e.to_string())?;
        if page.is_empty() {
            if !log.held_back(after).await.map_err(|e| e.to_string())? {
                return Ok(events);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("committed events stayed held back for 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        events.extend(page);
    }
}

/// Check 1: what was acknowledged is in the store, once; nothing else is.
fn check_acknowledged_in_store(acked: &Acknowledged, events: &[LogEvent]) -> Result<(), String> {
    let mut by_order: HashMap<String, Vec<&LogEvent>> = HashMap::new();
    for e in events {
        by_order.entry(e.order_id.to_string()).or_default().push(e);
    }
    let mut problems = Vec::new();
    for (out_trade_no, order_id) in &acked.creates {
        let created = by_order.get(order_id).and_then(|es| {
            es.iter().find_map(|e| match &e.event {
                PaymentOrderEvent::OrderCreated { terms, .. } => Some(terms.out_trade_no.clone()),
                _ => None,
            })
        });
        if created.as_deref() != Some(out_trade_no.as_str()) {
            problems.push(format!(
                "create {out_trade_no} → {order_id} acknowledged, store has {created:?}"
            ));
        }
    }
    let stored_orders: HashSet<&String> = by_order.keys().collect();
    let acked_orders: HashSet<&String> = acked.creates.values().collect();
    for extra in stored_orders.difference(&acked_orders) {
        problems.push(format!("order {extra} in the store was never acknowledged"));
    }
    let succeeded = |order_id: &str| {
        by_order.get(order_id).map_or(0, |es| {
            es.iter()
                .filter(|e| matches!(e.event, PaymentOrderEvent::PaymentSucceeded { .. }))
                .count()
        })
    };
    for order_id in &acked.pays {
        let n = succeeded(order_id);
        if n != 1 {
            problems.push(format!(
                "payment of {order_id} acknowledged, store has {n} PaymentSucceeded"
            ));
        }
    }
    for order_id in by_order.keys() {
        if !acked.pays.contains(order_id) && succeeded(order_id) > 0 {
            problems.push(format!(
                "order {order_id} paid in the store, payment never acknowledged"
            ));
        }
    }
    let mut stored_refunds = HashMap::new();
    for e in events {
        if let PaymentOrderEvent::RefundRequested {
            refund_id,
            out_refund_no,
            ..
        } = &e.event
        {
            if stored_refunds
                .insert(refund_id.to_string(), (e.order_id.to_string(), out_refund_no.clone()))
                .is_some()
            {
                problems.push(format!("refund {refund_id} requested twice"));
            }
        }
    }
    for (refund_id, want) in &acked.refunds {
        match stored_refunds.get(refund_id) {
            Some(got) if got == want => {}
            got => problems.push(format!("refund {refund_id} {want:?} acknowledged, store has {got:?}")),
        }
    }
    for refund_id in stored_refunds.keys() {
        if !acked.refunds.contains_key(refund_id) {
            problems.push(format!("refund {refund_id} in the store was never acknowledged"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the store and the acknowledgements differ:\n{}",
            problems.join("\n")
        ))
    }
}

/// Check 4, once: `Ok(number of notifications)` when every acknowledged refund has its outcome
/// and every notification due is queued, `delivered`, and was received; `Err(what is missing)`.
async fn notifications_delivered(store: &Database, acked: &Acknowledged, receiver: &Receiver) -> Result<usize, String> {
    let events = all_events(store).await?;
    let outcomes: HashSet<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            PaymentOrderEvent::RefundSucceeded { refund_id, .. }
            | PaymentOrderEvent::RefundFailed { refund_id, .. } => Some(refund_id.to_string()),
            _ => None,
        })
        .collect();
    if let Some(pending) = acked.refunds.keys().find(|r| !outcomes.contains(*r)) {
        return Err(format!("refund {pending} has no outcome yet"));
    }
    let due: HashSet<String> = events
        .iter()
        .filter(|e| payledger_notifier::notification_type(&e.event).is_some())
        .map(|e| e.event_id.to_string())
        .collect();
    let jobs: Vec<(String, String)> = sqlx::query_as("SELECT notification_id, status FROM notify_job")
        .fetch_all(store.pool())
        .await
        .map_err(|e| e.to_string())?;
    let jobs: HashMap<String, String> = jobs.into_iter().collect();
    let received = receiver.ids();
    for id in &due {
        match jobs.get(id).map(String::as_str) {
            None => return Err(format!("notification {id} not queued")),
            Some("delivered") => {}
            Some(status) => return Err(format!("notification {id} is {status}")),
        }
        if !received.contains(id) {
            return Err(format!("notification {id} delivered but never received"));
        }
    }
    if let Some(extra) = jobs.keys().find(|id| !due.contains(*id)) {
        return Err(format!("notification {extra} queued for no outcome event"));
    }
    if let Some(extra) = received.iter().find(|id| !due.contains(*id)) {
        return Err(format!("received notification {extra} for no outcome event"));
    }
    Ok(due.len())
}

/// Check 3, once: `payledger reconcile --verify` exits 0.
fn reconcile_verify(dir: &Path, url: &str) -> Result<(), String> {
    let out = payledger(dir, url)
        .args(["reconcile", "--verify"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "reconcile --verify exited {:?}:\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Calls `check` every 200 ms until it is `Ok` or `within` passed; the error names `what` and
/// the last reason.
async fn poll<T, F, Fut>(within: Duration, what: &str, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(format!("{what}: not within {within:?}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// One load client: create → pay → maybe refund, over and over until `stop`.
struct Client {
    n: usize,
    http: reqwest::Client,
    base: String,
    api_key: String,
    notify_url: String,
    acked: Arc<Mutex<Acknowledged>>,
    counters: Arc<Counters>,
    rng: StdRng,
}

/// What a request came back with, after re-sending it through restarts.
enum Answer {
    /// Status, body, and whether the request had to be resent.
    Ok(u16, Value, bool),
    Failed(String),
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let out_trade_no = format!("C{}-{i}", self.n);
            self.flow(&out_trade_no).await;
            self.counters.flows.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn flow(&mut self, out_trade_no: &str) {
        let amount: i64 = self.rng.gen_range(100..=10_000);
        let refund = self.rng.gen_bool(0.3);
        let refund_amount = if self.rng.gen_bool(0.5) {
            amount
        } else {
            self.rng.gen_range(1..amount)
        };

        let body = json!({
            "out_trade_no": out_trade_no, "amount": amount, "currency": "CNY", "channel": "sandbox",
            "subject": "crash test", "notify_url": self.notify_url,
        });
        let (order_id, pay_url) = match self.send("POST", "/v1/orders", true, &body).await {
            Answer::Ok(code @ (200 | 201), v, resent) => match (v["order_id"].as_str(), v["pay_url"].as_str()) {
                (Some(id), Some(pay_url)) => {
                    self.lost_answer(code, resent);
                    (id.to_string(), pay_url.to_string())
                }
                _ => return self.fail(format!("create {out_trade_no}: no order_id or pay_url in {v}")),
            },
            Answer::Ok(code, v, _) => return self.fail(format!("create {out_trade_no}: {code} {v}")),
            Answer::Failed(e) => return self.fail(format!("create {out_trade_no}: {e}")),
        };
        {
            let mut acked = self.acked.lock().expect("lock");
            if let Some(first) = acked.creates.insert(out_trade_no.to_string(), order_id.clone()) {
                if first != order_id {
                    acked
                        .failures
                        .push(format!("create {out_trade_no}: order {order_id}, before {first}"));
                }
            }
        }

        // The pay URL's path and token, on this run's address (which a restart keeps).
        let path = pay_url
            .split_once("/sandbox/")
            .map(|(_, rest)| format!("/sandbox/{rest}"))
            .unwrap_or_default();
        match self.send("POST", &path, false, &json!({"result": "success"})).await {
            Answer::Ok(200, v, _) if v["order_status"] == "paid" => {
                self.acked.lock().expect("lock").pays.insert(order_id.clone());
            }
            Answer::Ok(code, v, _) => return self.fail(format!("pay {order_id}: {code} {v}")),
            Answer::Failed(e) => return self.fail(format!("pay {order_id}: {e}")),
        }

        if !refund {
            return;
        }
        let out_refund_no = format!("R-{out_trade_no}");
        let body = json!({"out_refund_no": out_refund_no, "amount": refund_amount, "reason": "crash test"});
        let path = format!("/v1/orders/{order_id}/refunds");
        match self.send("POST", &path, true, &body).await {
            Answer::Ok(code @ (200 | 201), v, resent) => match v["refund_id"].as_str() {
                Some(refund_id) => {
                    self.lost_answer(code, resent);
                    self.acked
                        .lock()
                        .expect("lock")
                        .refunds
                        .insert(refund_id.to_string(), (order_id, out_refund_no));
                }
                None => self.fail(format!("refund {out_refund_no}: no refund_id in {v}")),
            },
            Answer::Ok(code, v, _) => self.fail(format!("refund {out_refund_no}: {code} {v}")),
            Answer::Failed(e) => self.fail(format!("refund {out_refund_no}: {e}")),
        }
    }

    fn lost_answer(&self, code: u16, resent: bool) {
        if resent && code == 200 {
            self.counters.answers_lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fail(&self, what: String) {
        self.acked.lock().expect("lock").failures.push(what);
    }

    /// Sends the request until it gets an answer other than "the server is down or coming back"
    /// (no connection, cut off, 502/503/504), for at most [`RETRY_FOR`].
    async fn send(&self, method: &str, path: &str, auth: bool, body: &Value) -> Answer {
        let deadline = Instant::now() + RETRY_FOR;
        let mut last = String::new();
        let mut resent = false;
        while Instant::now() < deadline {
            let mut req = self
                .http
                .request(method.parse().expect("method"), format!("{}{path}", self.base))
                .json(body);
            if auth {
                req = req.bearer_auth(&self.api_key);
            }
            match req.send().await {
                Ok(r) if matches!(r.status().as_u16(), 502..=504) => {
                    last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
                }
                Ok(r) => {
                    let code = r.status().as_u16();
                    match r.text().await {
                        Ok(text) => {
                            return Answer::Ok(code, serde_json::from_str(&text).unwrap_or(Value::Null), resent)
                        }
                        Err(e) => last = format!("reading the answer: {e}"),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            resent = true;
            self.counters.resent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Answer::Failed(format!("no answer within {RETRY_FOR:?}; last: {last}"))
    }
}

/// The `payledger` binary with `DATABASE_URL`, in `dir`.
fn payledger(dir: &Path, url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_payledger"));
    c.current_dir(dir).env("DATABASE_URL", url).env("RUST_LOG", "warn");
    c
}

fn merchants_add(dir: &Path, url: &str, merchant_id: &str) -> Result<Value, String> {
    let out = payledger(dir, url)
        .args(["merchants", "add", merchant_id])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("merchants add: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("merchants add printed no JSON: {e}"))
}

/// A free port on 127.0.0.1, for the server to keep across restarts.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A running `payledger serve`; killed (SIGKILL) when dropped.
struct Server(Child);

impl Server {
    fn start(dir: &Path, url: &str, port: u16, log: &Path, extra: &[String]) -> Result<Self, String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?;
        let listen = format!("127.0.0.1:{port}");
        let child = payledger(dir, url)
            .args(["serve", "--listen", &listen, "--notify-schedule", NOTIFY_SCHEDULE])
            // A delivery cut off by a kill is retried when its lease ends: keep that short.
            .args(["--notify-timeout", "1s", "--notify-lease", "6s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting payledger serve: {e}"))?;
        Ok(Self(child))
    }

    /// `kill -9` (std's `Child::kill` sends SIGKILL on Unix), and wait for the process to end.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> Result<(), String> {
    poll(READY_WITHIN, "server ready", || async {
        match http.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(format!("/readyz answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// The merchant's notification endpoint: answers 200 and counts each notification id.
struct Receiver {
    url: String,
    seen: Arc<Mutex<HashMap<String, u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        type Seen = Arc<Mutex<HashMap<String, u32>>>;
        async fn hook(State(seen): State<Seen>, body: axum::body::Bytes) -> StatusCode {
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("<no id: {}>", String::from_utf8_lossy(&body)));
            *seen.lock().expect("lock").entry(id).or_default() += 1;
            StatusCode::OK
        }
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, seen, task }
    }

    fn ids(&self) -> HashSet<String> {
        self.seen.lock().expect("lock").keys().cloned().collect()
    }

    /// Requests received, duplicates included.
    fn deliveries(&self) -> u32 {
        self.seen.lock().expect("lock").values().sum()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_crash_between_the_channel_call_and_the_append_loses_no_order() {
    crash_between_channel_call_and_append(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_crash_between_the_channel_call_and_the_append_loses_no_order() {
    crash_between_channel_call_and_append(Backend::Postgres).await;
}

/// The process dies after the channel opened the order and before the order is recorded: nothing
/// is recorded, and the merchant's retry after the restart places the same order once (the
/// channel is asked again with the same id) and it can be paid.
async fn crash_between_channel_call_and_append(backend: Backend) {
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    let key = merchants_add(dir.path(), &db.url, "shop").expect("merchant")["test_api_key"]
        .as_str()
        .expect("test_api_key")
        .to_string();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let body =
        json!({"out_trade_no": "CUT-1", "amount": 1999, "currency": "CNY", "channel": "sandbox", "subject": "cut"});
    let create = || {
        http.post(format!("{base}/v1/orders"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };

    let faulty = payledger(dir.path(), &db.url)
        .env(
            payledger_command_api::faults::FAULT_ENV,
            payledger_command_api::faults::AFTER_CHANNEL_CREATE,
        )
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("payledger serve");
    let mut faulty = Server(faulty);
    wait_ready(&http, &base).await.expect("ready");
    let cut = create().await;
    assert!(cut.is_err(), "the process died before answering: {cut:?}");
    let status = faulty.0.wait().expect("exit status");
    assert!(!status.success(), "aborted at the fault point: {status:?}");

    let store = Database::connect(Some(&db.url), PoolConfig::default())
        .await
        .expect("store");
    let events = all_events(&store).await.expect("events");
    assert!(events.is_empty(), "nothing is recorded before the append: {events:?}");

    let _server = Server::start(dir.path(), &db.url, port, &log, &[]).expect("restart");
    wait_ready(&http, &base).await.expect("ready after restart");
    let retry = create().await.expect("retry");
    assert_eq!(retry.status(), 201, "the retry creates the order");
    let order: Value = retry.json().await.expect("order");
    assert_eq!(order["status"], "awaiting_payment");
    let again = create().await.expect("again");
    assert_eq!(again.status(), 200, "the same request again is the same order");

    let events = all_events(&store).await.expect("events");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e.event {
            PaymentOrderEvent::OrderCreated { .. } => "OrderCreated",
            PaymentOrderEvent::ChannelOrderOpened { .. } => "ChannelOrderOpened",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["OrderCreated", "ChannelOrderOpened"], "one order, placed once");

    let pay_url = order["pay_url"].as_str().expect("pay_url");
    let paid: Value = http
        .post(pay_url)
        .json(&json!({"result": "success"}))
        .send()
        .await
        .expect("pay")
        .json()
        .await
        .expect("pay answer");
    assert_eq!(paid["order_status"], "paid", "{paid}");
}
