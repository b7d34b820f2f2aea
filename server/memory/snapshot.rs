//! Index snapshots on disk, so a restart loads a collection's index instead
//! of rebuilding it (an HNSW build of 100k points takes tens of seconds).
//!
//! A snapshot is two files in `<data-dir>/indexes/<created_at>-<name>/`:
//! `<seq>.faiss` (faiss `write_index`) and `<seq>.meta` (the labels the index
//! holds, the store sequence it reflects, the points its quantizer was
//! trained on). Both are written to temporary names, fsynced and renamed,
//! the meta file last, so a snapshot exists only once it is complete; a
//! crash mid-write leaves an older snapshot or none, never a torn one. The
//! store stays the source of truth: loading replays what the snapshot lacks.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::index::Frozen;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"AGDXMET1";

/// What a snapshot's meta file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Store sequence number of the last change in the index.
    pub seq: u64,
    /// Points the quantizer was trained on (0: untrained or none needed).
    pub trained_on: u64,
    /// Every label in the index, live or dead.
    pub labels: Vec<i64>,
}

fn io_error(context: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{context} {}: {e}", path.display()))
}

/// Snapshot files of one collection incarnation.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    /// The directory for collection `name` created at `created_at` (a
    /// re-created collection of the same name gets a fresh directory).
    pub fn new(root: &Path, name: &str, created_at: i64) -> Self {
        Self {
            dir: root.join(format!("{created_at}-{name}")),
        }
    }

    /// Writes a frozen copy as the snapshot at `seq`, then removes older
    /// ones.
    pub fn write_frozen(&self, frozen: &Frozen, seq: u64) -> Result<u64> {
        self.write_with(seq, &frozen.labels, frozen.trained_on, |path| {
            frozen.write(path)
        })
    }

    /// Callers serialise writes to one directory (see `indexes::Slot`).
    fn write_with(
        &self,
        seq: u64,
        labels: &[i64],
        trained_on: usize,
        write_faiss: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<u64> {
        fs::create_dir_all(&self.dir).map_err(|e| io_error("creating", &self.dir, e))?;
        let faiss_tmp = self.dir.join(format!("{seq:020}.faiss.tmp"));
        write_faiss(&faiss_tmp)?;
        sync_file(&faiss_tmp)?;
        let mut meta = Vec::with_capacity(32 + 8 * labels.len());
        meta.extend_from_slice(MAGIC);
        meta.extend_from_slice(&seq.to_le_bytes());
        meta.extend_from_slice(&(trained_on as u64).to_le_bytes());
        meta.extend_from_slice(&(labels.len() as u64).to_le_bytes());
        for label in labels {
            meta.extend_from_slice(&label.to_le_bytes());
        }
        let meta_tmp = self.dir.join(format!("{seq:020}.meta.tmp"));
        write_synced(&meta_tmp, &meta)?;
        let faiss = self.faiss_path(seq);
        fs::rename(&faiss_tmp, &faiss).map_err(|e| io_error("renaming", &faiss_tmp, e))?;
        let meta_path = self.meta_path(seq);
        fs::rename(&meta_tmp, &meta_path).map_err(|e| io_error("renaming", &meta_tmp, e))?;
        sync_dir(&self.dir)?;
        let bytes = file_len(&faiss) + meta.len() as u64;
        self.remove_older_than(seq);
        Ok(bytes)
    }

    /// The newest complete snapshot: its meta and the path of its index.
    pub fn latest(&self) -> Result<Option<(SnapshotMeta, PathBuf)>> {
        let Some(seq) = self.seqs().into_iter().max() else {
            return Ok(None);
        };
        let path = self.meta_path(seq);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io_error("reading", &path, e))?;
        let meta = decode_meta(&bytes).ok_or_else(|| {
            Error::Internal(format!("snapshot meta {} is corrupt", path.display()))
        })?;
        Ok(Some((meta, self.faiss_path(seq))))
    }

    /// Bytes of the snapshot files on disk.
    pub fn disk_bytes(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Removes every snapshot (the collection was deleted).
    pub fn remove(&self) {
        if let Err(e) = fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove index snapshots");
        }
    }

    fn faiss_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.faiss"))
    }

    fn meta_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.meta"))
    }

    /// Sequence numbers of complete snapshots (those with a meta file).
    fn seqs(&self) -> Vec<u64> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".meta")?.parse().ok()
            })
            .collect()
    }

    /// Best effort: a leftover file only wastes space.
    fn remove_older_than(&self, seq: u64) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let older = name
                .split('.')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s < seq);
            if older || (name.ends_with(".tmp") && !name.starts_with(&format!("{seq:020}"))) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn decode_meta(bytes: &[u8]) -> Option<SnapshotMeta> {
    let word = |i: usize| -> Option<[u8; 8]> { bytes.get(i..i + 8)?.try_into().ok() };
    if bytes.get(..8)? != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(word(8)?);
    let trained_on = u64::from_le_bytes(word(16)?);
    let n = u64::from_le_bytes(word(24)?) as usize;
    if bytes.len() != 32 + 8 * n {
        return None;
    }
    let labels = (0..n)
        .map(|i| word(32 + 8 * i).map(i64::from_le_bytes))
        .collect::<Option<Vec<_>>>()?;
    Some(SnapshotMeta {
        seq,
        trained_on,
        labels,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| io_error("creating", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error("writing", path, e))
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error("syncing", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error("syncing", dir, e))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_truncation() {
        let meta = SnapshotMeta {
            seq: 7,
            trained_on: 0,
            labels: vec![1, 5, 9],
        };
        let mut bytes = MAGIC.to_vec();
        for w in [7u64, 0, 3] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        for l in [1i64, 5, 9] {
            bytes.extend_from_slice(&l.to_le_bytes());
        }
        assert_eq!(decode_meta(&bytes), Some(meta));
        assert_eq!(decode_meta(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_meta(b"nonsense"), None);
    }
}
