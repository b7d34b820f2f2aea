//! Prometheus metrics: what agentd is doing, scraped over HTTP.
//!
//! Engines record through the `metrics` facade (`counter!`,
//! `histogram!`), which costs nothing until a recorder is installed and
//! keeps them free of any exporter. [`install`] puts the Prometheus
//! recorder in place once per process; [`Scrape`] renders it on `GET
//! /metrics` ([`endpoint`]), after running its collectors, which read
//! figures the engines already keep (points per collection, queries by
//! state, cache counters, agents by state, the process's RSS) into gauges.
//!
//! Why `metrics` + `metrics-exporter-prometheus` rather than the
//! `prometheus` crate: call sites need no registry handle passed down
//! through every engine, recording is lock-free atomics, and the exporter
//! renders histograms with fixed buckets as Prometheus expects.
//!
//! [`catalog`] lists every metric with its help text: the one place to
//! read what is exported.

pub mod catalog;
mod endpoint;
mod process;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

pub use endpoint::serve;

/// Buckets of every `_seconds` histogram: 100 µs to a minute.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Buckets of the embedding batch size.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histograms are compacted besides each scrape.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for the whole process, once; later
/// calls (a second server in the same process, as tests make) share it.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        // Gauges are set from the engines at each scrape; one no scrape has
        // set for two minutes (a deleted collection's) is dropped.
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(120)))
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(catalog::EMBEDDING_BATCH_INPUTS.into()),
            BATCH_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    // Another thread may have won the race; its recorder is the one in force.
    if metrics::set_global_recorder(recorder).is_ok() {
        catalog::describe();
        let _ = HANDLE.set(handle);
    }
    HANDLE
        .get()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("another metrics recorder is installed in this process"))
}

/// Something that sets gauges from an engine's figures before a scrape.
pub type Collector = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What `/metrics` renders: the recorder and the collectors to run first.
pub struct Scrape {
    handle: PrometheusHandle,
    collectors: Vec<Collector>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape")
            .field("collectors", &self.collectors.len())
            .finish()
    }
}

impl Scrape {
    /// A scrape of `handle`'s recorder, with the process collector.
    pub fn new(handle: PrometheusHandle) -> Scrape {
        let mut scrape = Scrape {
            handle,
            collectors: Vec::new(),
        };
        scrape.add(Box::new(|| Box::pin(async { process::collect() })));
        scrape
    }

    /// Adds a collector.
    pub fn add(&mut self, collector: Collector) {
        self.collectors.push(collector);
    }

    /// Adds the collectors that are there.
    pub fn add_all(&mut self, collectors: impl IntoIterator<Item = Option<Collector>>) {
        self.collectors.extend(collectors.into_iter().flatten());
    }

    /// Runs the collectors, then renders the text exposition format.
    pub async fn render(&self) -> String {
        futures::future::join_all(self.collectors.iter().map(|c| c())).await;
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Compacts histograms every few seconds until aborted.
    pub fn spawn_upkeep(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let scrape = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                scrape.handle.run_upkeep();
            }
        })
    }
}
