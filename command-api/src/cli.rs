//! The `payledger` command line: its flags ([`Cli`]), the conversion of `serve`'s flags into a
//! [`ServeConfig`] ([`ServeArgs::into_config`]), and what each subcommand does ([`run`]).
//!
//! It lives in the library, not in `main.rs`, so that tests can check other files against the
//! real definition (`compose.yaml`'s roles, flags and environment variables).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use payledger_notifier::{PrivateTargets, RetrySchedule};
use payledger_projections::rebuild::Projection;
use payledger_store::sealed::{KeySource, KEY_FILE_DEFAULT, SECRETS_KEY_ENV};
use payledger_store::{merchants, Database, PoolConfig};

use crate::app::{self, ServeConfig};
use crate::config::{self, ChannelAccounts};
use crate::http::rate_limit::{self, RateLimitConfig};
use crate::ops;
use crate::roles::Roles;
use crate::validate::{self, FieldErrors};
use crate::workers::monitor;

/// payledger: an event-sourced payment ledger and gateway.
#[derive(Debug, Parser)]
#[command(name = "payledger", version, about)]
pub struct Cli {
    /// Database: postgres://… (use sslmode=disable on loopback) or sqlite://FILE. Default: the
    /// embedded SQLite file payledger.db in the working directory.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// File of the key that seals stored secrets (webhook secrets, the sandbox's callback
    /// secret): `<key id> <base64 of 32 bytes>` per line, the first current, older ones only to
    /// open older values (rotation: docs/configuration.md). Created (mode 0600) when missing and
    /// the database holds no sealed secret yet; refused when others may read it or its group may
    /// write it. Every process of an installation needs the same file. The environment variable
    /// PAYLEDGER_SECRETS_KEY (the key text itself, `;` between lines) wins over it.
    #[arg(long, env = "PAYLEDGER_SECRETS_KEY_FILE", global = true, default_value = KEY_FILE_DEFAULT)]
    pub secrets_key_file: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// The monitor's query points, milliseconds. An alias, so that clap takes the whole list as one
/// value (it reads a literal `Vec` as "the flag repeated").
type QuerySchedule = Vec<u64>;

// Parsed once per run: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API with the projection, notifier and refund worker (migrates first), or the
    /// roles of --roles.
    Serve(ServeArgs),
    /// Apply the database migrations in schemas/ and exit.
    Migrate,
    /// Rebuild projections from the first event into fresh tables and swap them in atomically
    /// (a running server keeps serving). Shows progress with events/s on stderr.
    Replay {
        /// Only this projection (order_view, journal); default: all.
        #[arg(long)]
        projection: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ops::Format,
    },
    /// Check the ledger. `--verify` compares every read table with a replay of the events and
    /// checks that the journal balances; `--statement FILE --channel C` compares a channel's
    /// settlement statement (generic CSV, WeChat Pay trade bill, Alipay 业务明细) with the ledger.
    /// Exit code 0 only when clean, 1 when differences were found.
    Reconcile {
        /// Rebuild every projection into shadow tables and report each row that differs.
        #[arg(long, conflicts_with = "statement")]
        verify: bool,
        /// A settlement statement file to compare with the ledger.
        #[arg(long, requires = "channel")]
        statement: Option<std::path::PathBuf>,
        /// The channel that issued the statement (sandbox, wechatpay, alipay, …).
        #[arg(long)]
        channel: Option<String>,
        /// The channel account whose statement it is (its id in the configuration); needed when
        /// the channel's orders were placed with several accounts.
        #[arg(long, requires = "statement")]
        account: Option<String>,
        /// The statement's day, YYYY-MM-DD in the channel's time zone (default: its lines' day).
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        #[arg(long, value_enum, default_value = "table")]
        format: ops::Format,
    },
    /// Print the OpenAPI document of the HTTP API (what `GET /openapi.json` serves) as pretty
    /// JSON; `payledger openapi > schemas/openapi.json` refreshes the checked-in copy.
    Openapi,
    /// Manage merchants.
    Merchants {
        #[command(subcommand)]
        command: MerchantsCommand,
    },
    /// Manage console users (the browser console at /console).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a console user; prints {email, role, merchant_id, one_time_password} as JSON. The
    /// password works once: the first login asks for a new one, and operators then enrol a TOTP
    /// second factor.
    Add {
        /// The user's e-mail address (their login; case does not matter).
        email: String,
        /// admin, finance, support, viewer (operators: every merchant), or merchant_admin,
        /// merchant_viewer (one merchant: give --merchant).
        #[arg(long)]
        role: String,
        /// The merchant a merchant_admin or merchant_viewer belongs to.
        #[arg(long)]
        merchant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MerchantsCommand {
    /// Create a merchant; prints {merchant_id, test_api_key, live_api_key, webhook_secret,
    /// test_webhook_secret} as JSON. The test key reaches only the sandbox, the live key only
    /// real channels; test notifications are signed with test_webhook_secret, live ones with
    /// webhook_secret. The keys are shown only now: only their hashes are stored.
    Add {
        /// 1–64 characters of A-Z a-z 0-9 _ -.
        merchant_id: String,
    },
    /// Issue a new test API key and test webhook secret for a merchant (one added before test
    /// mode existed has none), replacing the old ones; prints {merchant_id, test_api_key,
    /// test_webhook_secret} as JSON.
    TestKey {
        /// The merchant's id.
        merchant_id: String,
    },
}

/// The operator commands' connection: no statement timeout (a replay or a verify of a large
/// ledger may rightly run long statements; `serve --db-statement-timeout` is for serving).
async fn connect(url: Option<&str>) -> anyhow::Result<Database> {
    let db = Database::connect(url, PoolConfig::maintenance())
        .await
        .context("connecting to the database")?;
    db.migrate().await.context("migrating the database")?;
    Ok(db)
}

/// Waits for Ctrl-C or, on Unix, SIGTERM (what `docker stop` and Kubernetes send).
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// The flags of `payledger serve`; [`ServeArgs::into_config`] turns them into a [`ServeConfig`].
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PAYLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Public base URL for pay pages and channel callbacks (default: http://<listen>).
    #[arg(long, env = "PAYLEDGER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Refuse notify_url/return_url on loopback, private, link-local and other non-public
    /// addresses in test mode too (live mode always refuses them, unless
    /// --allow-private-live-urls): when an order is created, and at every notification attempt
    /// on the address actually connected to.
    #[arg(
        long,
        env = "PAYLEDGER_DENY_PRIVATE_URLS",
        conflicts_with = "allow_private_live_urls"
    )]
    pub deny_private_urls: bool,
    /// Accept live-mode notify_url/return_url on loopback and private networks (merchants on
    /// this installation's own network). Off by default: a live merchant's URL must not reach
    /// inside.
    #[arg(long, env = "PAYLEDGER_ALLOW_PRIVATE_LIVE_URLS")]
    pub allow_private_live_urls: bool,
    /// Delays between notification attempts, e.g. "15s,15s,30s,3m" (default: WeChat Pay's ten).
    #[arg(long, env = "PAYLEDGER_NOTIFY_SCHEDULE")]
    pub notify_schedule: Option<RetrySchedule>,
    /// Whole-request timeout of one notification POST, e.g. "10s" (the default).
    #[arg(long, env = "PAYLEDGER_NOTIFY_TIMEOUT", value_parser = humantime::parse_duration)]
    pub notify_timeout: Option<Duration>,
    /// How long a notification being delivered is hidden from other senders, e.g. "60s" (the
    /// default); at least the timeout plus 5 s. After a crash, a delivery cut off is retried
    /// when its lease ends.
    #[arg(long, env = "PAYLEDGER_NOTIFY_LEASE", value_parser = humantime::parse_duration)]
    pub notify_lease: Option<Duration>,
    /// Whole-request deadline of the HTTP API, e.g. "30s" (the default); past it the answer
    /// is 503 with Retry-After.
    #[arg(long, env = "PAYLEDGER_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,
    /// How long a database operation waits for a connection, e.g. "2s" (the default); while
    /// the database is unreachable, requests answer 503 after this long.
    #[arg(long, env = "PAYLEDGER_DB_ACQUIRE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Option<Duration>,
    /// Longest a database statement of this process may run, e.g. "30s" (the default); "0s"
    /// for no limit. PostgreSQL cancels a statement past it (statement_timeout): a request
    /// answers 503, a worker retries later. On SQLite it bounds the wait for the write lock
    /// (at most 10 s). Migrations are exempt, and so are migrate, replay and reconcile.
    #[arg(long, env = "PAYLEDGER_DB_STATEMENT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub db_statement_timeout: Option<Duration>,
    /// Configuration file with channel accounts (TOML; see docs/configuration.md). Default:
    /// payledger.toml in the working directory if it exists.
    #[arg(long, env = "PAYLEDGER_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Time between order monitor rounds, e.g. "30s".
    #[arg(long, env = "PAYLEDGER_MONITOR_INTERVAL", value_parser = humantime::parse_duration)]
    pub monitor_interval: Option<Duration>,
    /// How long past expire_at the monitor waits before settling an unpaid order, e.g. "60s".
    #[arg(long, env = "PAYLEDGER_MONITOR_GRACE", value_parser = humantime::parse_duration)]
    pub monitor_grace: Option<Duration>,
    /// Order ages at which the monitor queries an awaiting order at its channel before
    /// expiry, e.g. "1m,5m,15m" (the default); "none" for no queries before expiry.
    #[arg(long, env = "PAYLEDGER_MONITOR_QUERY_SCHEDULE", value_parser = monitor::parse_query_schedule)]
    pub monitor_query_schedule: Option<QuerySchedule>,
    /// How long a refund may stay pending before the monitor drives it again through the
    /// refund worker's flow (a RefundRequested the refund worker never got), e.g. "10m" (the
    /// default); also how often it looks for such refunds.
    #[arg(long, env = "PAYLEDGER_MONITOR_REFUND_AGE", value_parser = humantime::parse_duration)]
    pub monitor_refund_age: Option<Duration>,
    /// NATS server URL: runs the relay that publishes every event to JetStream stream
    /// PAYLEDGER_EVENTS (subjects payledger.events.<merchant_id>.<event_type>), and reads
    /// channel accounts from the NATS KV bucket --config-bucket, applying its changes live.
    /// The refunds and notifier roles then consume the stream through durable JetStream
    /// consumers. Absent: no NATS.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Copies JetStream keeps of the stream and of the configuration bucket when payledger
    /// creates them: 3 on a three-node cluster (see compose.yaml), which then survives the loss
    /// of a node. 1 to 5.
    #[arg(long, env = "PAYLEDGER_NATS_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: u8,
    /// JetStream stream the relay publishes to (created when missing; an existing stream
    /// keeps its settings).
    #[arg(long, env = "PAYLEDGER_NATS_STREAM", default_value = payledger_bus::relay::STREAM_DEFAULT)]
    pub nats_stream: String,
    /// Subject prefix of the relay's messages: <prefix>.<merchant_id>.<event_type>.
    #[arg(long, env = "PAYLEDGER_NATS_SUBJECT_PREFIX", default_value = payledger_bus::relay::SUBJECT_PREFIX_DEFAULT)]
    pub nats_subject_prefix: String,
    /// The stream's duplicate window when the relay creates it, e.g. "2m" (the default). Must
    /// exceed the relay's worst restart time: a re-publish after it is stored twice.
    #[arg(long, env = "PAYLEDGER_NATS_DUP_WINDOW", value_parser = humantime::parse_duration)]
    pub nats_dup_window: Option<Duration>,
    /// The stream's retention when the relay creates it, e.g. "7d" (the default); "0s" keeps
    /// messages forever.
    #[arg(long, env = "PAYLEDGER_NATS_MAX_AGE", value_parser = humantime::parse_duration)]
    pub nats_max_age: Option<Duration>,
    /// Durable JetStream consumer of the refunds role (NATS mode).
    #[arg(long, env = "PAYLEDGER_NATS_REFUNDS_DURABLE", default_value = payledger_bus::consumer::REFUNDS_DURABLE_DEFAULT)]
    pub nats_refunds_durable: String,
    /// Durable JetStream consumer of the notifier role (NATS mode).
    #[arg(long, env = "PAYLEDGER_NATS_NOTIFIER_DURABLE", default_value = payledger_bus::consumer::NOTIFIER_DURABLE_DEFAULT)]
    pub nats_notifier_durable: String,
    /// With --nats-url: how long a channel call waits for the channel service (role channels),
    /// e.g. "15s" (the default; longer than the adapters' own 10 s HTTP timeouts). Past it,
    /// an order being placed answers 504 and is recorded as failed (retryable).
    #[arg(long, env = "PAYLEDGER_CHANNEL_TIMEOUT", value_parser = humantime::parse_duration)]
    pub channel_timeout: Option<Duration>,
    /// Subject prefix of the channel service: <prefix>.<channel>.<operation>.
    #[arg(long, env = "PAYLEDGER_CHANNEL_SUBJECT_PREFIX", default_value = payledger_channel_adapters::remote::SUBJECT_PREFIX_DEFAULT)]
    pub channel_subject_prefix: String,
    /// NATS KV bucket of channel accounts (keys channels.<channel>.<account_id>), created
    /// when missing; used with --nats-url.
    #[arg(long, env = "PAYLEDGER_CONFIG_BUCKET", default_value = crate::kv_config::BUCKET_DEFAULT)]
    pub config_bucket: String,
    /// Roles this process runs, comma-separated: api, projector, notifier, refunds,
    /// monitor, relay, channels; or all (the default; all runs the relay only with
    /// --nats-url). channels serves the channel adapters over NATS to api, refunds and
    /// monitor (with --nats-url they call channels only through it). A process without api
    /// serves only /healthz, /readyz and /metrics. Run refunds in exactly one process.
    #[arg(long, env = "PAYLEDGER_ROLES", default_value = "all")]
    pub roles: Roles,
    /// Requests per second each merchant may make; over it, 429 with Retry-After. 0 turns
    /// the limit off.
    #[arg(long, env = "PAYLEDGER_RATE_LIMIT", default_value_t = rate_limit::RATE_LIMIT_PER_SECOND_DEFAULT)]
    pub rate_limit: u32,
    /// Requests a merchant may send at once after being idle (the bucket's size).
    #[arg(long, env = "PAYLEDGER_RATE_LIMIT_BURST", default_value_t = rate_limit::RATE_LIMIT_BURST_DEFAULT)]
    pub rate_limit_burst: u32,
    /// Unauthenticated requests per second each client address may make: wrong or missing API
    /// keys, sandbox pay page requests with a wrong pay token, channel callbacks refused for
    /// their signature or content;
    /// over it, 429 with Retry-After. The address is the TCP peer's (X-Forwarded-For is not
    /// trusted): behind a reverse proxy, raise it or turn it off. 0 turns the limit off.
    #[arg(
        long,
        env = "PAYLEDGER_UNAUTHENTICATED_RATE_LIMIT",
        default_value_t = rate_limit::UNAUTHENTICATED_RATE_LIMIT_PER_SECOND_DEFAULT
    )]
    pub unauthenticated_rate_limit: u32,
    /// Unauthenticated requests a client address may send at once after being idle.
    #[arg(
        long,
        env = "PAYLEDGER_UNAUTHENTICATED_RATE_LIMIT_BURST",
        default_value_t = rate_limit::UNAUTHENTICATED_RATE_LIMIT_BURST_DEFAULT
    )]
    pub unauthenticated_rate_limit_burst: u32,
}

/// A duration as whole milliseconds, saturating (a flag of 600 million years is "forever").
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ServeArgs {
    /// The server's configuration: the defaults of [`ServeConfig::new`] with every flag given
    /// applied, and the channel accounts of the configuration file (`--config`, else
    /// `payledger.toml` in the working directory if it exists).
    ///
    /// # Errors
    /// The configuration file cannot be read or does not check (the message names the file and
    /// the problem).
    pub fn into_config(self, database_url: Option<String>) -> anyhow::Result<ServeConfig> {
        let mut config = ServeConfig::new(self.listen, database_url);
        config.public_url = self.public_url;
        config.private_urls = PrivateTargets {
            test: !self.deny_private_urls,
            live: self.allow_private_live_urls,
        };
        if let Some(s) = self.notify_schedule {
            config.sender.schedule = s;
        }
        if let Some(d) = self.notify_timeout {
            config.sender.request_timeout_ms = millis(d);
        }
        if let Some(d) = self.notify_lease {
            config.sender.lease_ms = millis(d);
        }
        if let Some(d) = self.request_timeout {
            config.request_timeout_ms = millis(d);
        }
        if let Some(d) = self.db_acquire_timeout {
            config.pools.acquire_timeout_ms = millis(d);
        }
        if let Some(d) = self.db_statement_timeout {
            config.pools.statement_timeout_ms = millis(d);
        }
        if let Some(path) = config::locate(self.config) {
            config.channels = ChannelAccounts::load(&path)?;
            tracing::info!(file = %path.display(), "configuration loaded");
        }
        if let Some(d) = self.monitor_interval {
            config.monitor.interval_ms = millis(d);
        }
        if let Some(d) = self.monitor_grace {
            config.monitor.grace_ms = millis(d);
        }
        if let Some(points) = self.monitor_query_schedule {
            config.monitor.query_schedule_ms = points;
        }
        if let Some(d) = self.monitor_refund_age {
            config.monitor.refund_age_ms = millis(d);
        }
        config.relay = self.nats_url.map(|url| {
            let mut relay = payledger_bus::RelayConfig::new(url);
            relay.stream = self.nats_stream;
            relay.subject_prefix = self.nats_subject_prefix;
            relay.replicas = usize::from(self.nats_replicas);
            if let Some(d) = self.nats_dup_window {
                relay.duplicate_window_ms = millis(d);
            }
            if let Some(d) = self.nats_max_age {
                relay.max_age_ms = millis(d);
            }
            relay.channel_subject_prefix = self.channel_subject_prefix;
            if let Some(d) = self.channel_timeout {
                relay.channel_timeout_ms = millis(d);
            }
            relay
        });
        config.durables.refunds = self.nats_refunds_durable;
        config.durables.notifier = self.nats_notifier_durable;
        config.config_bucket = self.config_bucket;
        config.roles = self.roles;
        config.rate_limit = RateLimitConfig {
            per_second: self.rate_limit,
            burst: self.rate_limit_burst,
        };
        config.unauthenticated_rate_limit = RateLimitConfig {
            per_second: self.unauthenticated_rate_limit,
            burst: self.unauthenticated_rate_limit_burst,
        };
        Ok(config)
    }
}

/// Runs one parsed command line to its end.
///
/// Returns [`ExitCode::SUCCESS`], or exit code 1 from `reconcile` when it found differences.
///
/// # Errors
/// Anything that stops the command: a bad configuration file, an unreachable database, a
/// malformed statement, a port in use. The caller prints the chain of causes (`{:#}`).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let database_url = cli.database_url;
    // The key text only from the environment, never a flag: a command line shows in `ps`.
    let secrets_key = match std::env::var(SECRETS_KEY_ENV) {
        Ok(text) if !text.trim().is_empty() => KeySource::Inline(text),
        _ => KeySource::File(cli.secrets_key_file),
    };
    match cli.command {
        Command::Serve(args) => {
            let mut config = args.into_config(database_url)?;
            config.secrets_key = secrets_key;
            let mut running = app::start(config).await?;
            eprintln!(
                "payledger listening on http://{} (public URL {})",
                running.addr, running.public_url
            );
            tokio::select! {
                r = running.wait() => r?,
                signal = shutdown_signal() => {
                    tracing::info!(signal, "shutting down");
                    running.shutdown().await;
                }
            }
        }
        Command::Replay { projection, format } => {
            let projections = match projection {
                None => Projection::ALL.to_vec(),
                Some(name) => vec![Projection::parse(&name).with_context(|| {
                    let known: Vec<_> = Projection::ALL.iter().map(|p| p.name()).collect();
                    format!("unknown projection {name:?}; known: {}", known.join(", "))
                })?],
            };
            let db = connect(database_url.as_deref()).await?;
            ops::replay(&db, &projections, format).await?;
            db.close().await;
        }
        Command::Reconcile {
            verify,
            statement,
            channel,
            account,
            date,
            format,
        } => {
            let clean = match (verify, statement, channel) {
                (true, _, _) => {
                    let db = connect(database_url.as_deref()).await?;
                    let report = ops::verify(&db, format).await?;
                    db.close().await;
                    report.is_clean()
                }
                (false, Some(file), Some(channel)) => {
                    let db = connect(database_url.as_deref()).await?;
                    let report = ops::statement(&db, &file, &channel, account.as_deref(), date, format).await?;
                    db.close().await;
                    report.is_clean()
                }
                _ => anyhow::bail!("say what to reconcile: --verify, or --statement FILE --channel C"),
            };
            if !clean {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Openapi => {
            print!("{}", crate::openapi::to_pretty_json()?);
        }
        Command::Migrate => {
            let db = connect(database_url.as_deref()).await?;
            db.close().await;
            eprintln!("migrations applied");
        }
        Command::Merchants {
            command: MerchantsCommand::Add { merchant_id },
        } => {
            let mut e = FieldErrors::default();
            validate::merchant_no(&mut e, "merchant_id", &merchant_id);
            if let Some((field, messages)) = e.0.into_iter().next() {
                anyhow::bail!("invalid {field}: {}", messages.join("; "));
            }
            let db = connect(database_url.as_deref()).await?;
            let keyring = app::installation_keyring(&secrets_key, &db).await?;
            let live_api_key = crate::console::merchants::random_token("plk_live_");
            let test_api_key = crate::console::merchants::random_token("plk_test_");
            let webhook_secret = crate::console::merchants::random_token("whsec_");
            let test_webhook_secret = crate::console::merchants::random_token("whsec_test_");
            let credentials = merchants::Credentials {
                live_api_key: &live_api_key,
                test_api_key: &test_api_key,
                webhook_secret: &webhook_secret,
                test_webhook_secret: &test_webhook_secret,
            };
            let added = payledger_store::console::add_merchant(
                &db,
                &keyring,
                &merchant_id,
                credentials,
                "cli",
                "cli",
                chrono::Utc::now(),
            )
            .await;
            db.close().await;
            match added {
                Ok(()) => {}
                Err(payledger_store::console::MerchantOpError::Refused(_)) => {
                    anyhow::bail!("merchant {merchant_id:?} already exists")
                }
                Err(e) => return Err(e.into()),
            }
            println!(
                "{}",
                serde_json::json!({
                    "merchant_id": merchant_id,
                    "test_api_key": test_api_key,
                    "live_api_key": live_api_key,
                    "webhook_secret": webhook_secret,
                    "test_webhook_secret": test_webhook_secret,
                })
            );
        }
        Command::Users {
            command: UsersCommand::Add { email, role, merchant },
        } => {
            use payledger_domain::console::{console_user_id, ConsoleRole, ConsoleUserCommand};
            let Some(email) = crate::console::auth::normalise_email(&email) else {
                anyhow::bail!("invalid e-mail address {email:?}");
            };
            let Some(role) = ConsoleRole::parse(&role) else {
                let names: Vec<_> = ConsoleRole::ALL.iter().map(|r| r.as_str()).collect();
                anyhow::bail!("unknown role {role:?}: one of {}", names.join(", "));
            };
            let db = connect(database_url.as_deref()).await?;
            if let Some(m) = &merchant {
                let keyring = app::installation_keyring(&secrets_key, &db).await?;
                if merchants::get(db.pool(), &keyring, m).await?.is_none() {
                    db.close().await;
                    anyhow::bail!("no merchant {m:?}");
                }
            }
            let password = crate::console::auth::one_time_password();
            let password_hash = crate::console::auth::hash_password(&password)
                .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            let command = ConsoleUserCommand::AddUser {
                email: email.clone(),
                role,
                merchant_id: merchant.clone(),
                password_hash,
                added_by: "cli".into(),
                at: chrono::Utc::now(),
            };
            let added = payledger_store::console::execute(db.pool(), console_user_id(&email), command).await;
            db.close().await;
            added.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{}",
                serde_json::json!({
                    "email": email,
                    "role": role.as_str(),
                    "merchant_id": merchant,
                    "one_time_password": password,
                })
            );
        }
        Command::Merchants {
            command: MerchantsCommand::TestKey { merchant_id },
        } => {
            let db = connect(database_url.as_deref()).await?;
            let keyring = app::installation_keyring(&secrets_key, &db).await?;
            let test_api_key = crate::console::merchants::random_token("plk_test_");
            let test_webhook_secret = crate::console::merchants::random_token("whsec_test_");
            let found =
                merchants::set_test_credentials(db.pool(), &keyring, &merchant_id, &test_api_key, &test_webhook_secret)
                    .await?;
            db.close().await;
            if !found {
                anyhow::bail!("no merchant {merchant_id:?}");
            }
            println!(
                "{}",
                serde_json::json!({
                    "merchant_id": merchant_id,
                    "test_api_key": test_api_key,
                    "test_webhook_secret": test_webhook_secret,
                })
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
