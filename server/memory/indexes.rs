//! Every collection's search index, kept in step with the store.
//!
//! One slot per collection holds its graph (the faiss [`VectorIndex`]) and
//! its [fresh segment](super::fresh) behind a read/write lock. A write
//! commits to the store (writers of a collection take turns, but the
//! commit holds no lock a search needs) and then, under the write lock,
//! kills replaced and deleted versions and copies the new ones into the
//! fresh segment: the write is acknowledged at store speed and the next
//! search finds it. A background merger per collection moves fresh points
//! into the graph oldest first. Into an HNSW graph one point at a time:
//! the insert's search for neighbours (nearly all its cost) is planned
//! without the lock, beside the searches, and only its links are made
//! under the write lock ([`super::hnsw_insert`]); into other indexes
//! (cheap inserts) in slices of about [`MERGE_SLICE`] under the write
//! lock. The merger's plans and the rebuilds' builds run in the idle
//! scheduling class ([`crate::common::priority`]), so a search never waits
//! for a core they hold; what they do under the lock runs at normal
//! priority, so a search never waits for a lock held by a thread that
//! cannot get a core. When the merger falls `fresh_segment_max_points`
//! behind, writers wait for it (back-pressure), unless the fresh points
//! outnumber the graph's: then the graph is rebuilt on every core instead
//! (a bulk load), and writers do not wait. Searches take the read lock and
//! run in parallel, at most one per core ([`super::search_pool`]): nothing
//! about a search is set on the shared index
//! ([`super::live_filter::Tuning`]).
//!
//! Why a lock rather than an immutable index swapped atomically: faiss
//! cannot insert into a copy cheaply (a 1M-point graph is ~600 MB to clone
//! for each batch), and the links of an HNSW insert cannot be made beside
//! searches of the same graph (faiss reads neighbour lists without locks).
//! Planning outside the lock leaves searches waiting for the links alone,
//! with no second copy in memory.
//!
//! An index is loaded on first use (and for every collection at start-up,
//! in the background): from the newest [snapshot](super::snapshot), the
//! points stored after it going to the fresh segment, or, without a
//! snapshot, as an empty graph with every stored point in the fresh segment
//! and a background build. When tombstones pile up or a quantizer can be
//! (re)trained, a background thread rebuilds the graph from the store while
//! searches keep using the old one and the merger waits; writes made
//! meanwhile are logged, and when the new graph takes over, the fresh
//! segment holds exactly the live points it lacks, so no search ever sees a
//! missing or resurrected point. No call waits for a build. Snapshots copy
//! the graph without the lock (the merger waits for the copy; searches
//! and writes wait for neither the copy nor the disk).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::collections::{Collection, CollectionDef};
use super::fresh::Fresh;
use super::index::{Link, Planner, VectorIndex};
use super::search_job::LastSearch;
use super::segments::Segments;
use super::snapshot::SnapshotDir;
use crate::common::priority::IdleThread;
use crate::common::sync::{lock, read, try_read, write};
use crate::error::Result;
use crate::store::{LabelledVectors, PointStore};

/// Loads report progress every this many points.
const REPLAY_CHUNK: usize = 20_000;

/// Points a rebuild reads from the store at a time: 30 MB of vectors at
/// 384 dimensions.
const READ_CHUNK: usize = 20_000;

/// How long the merger holds a collection's write lock at a time when it
/// inserts without a plan (flat, IVF, an untrained stand-in): searches
/// wait at most about this long for it.
pub const MERGE_SLICE: Duration = Duration::from_micros(500);

/// HNSW inserts planned (and linked) at a time. One: planned in batches
/// sized to hold the write lock ~0.25 ms, sixteen clients' server queue
/// p99 beside a 1,000 points/s writer stayed at 9.4 ms (the wait for the
/// searches in flight to end, however rare), and one client's rose from
/// 0.16 to 0.73 ms (BENCHMARKS.md).
const PLAN_BATCH: usize = 1;

/// An insert faster than this is cheap enough to batch within a slice.
const CHEAP_INSERT: Duration = Duration::from_micros(20);

/// Most points one merge slice takes (when the index is flat or small,
/// inserts are cheap and a slice of this many still fits [`MERGE_SLICE`]).
const MAX_MERGE_BATCH: usize = 4_096;

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
    /// Estimated bytes in memory (graph and fresh segment).
    pub memory_bytes: u64,
    /// Bytes of snapshot files.
    pub snapshot_bytes: u64,
    /// Store sequence number the index reflects.
    pub applied_seq: u64,
    /// A background rebuild is running.
    pub rebuilding: bool,
    /// Store sequence number of the newest snapshot on disk.
    pub snapshot_seq: u64,
    /// Points searched exactly while they wait for the graph.
    pub fresh_points: u64,
    /// Live points in the graph.
    pub indexed_points: u64,
}

/// One collection's index as the metrics show it.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexFigures {
    /// The collection.
    pub collection: String,
    /// Live points in the graph.
    pub indexed_points: u64,
    /// Points searched exactly while they wait for the graph.
    pub fresh_points: u64,
    /// Estimated bytes in memory.
    pub memory_bytes: u64,
    /// How long the graph has had changes its newest snapshot lacks (zero
    /// when it has none, or when snapshots are off).
    pub snapshot_age: Duration,
}

#[derive(Debug)]
struct State {
    /// The faiss index; None until loaded.
    graph: Option<VectorIndex>,
    /// Committed points not yet in the graph.
    fresh: Fresh,
    /// Store sequence number the index (graph and fresh) reflects.
    applied_seq: u64,
    /// Changes committed while a rebuild runs, replayed onto its result.
    rebuild_log: Option<Vec<Change>>,
}

impl State {
    /// The graph and the fresh segment, once loaded.
    fn segments(&self) -> Option<Segments<'_>> {
        Some(Segments {
            graph: self.graph.as_ref()?,
            fresh: &self.fresh,
        })
    }
}

/// One collection's slot.
#[derive(Debug)]
pub struct Slot {
    name: String,
    created_at: i64,
    collection: Collection,
    snapshots: Option<SnapshotDir>,
    state: RwLock<State>,
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
    /// Graph changes (merges, kills, builds) so far, and how many the newest
    /// snapshot saw: a snapshot is due when they differ.
    graph_changes: AtomicU64,
    snapshotted_changes: AtomicU64,
    /// When the graph last matched a snapshot on disk (written or loaded),
    /// or the slot was made: how stale the snapshot is once changes come.
    snapshot_at: Mutex<Instant>,
    /// How long the previous search took, to predict the next.
    pub last_search: LastSearch,
    /// The collection's search-time histogram, looked up once.
    search_seconds: OnceLock<metrics::Histogram>,
    /// Serialises snapshot writes to the slot's directory, and lets
    /// `forget` wait for one in progress. Taken without holding `state`.
    writing_snapshot: Mutex<()>,
    /// One writer at a time, from its store commit to its application to
    /// `state`, so both happen in the same order; the commit itself runs
    /// without `state`'s lock, so searches do not wait for the disk.
    writer: Mutex<()>,
    /// A merger thread is running (set and cleared under the write lock).
    merging: AtomicBool,
    /// Writers and blocking searches waiting for `state`: the merger steps
    /// aside after a slice while any wait, since a lock handed from one
    /// holder to the next favours the thread already running (the merger)
    /// over the one just woken.
    waiting: AtomicUsize,
    /// Rebuild threads running, each from its start until its snapshot is
    /// written (its log ends earlier, when the new graph takes over).
    rebuilds_running: AtomicUsize,
    /// The fresh segment's size, read by writers before they lock.
    fresh_len: AtomicUsize,
    /// Writers held back by a full fresh segment wait here; the merger rings
    /// after each slice.
    room: (Mutex<()>, Condvar),
}

impl Slot {
    /// Records one search's time in the collection's histogram.
    pub fn record_search(&self, took: Duration) {
        self.search_seconds
            .get_or_init(|| {
                metrics::histogram!(crate::metrics::catalog::MEMORY_SEARCH, "collection" => self.name.clone())
            })
            .record(took.as_secs_f64());
    }

    /// The write generation (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let guard = read(&self.state);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        guard
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let guard = write(&self.state);
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        guard
    }

    /// Wakes writers waiting for room in the fresh segment.
    fn ring(&self) {
        let _guard = lock(&self.room.0);
        self.room.1.notify_all();
    }

    fn fresh_changed(&self, fresh: &Fresh) {
        self.fresh_len.store(fresh.len(), Ordering::Release);
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn PointStore>,
    /// `<data-dir>/indexes`; None keeps indexes in memory only.
    snapshot_root: Option<PathBuf>,
    /// Writers wait while a collection's fresh segment holds this many.
    fresh_max: usize,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// The registry of collection indexes.
#[derive(Debug, Clone)]
pub struct Indexes {
    inner: Arc<Inner>,
}

impl Indexes {
    /// Indexes over `store`, snapshotted under `snapshot_root` if given;
    /// writers wait while a collection has `fresh_max` points not yet
    /// merged into its graph.
    pub fn new(
        store: Arc<dyn PointStore>,
        snapshot_root: Option<PathBuf>,
        fresh_max: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                snapshot_root,
                fresh_max: fresh_max.max(1),
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
                let def = &collection.def;
                let slot = Arc::new(Slot {
                    name: name.clone(),
                    created_at: collection.created_at,
                    collection: collection.clone(),
                    snapshots: self
                        .inner
                        .snapshot_root
                        .as_ref()
                        .map(|root| SnapshotDir::new(root, name, collection.created_at)),
                    state: RwLock::new(State {
                        graph: None,
                        fresh: Fresh::new(def.dimensions as usize, def.metric),
                        applied_seq: 0,
                        rebuild_log: None,
                    }),
                    generation: AtomicU64::new(0),
                    cache_hits: AtomicU64::new(0),
                    cache_misses: AtomicU64::new(0),
                    forgotten: AtomicBool::new(false),
                    snapshot_seq: AtomicU64::new(0),
                    graph_changes: AtomicU64::new(0),
                    snapshotted_changes: AtomicU64::new(0),
                    snapshot_at: Mutex::new(Instant::now()),
                    last_search: LastSearch::default(),
                    search_seconds: OnceLock::new(),
                    writing_snapshot: Mutex::new(()),
                    writer: Mutex::new(()),
                    merging: AtomicBool::new(false),
                    waiting: AtomicUsize::new(0),
                    rebuilds_running: AtomicUsize::new(0),
                    fresh_len: AtomicUsize::new(0),
                    room: (Mutex::new(()), Condvar::new()),
                });
                if let Some(old) = slots.insert(name.clone(), Arc::clone(&slot)) {
                    old.forgotten.store(true, Ordering::Release);
                    old.ring();
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
            slot.ring();
            // Wait for a write, merge or snapshot in progress before
            // removing files; later ones see `forgotten`.
            drop(lock(&slot.writer));
            drop(slot.write());
            drop(lock(&slot.writing_snapshot));
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

    /// Commits a write with `write`, then applies it to the loaded index
    /// under the collection's write lock: replaced and deleted versions
    /// die, new ones join the fresh segment. Writers of a collection take
    /// turns; the commit (with its fsync) holds no lock searches need.
    /// Blocking; waits first while the fresh segment is full (see the
    /// module docs). With `with_index`, the index is loaded first and
    /// `write` gets it (to look for near-duplicates before writing), held
    /// for reading while it runs.
    pub fn write<T>(
        &self,
        slot: &Arc<Slot>,
        with_index: bool,
        write: impl FnOnce(&dyn PointStore, Option<Segments<'_>>) -> Result<Written<T>>,
    ) -> Result<T> {
        self.wait_for_room(slot);
        let _turn = lock(&slot.writer);
        let written = if with_index {
            self.read(slot, |segments, store| write(store, Some(segments)))?
        } else {
            write(&*self.inner.store, None)?
        };
        let mut state = slot.write();
        slot.generation.fetch_add(1, Ordering::AcqRel);
        let state = &mut *state;
        // Loaded since the commit: the load read this write already.
        if written.seq <= state.applied_seq {
            return Ok(written.value);
        }
        state.applied_seq = written.seq;
        if let Some(log) = &mut state.rebuild_log {
            log.push(written.change.clone());
        }
        // Not loaded: the load reads this write from the store.
        let Some(graph) = &mut state.graph else {
            return Ok(written.value);
        };
        let change = &written.change;
        if !change.killed.is_empty() {
            graph.kill(&change.killed);
            for label in &change.killed {
                state.fresh.remove(*label);
            }
            slot.graph_changes.fetch_add(1, Ordering::AcqRel);
        }
        let dims = slot.collection.def.dimensions as usize;
        for (label, vector, id) in labelled(&change.added, &change.ids, dims) {
            state.fresh.push(label, vector, id);
        }
        slot.fresh_changed(&state.fresh);
        if let Some(reason) = graph.rebuild_reason(state.fresh.len()) {
            self.start_rebuild(slot, state, reason);
        }
        self.start_merger(slot, state);
        Ok(written.value)
    }

    /// Waits while the collection's fresh segment is full and its merger
    /// is making room (not while a rebuild holds the merger back: no write
    /// waits for a build).
    fn wait_for_room(&self, slot: &Slot) {
        let full = || {
            slot.fresh_len.load(Ordering::Acquire) >= self.inner.fresh_max
                && slot.merging.load(Ordering::Acquire)
                && !slot.forgotten.load(Ordering::Acquire)
        };
        if !full() {
            return;
        }
        let mut guard = lock(&slot.room.0);
        while full() {
            // Timed: a wake-up lost to a merger ending between the check and
            // the wait costs 10 ms, not a hang.
            guard = slot
                .room
                .1
                .wait_timeout(guard, Duration::from_millis(10))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Runs `f` on the collection's segments (loading them first if
    /// needed), under the collection's read lock: searches run in
    /// parallel. Blocking.
    pub fn read<T>(
        &self,
        slot: &Arc<Slot>,
        f: impl FnOnce(Segments<'_>, &dyn PointStore) -> Result<T>,
    ) -> Result<T> {
        loop {
            {
                let state = slot.read();
                if let Some(segments) = state.segments() {
                    return f(segments, &*self.inner.store);
                }
            }
            let mut state = slot.write();
            if state.graph.is_none() {
                self.load(slot, &mut state)?;
            }
        }
    }

    /// Runs `f` on the collection's segments only if that needs no
    /// waiting: the index is loaded and no writer holds or awaits its lock.
    /// None otherwise, without calling `f`. For searches on async workers
    /// (see [`super::search_job`]).
    pub fn try_read_now<T>(
        &self,
        slot: &Arc<Slot>,
        f: impl FnOnce(Segments<'_>, &dyn PointStore) -> Result<T>,
    ) -> Option<Result<T>> {
        let state = try_read(&slot.state)?;
        Some(f(state.segments()?, &*self.inner.store))
    }

    /// The collection's index figures (loading it if needed). Blocking.
    pub fn stats(&self, slot: &Arc<Slot>) -> Result<IndexStats> {
        self.read(slot, |_, _| Ok(()))?;
        let state = slot.read();
        let (graph_live, graph_dead, graph_bytes) = state.graph.as_ref().map_or((0, 0, 0), |g| {
            (g.live() as u64, g.dead() as u64, g.memory_bytes())
        });
        Ok(IndexStats {
            dead: graph_dead,
            memory_bytes: graph_bytes + state.fresh.memory_bytes(),
            snapshot_bytes: slot.snapshots.as_ref().map_or(0, SnapshotDir::disk_bytes),
            applied_seq: state.applied_seq,
            rebuilding: slot.rebuilds_running.load(Ordering::Acquire) > 0,
            snapshot_seq: slot.snapshot_seq.load(Ordering::Acquire),
            fresh_points: state.fresh.len() as u64,
            indexed_points: graph_live,
        })
    }

    /// Figures of every collection whose index is in memory, for metrics.
    /// Blocking: waits its turn for each collection's read lock (held
    /// long by nothing: builds run outside it).
    pub fn figures(&self) -> Vec<IndexFigures> {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        slots
            .iter()
            .map(|slot| {
                let state = slot.read();
                let graph = state.graph.as_ref();
                let unsnapshotted = slot.graph_changes.load(Ordering::Acquire)
                    != slot.snapshotted_changes.load(Ordering::Acquire);
                IndexFigures {
                    collection: slot.name.clone(),
                    indexed_points: graph.map_or(0, |g| g.live() as u64),
                    fresh_points: state.fresh.len() as u64,
                    memory_bytes: graph.map_or(0, VectorIndex::memory_bytes)
                        + state.fresh.memory_bytes(),
                    snapshot_age: if unsnapshotted && slot.snapshots.is_some() {
                        lock(&slot.snapshot_at).elapsed()
                    } else {
                        Duration::ZERO
                    },
                }
            })
            .collect()
    }

    /// Snapshots every loaded graph that changed since its last snapshot.
    /// Blocking; errors are logged (the store still has everything).
    pub fn snapshot_changed(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        for slot in slots {
            snapshot(&slot);
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

    /// Loads the graph from its snapshot, the points stored after it going
    /// to the fresh segment; without a usable snapshot, an empty graph with
    /// every stored point in the fresh segment and a background build.
    fn load(&self, slot: &Arc<Slot>, state: &mut State) -> Result<()> {
        let started = Instant::now();
        let def = &slot.collection.def;
        let store = &*self.inner.store;
        state.fresh = Fresh::new(def.dimensions as usize, def.metric);
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
                        Ok(graph) => {
                            let ids = ids_of(&source.added, &mut live);
                            fill(&mut state.fresh, &graph, &source.added, &ids);
                            tracing::info!(
                                collection = %slot.name,
                                snapshot_seq = meta.seq,
                                fresh = state.fresh.len(),
                                seq = source.seq,
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "index loaded from snapshot"
                            );
                            state.applied_seq = source.seq;
                            slot.snapshot_seq.fetch_max(meta.seq, Ordering::AcqRel);
                            self.install(slot, state, graph);
                            // The snapshot on disk is this graph.
                            slot.snapshotted_changes.store(
                                slot.graph_changes.load(Ordering::Acquire),
                                Ordering::Release,
                            );
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
        let graph = VectorIndex::build(def, &LabelledVectors::default(), &[])?;
        let mut live: HashMap<i64, String> = source.live.into_iter().collect();
        let ids = ids_of(&source.added, &mut live);
        fill(&mut state.fresh, &graph, &source.added, &ids);
        state.applied_seq = source.seq;
        if !state.fresh.is_empty() {
            tracing::info!(
                collection = %slot.name,
                points = state.fresh.len(),
                "no index snapshot: searching exactly while the index builds"
            );
            // One build on every core beats the merger's one-slice-at-a-time
            // inserts; the merger waits for it.
            self.start_rebuild(slot, state, "no snapshot");
        }
        self.install(slot, state, graph);
        Ok(())
    }

    fn install(&self, slot: &Arc<Slot>, state: &mut State, graph: VectorIndex) {
        let reason = graph.rebuild_reason(state.fresh.len());
        state.graph = Some(graph);
        slot.fresh_changed(&state.fresh);
        slot.graph_changes.fetch_add(1, Ordering::AcqRel);
        super::heap::release_free_memory();
        if let Some(reason) = reason {
            self.start_rebuild(slot, state, reason);
        }
        self.start_merger(slot, state);
    }

    /// Starts the collection's merger unless it runs, there is nothing to
    /// merge, or a rebuild will absorb the fresh points. Under the write
    /// lock, like the merger's own decision to stop, so none is missed.
    fn start_merger(&self, slot: &Arc<Slot>, state: &State) {
        if state.fresh.is_empty()
            || state.rebuild_log.is_some()
            || slot.merging.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (registry, merged) = (self.clone(), Arc::clone(slot));
        let started = std::thread::Builder::new()
            .name(format!("merge-{}", slot.name))
            .spawn(move || registry.merge(&merged));
        if let Err(e) = started {
            tracing::warn!(error = %e, "could not start an index merger");
            slot.merging.store(false, Ordering::Release);
        }
    }

    /// Moves fresh points into the graph, oldest first, until none is left
    /// or a rebuild takes over. Into an HNSW graph a point at a time: its
    /// insert planned beside the searches, without the lock
    /// ([`plan_oldest`]), and linked under the write lock, which searches
    /// then wait for only as long as the link takes. Into other indexes
    /// (cheap inserts: flat, IVF, a graph's untrained stand-in) in slices
    /// of about [`MERGE_SLICE`] under the write lock.
    fn merge(&self, slot: &Arc<Slot>) {
        // Plans run in the idle class; this thread, which takes the lock,
        // does not (see crate::common::priority). Without the helper,
        // plans run here.
        let idle = IdleThread::start(format!("plan-{}", slot.name))
            .inspect_err(|e| tracing::warn!(error = %e, "could not start an insert planner"))
            .ok();
        loop {
            // One thread: the other cores keep serving searches.
            super::faiss_threads::for_merge();
            let planned = plan_oldest(slot, PLAN_BATCH, idle.as_ref());
            let mut guard = slot.write();
            let state = &mut *guard;
            let done = slot.forgotten.load(Ordering::Acquire)
                || state.fresh.is_empty()
                || state.rebuild_log.is_some();
            let Some(graph) = state.graph.as_mut().filter(|_| !done) else {
                slot.merging.store(false, Ordering::Release);
                slot.ring();
                return;
            };
            let started = Instant::now();
            let sliced = planned.is_none();
            let merged = match planned {
                Some(planned) => link_planned(graph, &mut state.fresh, planned),
                None if graph.is_shared() => Ok((Link::Busy, 0)),
                None => merge_slice(graph, &mut state.fresh, started).map(|()| (Link::Done, 1)),
            };
            match merged {
                Ok((_, linked)) if linked > 0 => {}
                Ok((Link::Busy, _)) => {
                    // A snapshot is copying the graph.
                    drop(guard);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Ok(_) => continue,
                Err(e) => {
                    // The store has everything; drop the index so the next
                    // use reloads it from the snapshot and the store.
                    tracing::error!(
                        collection = %slot.name, error = %e,
                        "could not merge fresh points into the index; reloading it"
                    );
                    state.graph = None;
                    slot.merging.store(false, Ordering::Release);
                    slot.ring();
                    return;
                }
            }
            slot.fresh_changed(&state.fresh);
            slot.graph_changes.fetch_add(1, Ordering::AcqRel);
            if let Some(reason) = state
                .graph
                .as_ref()
                .and_then(|g| g.rebuild_reason(state.fresh.len()))
            {
                self.start_rebuild(slot, state, reason);
            }
            let took = started.elapsed();
            drop(guard);
            slot.ring();
            // After a link the next plan leaves the lock to others.
            if sliced && slot.waiting.load(Ordering::Acquire) > 0 {
                // Let the waiting writers and searches have the lock: at
                // most a third of the time goes to merging while others
                // wait.
                std::thread::sleep(2 * took.clamp(Duration::from_micros(100), MERGE_SLICE));
            }
        }
    }

    /// Starts a background rebuild unless one is running; `reason` goes to
    /// the log.
    fn start_rebuild(&self, slot: &Arc<Slot>, state: &mut State, reason: &'static str) {
        if state.rebuild_log.is_some() {
            return;
        }
        state.rebuild_log = Some(Vec::new());
        slot.rebuilds_running.fetch_add(1, Ordering::AcqRel);
        let (registry, rebuilt) = (self.clone(), Arc::clone(slot));
        std::thread::Builder::new()
            .name(format!("rebuild-{}", slot.name))
            .spawn(move || {
                registry.rebuild(&rebuilt, reason);
                rebuilt.rebuilds_running.fetch_sub(1, Ordering::AcqRel);
            })
            .map(drop)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not start an index rebuild");
                state.rebuild_log = None;
                slot.rebuilds_running.fetch_sub(1, Ordering::AcqRel);
            });
    }

    /// Builds a fresh graph from the store outside the lock, then swaps it
    /// in with the fresh segment holding exactly the live points it lacks.
    fn rebuild(&self, slot: &Arc<Slot>, reason: &'static str) {
        let started = Instant::now();
        let idle = IdleThread::start(format!("build-{}", slot.name))
            .inspect_err(|e| {
                tracing::warn!(error = %e, "could not start an idle thread; building at normal priority");
            })
            .ok();
        let built = build_from_store(&*self.inner.store, &slot.collection.def, idle.as_ref());
        drop(idle);
        {
            let mut state = slot.write();
            let state = &mut *state;
            let log = state.rebuild_log.take().unwrap_or_default();
            if slot.forgotten.load(Ordering::Acquire) {
                return;
            }
            match built {
                Ok(mut graph) => {
                    let fresh = carry_over(&state.fresh, &mut graph, &log);
                    tracing::info!(
                        collection = %slot.name,
                        reason,
                        points = graph.live(),
                        fresh = fresh.len(),
                        replayed_changes = log.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "index rebuilt"
                    );
                    // A bulk load that went on during the build may
                    // call for another one at once.
                    let again = graph.rebuild_reason(fresh.len());
                    state.fresh = fresh;
                    state.graph = Some(graph);
                    slot.fresh_changed(&state.fresh);
                    slot.graph_changes.fetch_add(1, Ordering::AcqRel);
                    if let Some(reason) = again {
                        self.start_rebuild(slot, state, reason);
                    }
                }
                Err(e) => {
                    tracing::warn!(collection = %slot.name, error = %e, "index rebuild failed");
                }
            }
            self.start_merger(slot, state);
        }
        slot.ring();
        super::heap::release_free_memory();
        snapshot(slot);
    }
}

/// The inserts of the oldest fresh points into an HNSW graph, planned
/// while the collection's lock was not held.
struct Planned {
    planner: Planner,
    points: LabelledVectors,
    ids: Vec<String>,
}

/// Plans the inserts of the `batch` oldest fresh points into the
/// collection's HNSW graph: the lock is held only to copy the points out,
/// so searches and writers go on meanwhile (the merger is the graph's only
/// writer, so the graph cannot change under the plans; see
/// [`super::hnsw_insert`]). None when there is nothing to plan or the
/// graph is not HNSW: the caller merges a slice under the lock.
fn plan_oldest(slot: &Slot, batch: usize, idle: Option<&IdleThread>) -> Option<Planned> {
    let (planner, points, ids) = {
        // Not through `Slot::read`: the merger is not one of those it steps
        // aside for.
        let state = read(&slot.state);
        if state.rebuild_log.is_some() || state.fresh.is_empty() {
            return None;
        }
        let planner = state.graph.as_ref()?.planner()?;
        let (points, ids) = state.fresh.oldest(batch);
        (planner, points, ids)
    };
    let plan = move || {
        super::faiss_threads::for_merge();
        let planned = planner.plan(&points.labels, &points.data);
        (planned, planner, points)
    };
    let (planned, planner, points) = on_idle(idle, plan);
    match planned {
        Ok(true) => Some(Planned {
            planner,
            points,
            ids,
        }),
        Ok(false) => None,
        Err(e) => {
            // The slice that follows inserts under the lock instead (and
            // reports a graph that fails that too).
            tracing::warn!(collection = %slot.name, error = %e, "could not plan an insert");
            None
        }
    }
}

/// Links the planned points still alive into `graph` and drops them from
/// `fresh`, until one no longer fits (a rebuild replaced the graph) or
/// while a snapshot copies the graph (nothing changes then). Returns what
/// stopped it and how many were linked. Points that died meanwhile (the
/// writer removed them from `fresh`) are skipped.
fn link_planned(
    graph: &mut VectorIndex,
    fresh: &mut Fresh,
    planned: Planned,
) -> Result<(Link, usize)> {
    let Planned {
        planner,
        points,
        ids,
    } = planned;
    // The plans were for the oldest points; an older one now means the
    // segment was replaced (a rebuild).
    if fresh.iter().next().map(|(oldest, _, _)| oldest) < points.labels.first().copied() {
        return Ok((Link::Stale, 0));
    }
    let alive: Vec<(i64, &[f32], &str)> = labelled(&points, &ids, graph.dimensions())
        .filter(|(label, _, _)| fresh.contains(*label))
        .collect();
    let (outcome, linked) = graph.link(planner, &alive)?;
    if let Some(&(last, _, _)) = linked.checked_sub(1).and_then(|i| alive.get(i)) {
        fresh.drop_through(last);
    }
    Ok((outcome, linked))
}

/// Moves the oldest fresh points into `graph` until the slice that began
/// at `started` has used [`MERGE_SLICE`] (or [`MAX_MERGE_BATCH`] points),
/// a step at a time, checking the clock after each. A slice thus
/// overshoots by at most one step, however much inserts vary (a point
/// starting a new region of the graph costs several times one in a dense
/// region); HNSW inserts cost only their points ([`super::hnsw_insert`]),
/// so one-point steps are not penalised.
fn merge_slice(graph: &mut VectorIndex, fresh: &mut Fresh, started: Instant) -> Result<()> {
    let (mut step, mut merged) = (1usize, 0usize);
    loop {
        let began = Instant::now();
        let (points, ids) = fresh.oldest(step);
        let Some(&last) = points.labels.last() else {
            return Ok(());
        };
        graph.add(&points.labels, &points.data, &ids)?;
        fresh.drop_through(last);
        merged += points.len();
        let spent = started.elapsed();
        if spent >= MERGE_SLICE || merged >= MAX_MERGE_BATCH {
            return Ok(());
        }
        // Graph inserts one at a time (their cost varies too much to
        // plan several); cheap inserts (flat, IVF, a small graph) in steps
        // filling half the time left, so the calls' overhead stays small.
        let per_point = began.elapsed().as_secs_f64() / points.len() as f64;
        step = if per_point < CHEAP_INSERT.as_secs_f64() {
            (((MERGE_SLICE - spent).as_secs_f64() / per_point.max(1e-9) / 2.0) as usize)
                .clamp(1, MAX_MERGE_BATCH - merged)
        } else {
            1
        };
    }
}

/// The fresh segment to go with a rebuilt `graph`: the points of the old
/// segment and of the changes logged during the build that the build did
/// not see, minus those killed since, in label order. The log's kills are
/// applied to the graph too (a build may have read a point before a write
/// replaced it).
fn carry_over(old: &Fresh, graph: &mut VectorIndex, log: &[Change]) -> Fresh {
    let dims = graph.dimensions();
    let mut waiting: BTreeMap<i64, (&[f32], &str)> = old
        .iter()
        .filter(|(label, _, _)| !graph.holds(*label))
        .map(|(label, vector, id)| (label, (vector, id)))
        .collect();
    for change in log {
        for (label, vector, id) in labelled(&change.added, &change.ids, dims) {
            if !graph.holds(label) {
                waiting.insert(label, (vector, id));
            }
        }
        graph.kill(&change.killed);
        for label in &change.killed {
            waiting.remove(label);
        }
    }
    let mut fresh = Fresh::new(dims, graph.metric());
    for (label, (vector, id)) in waiting {
        fresh.push(label, vector, id);
    }
    fresh
}

/// Puts the points of `source` the graph does not hold into `fresh`.
fn fill(fresh: &mut Fresh, graph: &VectorIndex, source: &LabelledVectors, ids: &[String]) {
    for (label, vector, id) in labelled(source, ids, graph.dimensions()) {
        if !graph.holds(label) {
            fresh.push(label, vector, id);
        }
    }
}

/// `points` with their `ids` (one per label), as (label, vector, id).
fn labelled<'a>(
    points: &'a LabelledVectors,
    ids: &'a [String],
    dims: usize,
) -> impl Iterator<Item = (i64, &'a [f32], &'a str)> {
    points
        .labels
        .iter()
        .zip(points.data.chunks_exact(dims))
        .zip(ids)
        .map(|((label, vector), id)| (*label, vector, id.as_str()))
}

/// The ids of `points`' labels, in order, moved out of `live`.
fn ids_of(points: &LabelledVectors, live: &mut HashMap<i64, String>) -> Vec<String> {
    points
        .labels
        .iter()
        .map(|label| live.remove(label).unwrap_or_default())
        .collect()
}

/// An index of every current point of `def`'s collection, read from the
/// store in chunks of [`READ_CHUNK`] so that no read holds the store for
/// long (one read of a million points held every store call back for
/// seconds). The store is read here, at normal priority (its reader is a
/// lock searches wanting payloads share); the graph is built on `idle`
/// (see crate::common::priority) in one faiss call: added a chunk at a
/// time, the build of 1M × 384 SQ8 points peaked at 2.3 GB instead of
/// 3.9, but its recall@10 fell from 0.78 to 0.70 (BENCHMARKS.md). The
/// chunks see the store at different moments; the rebuild's log covers
/// every write since before the first, so [`carry_over`] reconciles them.
fn build_from_store(
    store: &dyn PointStore,
    def: &CollectionDef,
    idle: Option<&IdleThread>,
) -> Result<VectorIndex> {
    let (mut points, mut ids) = (LabelledVectors::default(), Vec::new());
    for chunk in StoreChunks::new(store, &def.name) {
        let (chunk, chunk_ids) = chunk?;
        points.labels.extend(chunk.labels);
        points.data.extend(chunk.data);
        ids.extend(chunk_ids);
    }
    if points.len() >= REPLAY_CHUNK {
        tracing::info!(collection = %def.name, points = points.len(), "building index");
    }
    let def = def.clone();
    on_idle(idle, move || VectorIndex::build(&def, &points, &ids))
}

/// Runs `f` on `idle`, or here without one.
fn on_idle<T: Send + 'static>(
    idle: Option<&IdleThread>,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    match idle {
        Some(idle) => idle.run(f),
        None => f(),
    }
}

/// A collection's current points with their ids, by label, in chunks of
/// [`READ_CHUNK`], each read on its own.
struct StoreChunks<'a> {
    store: &'a dyn PointStore,
    collection: &'a str,
    after: i64,
    done: bool,
}

impl<'a> StoreChunks<'a> {
    fn new(store: &'a dyn PointStore, collection: &'a str) -> Self {
        Self {
            store,
            collection,
            after: 0,
            done: false,
        }
    }
}

impl Iterator for StoreChunks<'_> {
    type Item = Result<(LabelledVectors, Vec<String>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let chunk = self
            .store
            .points_after(self.collection, self.after, READ_CHUNK);
        match &chunk {
            Ok((points, _)) => {
                self.done = points.len() < READ_CHUNK;
                self.after = points.labels.last().copied().unwrap_or(self.after);
                if points.len() == 0 {
                    return None;
                }
            }
            Err(_) => self.done = true,
        }
        Some(chunk)
    }
}

/// Snapshots the slot's graph if it changed since the last snapshot: its
/// labels taken under the read lock, the graph copied and written without
/// it (only the merger waits, for the copy). Failures are logged, not
/// fatal: the store has everything.
fn snapshot(slot: &Slot) {
    let Some(dir) = &slot.snapshots else {
        return;
    };
    let changes = slot.graph_changes.load(Ordering::Acquire);
    if changes == slot.snapshotted_changes.load(Ordering::Acquire) {
        return;
    }
    let (freezing, seq) = {
        let state = slot.read();
        match &state.graph {
            Some(graph) => (graph.freeze(), state.applied_seq),
            None => return,
        }
    };
    let frozen = freezing.copy();
    let written = frozen.and_then(|frozen| {
        let _writing = lock(&slot.writing_snapshot);
        if slot.forgotten.load(Ordering::Acquire) {
            return Ok(());
        }
        dir.write_frozen(&frozen, seq)?;
        slot.snapshot_seq.fetch_max(seq, Ordering::AcqRel);
        slot.snapshotted_changes
            .fetch_max(changes, Ordering::AcqRel);
        *lock(&slot.snapshot_at) = Instant::now();
        Ok(())
    });
    if let Err(e) = written {
        tracing::warn!(collection = %slot.name, error = %e, "index snapshot failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::collections::{IndexSpec, Metric, Quantization};
    use crate::store::{CollectionStore, SqliteStore, StoredCollection, StoredPoint};

    #[test]
    fn a_build_from_the_store_reads_it_in_chunks_and_holds_every_live_point() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .create_collection(&StoredCollection {
                name: "c".into(),
                definition: "{}".into(),
                created_at: 0,
                points: 0,
            })
            .unwrap();
        // More than two chunks, the last one partial.
        let n = READ_CHUNK * 2 + 123;
        let points: Vec<StoredPoint> = (0..n)
            .map(|i| StoredPoint {
                id: format!("p{i}"),
                vector: vec![i as f32, (i % 7) as f32, 1.0, -(i as f32) / 3.0],
                payload: "{}".into(),
            })
            .collect();
        for batch in points.chunks(5_000) {
            store.upsert_points("c", batch).unwrap();
        }
        // Labels are handed out in order from 1; p5's is 6.
        store.delete_points("c", &["p5".into()]).unwrap();
        let idle = IdleThread::start("build-test".into()).unwrap();
        for (quantization, idle) in [(Quantization::None, None), (Quantization::Sq8, Some(&idle))] {
            let def = CollectionDef {
                name: "c".into(),
                dimensions: 4,
                metric: Metric::L2,
                index: IndexSpec::Hnsw {
                    m: 8,
                    ef_construction: 40,
                    ef_search: 40,
                },
                quantization,
                embedding_model: None,
                dedup_threshold: None,
            };
            let index = build_from_store(&store, &def, idle).unwrap();
            assert_eq!(index.live(), n - 1, "{quantization:?}");
            assert!(!index.holds(6), "the deleted point is left out");
            assert_eq!(index.id_of(1), Some("p0"));
            assert_eq!(index.id_of(n as i64), Some(format!("p{}", n - 1).as_str()));
            assert_eq!(index.is_quantized(), quantization == Quantization::Sq8);
        }
    }
}
