//! Every collection's search index, kept in step with the store.
//!
//! One slot per collection holds its [`VectorIndex`] behind a lock. A write
//! to a collection's points commits to the store and updates the loaded
//! index under that lock, so the index never misses or reorders a committed
//! change, and collections never wait on each other.
//!
//! An index is loaded on first use (and for every collection at start-up,
//! in the background): from the newest [snapshot](super::snapshot) plus the
//! points stored after it, or built from the store when there is none. When
//! tombstones pile up or a quantizer can be (re)trained, a background thread
//! rebuilds the index from the store while searches keep using the old one;
//! writes made meanwhile are logged and replayed onto the new index before
//! it takes over, so no search ever sees a missing or resurrected point.
//! Snapshots are written after builds (under the lock, which the build holds
//! anyway), and periodically and at shutdown when writes happened: those
//! copy the index under the lock and write the copy without it, so searches
//! and writes do not wait for the disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::collections::Collection;
use super::index::VectorIndex;
use super::search_job::LastSearch;
use super::snapshot::SnapshotDir;
use crate::common::sync::{lock, try_lock};
use crate::error::Result;
use crate::store::{IndexSource, LabelledVectors, PointStore};

/// Replays report progress every this many points.
const REPLAY_CHUNK: usize = 20_000;

/// What a committed write changed, for the index.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// New versions.
    pub added: LabelledVectors,
    /// Their point ids, one per label of `added`.
    pub ids: Vec<String>,
    /// Labels of versions replaced or deleted.
    pub killed: Vec<i64>,
}

/// A committed write: its result, sequence number and effect on the index.
#[derive(Debug)]
pub struct Written<T> {
    /// What the caller gets back.
    pub value: T,
    /// The store's change sequence number.
    pub seq: u64,
    /// Effect on the index.
    pub change: Change,
}

/// Figures of one collection's index.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IndexStats {
    /// Tombstones not yet compacted.
    pub dead: u64,
    /// Estimated bytes in memory.
    pub memory_bytes: u64,
    /// Bytes of snapshot files.
    pub snapshot_bytes: u64,
    /// Store sequence number the index reflects.
    pub applied_seq: u64,
    /// A background rebuild is running.
    pub rebuilding: bool,
    /// Store sequence number of the newest snapshot on disk.
    pub snapshot_seq: u64,
}

#[derive(Debug, Default)]
struct State {
    index: Option<VectorIndex>,
    /// Store sequence number the index reflects.
    applied_seq: u64,
    /// Changes committed while a rebuild runs, replayed onto its result.
    rebuild_log: Option<Vec<Change>>,
}

/// One collection's slot.
#[derive(Debug)]
pub struct Slot {
    name: String,
    created_at: i64,
    collection: Collection,
    snapshots: Option<SnapshotDir>,
    state: Mutex<State>,
    /// Bumped by every write; search results cached under an older value
    /// are never served again.
    generation: AtomicU64,
    /// Search cache counters.
    pub cache_hits: AtomicU64,
    /// Search cache counters.
    pub cache_misses: AtomicU64,
    /// Set when the collection is deleted: a rebuild in flight drops its work.
    forgotten: AtomicBool,
    /// Sequence number of the newest snapshot on disk. Outside `state`: the
    /// periodic snapshot updates it after writing without the state lock.
    snapshot_seq: AtomicU64,
    /// How long the previous search took, to predict the next.
    pub last_search: LastSearch,
    /// Serialises snapshot writes to the slot's directory. Taken while
    /// holding `state` (loads and rebuilds snapshot under it) or alone (the
    /// periodic snapshot writes a frozen copy), never the other way round.
    writing_snapshot: Mutex<()>,
}

impl Slot {
    /// The write generation (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn PointStore>,
    /// `<data-dir>/indexes`; None keeps indexes in memory only.
    snapshot_root: Option<PathBuf>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// The registry of collection indexes.
#[derive(Debug, Clone)]
pub struct Indexes {
    inner: Arc<Inner>,
}

impl Indexes {
    /// Indexes over `store`, snapshotted under `snapshot_root` if given.
    pub fn new(store: Arc<dyn PointStore>, snapshot_root: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                snapshot_root,
                slots: Mutex::default(),
            }),
        }
    }

    /// The slot of `collection`, created on first use. A slot left from a
    /// deleted collection of the same name is replaced.
    pub fn slot(&self, collection: &Collection) -> Arc<Slot> {
        let mut slots = lock(&self.inner.slots);
        let name = &collection.def.name;
        match slots.get(name) {
            Some(slot) if slot.created_at == collection.created_at => Arc::clone(slot),
            _ => {
                let slot = Arc::new(Slot {
                    name: name.clone(),
                    created_at: collection.created_at,
                    collection: collection.clone(),
                    snapshots: self
                        .inner
                        .snapshot_root
                        .as_ref()
                        .map(|root| SnapshotDir::new(root, name, collection.created_at)),
                    state: Mutex::default(),
                    generation: AtomicU64::new(0),
                    cache_hits: AtomicU64::new(0),
                    cache_misses: AtomicU64::new(0),
                    forgotten: AtomicBool::new(false),
                    snapshot_seq: AtomicU64::new(0),
                    last_search: LastSearch::default(),
                    writing_snapshot: Mutex::new(()),
                });
                if let Some(old) = slots.insert(name.clone(), Arc::clone(&slot)) {
                    old.forgotten.store(true, Ordering::Release);
                }
                slot
            }
        }
    }

    /// The store the indexes follow.
    pub fn store(&self) -> &dyn PointStore {
        &*self.inner.store
    }

    /// Drops the index and snapshots of a deleted collection.
    pub fn forget(&self, name: &str) {
        let removed = lock(&self.inner.slots).remove(name);
        if let Some(slot) = &removed {
            slot.forgotten.store(true, Ordering::Release);
            // Wait for a write or snapshot in progress before removing files.
            drop(slot.lock());
        }
        // Snapshots of any incarnation, including ones from earlier runs.
        if let Some(root) = &self.inner.snapshot_root
            && let Ok(entries) = std::fs::read_dir(root)
        {
            for entry in entries.flatten() {
                let dir = entry.file_name().to_string_lossy().into_owned();
                if let Some((created, rest)) = dir.split_once('-')
                    && rest == name
                    && let Ok(created) = created.parse::<i64>()
                {
                    SnapshotDir::new(root, name, created).remove();
                }
            }
        }
    }

    /// Commits a write with `write` and applies it to the loaded index, under
    /// the collection's lock. Blocking.
    /// With `with_index`, the index is loaded first and `write` gets it (to
    /// look for near-duplicates before writing).
    pub fn write<T>(
        &self,
        slot: &Arc<Slot>,
        with_index: bool,
        write: impl FnOnce(&dyn PointStore, Option<&mut VectorIndex>) -> Result<Written<T>>,
    ) -> Result<T> {
        let mut state = slot.lock();
        if with_index && state.index.is_none() {
            self.load(slot, &mut state)?;
        }
        let index = if with_index {
            state.index.as_mut()
        } else {
            None
        };
        let written = write(&*self.inner.store, index)?;
        slot.generation.fetch_add(1, Ordering::AcqRel);
        state.applied_seq = state.applied_seq.max(written.seq);
        if let Some(log) = &mut state.rebuild_log {
            log.push(written.change.clone());
        }
        if let Some(index) = &mut state.index {
            let change = &written.change;
            index.kill(&change.killed);
            if let Err(e) = index.add(&change.added.labels, &change.added.data, &change.ids) {
                // The write is committed and must be reported so; the index
                // is what is now wrong. Drop it: the next use reloads it from
                // the snapshot and the store.
                tracing::error!(
                    collection = %slot.name, error = %e,
                    "could not apply a committed write to the index; reloading it"
                );
                state.index = None;
            } else if index.wants_rebuild() {
                self.start_rebuild(slot, &mut state);
            }
        }
        Ok(written.value)
    }

    /// Runs `f` on the collection's index (loading it first if needed), under
    /// the collection's lock. Blocking.
    pub fn read<T>(
        &self,
        slot: &Arc<Slot>,
        f: impl FnOnce(&mut VectorIndex, &dyn PointStore) -> Result<T>,
    ) -> Result<T> {
        let mut state = slot.lock();
        if state.index.is_none() {
            self.load(slot, &mut state)?;
        }
        let index = state.index.as_mut().expect("loaded above");
        f(index, &*self.inner.store)
    }

    /// Runs `f` on the collection's index only if that needs no waiting:
    /// the index is loaded and its lock free. None otherwise, without
    /// calling `f`. For searches on async workers (see
    /// [`super::search_job`]).
    pub fn try_read_now<T>(
        &self,
        slot: &Arc<Slot>,
        f: impl FnOnce(&mut VectorIndex, &dyn PointStore) -> Result<T>,
    ) -> Option<Result<T>> {
        let mut state = try_lock(&slot.state)?;
        let index = state.index.as_mut()?;
        Some(f(index, &*self.inner.store))
    }

    /// The collection's index figures (loading it if needed). Blocking.
    pub fn stats(&self, slot: &Arc<Slot>) -> Result<IndexStats> {
        let mut state = slot.lock();
        if state.index.is_none() {
            self.load(slot, &mut state)?;
        }
        let index = state.index.as_ref().expect("loaded above");
        Ok(IndexStats {
            dead: index.dead() as u64,
            memory_bytes: index.memory_bytes(),
            snapshot_bytes: slot.snapshots.as_ref().map_or(0, SnapshotDir::disk_bytes),
            applied_seq: state.applied_seq,
            rebuilding: state.rebuild_log.is_some(),
            snapshot_seq: slot.snapshot_seq.load(Ordering::Acquire),
        })
    }

    /// Snapshots every loaded index that changed since its last snapshot.
    /// Blocking; errors are logged (the store still has everything).
    pub fn snapshot_changed(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        for slot in slots {
            let Some(dir) = &slot.snapshots else {
                continue;
            };
            // Copy under the lock, write without it: searches and writes go
            // on while the files are written and synced.
            let (frozen, seq) = {
                let state = slot.lock();
                let snapshotted = slot.snapshot_seq.load(Ordering::Acquire);
                match &state.index {
                    Some(index) if state.applied_seq > snapshotted => {
                        (index.freeze(), state.applied_seq)
                    }
                    _ => continue,
                }
            };
            let written = frozen.and_then(|frozen| {
                let _writing = lock(&slot.writing_snapshot);
                if slot.forgotten.load(Ordering::Acquire)
                    || slot.snapshot_seq.load(Ordering::Acquire) >= seq
                {
                    return Ok(());
                }
                dir.write_frozen(&frozen, seq)?;
                slot.snapshot_seq.fetch_max(seq, Ordering::AcqRel);
                Ok(())
            });
            if let Err(e) = written {
                tracing::warn!(collection = %slot.name, error = %e, "index snapshot failed");
            }
        }
    }

    /// Snapshots changed indexes every `interval` until aborted.
    pub fn spawn_snapshotter(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let indexes = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let indexes = indexes.clone();
                let _ = tokio::task::spawn_blocking(move || indexes.snapshot_changed()).await;
            }
        })
    }

    /// Loads the index from its snapshot plus the store, or builds it.
    fn load(&self, slot: &Arc<Slot>, state: &mut State) -> Result<()> {
        let started = Instant::now();
        let def = &slot.collection.def;
        let store = &*self.inner.store;
        if let Some(dir) = &slot.snapshots {
            match dir.latest() {
                Ok(Some((meta, path))) => {
                    let after = meta.labels.iter().copied().max().unwrap_or(0);
                    let source = store.index_source(&slot.name, after)?;
                    let mut live: HashMap<i64, String> = source.live.into_iter().collect();
                    match VectorIndex::read(
                        def,
                        &path,
                        meta.labels,
                        &mut live,
                        meta.trained_on as usize,
                    ) {
                        Ok(mut index) => {
                            let ids = ids_of(&source.added, &mut live);
                            replay(&slot.name, &mut index, &source.added, &ids)?;
                            tracing::info!(
                                collection = %slot.name,
                                snapshot_seq = meta.seq,
                                replayed = source.added.len(),
                                seq = source.seq,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "index loaded from snapshot"
                            );
                            state.applied_seq = source.seq;
                            slot.snapshot_seq.fetch_max(meta.seq, Ordering::AcqRel);
                            let stale = source.seq > meta.seq;
                            self.install(slot, state, index);
                            if stale {
                                snapshot(slot, state);
                            }
                            return Ok(());
                        }
                        Err(e) => tracing::warn!(
                            collection = %slot.name, error = %e,
                            "index snapshot unusable; rebuilding from the store"
                        ),
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    collection = %slot.name, error = %e,
                    "index snapshot unreadable; rebuilding from the store"
                ),
            }
        }
        let source = store.index_source(&slot.name, 0)?;
        let (points, seq) = (source.added.len(), source.seq);
        if points >= REPLAY_CHUNK {
            tracing::info!(collection = %slot.name, points, "building index");
        }
        let index = build(def, source)?;
        if points > 0 {
            tracing::info!(
                collection = %slot.name,
                points,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "index built from the store"
            );
        }
        state.applied_seq = seq;
        self.install(slot, state, index);
        if points > 0 {
            snapshot(slot, state);
        }
        Ok(())
    }

    fn install(&self, slot: &Arc<Slot>, state: &mut State, index: VectorIndex) {
        let wants_rebuild = index.wants_rebuild();
        state.index = Some(index);
        super::heap::release_free_memory();
        if wants_rebuild {
            self.start_rebuild(slot, state);
        }
    }

    /// Starts a background rebuild unless one is running.
    fn start_rebuild(&self, slot: &Arc<Slot>, state: &mut State) {
        if state.rebuild_log.is_some() {
            return;
        }
        state.rebuild_log = Some(Vec::new());
        let (registry, slot) = (self.clone(), Arc::clone(slot));
        std::thread::Builder::new()
            .name(format!("rebuild-{}", slot.name))
            .spawn(move || registry.rebuild(&slot))
            .map(drop)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not start an index rebuild");
                state.rebuild_log = None;
            });
    }

    /// Builds a fresh index from the store outside the lock, then replays
    /// the changes logged meanwhile and swaps it in.
    fn rebuild(&self, slot: &Arc<Slot>) {
        let started = Instant::now();
        let built = self
            .inner
            .store
            .index_source(&slot.name, 0)
            .and_then(|source| build(&slot.collection.def, source));
        let mut state = slot.lock();
        let log = state.rebuild_log.take().unwrap_or_default();
        if slot.forgotten.load(Ordering::Acquire) {
            return;
        }
        let mut index = match built {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(collection = %slot.name, error = %e, "index rebuild failed");
                return;
            }
        };
        // Changes the build already saw are skipped by `add` (labels
        // present) and `kill` (only present labels die), so replaying the
        // whole log is exact.
        for change in &log {
            if let Err(e) = index.add(&change.added.labels, &change.added.data, &change.ids) {
                tracing::warn!(collection = %slot.name, error = %e, "index rebuild failed");
                return;
            }
            index.kill(&change.killed);
        }
        tracing::info!(
            collection = %slot.name,
            points = index.live(),
            replayed_changes = log.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index rebuilt"
        );
        state.index = Some(index);
        super::heap::release_free_memory();
        snapshot(slot, &state);
    }
}

/// The ids of `points`' labels, in order, moved out of `live`.
fn ids_of(points: &LabelledVectors, live: &mut HashMap<i64, String>) -> Vec<String> {
    points
        .labels
        .iter()
        .map(|label| live.remove(label).unwrap_or_default())
        .collect()
}

/// An index of every point in `source`.
fn build(def: &super::collections::CollectionDef, source: IndexSource) -> Result<VectorIndex> {
    let mut live: HashMap<i64, String> = source.live.into_iter().collect();
    VectorIndex::build(def, &source.added, &ids_of(&source.added, &mut live))
}

/// Adds `points` to a loaded snapshot, reporting progress on long replays.
fn replay(
    name: &str,
    index: &mut VectorIndex,
    points: &LabelledVectors,
    ids: &[String],
) -> Result<()> {
    let total = points.len();
    let mut done = 0;
    for ((labels, data), ids) in points.chunks(REPLAY_CHUNK).zip(ids.chunks(REPLAY_CHUNK)) {
        index.add(labels, data, ids)?;
        done += labels.len();
        if total > REPLAY_CHUNK {
            tracing::info!(
                collection = %name,
                "replaying points stored after the snapshot: {done}/{total} ({}%)",
                done * 100 / total
            );
        }
    }
    Ok(())
}

/// Writes a snapshot of the slot's index; failures are logged, not fatal.
fn snapshot(slot: &Slot, state: &State) {
    let (Some(dir), Some(index)) = (&slot.snapshots, &state.index) else {
        return;
    };
    let _writing = lock(&slot.writing_snapshot);
    if slot.forgotten.load(Ordering::Acquire) {
        return;
    }
    match dir.write(index, state.applied_seq) {
        Ok(_) => {
            slot.snapshot_seq
                .fetch_max(state.applied_seq, Ordering::AcqRel);
        }
        Err(e) => tracing::warn!(collection = %slot.name, error = %e, "index snapshot failed"),
    }
}
