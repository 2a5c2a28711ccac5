//! The server's memory and CPU during a phase, from `/proc/<pid>/{status,stat}`, and the whole
//! machine's CPU from `/proc/stat` (the client, the server and PostgreSQL share it).

use std::time::{Duration, Instant};

use anyhow::Context;
use procfs::process::Process;
use procfs::{CpuTime, Current, CurrentSI, KernelStats};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Time between two samples of the server's resident set.
const SAMPLE_INTERVAL_MS: u64 = 200;

/// Resource use over one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    /// Highest resident set size of the server seen in a sample, MiB.
    pub server_rss_peak_mib: f64,
    /// Server CPU time over wall time, percent of one core (200 = both cores of a 2-core machine).
    pub server_cpu_mean_percent: f64,
    /// Busy share of all the machine's cores (everything that ran, not only the server), percent.
    pub machine_cpu_busy_percent: f64,
    /// The machine's 1-minute load average when the phase ended.
    pub load_average_1m: f32,
}

struct Snapshot {
    at: Instant,
    server_ticks: u64,
    machine: Option<CpuTime>,
}

fn snapshot(process: &Process) -> anyhow::Result<Snapshot> {
    let stat = process.stat().context("reading the server's /proc/<pid>/stat")?;
    Ok(Snapshot {
        at: Instant::now(),
        server_ticks: stat.utime + stat.stime,
        machine: KernelStats::current().ok().map(|k| k.total),
    })
}

fn rss_mib(process: &Process) -> Option<f64> {
    // VmRSS is in kB.
    process.status().ok()?.vmrss.map(|kb| kb as f64 / 1024.0)
}

/// Busy and total jiffies of `t` (iowait counts as idle: the core could run something else).
fn busy_and_total(t: &CpuTime) -> (u64, u64) {
    let idle = t.idle + t.iowait.unwrap_or(0);
    let busy = t.user + t.nice + t.system + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0) + t.steal.unwrap_or(0);
    (busy, busy + idle)
}

/// CPU percent of one core from a tick difference over a wall time.
pub fn cpu_percent(ticks: u64, ticks_per_second: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 && ticks_per_second > 0 {
        ticks as f64 / ticks_per_second as f64 / secs * 100.0
    } else {
        0.0
    }
}

/// Samples the server's RSS until [`Sampler::finish`].
pub struct Sampler {
    stop: watch::Sender<bool>,
    peak: JoinHandle<f64>,
    process: Process,
    start: Snapshot,
}

impl Sampler {
    /// Starts sampling process `pid`.
    ///
    /// # Errors
    /// When `/proc/<pid>` cannot be read.
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        let pid = i32::try_from(pid).context("pid out of range")?;
        let process = Process::new(pid).with_context(|| format!("opening /proc/{pid}"))?;
        let start = snapshot(&process)?;
        let (stop, mut stopped) = watch::channel(false);
        let sampled = Process::new(pid)?;
        let peak = tokio::spawn(async move {
            let mut peak = rss_mib(&sampled).unwrap_or(0.0);
            let mut tick = tokio::time::interval(Duration::from_millis(SAMPLE_INTERVAL_MS));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                if let Some(rss) = rss_mib(&sampled) {
                    peak = peak.max(rss);
                }
            }
            peak.max(rss_mib(&sampled).unwrap_or(0.0))
        });
        Ok(Self {
            stop,
            peak,
            process,
            start,
        })
    }

    /// Stops sampling; the usage since [`Sampler::start`].
    ///
    /// # Errors
    /// When `/proc/<pid>` can no longer be read (the server died).
    pub async fn finish(self) -> anyhow::Result<Usage> {
        let end = snapshot(&self.process)?;
        let _ = self.stop.send(true);
        let peak = self.peak.await.context("the RSS sampler panicked")?;
        let wall = end.at.duration_since(self.start.at);
        let machine = match (&self.start.machine, &end.machine) {
            (Some(a), Some(b)) => {
                let (busy_a, total_a) = busy_and_total(a);
                let (busy_b, total_b) = busy_and_total(b);
                let total = total_b.saturating_sub(total_a);
                if total > 0 {
                    busy_b.saturating_sub(busy_a) as f64 / total as f64 * 100.0
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        Ok(Usage {
            server_rss_peak_mib: peak,
            server_cpu_mean_percent: cpu_percent(
                end.server_ticks.saturating_sub(self.start.server_ticks),
                procfs::ticks_per_second(),
                wall,
            ),
            machine_cpu_busy_percent: machine,
            load_average_1m: procfs::LoadAverage::current().map(|l| l.one).unwrap_or(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_of_one_core() {
        // 300 ticks at 100/s over 2 s: 1.5 cores busy.
        assert!((cpu_percent(300, 100, Duration::from_secs(2)) - 150.0).abs() < 1e-9);
        assert_eq!(cpu_percent(300, 100, Duration::ZERO), 0.0);
    }

    #[tokio::test]
    async fn sampler_sees_this_process_resident_and_busy() {
        let sampler = Sampler::start(std::process::id()).expect("own /proc");
        let spin_until = Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < spin_until {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let usage = sampler.finish().await.expect("usage");
        assert!(usage.server_rss_peak_mib > 1.0, "{usage:?}");
        // The spin used CPU; how much of a core depends on the machine's load, so only "some".
        assert!(usage.server_cpu_mean_percent > 0.0, "{usage:?}");
    }
}
