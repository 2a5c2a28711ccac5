//! The `payledger` command: `serve`, `migrate`, `replay`, `reconcile`, `merchants add`, `openapi`.

use std::net::SocketAddr;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::{Parser, Subcommand};
use payledger_command_api::app::{self, ServeConfig};
use payledger_command_api::config::{self, ChannelAccounts};
use payledger_command_api::http::rate_limit::{self, RateLimitConfig};
use payledger_command_api::ops;
use payledger_command_api::roles::Roles;
use payledger_command_api::validate::{self, FieldErrors};
use payledger_command_api::workers::monitor;
use payledger_notifier::RetrySchedule;
use payledger_projections::rebuild::Projection;
use payledger_store::{merchants, Database, PoolConfig};
use rand::RngCore;

/// payledger: an event-sourced payment ledger and gateway.
#[derive(Debug, Parser)]
#[command(name = "payledger", version, about)]
struct Cli {
    /// Database: postgres://… (use sslmode=disable on loopback) or sqlite://FILE. Default: the
    /// embedded SQLite file payledger.db in the working directory.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// The monitor's query points, milliseconds. An alias, so that clap takes the whole list as one
/// value (it reads a literal `Vec` as "the flag repeated").
type QuerySchedule = Vec<u64>;

// Parsed once per run: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API with the projection, notifier and refund worker (migrates first), or the
    /// roles of --roles.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "PAYLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Public base URL for pay pages and channel callbacks (default: http://<listen>).
        #[arg(long, env = "PAYLEDGER_PUBLIC_URL")]
        public_url: Option<String>,
        /// Refuse notify_url/return_url on loopback, private and link-local addresses.
        #[arg(long, env = "PAYLEDGER_DENY_PRIVATE_URLS")]
        deny_private_urls: bool,
        /// Delays between notification attempts, e.g. "15s,15s,30s,3m" (default: WeChat Pay's ten).
        #[arg(long, env = "PAYLEDGER_NOTIFY_SCHEDULE")]
        notify_schedule: Option<RetrySchedule>,
        /// Whole-request timeout of one notification POST, e.g. "10s" (the default).
        #[arg(long, env = "PAYLEDGER_NOTIFY_TIMEOUT", value_parser = humantime::parse_duration)]
        notify_timeout: Option<std::time::Duration>,
        /// How long a notification being delivered is hidden from other senders, e.g. "60s" (the
        /// default); at least the timeout plus 5 s. After a crash, a delivery cut off is retried
        /// when its lease ends.
        #[arg(long, env = "PAYLEDGER_NOTIFY_LEASE", value_parser = humantime::parse_duration)]
        notify_lease: Option<std::time::Duration>,
        /// Whole-request deadline of the HTTP API, e.g. "30s" (the default); past it the answer
        /// is 503 with Retry-After.
        #[arg(long, env = "PAYLEDGER_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
        request_timeout: Option<std::time::Duration>,
        /// How long a database operation waits for a connection, e.g. "2s" (the default); while
        /// the database is unreachable, requests answer 503 after this long.
        #[arg(long, env = "PAYLEDGER_DB_ACQUIRE_TIMEOUT", value_parser = humantime::parse_duration)]
        db_acquire_timeout: Option<std::time::Duration>,
        /// Configuration file with channel accounts (TOML; see the README). Default:
        /// payledger.toml in the working directory if it exists.
        #[arg(long, env = "PAYLEDGER_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// Time between order monitor rounds, e.g. "30s".
        #[arg(long, env = "PAYLEDGER_MONITOR_INTERVAL", value_parser = humantime::parse_duration)]
        monitor_interval: Option<std::time::Duration>,
        /// How long past expire_at the monitor waits before settling an unpaid order, e.g. "60s".
        #[arg(long, env = "PAYLEDGER_MONITOR_GRACE", value_parser = humantime::parse_duration)]
        monitor_grace: Option<std::time::Duration>,
        /// Order ages at which the monitor queries an awaiting order at its channel before
        /// expiry, e.g. "1m,5m,15m" (the default); "none" for no queries before expiry.
        #[arg(long, env = "PAYLEDGER_MONITOR_QUERY_SCHEDULE", value_parser = monitor::parse_query_schedule)]
        monitor_query_schedule: Option<QuerySchedule>,
        /// NATS server URL: runs the relay that publishes every event to JetStream stream
        /// PAYLEDGER_EVENTS (subjects payledger.events.<merchant_id>.<event_type>), and reads
        /// channel accounts from the NATS KV bucket --config-bucket, applying its changes live.
        /// The refunds and notifier roles then consume the stream through durable JetStream
        /// consumers. Absent: no NATS.
        #[arg(long, env = "NATS_URL")]
        nats_url: Option<String>,
        /// JetStream stream the relay publishes to (created when missing; an existing stream
        /// keeps its settings).
        #[arg(long, env = "PAYLEDGER_NATS_STREAM", default_value = payledger_bus::relay::STREAM_DEFAULT)]
        nats_stream: String,
        /// Subject prefix of the relay's messages: <prefix>.<merchant_id>.<event_type>.
        #[arg(long, env = "PAYLEDGER_NATS_SUBJECT_PREFIX", default_value = payledger_bus::relay::SUBJECT_PREFIX_DEFAULT)]
        nats_subject_prefix: String,
        /// The stream's duplicate window when the relay creates it, e.g. "2m" (the default). Must
        /// exceed the relay's worst restart time: a re-publish after it is stored twice.
        #[arg(long, env = "PAYLEDGER_NATS_DUP_WINDOW", value_parser = humantime::parse_duration)]
        nats_dup_window: Option<std::time::Duration>,
        /// The stream's retention when the relay creates it, e.g. "7d" (the default); "0s" keeps
        /// messages forever.
        #[arg(long, env = "PAYLEDGER_NATS_MAX_AGE", value_parser = humantime::parse_duration)]
        nats_max_age: Option<std::time::Duration>,
        /// Durable JetStream consumer of the refunds role (NATS mode).
        #[arg(long, env = "PAYLEDGER_NATS_REFUNDS_DURABLE", default_value = payledger_bus::consumer::REFUNDS_DURABLE_DEFAULT)]
        nats_refunds_durable: String,
        /// Durable JetStream consumer of the notifier role (NATS mode).
        #[arg(long, env = "PAYLEDGER_NATS_NOTIFIER_DURABLE", default_value = payledger_bus::consumer::NOTIFIER_DURABLE_DEFAULT)]
        nats_notifier_durable: String,
        /// With --nats-url: how long a channel call waits for the channel service (role channels),
        /// e.g. "15s" (the default; longer than the adapters' own 10 s HTTP timeouts). Past it,
        /// an order being placed answers 504 and is recorded as failed (retryable).
        #[arg(long, env = "PAYLEDGER_CHANNEL_TIMEOUT", value_parser = humantime::parse_duration)]
        channel_timeout: Option<std::time::Duration>,
        /// Subject prefix of the channel service: <prefix>.<channel>.<operation>.
        #[arg(long, env = "PAYLEDGER_CHANNEL_SUBJECT_PREFIX", default_value = payledger_channel_adapters::remote::SUBJECT_PREFIX_DEFAULT)]
        channel_subject_prefix: String,
        /// NATS KV bucket of channel accounts (keys channels.<channel>.<account_id>), created
        /// when missing; used with --nats-url.
        #[arg(long, env = "PAYLEDGER_CONFIG_BUCKET", default_value = payledger_command_api::kv_config::BUCKET_DEFAULT)]
        config_bucket: String,
        /// Roles this process runs, comma-separated: api, projector, notifier, refunds,
        /// monitor, relay, channels; or all (the default; all runs the relay only with
        /// --nats-url). channels serves the channel adapters over NATS to api, refunds and
        /// monitor (with --nats-url they call channels only through it). A process without api
        /// serves only /healthz, /readyz and /metrics. Run refunds in exactly one process.
        #[arg(long, env = "PAYLEDGER_ROLES", default_value = "all")]
        roles: Roles,
        /// Requests per second each merchant may make; over it, 429 with Retry-After. 0 turns
        /// the limit off.
        #[arg(long, env = "PAYLEDGER_RATE_LIMIT", default_value_t = rate_limit::RATE_LIMIT_PER_SECOND_DEFAULT)]
        rate_limit: u32,
        /// Requests a merchant may send at once after being idle (the bucket's size).
        #[arg(long, env = "PAYLEDGER_RATE_LIMIT_BURST", default_value_t = rate_limit::RATE_LIMIT_BURST_DEFAULT)]
        rate_limit_burst: u32,
    },
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
}

#[derive(Debug, Subcommand)]
enum MerchantsCommand {
    /// Create a merchant; prints {merchant_id, api_key, webhook_secret} as JSON. The API key is
    /// shown only now: only its hash is stored.
    Add {
        /// 1–64 characters of A-Z a-z 0-9 _ -.
        merchant_id: String,
    },
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

async fn connect(url: Option<&str>) -> anyhow::Result<Database> {
    let db = Database::connect(url, PoolConfig::default())
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            public_url,
            deny_private_urls,
            notify_schedule,
            notify_timeout,
            notify_lease,
            request_timeout,
            db_acquire_timeout,
            config: config_file,
            monitor_interval,
            monitor_grace,
            monitor_query_schedule,
            nats_url,
            nats_stream,
            nats_subject_prefix,
            nats_dup_window,
            nats_max_age,
            nats_refunds_durable,
            nats_notifier_durable,
            channel_timeout,
            channel_subject_prefix,
            config_bucket,
            roles,
            rate_limit,
            rate_limit_burst,
        } => {
            let mut config = ServeConfig::new(listen, cli.database_url);
            config.public_url = public_url;
            config.allow_private_urls = !deny_private_urls;
            if let Some(s) = notify_schedule {
                config.sender.schedule = s;
            }
            if let Some(d) = notify_timeout {
                config.sender.request_timeout_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            if let Some(d) = notify_lease {
                config.sender.lease_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            if let Some(d) = request_timeout {
                config.request_timeout_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            if let Some(d) = db_acquire_timeout {
                config.pools.acquire_timeout_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            if let Some(path) = config::locate(config_file) {
                config.channels = ChannelAccounts::load(&path)?;
                tracing::info!(file = %path.display(), "configuration loaded");
            }
            if let Some(d) = monitor_interval {
                config.monitor.interval_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            if let Some(d) = monitor_grace {
                config.monitor.grace_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            }
            if let Some(points) = monitor_query_schedule {
                config.monitor.query_schedule_ms = points;
            }
            config.relay = nats_url.map(|url| {
                let mut relay = payledger_bus::RelayConfig::new(url);
                relay.stream = nats_stream;
                relay.subject_prefix = nats_subject_prefix;
                if let Some(d) = nats_dup_window {
                    relay.duplicate_window_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                }
                if let Some(d) = nats_max_age {
                    relay.max_age_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                }
                relay.channel_subject_prefix = channel_subject_prefix;
                if let Some(d) = channel_timeout {
                    relay.channel_timeout_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                }
                relay
            });
            config.durables.refunds = nats_refunds_durable;
            config.durables.notifier = nats_notifier_durable;
            config.config_bucket = config_bucket;
            config.roles = roles;
            config.rate_limit = RateLimitConfig {
                per_second: rate_limit,
                burst: rate_limit_burst,
            };
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
            let db = connect(cli.database_url.as_deref()).await?;
            ops::replay(&db, &projections, format).await?;
            db.close().await;
        }
        Command::Reconcile {
            verify,
            statement,
            channel,
            date,
            format,
        } => {
            let clean = match (verify, statement, channel) {
                (true, _, _) => {
                    let db = connect(cli.database_url.as_deref()).await?;
                    let report = ops::verify(&db, format).await?;
                    db.close().await;
                    report.is_clean()
                }
                (false, Some(file), Some(channel)) => {
                    let db = connect(cli.database_url.as_deref()).await?;
                    let report = ops::statement(&db, &file, &channel, date, format).await?;
                    db.close().await;
                    report.is_clean()
                }
                _ => anyhow::bail!("say what to reconcile: --verify, or --statement FILE --channel C"),
            };
            if !clean {
                std::process::exit(1);
            }
        }
        Command::Openapi => {
            print!("{}", payledger_command_api::openapi::to_pretty_json()?);
        }
        Command::Migrate => {
            let db = connect(cli.database_url.as_deref()).await?;
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
            let db = connect(cli.database_url.as_deref()).await?;
            let api_key = random_token("plk_");
            let webhook_secret = random_token("whsec_");
            merchants::add(db.pool(), &merchant_id, &api_key, &webhook_secret).await?;
            db.close().await;
            println!(
                "{}",
                serde_json::json!({"merchant_id": merchant_id, "api_key": api_key, "webhook_secret": webhook_secret})
            );
        }
    }
    Ok(())
}
