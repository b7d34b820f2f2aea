//! `[memory]` of agentd.toml: the memory engine's settings.

use std::time::Duration;

use serde::Deserialize;

/// Default of `fresh_segment_max_points`: an exact scan of 20,000
/// 384-dimensional points takes about as long as a 100k-point HNSW search
/// at efSearch 64 on one core, and their vectors take 30 MB.
pub const DEFAULT_FRESH_SEGMENT_MAX_POINTS: usize = 20_000;

/// Most `fresh_segment_max_points` accepted (1.5 GB of 384-dimensional
/// vectors, searched exactly).
pub const MAX_FRESH_SEGMENT_POINTS: usize = 1_000_000;

/// Smallest `max_index_bytes` accepted.
pub const MIN_MAX_INDEX_BYTES: u64 = 1 << 20;

/// `[memory]` as written in the file; absent keys take the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryFile {
    search_cache_bytes: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    snapshot_interval: Option<Duration>,
    fresh_segment_max_points: Option<usize>,
    max_index_bytes: Option<u64>,
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
    /// Points a collection may hold outside its graph (searched exactly)
    /// before writers wait for the background merge to catch up.
    pub fresh_segment_max_points: usize,
    /// Largest in-memory index one collection may grow to (estimated from
    /// its points, see [`super::index_memory`]): an Upsert past it is
    /// refused. Default: half the memory the process may use.
    pub max_index_bytes: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            search_cache_bytes: 64 << 20,
            snapshot_interval: Duration::from_secs(60),
            fresh_segment_max_points: DEFAULT_FRESH_SEGMENT_MAX_POINTS,
            max_index_bytes: super::index_memory::default_max_index_bytes(),
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
            fresh_segment_max_points: file
                .fresh_segment_max_points
                .unwrap_or(defaults.fresh_segment_max_points),
            max_index_bytes: file.max_index_bytes.unwrap_or(defaults.max_index_bytes),
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
        if !(1..=MAX_FRESH_SEGMENT_POINTS).contains(&self.fresh_segment_max_points) {
            anyhow::bail!(
                "memory fresh_segment_max_points must be 1 to {MAX_FRESH_SEGMENT_POINTS}, got {}",
                self.fresh_segment_max_points
            );
        }
        if self.max_index_bytes < MIN_MAX_INDEX_BYTES {
            anyhow::bail!(
                "memory max_index_bytes must be at least {MIN_MAX_INDEX_BYTES} (1 MiB), got {}",
                self.max_index_bytes
            );
        }
        Ok(())
    }
}
