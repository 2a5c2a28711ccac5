//! Wiring: state shared by handlers, the router, the background roles, start and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use payledger_bus::channel_service::{self, NatsRequester};
use payledger_bus::consumer::Durables;
use payledger_bus::{Consumer, ConsumerConfig, Relay, RelayConfig, RelayMetrics};
use payledger_channel_adapters::sandbox::SandboxChannel;
use payledger_channel_adapters::Channels;
use payledger_domain::aggregate::OrderState;
use payledger_domain::Mode;
use payledger_notifier::{EventEnqueuer, NotifyEnqueuer, PrivateTargets, Sender, SenderConfig};
use payledger_projections::projection::PROJECTION_NAME;
use payledger_projections::{JournalProjection, OrderProjection, OrderView};
use payledger_store::merchants::{self, ApiKeyCache};
use payledger_store::sealed::{KeySource, Keyring};
use payledger_store::subscription::{
    checkpoint, run_effects, run_transactional, EffectSubscriber, TransactionalSubscriber,
};
use payledger_store::{settings, wake, Database, OrderOwner, PoolConfig};
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::ChannelAccounts;
use crate::flows::Flows;
use crate::http::error::ApiError;
use crate::http::rate_limit::{AddressRateLimit, MerchantRateLimit, RateLimitConfig};
use crate::roles::{Role, Roles};
use crate::workers::monitor::{self, MonitorConfig};
use crate::workers::refunds::RefundWorker;

/// Largest request body accepted; larger bodies get 413.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Largest channel callback body accepted, bytes; larger ones get 413. Real ones are 1–4 KB
/// (WeChat Pay's encrypted resource, Alipay's form); the same bound as Alipay's own
/// [`payledger_channel_adapters::alipay::notify::NOTIFY_BODY_BYTES_MAX`].
pub const CALLBACK_BODY_LIMIT_BYTES: usize = 64 * 1024;
/// How long a read of the read models (a list, a refund, stats, balances) waits for them to
/// include every event committed before it (see [`AppState::read_models_current`]). Commands
/// do not wait: they answer from the log.
pub const READ_YOUR_WRITES_TIMEOUT_MS: u64 = 2_000;
/// How often a process without the `projector` role re-reads the projection's checkpoint while
/// a read waits for it (no in-process notice comes from a projection running elsewhere).
pub const PROJECTION_POLL_MS: u64 = 20;
/// How long [`Running::shutdown`] lets the JetStream consumers finish the messages in hand
/// (handle, then ack or nak) once they stopped pulling; past it they are aborted, and what they
/// held is redelivered after its ack wait.
pub const CONSUMER_DRAIN_MS: u64 = 20_000;
/// Settings key of the sandbox channel's callback signing secret.
pub const SANDBOX_SECRET_KEY: &str = "sandbox.callback_secret";

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Base URL where payers and channels reach this server (pay pages, callbacks). Default:
    /// `http://<listen address>` (127.0.0.1 when listening on all interfaces).
    pub public_url: Option<String>,
    /// `postgres://…` or `sqlite://…`; `None`: `sqlite://payledger.db`.
    pub database_url: Option<String>,
    /// The key that seals stored secrets (webhook secrets, the sandbox's callback secret; see
    /// `payledger_store::sealed`); default the file `payledger.key`, created when missing.
    pub secrets_key: KeySource,
    /// Per mode, whether `notify_url` / `return_url` may be on loopback and private networks.
    /// Default: test mode may (a developer receives notifications on localhost), live mode may
    /// not (`--allow-private-live-urls` for merchants on the installation's own network;
    /// `--deny-private-urls` refuses them in test mode too). Where refused, it is checked when an
    /// order is created and again, on the address connected to, at every notification attempt
    /// (`SenderConfig::private_targets`, which `start` sets from it).
    pub private_urls: PrivateTargets,
    /// Notifier behaviour (retry schedule, timeouts).
    pub sender: SenderConfig,
    /// Pool sizes.
    pub pools: PoolConfig,
    /// Channel accounts from the configuration file (see [`crate::config`]); default none: only
    /// the sandbox.
    pub channels: ChannelAccounts,
    /// The order monitor's schedule (see [`crate::workers::monitor`]).
    pub monitor: MonitorConfig,
    /// The NATS relay: publishes every event to JetStream when set (`--nats-url`); `None` is
    /// embedded mode, no NATS at all. When set, the refund worker and the notifier's enqueuer
    /// consume the relay's stream through durable JetStream consumers instead of the global log,
    /// and channel calls go to the channel service (role `channels`,
    /// [`RelayConfig::channel_subject_prefix`]).
    pub relay: Option<RelayConfig>,
    /// Durable names of those consumers (NATS mode only).
    pub durables: Durables,
    /// NATS KV bucket of channel accounts, watched when [`ServeConfig::relay`] is set (see
    /// [`crate::kv_config`]); default [`crate::kv_config::BUCKET_DEFAULT`].
    pub config_bucket: String,
    /// The roles this process runs (see [`crate::roles`]); default every role.
    pub roles: Roles,
    /// Requests per second per merchant (`--rate-limit`, `--rate-limit-burst`); default 200/s,
    /// burst 400.
    pub rate_limit: RateLimitConfig,
    /// Unauthenticated requests per second per client address (`--unauthenticated-rate-limit`,
    /// `--unauthenticated-rate-limit-burst`): wrong API keys, the sandbox pay page, refused
    /// channel callbacks (see [`crate::http::rate_limit`]); default 20/s, burst 40.
    pub unauthenticated_rate_limit: RateLimitConfig,
    /// Whole-request deadline in milliseconds; past it the answer is 503 (see
    /// [`crate::http::deadline`]). Default [`crate::http::deadline::REQUEST_TIMEOUT_MS_DEFAULT`].
    pub request_timeout_ms: u64,
}

impl ServeConfig {
    /// Defaults for `listen` and `database_url`.
    pub fn new(listen: SocketAddr, database_url: Option<String>) -> Self {
        Self {
            listen,
            public_url: None,
            database_url,
            secrets_key: KeySource::default(),
            private_urls: PrivateTargets::default(),
            sender: SenderConfig::default(),
            pools: PoolConfig::default(),
            channels: ChannelAccounts::default(),
            monitor: MonitorConfig::default(),
            relay: None,
            durables: Durables::default(),
            config_bucket: crate::kv_config::BUCKET_DEFAULT.to_string(),
            roles: Roles::all(),
            rate_limit: RateLimitConfig::default(),
            unauthenticated_rate_limit: RateLimitConfig::unauthenticated_default(),
            request_timeout_ms: crate::http::deadline::REQUEST_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Configuration handlers read.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// See [`ServeConfig::private_urls`].
    pub private_urls: PrivateTargets,
    /// See [`ServeConfig::request_timeout_ms`].
    pub request_timeout_ms: u64,
}

/// State shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Database,
    /// The channels this process reaches (sandbox and configured accounts): the adapters
    /// themselves in embedded mode, [remote](Channels::remote) ones through the channel service in
    /// NATS mode.
    pub channels: Channels,
    /// The money workflow over [`AppState::db`] and [`AppState::channels`]: handlers call one
    /// flow each.
    pub flows: Flows,
    /// The sandbox channel (its pay page and callbacks).
    pub sandbox: Arc<SandboxChannel>,
    /// The order projection: its in-process notices when this process runs it.
    pub projection: Arc<OrderProjection>,
    /// Whether this process runs the projector role. Without it, reads that wait for the read
    /// models poll the projection's checkpoint every [`PROJECTION_POLL_MS`].
    pub projector_here: bool,
    /// Configuration handlers read.
    pub config: Arc<ApiConfig>,
    /// Wakes the notifier's [`Sender`] (a resend made a job due now).
    pub notify_queued: Arc<Notify>,
    /// Each merchant's request rate, charged by [`crate::http::extract::AuthMerchant`].
    pub rate_limit: MerchantRateLimit,
    /// Each client address's rate of unauthenticated requests (wrong API keys, the sandbox pay
    /// page, refused callbacks; see [`crate::http::rate_limit`]).
    pub address_limit: AddressRateLimit,
    /// Recently authenticated API keys ([`crate::http::extract::AuthMerchant`]).
    pub api_keys: Arc<ApiKeyCache>,
    /// Opens and seals stored secrets.
    pub keyring: Arc<Keyring>,
    /// The console's login throttle and cookie settings ([`crate::console`]).
    pub console: crate::console::ConsoleState,
}

impl AppState {
    /// The order's current state if it belongs to `merchant_id`; 404 otherwise (another
    /// merchant's order is indistinguishable from a missing one).
    ///
    /// # Errors
    /// [`ApiError::NotFound`], or an internal error.
    pub async fn owned_order(&self, owner: &OrderOwner, order_id: Uuid) -> Result<OrderState, ApiError> {
        Ok(self.flows.owned_order(owner, order_id).await?)
    }

    /// The order as it stands now, folded from its events in the log (the source of truth): it
    /// holds every write acknowledged before this call, in this process or another, without
    /// waiting for the projection. One indexed read of the order's few events. This is how a
    /// command answers (from what it appended) and how `GET /v1/orders/{id}` reads.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] for a missing order, another merchant's or one of the other mode;
    /// internal errors.
    pub async fn order_now(&self, owner: &OrderOwner, order_id: Uuid) -> Result<OrderView, ApiError> {
        let events = self.db.log().order_events(order_id).await?;
        OrderView::from_events(events.iter().map(|e| (e.sequence, &e.event)))
            .map_err(ApiError::Internal)?
            .filter(|v| v.merchant_id == owner.merchant_id && v.mode == owner.mode)
            .ok_or(ApiError::NotFound("order"))
    }

    /// Waits, at most [`READ_YOUR_WRITES_TIMEOUT_MS`], until the read models (`order_view`,
    /// `refund_view`, daily stats, the journal: one transaction per batch, one checkpoint
    /// compared) hold every event committed before this call, so a list or a balance shows
    /// every write acknowledged before it was asked, in any process. On this process's runner's
    /// notices, or by polling the checkpoint every [`PROJECTION_POLL_MS`] when the projector
    /// runs elsewhere. Past the timeout it answers from the read models as they are (logged).
    ///
    /// # Errors
    /// Internal errors when the database fails.
    pub async fn read_models_current(&self) -> Result<(), ApiError> {
        let head = self.db.log().head().await?;
        let timeout = Duration::from_millis(READ_YOUR_WRITES_TIMEOUT_MS);
        let reached = if self.projector_here {
            self.projection.wait_until(head, timeout).await
        } else {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                if checkpoint(self.db.pool(), PROJECTION_NAME).await? >= head {
                    break true;
                }
                if tokio::time::Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(PROJECTION_POLL_MS)).await;
            }
        };
        if !reached {
            tracing::warn!(
                ?head,
                "read models behind the log past the timeout; answering from them as they are"
            );
        }
        Ok(())
    }

    /// Comma-separated names of the channels `mode` reaches now.
    pub fn channel_names(&self, mode: Mode) -> String {
        self.channels
            .reachable_in(mode)
            .iter()
            .map(|c| c.channel)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The router with every resource, the body limit, the security headers
/// ([`crate::http::security`]) and request tracing.
pub fn router(state: AppState) -> Router {
    router_for(state, true)
}

/// The router of a process: every resource when it runs the `api` role, otherwise only the
/// operations endpoints (`/healthz`, `/readyz`, `/metrics`; anything else is 404).
pub fn router_for(state: AppState, api: bool) -> Router {
    let deadline = axum::middleware::from_fn_with_state(state.clone(), crate::http::deadline::deadline);
    if !api {
        return crate::http::security::layer(Router::new().merge(crate::http::health::router()).layer(deadline))
            .layer(trace_layer())
            .with_state(state);
    }
    let resources = Router::new()
        .merge(crate::http::orders::router())
        .merge(crate::http::refunds::router())
        .merge(crate::http::ledger::router())
        .merge(crate::http::channels::router())
        .merge(crate::http::notifications::router())
        .merge(crate::http::callbacks::router().layer(DefaultBodyLimit::max(CALLBACK_BODY_LIMIT_BYTES)))
        .merge(crate::http::sandbox::router())
        .merge(crate::http::health::router())
        .merge(crate::openapi::router())
        .merge(crate::console::router(state.clone()));
    // Enforced where bodies are read (our extractors), so a 413 is problem+json like every
    // other error.
    let limited = resources.layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES)).layer(deadline);
    // Outside the deadline, so its 503 carries the headers too.
    crate::http::security::layer(limited)
        .layer(trace_layer())
        .with_state(state)
}

/// Request tracing that records the method and the path only: never the query string (a
/// client may put an API key there, which is refused but must not reach the log) nor headers
/// (`Authorization`).
fn trace_layer() -> TraceLayer {
    tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span as MakeSpan)
}

type TraceLayer = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    MakeSpan,
>;
type MakeSpan = fn(&axum::http::Request<axum::body::Body>) -> tracing::Span;

fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
}

/// A running server and its background roles.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// Public base URL (pay pages, callbacks).
    pub public_url: String,
    /// The database it uses.
    pub db: Database,
    /// The keyring its stored secrets are sealed with.
    pub keyring: Arc<Keyring>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    /// Stops the notifier's sender and the JetStream consumers gracefully.
    stop: watch::Sender<bool>,
    /// The notifier, stopped gracefully so deliveries in flight record their attempts.
    sender: Option<(JoinHandle<()>, Duration)>,
    /// The JetStream consumers (NATS mode), drained on shutdown: see [`CONSUMER_DRAIN_MS`].
    consumers: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    /// The relay's counters when it runs (for `/metrics`).
    pub relay_metrics: Option<Arc<RelayMetrics>>,
}

impl Running {
    /// Waits until the server stops (it stops on [`Running::shutdown`] or a server error).
    ///
    /// # Errors
    /// The server's I/O error.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await??;
        Ok(())
    }

    /// Stops accepting requests and finishes the ones in flight, lets notifications in flight
    /// finish and drains the JetStream consumers (they stop pulling, finish and ack the messages
    /// in hand, at most [`CONSUMER_DRAIN_MS`]), then stops the other background roles. Those are
    /// aborted: their unfinished work is transactional or at-least-once.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.server).await;
        let _ = self.stop.send(true);
        let mut consumers = std::mem::take(&mut self.consumers);
        let sender = async {
            if let Some((mut sender, timeout)) = self.sender.take() {
                if tokio::time::timeout(timeout, &mut sender).await.is_err() {
                    tracing::warn!("notifications still in flight at shutdown; they are retried after their lease");
                    sender.abort();
                }
            }
        };
        let drain = async {
            let drained = futures::future::join_all(consumers.iter_mut());
            if tokio::time::timeout(Duration::from_millis(CONSUMER_DRAIN_MS), drained)
                .await
                .is_err()
            {
                tracing::warn!(
                    drain_ms = CONSUMER_DRAIN_MS,
                    "JetStream messages still being handled at shutdown; they are redelivered after their ack wait"
                );
                for c in &consumers {
                    c.abort();
                }
            }
        };
        tokio::join!(sender, drain);
        for w in &self.workers {
            w.abort();
        }
        for w in self.workers.drain(..) {
            let _ = w.await;
        }
        self.db.close().await;
    }
}

impl Drop for Running {
    /// A `Running` dropped without [`Running::shutdown`] stops its tasks rather than leaving them
    /// detached.
    fn drop(&mut self) {
        self.server.abort();
        if let Some((sender, _)) = &self.sender {
            sender.abort();
        }
        for w in self.consumers.iter().chain(&self.workers) {
            w.abort();
        }
    }
}

/// The channels this process calls, and the channel service task when it runs the `channels`
/// role. Embedded mode, or a process running `channels`: the adapters themselves. Otherwise, in
/// NATS mode, every call goes to the channel service, waiting at most
/// [`RelayConfig::channel_timeout_ms`].
async fn channel_calls(config: &ServeConfig, local: Channels) -> anyhow::Result<(Channels, Option<JoinHandle<()>>)> {
    let Some(relay) = &config.relay else {
        return Ok((local, None));
    };
    let roles = config.roles;
    if ![Role::Api, Role::Refunds, Role::Monitor, Role::Channels]
        .iter()
        .any(|r| roles.has(*r))
    {
        return Ok((local, None));
    }
    let prefix = &relay.channel_subject_prefix;
    let client = channel_service::connect(&relay.nats_url, "payledger-channels").await?;
    if roles.has(Role::Channels) {
        // A process holding the adapters serves them to the others and calls them directly
        // itself: no hop, and a NATS outage does not stop its own orders and callbacks.
        tracing::info!(%prefix, "channel service serving");
        let service = channel_service::serve(client, &local, prefix).await?;
        return Ok((local, Some(service)));
    }
    let requester = Arc::new(NatsRequester::new(client, relay.channel_timeout_ms));
    Ok((local.remote(requester, prefix), None))
}

/// The keyring of the installation whose database is `db`, from `source`.
///
/// When the database already holds a sealed secret (the sandbox's, stored at the first `serve`,
/// or a merchant's), the key must already exist and must open it: a missing key file is an
/// error, never created (`serve` or `merchants add` run from another directory would otherwise
/// seal new secrets under a key no other process has). A new installation's missing key file
/// is created ([`KeySource::load`]).
///
/// # Errors
/// The key cannot be read, or does not open the installation's secrets (the message names the
/// key id it lacks).
pub async fn installation_keyring(source: &KeySource, db: &Database) -> anyhow::Result<Keyring> {
    let sandbox = settings::get(db.pool(), SANDBOX_SECRET_KEY).await?;
    let sealed = match sandbox {
        Some(stored) => Some((settings::secret_place(SANDBOX_SECRET_KEY), stored)),
        None => merchants::any_sealed(db.pool())
            .await?
            .map(|(id, stored)| (merchants::webhook_secret_place(&id), stored)),
    };
    let Some((place, stored)) = sealed else {
        return Ok(source.load()?);
    };
    let keyring = source.load_existing().map_err(|e| {
        anyhow::anyhow!("{e}; this installation's secrets are already sealed, so its own key is needed")
    })?;
    keyring
        .open(&stored, &place)
        .map_err(|e| anyhow::anyhow!("the secrets key does not open this installation's secrets: {e}"))?;
    Ok(keyring)
}

/// Connects and migrates the database, starts the roles of `config.roles` (projections,
/// notifier, refund worker, order monitor, relay, channel service), and serves HTTP on `config.listen`: the API
/// with the sandbox and the configured channels when it runs `api`, the operations endpoints
/// always.
///
/// # Errors
/// When `relay` is asked for without a NATS URL, the database cannot be reached or migrated, the
/// address cannot be bound, or a configured channel cannot be built.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    let roles = config.roles;
    // `all` without NATS is embedded mode: every role but the relay. An explicit `relay` needs it.
    if roles.has(Role::Relay) && config.relay.is_none() && !roles.is_all() {
        anyhow::bail!("the relay role needs NATS: set --nats-url (NATS_URL)");
    }
    if roles.has(Role::Channels) && config.relay.is_none() && !roles.is_all() {
        anyhow::bail!("the channels role needs NATS: set --nats-url (NATS_URL)");
    }
    // Install the process's metrics recorder before anything records.
    crate::metrics::handle();
    let db = Database::connect(config.database_url.as_deref(), config.pools).await?;
    db.migrate().await?;
    let keyring = Arc::new(installation_keyring(&config.secrets_key, &db).await?);
    let sealed = merchants::seal_stored(db.pool(), &keyring).await?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            key_id = keyring.current_id(),
            "sealed or re-wrapped stored webhook secrets"
        );
    }
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let public_url = config.public_url.clone().unwrap_or_else(|| {
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        format!("http://{host}:{}", addr.port())
    });
    let public_url = public_url.trim_end_matches('/').to_string();

    let secret = settings::get_or_init_secret(db.pool(), &keyring, SANDBOX_SECRET_KEY, || {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    })
    .await?;
    let sandbox = Arc::new(SandboxChannel::new(&public_url, secret.as_bytes()));
    let channels = Channels::default().with(sandbox.clone());
    for (channel, usage) in config.channels.channels(&public_url)? {
        channels.insert_account(channel, usage);
    }
    // NATS mode: channel accounts in the KV bucket override the file's and follow its changes.
    let config_watch = match &config.relay {
        Some(relay) => {
            let (task, synced) = crate::kv_config::spawn(
                relay.nats_url.clone(),
                config.config_bucket.clone(),
                relay.replicas,
                channels.clone(),
                config.channels.clone(),
                config.channels.base(&public_url).to_string(),
                Some(db.clone()),
            );
            let wait = Duration::from_millis(crate::kv_config::SYNC_TIMEOUT_MS);
            let mut synced = synced;
            let loaded = tokio::time::timeout(wait, &mut synced).await.is_ok();
            if !loaded {
                tracing::warn!(bucket = %config.config_bucket, "channel accounts in NATS KV not loaded yet; serving with the file's until they are");
                // Checked once they are: too late to refuse to start, so said loudly.
                let (db, channels) = (db.clone(), channels.clone());
                tokio::spawn(async move {
                    if synced.await.is_ok() {
                        let checked = match crate::channel_accounts::pin_legacy_accounts(&db, &channels).await {
                            Ok(()) => crate::channel_accounts::check(&db, &channels).await,
                            Err(e) => Err(e),
                        };
                        if let Err(problems) = checked {
                            tracing::error!(%problems, "the channel accounts in NATS KV strand open orders");
                        }
                    }
                });
            }
            Some((task, loaded))
        }
        None => None,
    };
    // The accounts are checked against the open orders below, unless the KV bucket (which may
    // hold the accounts) could not be read yet.
    let check_accounts = config_watch.as_ref().is_none_or(|(_, loaded)| *loaded);
    let config_watch = config_watch.map(|(task, _)| task);
    let (channels, channel_service) = channel_calls(&config, channels).await?;
    let projection = Arc::new(OrderProjection::default());
    let queued = Arc::new(Notify::new());

    let (stop_tx, stop) = watch::channel(false);
    // NATS mode: the relay's stream feeds these roles through durable consumers; embedded: the log.
    let consume = |durable: &str, event_type: &str, handler: Arc<dyn EffectSubscriber>| {
        config.relay.as_ref().map(|relay| {
            let consumer = Consumer::new(ConsumerConfig::for_events(relay, durable, event_type), handler);
            tokio::spawn(consumer.run(stop.clone()))
        })
    };
    let mut workers = Vec::new();
    let mut consumers = Vec::new();
    workers.extend(channel_service);
    // The read models and (embedded) the notify enqueuer: one transaction per batch for all.
    let mut read_models: Vec<Arc<dyn TransactionalSubscriber>> = Vec::new();
    if roles.has(Role::Projector) {
        read_models.push(projection.clone());
        read_models.push(Arc::new(JournalProjection::default()));
    }
    if roles.has(Role::Notifier) {
        let from_nats = Arc::new(EventEnqueuer::new(db.clone(), queued.clone()));
        match consume(&config.durables.notifier, "*", from_nats) {
            Some(task) => consumers.push(task),
            None => read_models.push(Arc::new(NotifyEnqueuer::new(db.log(), queued.clone()))),
        }
    }
    if !read_models.is_empty() {
        workers.push(tokio::spawn(run_transactional(db.clone(), read_models)));
    }
    // This process's recent channel calls, whichever role makes them (the console's channels page).
    let calls = crate::metrics::CallLog::default();
    if roles.has(Role::Refunds) {
        let worker = Arc::new(RefundWorker::new(db.clone(), channels.clone(), calls.clone()));
        match consume(&config.durables.refunds, "RefundRequested", worker.clone()) {
            Some(task) => consumers.push(task),
            None => workers.push(tokio::spawn(run_effects(db.clone(), worker))),
        }
    }
    if roles.has(Role::Monitor) {
        workers.extend(monitor::spawn(
            db.clone(),
            channels.clone(),
            config.monitor.clone(),
            calls.clone(),
        ));
    }
    // Roles split over processes (PostgreSQL): appends wake the other processes' subscribers.
    if let (false, Some(url)) = (roles.is_all(), &config.database_url) {
        workers.extend(wake::spawn_announcer(db.clone()));
        let subscribes = [Role::Projector, Role::Notifier, Role::Refunds, Role::Relay];
        if subscribes.iter().any(|r| roles.has(*r)) {
            workers.extend(wake::spawn_listener(db.clone(), url.clone()));
        }
    }
    workers.extend(config_watch);

    let relay_metrics = config
        .relay
        .clone()
        .filter(|_| roles.has(Role::Relay))
        .map(|relay_config| {
            tracing::info!(nats_url = %relay_config.nats_url_redacted(), stream = %relay_config.stream, "NATS relay enabled");
            let relay = Relay::new(db.clone(), relay_config);
            let metrics = relay.metrics();
            workers.push(tokio::spawn(relay.run()));
            metrics
        });

    let sender = if roles.has(Role::Notifier) {
        let sender_config = SenderConfig {
            private_targets: config.private_urls,
            ..config.sender.clone()
        };
        let task =
            tokio::spawn(Sender::new(db.pool().clone(), keyring.clone(), sender_config, queued.clone())?.run(stop));
        Some((task, config.sender.stop_timeout()))
    } else {
        None
    };

    let state = AppState {
        db: db.clone(),
        flows: Flows::open(db.clone(), channels.clone()).await?.with_calls(calls),
        channels,
        sandbox,
        projection,
        projector_here: roles.has(Role::Projector),
        config: Arc::new(ApiConfig {
            private_urls: config.private_urls,
            request_timeout_ms: config.request_timeout_ms,
        }),
        notify_queued: queued,
        rate_limit: MerchantRateLimit::new(config.rate_limit),
        address_limit: AddressRateLimit::new(config.unauthenticated_rate_limit),
        api_keys: Arc::new(ApiKeyCache::default()),
        keyring: keyring.clone(),
        console: crate::console::ConsoleState::new(public_url.starts_with("https://")),
    };
    if roles.has(Role::Api) {
        workers.push(crate::console::spawn_housekeeping(db.clone(), state.console.clone()));
    }
    // The limiters' buckets of idle keys go once a minute (bounded memory under many addresses).
    workers.push(crate::http::rate_limit::spawn_retention(
        state.rate_limit.clone(),
        state.address_limit.clone(),
    ));
    // Every open order keeps the account that placed it: a configuration that removed such an
    // account, or changed its identity, does not start (checked once the read model holds every
    // event committed before: an order placed just before a restart is open too).
    if check_accounts {
        let checked = match crate::channel_accounts::pin_legacy_accounts(&db, &state.channels).await {
            Ok(()) => crate::channel_accounts::check(&db, &state.channels)
                .await
                .map_err(|problems| format!("the channel accounts configured would strand open orders:\n{problems}")),
            Err(e) => Err(e),
        };
        if let Err(problem) = checked {
            let _ = stop_tx.send(true);
            for task in workers.iter().chain(&consumers) {
                task.abort();
            }
            if let Some((task, _)) = &sender {
                task.abort();
            }
            db.close().await;
            anyhow::bail!("{problem}");
        }
    }
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let app = router_for(state, roles.has(Role::Api));
    let server = tokio::spawn(async move {
        // The peer address of each connection, for the per-address limit (`ClientAddr`).
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let _ = shutdown_rx.await;
            })
            .await
    });
    tracing::info!(%addr, %public_url, backend = ?db.backend(), %roles, "payledger serving");
    Ok(Running {
        addr,
        public_url,
        db,
        keyring,
        shutdown: Some(shutdown_tx),
        server,
        stop: stop_tx,
        sender,
        consumers,
        workers,
        relay_metrics,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// Collects what a `fmt` subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_request_span_never_carries_the_query_string_or_headers() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let request = axum::http::Request::get("/v1/orders?api_key=plk_secret_in_query&limit=5")
                .header("authorization", "Bearer plk_secret_in_header")
                .body(axum::body::Body::empty())
                .unwrap();
            let span = super::request_span(&request);
            let _entered = span.enter();
            tracing::debug!("handled");
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("path=/v1/orders"), "{log}");
        assert!(!log.contains("plk_secret"), "{log}");
        assert!(!log.contains("api_key"), "{log}");
    }
}
