//! What one load phase records: per endpoint, an HDR histogram of latencies, the answers that were
//! what the flow expects, and the others counted by status; and the report math (rates, the
//! Little's-law capacity of an endpoint, ratios to the pgbench limit).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Slowest latency a histogram holds, microseconds; a slower answer is clamped to it (the HTTP
/// client gives up at 30 s anyway).
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits the histograms keep (0.1% resolution).
const HISTOGRAM_DIGITS: u8 = 3;

/// The endpoints the payment mix calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /v1/orders`: the channel's `create`, then `PlaceOrder` (the order and the
    /// channel's answer in one append), answered from the order's events.
    CreateOrder,
    /// `POST /v1/callbacks/sandbox`: the sandbox channel's signed success callback,
    /// `ReceiveChannelCallback`.
    Callback,
    /// `POST /v1/orders/{order_id}/refunds`: `RequestRefund` (the refund worker then records the
    /// sandbox's outcome, a command the request does not wait for).
    Refund,
}

impl Endpoint {
    /// Every endpoint, in flow order.
    pub const ALL: [Endpoint; 3] = [Endpoint::CreateOrder, Endpoint::Callback, Endpoint::Refund];

    /// Method and path, for the table.
    pub fn route(self) -> &'static str {
        match self {
            Endpoint::CreateOrder => "POST /v1/orders",
            Endpoint::Callback => "POST /v1/callbacks/sandbox",
            Endpoint::Refund => "POST /v1/orders/{id}/refunds",
        }
    }

    /// The HTTP status a successful call answers in the mix (every call is new: 201, or the
    /// channel's 200 for a callback).
    pub fn expected_status(self) -> u16 {
        match self {
            Endpoint::CreateOrder | Endpoint::Refund => 201,
            Endpoint::Callback => 200,
        }
    }

    /// Event-store commands (one transaction each) the request commits before it answers: one
    /// per merchant-facing POST.
    pub fn commands(self) -> u64 {
        match self {
            Endpoint::CreateOrder | Endpoint::Callback | Endpoint::Refund => 1,
        }
    }
}

/// One endpoint's record in one phase.
#[derive(Debug, Clone)]
pub struct EndpointStats {
    /// Latency of every answered call (whatever its status), microseconds.
    pub latency_us: Histogram<u64>,
    /// Calls answered with [`Endpoint::expected_status`].
    pub ok: u64,
    /// The other outcomes: `"409"`, `"503"`, … or `"transport"` when no answer came.
    pub errors: BTreeMap<String, u64>,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, HISTOGRAM_DIGITS)
                .expect("constant histogram bounds are valid"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

/// The outcome of one call: its HTTP status, or `None` when the request failed in transport
/// (connection refused, timeout).
pub type Status = Option<u16>;

/// Everything one phase recorded.
#[derive(Debug, Clone, Default)]
pub struct PhaseStats {
    /// Per endpoint.
    pub endpoints: BTreeMap<Endpoint, EndpointStats>,
}

impl PhaseStats {
    /// Records one call of `endpoint` that took `latency` and ended with `status`.
    pub fn record(&mut self, endpoint: Endpoint, latency: Duration, status: Status) {
        let stats = self.endpoints.entry(endpoint).or_default();
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        stats.latency_us.saturating_record(us.clamp(1, LATENCY_US_MAX));
        match status {
            Some(s) if s == endpoint.expected_status() => stats.ok += 1,
            Some(s) => *stats.errors.entry(s.to_string()).or_default() += 1,
            None => *stats.errors.entry("transport".into()).or_default() += 1,
        }
    }

    /// Successful calls of `endpoint`.
    pub fn ok(&self, endpoint: Endpoint) -> u64 {
        self.endpoints.get(&endpoint).map_or(0, |s| s.ok)
    }

    /// Commands committed by successful calls (see [`Endpoint::commands`]).
    pub fn commands(&self) -> u64 {
        Endpoint::ALL.iter().map(|&e| self.ok(e) * e.commands()).sum()
    }
}

/// Events per second, or any count over a wall time; 0 for an empty interval.
pub fn per_second(count: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// What one endpoint would serve per second if all `concurrency` clients called only it at the
/// latency it showed in the mix (Little's law: throughput = requests in flight / mean latency).
/// 0 when nothing was measured.
pub fn capacity_per_second(concurrency: usize, mean_latency_us: f64) -> f64 {
    if mean_latency_us > 0.0 {
        concurrency as f64 * 1_000_000.0 / mean_latency_us
    } else {
        0.0
    }
}

/// `ours / limit`, or `None` without a limit to compare with.
pub fn ratio(ours: f64, limit: Option<f64>) -> Option<f64> {
    limit.filter(|l| *l > 0.0).map(|l| ours / l)
}

/// Latency summary of one endpoint in a report, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub endpoint: Endpoint,
    pub route: &'static str,
    /// Successful calls.
    pub ok: u64,
    /// Successful calls per second of the phase's wall time.
    pub ok_per_s: f64,
    /// See [`capacity_per_second`]; closed-loop phases only.
    pub capacity_per_s: Option<f64>,
    /// `capacity_per_s` over the pgbench transactions/s at the same concurrency.
    pub capacity_ratio_to_pgbench: Option<f64>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Failed calls by status (`"transport"`: no answer).
    pub errors: BTreeMap<String, u64>,
}

impl EndpointReport {
    /// Summarises `stats`. `closed_loop_concurrency` is the number of clients for a closed-loop
    /// phase (it gives the capacity), `None` for an open-loop phase.
    pub fn new(
        endpoint: Endpoint,
        stats: &EndpointStats,
        wall: Duration,
        closed_loop_concurrency: Option<usize>,
        pgbench_tps: Option<f64>,
    ) -> Self {
        let h = &stats.latency_us;
        let ms = |us: u64| us as f64 / 1_000.0;
        let empty = h.is_empty();
        let capacity = closed_loop_concurrency
            .filter(|_| !empty)
            .map(|c| capacity_per_second(c, h.mean()));
        Self {
            endpoint,
            route: endpoint.route(),
            ok: stats.ok,
            ok_per_s: per_second(stats.ok, wall),
            capacity_per_s: capacity,
            capacity_ratio_to_pgbench: capacity.and_then(|c| ratio(c, pgbench_tps)),
            p50_ms: if empty { 0.0 } else { ms(h.value_at_quantile(0.50)) },
            p90_ms: if empty { 0.0 } else { ms(h.value_at_quantile(0.90)) },
            p99_ms: if empty { 0.0 } else { ms(h.value_at_quantile(0.99)) },
            max_ms: if empty { 0.0 } else { ms(h.max()) },
            mean_ms: if empty { 0.0 } else { h.mean() / 1_000.0 },
            errors: stats.errors.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_the_expected_status_as_ok_and_others_by_status() {
        let mut stats = PhaseStats::default();
        stats.record(Endpoint::CreateOrder, Duration::from_millis(3), Some(201));
        stats.record(Endpoint::CreateOrder, Duration::from_millis(4), Some(200));
        stats.record(Endpoint::CreateOrder, Duration::from_millis(5), Some(503));
        stats.record(Endpoint::Callback, Duration::from_millis(2), Some(200));
        stats.record(Endpoint::Refund, Duration::from_millis(2), None);

        let create = &stats.endpoints[&Endpoint::CreateOrder];
        assert_eq!(create.ok, 1);
        assert_eq!(create.errors.get("200"), Some(&1), "a repeated order is not a new one");
        assert_eq!(create.errors.get("503"), Some(&1));
        assert_eq!(create.latency_us.len(), 3, "failed calls have latencies too");
        assert_eq!(stats.ok(Endpoint::Callback), 1);
        assert_eq!(stats.endpoints[&Endpoint::Refund].errors.get("transport"), Some(&1));
        // One created order and one callback, a command each.
        assert_eq!(stats.commands(), 2);
    }

    #[test]
    fn capacity_is_concurrency_over_mean_latency() {
        // 8 clients at 4 ms each: 2,000 calls/s.
        assert!((capacity_per_second(8, 4_000.0) - 2_000.0).abs() < 1e-9);
        assert_eq!(capacity_per_second(8, 0.0), 0.0);
    }

    #[test]
    fn ratio_needs_a_positive_limit() {
        assert_eq!(ratio(700.0, Some(1_000.0)), Some(0.7));
        assert_eq!(ratio(700.0, None), None);
        assert_eq!(ratio(700.0, Some(0.0)), None);
    }

    #[test]
    fn per_second_divides_by_wall_time() {
        assert!((per_second(1_500, Duration::from_millis(500)) - 3_000.0).abs() < 1e-9);
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
    }

    #[test]
    fn report_gives_quantiles_in_milliseconds_and_the_capacity_ratio() {
        let mut stats = PhaseStats::default();
        for ms in 1..=100 {
            stats.record(Endpoint::CreateOrder, Duration::from_millis(ms), Some(201));
        }
        let report = EndpointReport::new(
            Endpoint::CreateOrder,
            &stats.endpoints[&Endpoint::CreateOrder],
            Duration::from_secs(10),
            Some(4),
            Some(100.0),
        );
        assert_eq!(report.ok, 100);
        assert!((report.ok_per_s - 10.0).abs() < 1e-9);
        // HDR keeps 3 significant digits: within 0.1%.
        assert!((report.p50_ms - 50.0).abs() < 0.1, "p50 {}", report.p50_ms);
        assert!((report.p99_ms - 99.0).abs() < 0.1, "p99 {}", report.p99_ms);
        assert!((report.max_ms - 100.0).abs() < 0.1, "max {}", report.max_ms);
        // Mean 50.5 ms with 4 clients: ~79.2 calls/s, 0.792 of 100 tps.
        let capacity = report.capacity_per_s.expect("closed loop");
        assert!((capacity - 79.2).abs() < 0.2, "capacity {capacity}");
        let r = report.capacity_ratio_to_pgbench.expect("pgbench given");
        assert!((r - 0.792).abs() < 0.002, "ratio {r}");
    }
}
