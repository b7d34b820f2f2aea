//! The agents engine's settings (`[agents]` in agentd.toml): how often
//! external workers heartbeat and how long their leases outlive silence
//! or a broken stream.

use std::time::Duration;

use serde::Deserialize;

/// The agents engine's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// How often a worker is asked to heartbeat (WorkerRegistered).
    #[serde(with = "humantime_serde")]
    pub worker_heartbeat_interval: Duration,
    /// A worker that sends no heartbeat for this long loses its leases
    /// (its tasks go to other agents) and is UNRESPONSIVE until it
    /// heartbeats again. Also how long leases of a worker wait for it to
    /// reconnect after a server restart.
    #[serde(with = "humantime_serde")]
    pub worker_lease_timeout: Duration,
    /// A worker whose stream breaks keeps its leases this long, for it to
    /// reconnect (hello with its agent id); then they lapse and the agent
    /// stops.
    #[serde(with = "humantime_serde")]
    pub worker_grace: Duration,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        // Detection of a silent worker within 30 s, reassignment of its
        // tasks at once then: within 60 s of its last sign of life.
        Self {
            worker_heartbeat_interval: Duration::from_secs(10),
            worker_lease_timeout: Duration::from_secs(30),
            worker_grace: Duration::from_secs(5),
        }
    }
}

impl AgentsConfig {
    /// Checks the values against each other and their limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        let hour = Duration::from_secs(3600);
        if self.worker_heartbeat_interval < Duration::from_millis(10)
            || self.worker_heartbeat_interval > hour
        {
            anyhow::bail!("agents.worker_heartbeat_interval must be 10ms to 1h");
        }
        if self.worker_lease_timeout <= self.worker_heartbeat_interval
            || self.worker_lease_timeout > 24 * hour
        {
            anyhow::bail!(
                "agents.worker_lease_timeout must be longer than worker_heartbeat_interval, \
                 and at most 24h"
            );
        }
        if self.worker_grace > hour {
            anyhow::bail!("agents.worker_grace must be at most 1h");
        }
        Ok(())
    }
}
