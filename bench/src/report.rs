//! The run's report: one record per phase, the write path's goals checked against them, printed as
//! tables and written as JSON.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::Serialize;

use crate::database::Durability;
use crate::load::PhaseOutcome;
use crate::pgbench::PgbenchResult;
use crate::stats::{per_second, ratio, Endpoint, EndpointReport};
use crate::usage::Usage;

/// Share of the pgbench limit each command endpoint should reach at its best concurrency.
pub const GOAL_RATIO_MIN: f64 = 0.70;
/// p99 of `POST /v1/orders` at half the peak rate, milliseconds.
pub const GOAL_CREATE_P99_MS_MAX: f64 = 10.0;
/// Server resident set at peak, MiB.
pub const GOAL_RSS_MIB_MAX: f64 = 150.0;
/// Merchant-facing POSTs per second over pgbench's single-append tps, at the best concurrency.
pub const GOAL_POSTS_RATIO_MIN: f64 = 0.70;
/// Write transactions per POST at the best PostgreSQL concurrency.
pub const GOAL_COMMITS_PER_POST_MAX: f64 = 1.5;
/// p99 of `POST /v1/orders` on the embedded SQLite default at 32 clients, milliseconds.
pub const GOAL_SQLITE_CREATE_P99_MS_MAX: f64 = 50.0;

/// Which store a phase ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Postgres,
    /// The embedded default (`payledger.db`).
    Sqlite,
    /// PostgreSQL with NATS: the relay publishes every event, the refund worker and the notifier
    /// consume the stream, the channels are called over NATS.
    PostgresNats,
}

/// How a phase drove the server.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Load {
    /// `concurrency` clients, each starting its next flow when the last one ends.
    ClosedLoop { concurrency: usize },
    /// Flows started at `rate_per_s` on schedule (half the best closed-loop order rate).
    OpenLoop { rate_per_s: f64 },
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub backend: Backend,
    pub load: Load,
    pub wall_s: f64,
    /// Orders created (201) per second.
    pub orders_per_s: f64,
    /// Event-store commands committed by successful requests per second (create 2, callback 1,
    /// refund 1; the refund worker's outcome command is not counted).
    pub commands_per_s: f64,
    /// pgbench on the same-shape transaction at the same concurrency (PostgreSQL closed loop).
    pub pgbench: Option<PgbenchResult>,
    /// `commands_per_s` over pgbench's transactions/s.
    pub commands_ratio_to_pgbench: Option<f64>,
    pub endpoints: Vec<EndpointReport>,
    pub usage: Usage,
    /// Open loop: flows not started because too many were in flight.
    pub skipped_flows: u64,
    /// PostgreSQL: write transactions (commits) the server's database started per successful
    /// POST of the mix, during the measured time: appends, read-model batches, checkpoints, the
    /// refund worker's outcome commands, notification bookkeeping. The pgbench database is idle
    /// meanwhile, so every one is payledger's.
    pub commits_per_post: Option<f64>,
    /// Successful POSTs of the mix (each one command).
    pub posts: u64,
}

impl PhaseReport {
    /// Summarises a phase.
    pub fn new(
        backend: Backend,
        load: Load,
        outcome: &PhaseOutcome,
        usage: Usage,
        pgbench: Option<PgbenchResult>,
    ) -> Self {
        let tps = pgbench.as_ref().map(|p| p.tps);
        let concurrency = match load {
            Load::ClosedLoop { concurrency } => Some(concurrency),
            Load::OpenLoop { .. } => None,
        };
        let endpoints = Endpoint::ALL
            .iter()
            .filter_map(|e| {
                let s = outcome.stats.endpoints.get(e)?;
                Some(EndpointReport::new(*e, s, outcome.wall, concurrency, tps))
            })
            .collect();
        let commands_per_s = per_second(outcome.stats.commands(), outcome.wall);
        Self {
            backend,
            load,
            wall_s: outcome.wall.as_secs_f64(),
            orders_per_s: per_second(outcome.stats.ok(Endpoint::CreateOrder), outcome.wall),
            commands_per_s,
            commands_ratio_to_pgbench: ratio(commands_per_s, tps),
            pgbench,
            endpoints,
            usage,
            skipped_flows: outcome.skipped,
            commits_per_post: None,
            posts: outcome.stats.commands(),
        }
    }

    /// With the write transactions counted during the phase (see [`PhaseReport::commits_per_post`]).
    pub fn with_write_transactions(mut self, write_transactions: Option<i64>) -> Self {
        self.commits_per_post = write_transactions
            .filter(|_| self.posts > 0)
            .map(|w| w.max(0) as f64 / self.posts as f64);
        self
    }

    /// The report of `endpoint`, if it was called.
    pub fn endpoint(&self, endpoint: Endpoint) -> Option<&EndpointReport> {
        self.endpoints.iter().find(|e| e.endpoint == endpoint)
    }

    /// `postgres c=8`, `sqlite c=4`, `postgres open 350 flows/s`.
    pub fn label(&self) -> String {
        let backend = match self.backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
            Backend::PostgresNats => "postgres+nats",
        };
        match self.load {
            Load::ClosedLoop { concurrency } => format!("{backend} c={concurrency}"),
            Load::OpenLoop { rate_per_s } => format!("{backend} open {rate_per_s:.0} flows/s"),
        }
    }
}

/// One of the write path's goals, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub measured: Option<f64>,
    /// `None` when the run could not measure it.
    pub met: Option<bool>,
}

/// pgbench with several appends per transaction: what group commit would give the database.
#[derive(Debug, Clone, Serialize)]
pub struct GroupCommitProbe {
    /// pgbench clients: the concurrency of the best PostgreSQL phase.
    pub clients: usize,
    /// (read events, append one) pairs per transaction, each on its own order.
    pub appends_per_transaction: usize,
    pub pgbench: PgbenchResult,
    /// Appends per second: transactions/s × appends per transaction.
    pub appends_per_s: f64,
    /// Single-append pgbench transactions/s at the same concurrency.
    pub single_append_tps: f64,
    /// `appends_per_s / single_append_tps`.
    pub gain: f64,
}

impl GroupCommitProbe {
    /// The probe from its pgbench run and the single-append tps at the same concurrency.
    pub fn new(appends_per_transaction: usize, pgbench: PgbenchResult, single_append_tps: f64) -> Self {
        let appends_per_s = pgbench.tps * appends_per_transaction as f64;
        Self {
            clients: pgbench.clients,
            appends_per_transaction,
            appends_per_s,
            single_append_tps,
            gain: ratio(appends_per_s, Some(single_append_tps)).unwrap_or(0.0),
            pgbench,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: String,
    pub cpu_cores: usize,
    /// PostgreSQL's commit settings (the run is meant for `synchronous_commit=on`).
    pub postgres: Option<Durability>,
    pub merchants: usize,
    pub phase_duration_s: f64,
    pub phases: Vec<PhaseReport>,
    /// See [`GroupCommitProbe`]; `None` with `--group-probe 0`.
    pub group_commit_probe: Option<GroupCommitProbe>,
    /// The embedded default's raw-append limit; `None` without `--sqlite`.
    pub sqlite_append_probe: Option<crate::sqlite_probe::SqliteAppendProbe>,
    pub goals: Vec<Goal>,
    /// Anything the reader must know (loaded machine, errors).
    pub notes: Vec<String>,
}

/// The best capacity ratio of `endpoint` over the PostgreSQL closed-loop phases.
fn best_ratio(phases: &[PhaseReport], endpoint: Endpoint) -> Option<f64> {
    phases
        .iter()
        .filter(|p| p.backend == Backend::Postgres)
        .filter_map(|p| p.endpoint(endpoint)?.capacity_ratio_to_pgbench)
        .reduce(f64::max)
}

/// Share of pgbench's single-append tps NATS mode should reach (at the same concurrency).
pub const GOAL_NATS_RATIO_MIN: f64 = 0.6;

/// Share of its own raw-append limit the embedded SQLite default should reach.
pub const GOAL_SQLITE_RATIO_MIN: f64 = 0.5;

/// The SQLite goal that needs the append probe: POSTs/s at the best SQLite concurrency over
/// the probe's appends/s.
pub fn sqlite_goals(report: &Report) -> Vec<Goal> {
    let Some(probe) = &report.sqlite_append_probe else {
        return vec![];
    };
    let best = report
        .phases
        .iter()
        .filter(|p| p.backend == Backend::Sqlite)
        .map(|p| p.commands_per_s)
        .reduce(f64::max);
    let measured = best.and_then(|b| ratio(b, Some(probe.tps)));
    vec![Goal {
        goal: format!("merchant POSTs/s ≥ {GOAL_SQLITE_RATIO_MIN} × SQLite's raw-append limit (embedded, one writer)"),
        measured,
        met: measured.map(|m| m >= GOAL_SQLITE_RATIO_MIN),
    }]
}

/// The NATS-mode goal: its POSTs/s over the pgbench tps of the same concurrency, if it ran.
pub fn nats_goals(report: &Report) -> Vec<Goal> {
    let Some(phase) = report.phases.iter().find(|p| p.backend == Backend::PostgresNats) else {
        return vec![];
    };
    let measured = phase.commands_ratio_to_pgbench;
    vec![Goal {
        goal: format!(
            "NATS mode: merchant POSTs/s ≥ {GOAL_NATS_RATIO_MIN} × pgbench single-append tps (same concurrency)"
        ),
        measured,
        met: measured.map(|m| m >= GOAL_NATS_RATIO_MIN),
    }]
}

/// Checks the write path's goals against `phases`.
pub fn goals(phases: &[PhaseReport]) -> Vec<Goal> {
    let mut goals: Vec<Goal> = [Endpoint::CreateOrder, Endpoint::Callback, Endpoint::Refund]
        .iter()
        .map(|&e| {
            let measured = best_ratio(phases, e);
            Goal {
                goal: format!(
                    "{} capacity ≥ {GOAL_RATIO_MIN} × pgbench at the best concurrency",
                    e.route()
                ),
                measured,
                met: measured.map(|m| m >= GOAL_RATIO_MIN),
            }
        })
        .collect();
    let half_peak_p99 = phases
        .iter()
        .find(|p| p.backend == Backend::Postgres && matches!(p.load, Load::OpenLoop { .. }))
        .and_then(|p| p.endpoint(Endpoint::CreateOrder))
        .map(|e| e.p99_ms);
    goals.push(Goal {
        goal: format!("POST /v1/orders p99 ≤ {GOAL_CREATE_P99_MS_MAX} ms at half the peak rate (PostgreSQL)"),
        measured: half_peak_p99,
        met: half_peak_p99.map(|p| p <= GOAL_CREATE_P99_MS_MAX),
    });
    let rss = phases
        .iter()
        .filter(|p| p.backend == Backend::Postgres)
        .map(|p| p.usage.server_rss_peak_mib)
        .reduce(f64::max);
    goals.push(Goal {
        goal: format!("server RSS ≤ {GOAL_RSS_MIB_MAX} MiB at peak (PostgreSQL)"),
        measured: rss,
        met: rss.map(|r| r <= GOAL_RSS_MIB_MAX),
    });
    let best = phases
        .iter()
        .filter(|p| p.backend == Backend::Postgres && p.commands_ratio_to_pgbench.is_some())
        .max_by(|a, b| a.commands_per_s.total_cmp(&b.commands_per_s));
    let posts_ratio = best.and_then(|p| p.commands_ratio_to_pgbench);
    goals.push(Goal {
        goal: format!("merchant POSTs/s ≥ {GOAL_POSTS_RATIO_MIN} × pgbench single-append tps at the best concurrency (PostgreSQL)"),
        measured: posts_ratio,
        met: posts_ratio.map(|r| r >= GOAL_POSTS_RATIO_MIN),
    });
    let commits = best.and_then(|p| p.commits_per_post);
    goals.push(Goal {
        goal: format!("≤ {GOAL_COMMITS_PER_POST_MAX} commits per POST at the best concurrency (PostgreSQL)"),
        measured: commits,
        met: commits.map(|c| c <= GOAL_COMMITS_PER_POST_MAX),
    });
    let sqlite_p99 = phases
        .iter()
        .find(|p| p.backend == Backend::Sqlite && matches!(p.load, Load::ClosedLoop { concurrency: 32 }))
        .and_then(|p| p.endpoint(Endpoint::CreateOrder))
        .map(|e| e.p99_ms);
    goals.push(Goal {
        goal: format!("POST /v1/orders p99 ≤ {GOAL_SQLITE_CREATE_P99_MS_MAX} ms at 32 clients (embedded SQLite)"),
        measured: sqlite_p99,
        met: sqlite_p99.map(|p| p <= GOAL_SQLITE_CREATE_P99_MS_MAX),
    });
    goals
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.decimals$}"))
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    t
}

fn right(t: &mut Table, from: usize) {
    let columns = t.column_count();
    for i in from..columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

impl Report {
    /// The report as text tables: throughput per phase, latency per endpoint, the goals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut t = table(&[
            "phase",
            "orders/s",
            "commands/s",
            "pgbench tps",
            "commands ÷ pgbench",
            "commits/POST",
            "server RSS peak MiB",
            "server CPU %",
            "machine CPU busy %",
            "load 1m",
        ]);
        for p in &self.phases {
            t.add_row(vec![
                Cell::new(p.label()),
                Cell::new(format!("{:.0}", p.orders_per_s)),
                Cell::new(format!("{:.0}", p.commands_per_s)),
                Cell::new(opt(p.pgbench.as_ref().map(|b| b.tps), 0)),
                Cell::new(opt(p.commands_ratio_to_pgbench, 2)),
                Cell::new(opt(p.commits_per_post, 2)),
                Cell::new(format!("{:.1}", p.usage.server_rss_peak_mib)),
                Cell::new(format!("{:.0}", p.usage.server_cpu_mean_percent)),
                Cell::new(format!("{:.0}", p.usage.machine_cpu_busy_percent)),
                Cell::new(format!("{:.1}", p.usage.load_average_1m)),
            ]);
        }
        right(&mut t, 1);
        out.push_str(&format!("Throughput\n{t}\n\n"));

        let mut t = table(&[
            "phase",
            "endpoint",
            "ok/s",
            "capacity/s",
            "capacity ÷ pgbench",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "errors",
        ]);
        for p in &self.phases {
            for e in &p.endpoints {
                let errors = if e.errors.is_empty() {
                    "0".to_string()
                } else {
                    e.errors
                        .iter()
                        .map(|(status, n)| format!("{status}×{n}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                t.add_row(vec![
                    p.label(),
                    e.route.to_string(),
                    format!("{:.0}", e.ok_per_s),
                    opt(e.capacity_per_s, 0),
                    opt(e.capacity_ratio_to_pgbench, 2),
                    format!("{:.2}", e.p50_ms),
                    format!("{:.2}", e.p90_ms),
                    format!("{:.2}", e.p99_ms),
                    format!("{:.1}", e.max_ms),
                    errors,
                ]);
            }
        }
        right(&mut t, 2);
        out.push_str(&format!(
            "Latency per endpoint (capacity = clients ÷ mean latency: the rate if every client called only it)\n{t}\n\n"
        ));

        let mut t = table(&["goal", "measured", "met"]);
        for g in &self.goals {
            t.add_row(vec![
                g.goal.clone(),
                opt(g.measured, 2),
                match g.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "not measured".into(),
                },
            ]);
        }
        out.push_str(&format!("Goals\n{t}\n"));
        if let Some(g) = &self.group_commit_probe {
            out.push_str(&format!(
                "group commit probe: pgbench at {} clients with {} appends per transaction: {:.0} appends/s, \
                 {:.2}× the {:.0} single-append transactions/s\n",
                g.clients, g.appends_per_transaction, g.appends_per_s, g.gain, g.single_append_tps
            ));
        }
        if let Some(p) = &self.sqlite_append_probe {
            out.push_str(&format!(
                "SQLite raw-append probe: one writer, WAL, synchronous=FULL: {:.0} appends/s ({} in all)\n",
                p.tps, p.transactions
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::PhaseStats;

    fn phase(load: Load, create_ms: u64, tps: Option<f64>, rss: f64) -> PhaseReport {
        let mut stats = PhaseStats::default();
        for _ in 0..100 {
            stats.record(Endpoint::CreateOrder, Duration::from_millis(create_ms), Some(201));
            stats.record(Endpoint::Callback, Duration::from_millis(create_ms / 2), Some(200));
        }
        let outcome = PhaseOutcome {
            stats,
            wall: Duration::from_secs(1),
            skipped: 0,
        };
        let usage = Usage {
            server_rss_peak_mib: rss,
            ..Usage::default()
        };
        let pgbench = tps.map(|tps| PgbenchResult {
            clients: 4,
            tps,
            latency_avg_ms: None,
            transactions: None,
            failed: None,
        });
        PhaseReport::new(Backend::Postgres, load, &outcome, usage, pgbench)
    }

    #[test]
    fn phase_counts_one_command_per_order_and_one_per_callback() {
        let p = phase(Load::ClosedLoop { concurrency: 4 }, 10, Some(1_000.0), 80.0);
        assert!((p.orders_per_s - 100.0).abs() < 1e-9);
        assert!((p.commands_per_s - 200.0).abs() < 1e-9);
        assert!((p.commands_ratio_to_pgbench.expect("pgbench") - 0.2).abs() < 1e-9);
        assert!(p.endpoint(Endpoint::Refund).is_none(), "no refund was called");
    }

    #[test]
    fn goals_take_the_best_concurrency_and_the_half_peak_phase() {
        let phases = vec![
            // 4 clients at 10 ms: 400/s of 1,000 tps = 0.4; at 5 ms: 800/s = 0.8.
            phase(Load::ClosedLoop { concurrency: 4 }, 10, Some(1_000.0), 90.0),
            phase(Load::ClosedLoop { concurrency: 4 }, 5, Some(1_000.0), 160.0).with_write_transactions(Some(250)),
            phase(Load::OpenLoop { rate_per_s: 400.0 }, 12, None, 100.0),
        ];
        let goals = goals(&phases);
        assert_eq!(goals.len(), 8);
        let create = &goals[0];
        assert!((create.measured.expect("measured") - 0.8).abs() < 0.01, "{create:?}");
        assert_eq!(create.met, Some(true));
        assert_eq!(goals[2].met, None, "no refund measured");
        let p99 = &goals[3];
        assert!((p99.measured.expect("measured") - 12.0).abs() < 0.05, "{p99:?}");
        assert_eq!(p99.met, Some(false));
        let rss = &goals[4];
        assert_eq!(rss.measured, Some(160.0));
        assert_eq!(rss.met, Some(false));
        // 100 creates + 100 callbacks in 1 s = 200 POSTs/s of 1,000 tps.
        let posts = &goals[5];
        assert!((posts.measured.expect("measured") - 0.2).abs() < 1e-9, "{posts:?}");
        assert_eq!(posts.met, Some(false));
        // 250 write transactions for 200 POSTs.
        let commits = &goals[6];
        assert!((commits.measured.expect("measured") - 1.25).abs() < 1e-9, "{commits:?}");
        assert_eq!(commits.met, Some(true));
        assert_eq!(goals[7].met, None, "no SQLite phase");
    }

    #[test]
    fn render_shows_every_phase_and_goal() {
        let phases = vec![phase(Load::ClosedLoop { concurrency: 4 }, 10, Some(1_000.0), 90.0)];
        let report = Report {
            started_at: "2026-11-21T10:00:00Z".into(),
            cpu_cores: 2,
            postgres: None,
            merchants: 1,
            phase_duration_s: 1.0,
            goals: goals(&phases),
            phases,
            sqlite_append_probe: None,
            group_commit_probe: Some(GroupCommitProbe::new(
                4,
                PgbenchResult {
                    clients: 4,
                    tps: 500.0,
                    latency_avg_ms: None,
                    transactions: None,
                    failed: None,
                },
                1_000.0,
            )),
            notes: vec!["loaded machine".into()],
        };
        let text = report.render();
        assert!(text.contains("2000 appends/s, 2.00× the 1000"), "{text}");
        assert!(text.contains("postgres c=4"), "{text}");
        assert!(text.contains("POST /v1/callbacks/sandbox"), "{text}");
        assert!(text.contains("not measured"), "{text}");
        assert!(text.contains("note: loaded machine"), "{text}");
    }
}
