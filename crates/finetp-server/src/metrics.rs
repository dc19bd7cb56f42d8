//! `/metrics` in Prometheus's text format: request latencies as histograms (TTFT, TPOT,
//! end-to-end), tokens and requests as counters, and what the hub knows now — queue depth,
//! running requests per DP rank, each rank's weight and KV-cache memory — as gauges read at
//! scrape time.

use std::sync::Mutex;
use std::time::Instant;

use finetp_engine::HubStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Finish {
    finish_reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RankLabel {
    rank: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabel {
    dp_rank: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    ttft: Histogram,
    tpot: Histogram,
    e2e: Histogram,
    tokens: Counter,
    requests: Family<Finish, Counter>,
    waiting: Gauge,
    running: Family<ReplicaLabel, Gauge>,
    weight_bytes: Family<RankLabel, Gauge>,
    kv_bytes: Family<RankLabel, Gauge>,
    kv_used: Family<RankLabel, Gauge>,
    tokens_per_s: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// (time, tokens) of the last scrape: tokens/s between scrapes.
    last: Mutex<(Instant, u64)>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("finetp");
        let m = Self {
            ttft: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            tpot: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            e2e: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            tokens: Counter::default(),
            requests: Family::default(),
            waiting: Gauge::default(),
            running: Family::default(),
            weight_bytes: Family::default(),
            kv_bytes: Family::default(),
            kv_used: Family::default(),
            tokens_per_s: Gauge::default(),
            last: Mutex::new((Instant::now(), 0)),
            registry: Mutex::new(Registry::default()),
        };
        r.register("time_to_first_token_seconds", "Time from a request's arrival to its first token", m.ttft.clone());
        r.register("time_per_output_token_seconds", "Mean time between a request's tokens after the first", m.tpot.clone());
        r.register("e2e_request_latency_seconds", "Time from a request's arrival to its last token", m.e2e.clone());
        r.register("generation_tokens", "Tokens generated", m.tokens.clone());
        r.register("generation_tokens_per_second", "Tokens generated per second since the previous scrape", m.tokens_per_s.clone());
        r.register("requests_finished", "Requests finished, by finish reason", m.requests.clone());
        r.register("num_requests_waiting", "Requests submitted and not yet running", m.waiting.clone());
        r.register("num_requests_running", "Requests running on each DP rank", m.running.clone());
        r.register("weight_bytes", "Weight bytes each rank holds (measured from its buffers)", m.weight_bytes.clone());
        r.register("kv_cache_bytes", "KV-cache bytes each rank holds", m.kv_bytes.clone());
        r.register("kv_cache_blocks_used", "KV-cache blocks in use on each rank", m.kv_used.clone());
        *m.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = r;
        m
    }

    /// A request's choice has finished.
    pub fn finished(&self, arrived: Instant, first_token: Option<Instant>, tokens: usize, reason: &str) {
        let now = Instant::now();
        self.e2e.observe(now.duration_since(arrived).as_secs_f64());
        if let Some(f) = first_token {
            self.ttft.observe(f.duration_since(arrived).as_secs_f64());
            if tokens > 1 {
                self.tpot.observe(now.duration_since(f).as_secs_f64() / (tokens - 1) as f64);
            }
        }
        self.tokens.inc_by(tokens as u64);
        self.requests.get_or_create(&Finish { finish_reason: reason.to_string() }).inc();
    }

    /// The exposition, with the gauges set from `stats`.
    pub fn render(&self, stats: &HubStats) -> String {
        self.waiting.set(stats.waiting as i64);
        for (r, &n) in stats.running.iter().enumerate() {
            self.running.get_or_create(&ReplicaLabel { dp_rank: r.to_string() }).set(n as i64);
        }
        for (r, m) in stats.ranks.iter().enumerate() {
            let Some(m) = m else { continue };
            let l = RankLabel { rank: r.to_string() };
            self.weight_bytes.get_or_create(&l).set(m.weight_bytes as i64);
            self.kv_bytes.get_or_create(&l).set(m.kv_cache_bytes as i64);
            self.kv_used.get_or_create(&l).set(m.kv_blocks_used as i64);
        }
        {
            let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (now, total) = (Instant::now(), self.tokens.get());
            let dt = now.duration_since(last.0).as_secs_f64();
            if dt > 0.0 {
                self.tokens_per_s.set((total - last.1) as f64 / dt);
            }
            *last = (now, total);
        }
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = encode(&mut out, &r);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
