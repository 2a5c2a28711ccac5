//! Test harness: a real payledger server (the same `app::start` the binary runs) on SQLite or on a
//! fresh PostgreSQL database, an HTTP client, and a merchant webhook receiver.
//!
//! PostgreSQL: `PAYLEDGER_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`)
//! must point at a server where we may create databases; each test gets its own database. When it
//! is unreachable, tests fail if `CI=true`, and are skipped with a loud message otherwise.

pub mod accounts;
pub mod console;
pub mod flows;
pub mod nats;
pub mod nats_cluster;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use payledger_bus::RelayConfig;
use payledger_command_api::app::{self, Running, ServeConfig};
use payledger_notifier::RetrySchedule;
use payledger_store::sealed::KeySource;
use payledger_store::{merchants, Database, PoolConfig};
use serde_json::Value;

pub use payledger_testkit::{pg_admin_url, Backend, TestDb};

/// A merchant's credentials.
#[derive(Debug, Clone)]
pub struct MerchantCreds {
    pub merchant_id: String,
    /// The test key: the sandbox only (most tests).
    pub api_key: String,
    /// The live key: real channels only.
    pub live_api_key: String,
    /// Signs test-mode notifications (of `api_key`'s orders).
    pub webhook_secret: String,
    /// Signs live-mode notifications.
    pub live_webhook_secret: String,
}

/// A test's changes to the server configuration (channel accounts, monitor schedule), applied at
/// every start and restart.
pub type Configure = Arc<dyn Fn(&mut ServeConfig) + Send + Sync>;

/// How a test's server runs its roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No NATS: the refund worker and the notifier read the global log in-process.
    Embedded(Backend),
    /// PostgreSQL and NATS: the relay publishes to a stream of the test's own
    /// ([`nats::TestStream`]), and the refund worker and the notifier's enqueuer consume it
    /// through durable JetStream consumers.
    Nats,
}

impl Mode {
    /// The database backend of the mode.
    pub fn backend(self) -> Backend {
        match self {
            Mode::Embedded(b) => b,
            Mode::Nats => Backend::Postgres,
        }
    }
}

impl From<Backend> for Mode {
    fn from(backend: Backend) -> Self {
        Mode::Embedded(backend)
    }
}

/// A running server on a test database.
pub struct TestServer {
    /// Declared before `db`, so the server stops before its database is dropped.
    pub running: Option<Running>,
    pub db: TestDb,
    /// The test's stream in [`Mode::Nats`] (deleted when the server is dropped).
    pub stream: Option<nats::TestStream>,
    /// The relay configuration of [`Mode::Nats`], applied at every start before `configure`.
    relay: Option<RelayConfig>,
    pub base: String,
    pub http: reqwest::Client,
    pub schedule: RetrySchedule,
    addr: SocketAddr,
    configure: Option<Configure>,
}

impl TestServer {
    /// Starts a server on a fresh database with a 1-second notification retry schedule; `None`
    /// when the backend is unavailable outside CI.
    /// `mode` is a [`Backend`] (embedded) or a [`Mode`].
    pub async fn start(mode: impl Into<Mode>) -> Option<Self> {
        Self::start_with(mode, "1s,1s".parse().expect("schedule")).await
    }

    /// As [`TestServer::start`] with another retry schedule.
    pub async fn start_with(mode: impl Into<Mode>, schedule: RetrySchedule) -> Option<Self> {
        Self::start_configured(mode.into(), schedule, None).await
    }

    /// As [`TestServer::start`], with the NATS relay running as `relay` says (`serve --nats-url`).
    pub async fn start_with_relay(backend: Backend, relay: RelayConfig) -> Option<Self> {
        Self::start_with_config(backend, move |c| c.relay = Some(relay.clone())).await
    }

    /// As [`TestServer::start`], with `configure` applied to the server configuration (at this
    /// start and every restart).
    pub async fn start_with_config(
        mode: impl Into<Mode>,
        configure: impl Fn(&mut ServeConfig) + Send + Sync + 'static,
    ) -> Option<Self> {
        let schedule = "1s,1s".parse().expect("schedule");
        Self::start_configured(mode.into(), schedule, Some(Arc::new(configure))).await
    }

    /// As [`TestServer::start_with_config`] on PostgreSQL, with the server reaching its database
    /// only through the returned (listening) [`proxy::Proxy`], so a test can take the database
    /// away ([`proxy::Proxy::stop`]) and bring it back. `TestServer::db.url` is the proxied URL;
    /// restarts go through the proxy too.
    pub async fn start_behind_proxy(
        configure: impl Fn(&mut ServeConfig) + Send + Sync + 'static,
    ) -> Option<(Self, proxy::Proxy)> {
        let mut db = TestDb::create(Backend::Postgres).await?;
        let proxy = proxy::Proxy::in_front_of(&db.url, 5432).await;
        db.url = proxy.url_for(&db.url);
        let schedule = "1s,1s".parse().expect("schedule");
        let server = Self::start_on(db, None, schedule, Some(Arc::new(configure))).await;
        Some((server, proxy))
    }

    async fn start_configured(mode: Mode, schedule: RetrySchedule, configure: Option<Configure>) -> Option<Self> {
        let stream = match mode {
            Mode::Nats => Some(nats::TestStream::create().await?),
            Mode::Embedded(_) => None,
        };
        let db = TestDb::create(mode.backend()).await?;
        Some(Self::start_on(db, stream, schedule, configure).await)
    }

    /// Boots a server on `db`; in NATS mode (`stream`) with the relay and consumers on it.
    async fn start_on(
        db: TestDb,
        stream: Option<nats::TestStream>,
        schedule: RetrySchedule,
        configure: Option<Configure>,
    ) -> Self {
        let relay = stream.as_ref().map(|s| s.relay_config(&nats::nats_url()));
        let running = Self::try_boot(
            &db.url,
            "127.0.0.1:0".parse().expect("addr"),
            &schedule,
            relay.as_ref(),
            configure.as_ref(),
        )
        .await
        .expect("server starts");
        let addr = running.addr;
        Self {
            base: format!("http://{addr}"),
            db,
            stream,
            relay,
            running: Some(running),
            http: reqwest::Client::new(),
            schedule,
            addr,
            configure,
        }
    }

    /// Starts a server on database `url`, listening on `listen`.
    async fn try_boot(
        url: &str,
        listen: SocketAddr,
        schedule: &RetrySchedule,
        relay: Option<&RelayConfig>,
        configure: Option<&Configure>,
    ) -> Result<Running, String> {
        // Warnings and errors of the server show in a failing test's output (RUST_LOG to change).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let mut config = ServeConfig::new(listen, Some(url.to_string()));
        config.secrets_key = secrets_key_for(url);
        config.sender.schedule = schedule.clone();
        config.sender.poll_interval_ms = 100;
        // Short requests make the delivery lease short (request timeout + 5 s), for crash tests.
        config.sender.request_timeout_ms = 1_000;
        config.sender.lease_ms = 0; // raised to its floor, request timeout + 5 s
        config.pools = PoolConfig {
            store_connections_max: 4,
            query_connections_max: 4,
            acquire_timeout_ms: 10_000,
            ..PoolConfig::default()
        };
        config.relay = relay.cloned();
        if let Some(configure) = configure {
            configure(&mut config);
        }
        app::start(config).await.map_err(|e| format!("{e:#}"))
    }

    /// Stops the server (graceful) and starts it again on the same database and port, as a
    /// process restart would.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        self.running = Some(self.boot_again().await);
    }

    /// As [`TestServer::restart`], but a start that fails is returned (the server then stays
    /// stopped; [`TestServer::restart`] starts it again).
    ///
    /// # Errors
    /// The start's error, with its causes.
    pub async fn try_restart(&mut self) -> Result<(), String> {
        self.stop().await;
        self.running = Some(self.try_boot_again().await?);
        Ok(())
    }

    /// Kills the server without any graceful step, as a crash would (every task is aborted,
    /// open transactions roll back), then starts it again on the same database and port.
    pub async fn crash_and_restart(&mut self) {
        drop(self.running.take());
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.running = Some(self.boot_again().await);
    }

    /// Boots the server again on the same database, port, schedule, NATS stream and configuration.
    async fn boot_again(&self) -> Running {
        self.try_boot_again().await.expect("server starts")
    }

    /// As [`TestServer::boot_again`], returning a start that fails.
    async fn try_boot_again(&self) -> Result<Running, String> {
        Self::try_boot(
            &self.db.url,
            self.addr,
            &self.schedule,
            self.relay.as_ref(),
            self.configure.as_ref(),
        )
        .await
    }

    /// Stops the server.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// The server's database handle.
    pub fn database(&self) -> &Database {
        &self.running.as_ref().expect("running").db
    }

    /// Adds a merchant directly in the database (what `payledger merchants add` does).
    pub async fn add_merchant(&self, merchant_id: &str) -> MerchantCreds {
        let creds = MerchantCreds {
            merchant_id: merchant_id.to_string(),
            api_key: format!("plk_test_{}", uuid::Uuid::new_v4().simple()),
            live_api_key: format!("plk_live_{}", uuid::Uuid::new_v4().simple()),
            webhook_secret: format!("whsec_test_{}", uuid::Uuid::new_v4().simple()),
            live_webhook_secret: format!("whsec_live_{}", uuid::Uuid::new_v4().simple()),
        };
        merchants::add(
            self.database().pool(),
            &self.running.as_ref().expect("running").keyring,
            merchant_id,
            merchants::Credentials {
                live_api_key: &creds.live_api_key,
                test_api_key: &creds.api_key,
                webhook_secret: &creds.live_webhook_secret,
                test_webhook_secret: &creds.webhook_secret,
            },
        )
        .await
        .expect("add merchant");
        creds
    }

    /// `METHOD path` with an optional bearer key and JSON body; returns status, content type and
    /// the body parsed as JSON (`Value::Null` when it is not JSON).
    pub async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Reply {
        let mut req = self
            .http
            .request(method.parse().expect("method"), format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    /// POST of raw bytes with the given content type.
    pub async fn post_raw(&self, path: &str, key: Option<&str>, content_type: &str, body: Vec<u8>) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub json: Value,
    pub text: String,
}

impl Reply {
    /// Reads a response: status, content type, body text and, when it parses, its JSON.
    pub async fn from(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            content_type,
            json,
            text,
        }
    }
}

/// The secrets key of every test server on the database at `database_url`: derived from the
/// URL, so a second process a test starts on the same database (roles split) opens the same
/// secrets, and no key file is written into the test's working directory.
pub fn secrets_key_for(database_url: &str) -> KeySource {
    use base64::Engine as _;
    use sha2::Digest as _;
    let key = sha2::Sha256::digest(format!("payledger test secrets key {database_url}").as_bytes());
    KeySource::Inline(format!(
        "test {}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone, Default)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    /// Status codes to answer, in order; 200 once exhausted.
    answers: Arc<Mutex<Vec<u16>>>,
    /// How long to take before answering.
    delay: Duration,
}

/// A merchant's notification endpoint on 127.0.0.1.
pub struct WebhookReceiver {
    pub url: String,
    state: ReceiverState,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver that answers `answers` in order, then 200.
    pub async fn start(answers: Vec<u16>) -> Self {
        Self::start_slow(answers, Duration::ZERO).await
    }

    /// As [`WebhookReceiver::start`], taking `delay` before each answer.
    pub async fn start_slow(answers: Vec<u16>, delay: Duration) -> Self {
        let state = ReceiverState {
            received: Arc::default(),
            answers: Arc::new(Mutex::new(answers.into_iter().rev().collect())),
            delay,
        };
        async fn hook(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
            s.received.lock().expect("lock").push(Received { headers, body });
            tokio::time::sleep(s.delay).await;
            let code = s.answers.lock().expect("lock").pop().unwrap_or(200);
            StatusCode::from_u16(code).expect("status")
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived (or `timeout`), returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A merchant's notification endpoint that accepts connections and never answers: it reads
/// nothing and holds every connection open until dropped (a hung merchant server, not a slow
/// one), counting the connections it accepted.
pub struct HangingEndpoint {
    pub url: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HangingEndpoint {
    /// Starts listening on 127.0.0.1.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(socket);
            }
        });
        Self { url, accepted, task }
    }

    /// Connections accepted so far (one per delivery attempt).
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until at least `n` connections were accepted (or `timeout`); returns the count.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        eventually(timeout, || async { (self.accepted() >= n).then_some(()) }).await;
        self.accepted()
    }
}

impl Drop for HangingEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every committed event of `db`'s log, in log order, waiting out events held back by another
/// session's open transaction (a server's read-model batch, say): commands answer without
/// waiting for the projection, so their events may sit behind the log's horizon for a few
/// milliseconds.
///
/// # Panics
/// When the log cannot be read, or events stay held back for 30 s.
pub async fn committed_events(db: &Database) -> Vec<payledger_store::LogEvent> {
    let log = db.log();
    let mut events: Vec<payledger_store::LogEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let after = events.last().map(|e| e.position).unwrap_or_default();
        let page = log.read_after(after, 10_000).await.expect("read the log");
        if page.is_empty() {
            if !log.held_back(after).await.expect("look for held-back events") {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events stayed held back for 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        events.extend(page);
    }
}

/// A fresh, migrated database of `backend` for a test that drives the store directly (no server),
/// or `None` when PostgreSQL is unreachable outside CI. Keep the [`TestDb`]: dropping it drops
/// the database.
///
/// # Panics
/// When the database cannot be connected to or migrated.
pub async fn migrated_database(backend: Backend) -> Option<(TestDb, Database)> {
    let test_db = TestDb::create(backend).await?;
    let db = Database::connect(Some(&test_db.url), PoolConfig::default())
        .await
        .expect("connect to the test database");
    db.migrate().await.expect("migrate the test database");
    Some((test_db, db))
}

/// Sandbox order terms of merchant `m` for `amount` CNY minor units: for tests that execute
/// commands on the store directly.
pub fn sandbox_terms(out_trade_no: &str, amount: i64) -> payledger_domain::OrderTerms {
    payledger_domain::OrderTerms {
        merchant_id: "m".into(),
        mode: payledger_domain::Mode::Test,
        out_trade_no: out_trade_no.into(),
        amount: payledger_domain::Money::new(amount, payledger_domain::Currency::CNY).expect("a valid amount"),
        channel: "sandbox".into(),
        method: "page".into(),
        subject: "s".into(),
        user_id: None,
        notify_url: None,
        return_url: None,
        expire_in_seconds: 60,
        metadata: Default::default(),
    }
}

/// Runs `subscriber` until it has applied every committed event (waiting out events held back
/// by open transactions: on PostgreSQL another session's open transaction holds the horizon).
///
/// # Panics
/// When a batch fails.
pub async fn catch_up(db: &Database, subscriber: &dyn payledger_store::subscription::TransactionalSubscriber) {
    use payledger_store::subscription::{step_transactional, Progress};
    loop {
        match step_transactional(db, subscriber).await.expect("a subscriber batch") {
            Progress::Applied(_) | Progress::Moved => {}
            Progress::HeldBack => tokio::time::sleep(Duration::from_millis(5)).await,
            Progress::CaughtUp => return,
        }
    }
}

/// Declares each scenario `async fn name(backend: Backend)` as two tests, `sqlite::name` and
/// `postgres::name`, so every scenario runs on both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Postgres).await })*
        }
    };
}

/// Declares each scenario `async fn name(mode: Mode)` as three tests, `sqlite_embedded::name`,
/// `postgres_embedded::name` and `postgres_nats::name`: the roles on the global log on both
/// backends, and on durable JetStream consumers of the relay's stream ([`Mode::Nats`]).
#[macro_export]
macro_rules! all_modes {
    ($($name:ident),* $(,)?) => {
        mod sqlite_embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Mode::Embedded($crate::Backend::Sqlite)).await })*
        }
        mod postgres_embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Mode::Embedded($crate::Backend::Postgres)).await })*
        }
        mod postgres_nats {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Mode::Nats).await })*
        }
    };
}
