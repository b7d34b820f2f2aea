//! `[memory]` of agentd.toml: the memory engine's settings.

use std::time::Duration;

use serde::Deserialize;

/// `[memory]` as written in the file; absent keys take the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryFile {
    search_cache_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    snapshot_interval: Option<Duration>,
}

/// The memory engine's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Bytes of recent search results kept; 0 disables the cache.
    pub search_cache_bytes: u64,
    /// How often changed collection indexes are snapshotted (they also are
    /// after every build and at shutdown). A crash replays at most this
    /// much of writes from the store on restart.
    pub snapshot_interval: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            search_cache_bytes: 64 << 20,
            snapshot_interval: Duration::from_secs(60),
        }
    }
}

impl MemoryConfig {
    /// The file's values over the defaults, validated.
    pub fn from_file(file: MemoryFile) -> anyhow::Result<Self> {
        let defaults = MemoryConfig::default();
        let config = MemoryConfig {
            search_cache_bytes: file
                .search_cache_bytes
                .unwrap_or(defaults.search_cache_bytes),
            snapshot_interval: file.snapshot_interval.unwrap_or(defaults.snapshot_interval),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against its documented limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.snapshot_interval < Duration::from_secs(1) {
            anyhow::bail!(
                "memory snapshot_interval must be at least 1s, got {:?}",
                self.snapshot_interval
            );
        }
        Ok(())
    }
}
