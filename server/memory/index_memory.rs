//! How much memory a collection's index takes, and the limit on it.
//!
//! A faiss index lives in memory whole: one that outgrows the machine gets
//! the server killed by the kernel, taking every other collection with it.
//! So an Upsert that would grow a collection's index past `[memory]
//! max_index_bytes` is refused before anything is written
//! (RESOURCE_EXHAUSTED, reason MEMORY_LIMIT), with the estimate and the
//! limit in the message. Indexes are not memory-mapped: HNSW's random
//! walks over a graph paged in from disk would make every search a string
//! of page faults.
//!
//! The estimate per point: the stored code (4 bytes a dimension unquantized,
//! 1 with SQ8, ½ with SQ4, PQ's code size), HNSW's links (2·M neighbours
//! of 4 bytes on level 0, about 1/(M−1) more for the upper levels, and the
//! level tables), the id map's label and the label → id table. It matches
//! the server's measured RSS holding a 100k × 384 index to within 2%
//! (BENCHMARKS.md, "server memory holding": HNSW16 and HNSW32, none, SQ8
//! and SQ4). A build needs more for a while: the store's vectors it reads
//! (4 bytes a dimension) and, with no snapshot yet, the fresh segment's
//! copy of them.

use super::collections::{CollectionDef, IndexSpec, Quantization};
use crate::error::{Error, Result};

/// Bytes the label → id table takes per point, besides the id's own bytes
/// (the label, an offset and the hash slot).
const ID_TABLE_BYTES: u64 = 24;
/// A typical id's length (a ULID, or a short name).
const TYPICAL_ID_BYTES: u64 = 26;

/// Estimated index bytes per point of a collection.
pub fn bytes_per_point(def: &CollectionDef) -> u64 {
    // The id map's label (8 bytes) and the label → id table.
    code_bytes(def.dimensions, def.quantization)
        + structure_bytes(def.index)
        + 8
        + ID_TABLE_BYTES
        + TYPICAL_ID_BYTES
}

/// Bytes of one vector's stored code.
pub fn code_bytes(dimensions: u32, quantization: Quantization) -> u64 {
    let d = u64::from(dimensions);
    match quantization {
        Quantization::None => 4 * d,
        Quantization::Sq8 => d,
        Quantization::Sq4 => d.div_ceil(2),
        Quantization::Pq {
            subquantizers,
            bits,
        } => (u64::from(subquantizers) * u64::from(bits)).div_ceil(8),
    }
}

/// Bytes the index structure adds per point (IVF's centroids aside).
pub fn structure_bytes(index: IndexSpec) -> u64 {
    match index {
        IndexSpec::Hnsw { m, .. } => {
            let m = u64::from(m.max(2));
            // Level 0 holds 2·M neighbours of 4 bytes; a node reaches level
            // l ≥ 1 with probability M^-l, each holding M: 4·M/(M−1) bytes
            // expected; plus the node's level (4) and offset (8).
            8 * m + (4 * m).div_ceil(m - 1) + 12
        }
        // An IVF list entry carries the point's 8-byte position.
        IndexSpec::Ivf { .. } => 8,
        IndexSpec::Flat => 0,
    }
}

/// Refuses a write that would leave `points` in `def`'s collection when
/// their index would pass `limit` bytes.
pub fn check_room(def: &CollectionDef, points: u64, limit: u64) -> Result<()> {
    let per = bytes_per_point(def);
    let needed = per.saturating_mul(points);
    if needed <= limit {
        return Ok(());
    }
    Err(Error::MemoryLimit(format!(
        "collection {:?} would hold {points} points, an index of about {} ({per} bytes a point), \
         more than [memory] max_index_bytes = {} ({} points at most); quantize it (sq8, sq4, pq), \
         split it, or raise the limit",
        def.name,
        human(needed),
        human(limit),
        limit / per.max(1),
    )))
}

/// The default `max_index_bytes`: half the memory this process may use
/// (its cgroup's limit when it has one, else the machine's), leaving the
/// rest to the store's cache, the models and the other collections.
pub fn default_max_index_bytes() -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024);
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| {
        std::fs::read_to_string(path)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    })
    .unwrap_or(u64::MAX);
    let usable = machine.min(cgroup);
    if usable == u64::MAX {
        // Nothing readable (not Linux): no limit of our own.
        return u64::MAX;
    }
    usable / 2
}

/// Bytes for people: "1.2 GB".
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Metric;

    fn def(index: IndexSpec, quantization: Quantization) -> CollectionDef {
        CollectionDef {
            name: "c".into(),
            dimensions: 384,
            metric: Metric::L2,
            index,
            quantization,
            embedding_model: None,
            dedup_threshold: None,
        }
    }

    const HNSW16: IndexSpec = IndexSpec::Hnsw {
        m: 16,
        ef_construction: 100,
        ef_search: 64,
    };

    #[test]
    fn estimates_match_the_measured_resident_memory() {
        // RSS over an empty server holding 100k × 384, per point
        // (BENCHMARKS.md): HNSW16 none 1,739, SQ8 588, SQ4 394 bytes.
        for (q, measured) in [
            (Quantization::None, 1_739.0),
            (Quantization::Sq8, 588.0),
            (Quantization::Sq4, 394.0),
        ] {
            let estimate = bytes_per_point(&def(HNSW16, q)) as f64;
            assert!(
                (estimate / measured - 1.0).abs() < 0.02,
                "{q:?}: estimated {estimate}, measured {measured}"
            );
        }
    }

    #[test]
    fn a_write_past_the_limit_is_refused_naming_it() {
        let d = def(HNSW16, Quantization::Sq8);
        let per = bytes_per_point(&d);
        assert!(check_room(&d, 1_000, 1_000 * per).is_ok());
        let err = check_room(&d, 1_001, 1_000 * per).unwrap_err();
        assert!(matches!(err, Error::MemoryLimit(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("[memory] max_index_bytes"), "{message}");
        assert!(message.contains("1000 points at most"), "{message}");
    }
}
