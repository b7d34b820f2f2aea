//! GetAgentStats: counts by state from the store, the queue from the
//! scheduler, and throughput and latency from the tasks that ended
//! recently (kept in memory for an hour: a restart starts the window
//! afresh).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::engine::AgentEngine;
use crate::common::blocking::with_store;
use crate::common::clock::now_ms;
use crate::common::sync::lock;
use crate::error::{Error, Result};

/// The longest window a caller may ask for, and how long ends are kept.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// The window when none is asked for.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Most ends kept (at about 300 tasks/s, an hour's worth).
const MAX_KEPT: usize = 1_100_000;

/// Tasks that ended recently: when, and how long after submission.
#[derive(Debug, Default)]
pub(crate) struct Ended {
    ends: VecDeque<(Instant, Duration)>,
}

impl Ended {
    /// A task submitted at `created_at_ms` ended now.
    pub fn record(&mut self, created_at_ms: i64) {
        let latency = Duration::from_millis((now_ms() - created_at_ms).max(0) as u64);
        let now = Instant::now();
        self.ends.push_back((now, latency));
        while self.ends.len() > MAX_KEPT
            || self
                .ends
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > MAX_WINDOW)
        {
            self.ends.pop_front();
        }
    }

    /// Ends per second, p50 and p99 latency over the last `window`.
    fn summary(&self, window: Duration) -> (f64, Option<Duration>, Option<Duration>) {
        let now = Instant::now();
        let mut latencies: Vec<Duration> = self
            .ends
            .iter()
            .rev()
            .take_while(|(at, _)| now.duration_since(*at) <= window)
            .map(|(_, l)| *l)
            .collect();
        latencies.sort();
        let pick = |q: f64| {
            (!latencies.is_empty())
                .then(|| latencies[((latencies.len() - 1) as f64 * q).round() as usize])
        };
        (
            latencies.len() as f64 / window.as_secs_f64(),
            pick(0.5),
            pick(0.99),
        )
    }
}

/// The engine's statistics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentStats {
    /// Agents by state name.
    pub agents_by_state: BTreeMap<String, u64>,
    /// Tasks by state name.
    pub tasks_by_state: BTreeMap<String, u64>,
    /// Ready tasks waiting for an agent.
    pub queue_depth: u64,
    /// Tasks waiting for dependencies.
    pub waiting_on_dependencies: u64,
    /// Ends per second in the window.
    pub tasks_per_second: f64,
    /// Median latency in the window.
    pub task_latency_p50: Option<Duration>,
    /// 99th percentile latency in the window.
    pub task_latency_p99: Option<Duration>,
    /// Workers with an open stream.
    pub workers_connected: u64,
    /// Swarms not dissolved.
    pub swarms_active: u64,
    /// The window used.
    pub window: Duration,
}

impl AgentEngine {
    /// Notes that a task submitted at `created_at_ms` ended now.
    pub(crate) fn note_end(&self, created_at_ms: i64) {
        let took_ms = (crate::common::clock::now_ms() - created_at_ms).max(0);
        metrics::histogram!(crate::metrics::catalog::TASK_DURATION).record(took_ms as f64 / 1e3);
        lock(&self.ended).record(created_at_ms);
    }

    /// The engine's statistics over `window` (None: 60 s).
    pub async fn stats(&self, window: Option<Duration>) -> Result<AgentStats> {
        let window = window.unwrap_or(DEFAULT_WINDOW);
        if window.is_zero() || window > MAX_WINDOW {
            return Err(Error::invalid(
                "window",
                "must be more than 0 and at most 1 hour",
            ));
        }
        let agents = with_store(&self.store, |s| s.count_agents_by_state()).await?;
        let tasks = with_store(&self.store, |s| s.count_tasks_by_state()).await?;
        let (queue_depth, waiting, swarms) = {
            let s = lock(&self.scheduler);
            (
                s.waiting() as u64,
                s.blocked() as u64,
                s.swarms.len() as u64,
            )
        };
        let workers_connected = lock(&self.workers)
            .links
            .values()
            .filter(|l| l.outbox.is_some())
            .count() as u64;
        let (tasks_per_second, p50, p99) = lock(&self.ended).summary(window);
        Ok(AgentStats {
            agents_by_state: agents.into_iter().collect(),
            tasks_by_state: tasks.into_iter().collect(),
            queue_depth,
            waiting_on_dependencies: waiting,
            tasks_per_second,
            task_latency_p50: p50,
            task_latency_p99: p99,
            workers_connected,
            swarms_active: swarms,
            window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_percentiles_cover_the_window_only() {
        let mut e = Ended::default();
        let now = now_ms();
        for ms in 1..=100 {
            e.record(now - ms);
        }
        let (rate, p50, p99) = e.summary(Duration::from_secs(10));
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        let p50 = p50.unwrap().as_millis();
        let p99 = p99.unwrap().as_millis();
        assert!((50..=53).contains(&p50), "{p50}");
        assert!((99..=103).contains(&p99), "{p99}");
        assert_eq!(Ended::default().summary(Duration::from_secs(1)).1, None);
    }
}
