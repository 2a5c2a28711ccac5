//! `payledger-bench`: drives the real `payledger serve` over HTTP with many merchants through the
//! payment mix (create order → sandbox success callback → 30% refunded), at each concurrency of a
//! list, on PostgreSQL with durable commits; measures the machine's limit with `pgbench` on the
//! event store's append transaction at the same concurrency and reports ours as a ratio of it;
//! optionally the embedded SQLite default beside it; then the mix open-loop at half the best
//! order rate for the p99 of `POST /v1/orders`. Prints tables and writes JSON. See
//! docs/benchmark.md and `bench/run.sh`.

mod database;
mod load;
mod pgbench;
mod report;
mod server;
mod sqlite_probe;
mod stats;
mod usage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::load::{PhaseOutcome, Target};
use crate::report::{Backend, GroupCommitProbe, Load, PhaseReport, Report};
use crate::server::{Merchant, Payledger};
use crate::stats::Endpoint;

/// Load generator for payledger: the payment mix over HTTP, measured against pgbench.
#[derive(Debug, Parser)]
// Later flags win, so that `bench/run.sh -- --duration 60s` overrides the script's defaults.
#[command(name = "payledger-bench", version, about, args_override_self = true)]
struct Cli {
    /// PostgreSQL server on which fresh databases are created (for payledger and for pgbench),
    /// as a URL to an existing database there. Use sslmode=disable on loopback.
    #[arg(
        long,
        env = "PAYLEDGER_BENCH_PG",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    pg_admin_url: String,
    /// Run payledger on this existing PostgreSQL database instead of a fresh one (it is migrated).
    #[arg(long)]
    database_url: Option<String>,
    /// The payledger binary (default: next to this one, else target/release/payledger).
    #[arg(long)]
    payledger: Option<PathBuf>,
    /// Concurrencies (clients with one request in flight each), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16,32")]
    concurrency: Vec<usize>,
    /// Measured time of each phase (and of each pgbench run), e.g. "20s".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    duration: Duration,
    /// Unmeasured load before each closed-loop phase (fills pools and caches), e.g. "3s".
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    warmup: Duration,
    /// Merchants; client i acts for merchant i mod this.
    #[arg(long, default_value_t = 16)]
    merchants: usize,
    /// Also run the embedded SQLite default at the same concurrencies (no pgbench ratio).
    #[arg(long)]
    sqlite: bool,
    /// Appends per transaction of the group-commit probe (pgbench at the best concurrency); 0
    /// skips it.
    #[arg(long, default_value_t = 8)]
    group_probe: usize,
    /// Skip the open-loop run at half the best PostgreSQL order rate.
    #[arg(long)]
    no_half_peak: bool,
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench/results.json")]
    json: PathBuf,
    /// NATS server with JetStream: also run the mix in NATS mode at the best PostgreSQL
    /// concurrency, on a fresh database and stream names of this run (removed afterwards).
    #[arg(long)]
    nats_url: Option<String>,
    /// Keep the fresh databases and the working directory (server logs, SQLite file).
    #[arg(long)]
    keep: bool,
}

/// Seconds since the epoch with a random tail: names this run's databases and order numbers.
fn run_id() -> String {
    format!(
        "{}_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// A started server with what the mix needs to drive it.
struct Running {
    server: server::Server,
    secret: String,
    merchants: Vec<Merchant>,
}

/// Migrates, adds `merchants` merchants, starts the server and reads its sandbox secret.
async fn start(payledger: &Payledger, merchants: usize) -> anyhow::Result<Running> {
    payledger.migrate().await?;
    let mut added = Vec::with_capacity(merchants);
    for i in 0..merchants {
        added.push(payledger.add_merchant(&format!("bench-{i:02}")).await?);
    }
    let server = payledger.serve().await?;
    let key_file = payledger.workdir.join(payledger_store::sealed::KEY_FILE_DEFAULT);
    let secret = database::sandbox_secret(&payledger.database_url_for_reading(), &key_file).await?;
    eprintln!(
        "server pid {} at {} ({})",
        server.pid,
        server.base_url,
        payledger.workdir.display()
    );
    Ok(Running {
        server,
        secret,
        merchants: added,
    })
}

/// Runs `load` against `running` with resource sampling.
/// What [`measure`] saw: the load's outcome, the server's resource use and, on PostgreSQL, how
/// many write transactions the server's database started during the measured time.
struct Measured {
    outcome: PhaseOutcome,
    usage: usage::Usage,
    write_transactions: Option<i64>,
}

async fn measure(
    running: &Running,
    run: &str,
    load: Load,
    cli: &Cli,
    pg_url: Option<&str>,
) -> anyhow::Result<Measured> {
    let clients = match load {
        Load::ClosedLoop { concurrency } => concurrency,
        Load::OpenLoop { rate_per_s } => (rate_per_s as usize).max(8),
    };
    let target = |tag: &str| {
        Target::new(
            &running.server.base_url,
            &running.secret,
            running.merchants.clone(),
            clients,
            &format!("{run}-{tag}"),
        )
        .map(Arc::new)
    };
    if let Load::ClosedLoop { concurrency } = load {
        if !cli.warmup.is_zero() {
            load::closed_loop(target(&format!("w{concurrency}"))?, concurrency, cli.warmup).await;
        }
    }
    let xid_before = match pg_url {
        Some(url) => Some(database::next_transaction_id(url).await?),
        None => None,
    };
    let sampler = usage::Sampler::start(running.server.pid)?;
    let outcome = match load {
        Load::ClosedLoop { concurrency } => {
            load::closed_loop(target(&format!("c{concurrency}"))?, concurrency, cli.duration).await
        }
        Load::OpenLoop { rate_per_s } => load::open_loop(target("open")?, rate_per_s, cli.duration).await,
    };
    let usage = sampler.finish().await?;
    // The refund worker's outcome commands of the last refunds land just after: let them in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let write_transactions = match (pg_url, xid_before) {
        (Some(url), Some(before)) => Some(database::next_transaction_id(url).await? - before - 1),
        _ => None,
    };
    Ok(Measured {
        outcome,
        usage,
        write_transactions,
    })
}

fn print_phase(p: &PhaseReport) {
    let create = p.endpoint(Endpoint::CreateOrder);
    eprintln!(
        "  {}: {:.0} orders/s, {:.0} commands/s, pgbench {} tps, {} commits/POST, create p99 {} ms",
        p.label(),
        p.orders_per_s,
        p.commands_per_s,
        p.pgbench.as_ref().map_or("–".into(), |b| format!("{:.0}", b.tps)),
        p.commits_per_post.map_or("–".into(), |c| format!("{c:.2}")),
        create.map_or("–".into(), |c| format!("{:.2}", c.p99_ms)),
    );
}

/// The PostgreSQL phases: each concurrency closed-loop with its pgbench run, then half peak.
async fn postgres_phases(
    cli: &Cli,
    binary: &Path,
    workdir: &Path,
    run: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut created = Vec::new();
    let database_url = match &cli.database_url {
        Some(url) => url.clone(),
        None => {
            let db = database::create(&cli.pg_admin_url, run).await?;
            created.push(db.clone());
            db.url
        }
    };
    let pgbench_db = database::create(&cli.pg_admin_url, &format!("{run}_pgbench")).await?;
    created.push(pgbench_db.clone());
    // The real schema, indexes and triggers, through the real migrations.
    Payledger {
        binary: binary.to_path_buf(),
        database_url: Some(pgbench_db.url.clone()),
        workdir: workdir.join("pgbench"),
        serve_args: vec![],
    }
    .migrate()
    .await
    .context("migrating the pgbench database")?;

    let payledger = Payledger {
        binary: binary.to_path_buf(),
        database_url: Some(database_url),
        workdir: workdir.join("postgres"),
        serve_args: vec![],
    };
    let running = start(&payledger, cli.merchants).await?;
    let result = async {
        for &c in &cli.concurrency {
            let load = Load::ClosedLoop { concurrency: c };
            let m = measure(&running, run, load, cli, Some(&pgbench_db.url)).await?;
            eprintln!("  pgbench at {c} clients for {:?}", cli.duration);
            let bench = pgbench::run(&pgbench_db.url, &workdir.join("append.sql"), 1, c, cli.duration).await?;
            let phase = PhaseReport::new(Backend::Postgres, load, &m.outcome, m.usage, Some(bench))
                .with_write_transactions(m.write_transactions);
            print_phase(&phase);
            report.phases.push(phase);
        }
        let best_phase = report
            .phases
            .iter()
            .filter(|p| p.backend == Backend::Postgres)
            .max_by(|a, b| a.orders_per_s.total_cmp(&b.orders_per_s));
        let best = best_phase.map_or(0.0, |p| p.orders_per_s);
        if let (Some(phase), true) = (best_phase, cli.group_probe > 0) {
            if let (Load::ClosedLoop { concurrency }, Some(single)) = (phase.load, &phase.pgbench) {
                let appends = cli.group_probe;
                eprintln!("  group commit probe: pgbench at {concurrency} clients, {appends} appends per transaction");
                let path = workdir.join("append-grouped.sql");
                let grouped = pgbench::run(&pgbench_db.url, &path, appends, concurrency, cli.duration).await?;
                report.group_commit_probe = Some(GroupCommitProbe::new(appends, grouped, single.tps));
            }
        }
        if !cli.no_half_peak {
            if best > 0.0 {
                let load = Load::OpenLoop { rate_per_s: best / 2.0 };
                let m = measure(&running, run, load, cli, Some(&pgbench_db.url)).await?;
                let phase = PhaseReport::new(Backend::Postgres, load, &m.outcome, m.usage, None)
                    .with_write_transactions(m.write_transactions);
                print_phase(&phase);
                report.phases.push(phase);
            } else {
                report.notes.push("no order was created: no half-peak run".into());
            }
        }
        anyhow::Ok(())
    }
    .await;
    let stopped = running.server.stop().await;
    if !cli.keep {
        for db in &created {
            if let Err(e) = database::drop(&cli.pg_admin_url, db).await {
                eprintln!("warning: {e:#}");
            }
        }
    }
    result?;
    stopped
}

/// NATS mode at the best PostgreSQL concurrency: a fresh database, this run's stream, subjects,
/// durables and KV bucket; compared with the pgbench tps measured at that concurrency. The
/// stream and bucket are deleted afterwards.
async fn nats_phase(
    cli: &Cli,
    nats_url: &str,
    binary: &Path,
    workdir: &Path,
    run: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let best = report
        .phases
        .iter()
        .filter(|p| p.backend == Backend::Postgres && p.pgbench.is_some())
        .max_by(|a, b| a.orders_per_s.total_cmp(&b.orders_per_s))
        .and_then(|p| match p.load {
            Load::ClosedLoop { concurrency } => Some((concurrency, p.pgbench.clone())),
            Load::OpenLoop { .. } => None,
        });
    let Some((concurrency, pgbench)) = best else {
        report
            .notes
            .push("no PostgreSQL phase to compare NATS mode with: no NATS run".into());
        return Ok(());
    };
    let client = match async_nats::connect(nats_url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: NATS at {nats_url} unreachable ({e}): no NATS run");
            report
                .notes
                .push(format!("NATS at {nats_url} unreachable: no NATS run"));
            return Ok(());
        }
    };
    eprintln!("PostgreSQL + NATS: concurrency {concurrency}, {:?}", cli.duration);
    let db = database::create(&cli.pg_admin_url, &format!("{run}_nats")).await?;
    let stream = format!("BENCH_{run}").to_uppercase();
    let bucket = format!("bench_{run}_channels");
    let serve_args: Vec<String> = [
        ("--nats-url", nats_url.to_string()),
        ("--nats-stream", stream.clone()),
        ("--nats-subject-prefix", format!("bench.{run}.events")),
        ("--nats-refunds-durable", format!("bench_{run}_refunds")),
        ("--nats-notifier-durable", format!("bench_{run}_notifier")),
        ("--channel-subject-prefix", format!("bench.{run}.channels")),
        ("--config-bucket", bucket.clone()),
        ("--nats-max-age", "1h".to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    let payledger = Payledger {
        binary: binary.to_path_buf(),
        database_url: Some(db.url.clone()),
        workdir: workdir.join("nats"),
        serve_args,
    };
    let result = async {
        let running = start(&payledger, cli.merchants).await?;
        let load = Load::ClosedLoop { concurrency };
        let measured = measure(&running, run, load, cli, Some(&db.url)).await;
        let stopped = running.server.stop().await;
        let m = measured?;
        stopped?;
        let phase = PhaseReport::new(Backend::PostgresNats, load, &m.outcome, m.usage, pgbench)
            .with_write_transactions(m.write_transactions);
        print_phase(&phase);
        report.phases.push(phase);
        anyhow::Ok(())
    }
    .await;
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_stream(&stream).await;
    let _ = js.delete_key_value(&bucket).await;
    if !cli.keep {
        if let Err(e) = database::drop(&cli.pg_admin_url, &db).await {
            eprintln!("warning: {e:#}");
        }
    }
    result
}

/// The embedded SQLite default (no DATABASE_URL, payledger.db in its own directory).
async fn sqlite_phases(cli: &Cli, binary: &Path, workdir: &Path, run: &str, report: &mut Report) -> anyhow::Result<()> {
    let payledger = Payledger {
        binary: binary.to_path_buf(),
        database_url: None,
        workdir: workdir.join("sqlite"),
        serve_args: vec![],
    };
    // The raw-append limit first, on a file of its own beside the server's.
    let probe_db = Payledger {
        binary: binary.to_path_buf(),
        database_url: Some(format!(
            "sqlite://{}",
            workdir.join("sqlite-probe").join("payledger.db").display()
        )),
        workdir: workdir.join("sqlite-probe"),
        serve_args: vec![],
    };
    probe_db.migrate().await.context("migrating the SQLite probe's file")?;
    eprintln!("  SQLite raw-append probe: one writer for {:?}", cli.duration);
    let probe = sqlite_probe::run(&workdir.join("sqlite-probe").join("payledger.db"), cli.duration).await?;
    eprintln!("  SQLite raw appends: {:.0}/s", probe.tps);
    report.sqlite_append_probe = Some(probe);
    let running = start(&payledger, cli.merchants).await?;
    let result = async {
        for &c in &cli.concurrency {
            let load = Load::ClosedLoop { concurrency: c };
            let m = measure(&running, run, load, cli, None).await?;
            let phase = PhaseReport::new(Backend::Sqlite, load, &m.outcome, m.usage, None);
            print_phase(&phase);
            report.phases.push(phase);
        }
        anyhow::Ok(())
    }
    .await;
    let stopped = running.server.stop().await;
    result?;
    stopped
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(
        !cli.concurrency.is_empty() && !cli.concurrency.contains(&0),
        "--concurrency needs at least one positive number"
    );
    anyhow::ensure!(cli.merchants > 0, "--merchants must be at least 1");
    let binary = cli.payledger.clone().unwrap_or_else(server::default_binary);
    anyhow::ensure!(
        binary.exists(),
        "{} not found: build it with `cargo build --release -p payledger-command-api` or pass --payledger",
        binary.display()
    );
    // The server runs in its own working directory: a relative path would not find it there.
    let binary = std::fs::canonicalize(&binary).with_context(|| format!("resolving {}", binary.display()))?;
    let run = run_id();
    let tmp = tempfile::Builder::new().prefix("payledger-bench-").tempdir()?;
    let workdir = if cli.keep { tmp.keep() } else { tmp.path().to_path_buf() };

    let durability = database::durability(&cli.pg_admin_url)
        .await
        .with_context(|| format!("reading settings of PostgreSQL at {}", cli.pg_admin_url))?;
    let mut report = Report {
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cpu_cores: std::thread::available_parallelism().map_or(0, usize::from),
        merchants: cli.merchants,
        phase_duration_s: cli.duration.as_secs_f64(),
        phases: Vec::new(),
        group_commit_probe: None,
        sqlite_append_probe: None,
        goals: Vec::new(),
        notes: Vec::new(),
        postgres: None,
    };
    if durability.synchronous_commit != "on" || durability.fsync != "on" {
        report.notes.push(format!(
            "PostgreSQL is not fully durable (synchronous_commit={}, fsync={}): the figures are not comparable",
            durability.synchronous_commit, durability.fsync
        ));
    }
    report.postgres = Some(durability);
    report.notes.push(format!(
        "client, server and PostgreSQL share this machine's {} cores; compare ratios, not absolute figures",
        report.cpu_cores
    ));

    eprintln!("PostgreSQL: concurrency {:?}, {:?} each", cli.concurrency, cli.duration);
    postgres_phases(&cli, &binary, &workdir, &run, &mut report).await?;
    if let Some(nats_url) = &cli.nats_url {
        nats_phase(&cli, nats_url, &binary, &workdir, &run, &mut report).await?;
    }
    if cli.sqlite {
        eprintln!("SQLite (embedded default): concurrency {:?}", cli.concurrency);
        sqlite_phases(&cli, &binary, &workdir, &run, &mut report).await?;
    }
    report.goals = report::goals(&report.phases);
    report.goals.extend(report::sqlite_goals(&report));
    report.goals.extend(report::nats_goals(&report));

    println!("{}", report.render());
    if let Some(dir) = cli.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", cli.json.display()))?;
    eprintln!("JSON report: {}", cli.json.display());
    if cli.keep {
        eprintln!("kept: {} and the payledger_bench_{run}* databases", workdir.display());
    }
    Ok(())
}
