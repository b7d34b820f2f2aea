//! Inserts into an HNSW graph that searches wait for only briefly.
//!
//! An HNSW insert costs 0.3–1.5 ms at 384 dimensions, nearly all of it a
//! beam search of the graph for the new point's neighbours; only the last
//! step, linking the point in, changes the graph. faiss does both under
//! one call, which had to hold the collection's write lock, so a search
//! arriving meanwhile waited for the whole insert (a writer at 1,000
//! points/s beside one client raised its p99 6.6-fold). The C++ shim
//! `hnsw_insert.cpp` (compiled by build.rs against faiss-sys's headers)
//! splits them: [`Faiss::plan`] searches a graph it only reads, beside
//! the searches and without the collection's lock, for one point or a
//! batch; [`Faiss::link`] applies a point's plan under the write lock, and
//! refuses (changing nothing) when the graph has changed since. The link
//! never reallocates either: the plan copies a full array into one twice
//! as large, which the link swaps in, so growing a 1M-point graph's codes
//! costs a search nothing.
//!
//! The plan is sound without the lock because of who may change a graph:
//! [`Faiss`] is shared (an `Arc`) between the collection's state, its
//! merger while it plans and a snapshot while it copies; the merger is the
//! only writer of a graph it can plan on, and it links through
//! [`Arc::get_mut`], which fails while anyone else holds a clone. A graph
//! replaced meanwhile (a rebuild) stays alive in the merger's clone until
//! its plan ends, then fails the link's identity check.
//!
//! Inserts of a few points into a graph held mutably (plan, then link, per
//! point) also go through here: faiss's own add sets up one OpenMP lock per
//! node of the whole graph on every call, ~1,000 points/s into a 100k graph
//! in one-point calls. Large batches (builds) still use faiss's add, which
//! spreads them over every core.
//!
//! All of this module's `unsafe` is the FFI; each call says what it relies on.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use faiss::Index;
use faiss::index::IndexImpl;

use crate::common::sync::lock;
use crate::error::{Error, Result};

/// Batches smaller than this go through the shim; larger ones gain from
/// faiss's threads.
pub const SHIM_BELOW: usize = 1_024;

// The C++ shim of build.rs (server/memory/hnsw_insert.cpp).
#[allow(unsafe_code)] // an extern block is unsafe by nature; see the calls
unsafe extern "C" {
    fn agentd_hnsw_inserter_new(seed: u64) -> *mut c_void;
    fn agentd_hnsw_inserter_free(inserter: *mut c_void);
    fn agentd_hnsw_plan(
        inserter: *mut c_void,
        index: *const c_void,
        n: i64,
        labels: *const i64,
        x: *const f32,
    ) -> std::os::raw::c_int;
    fn agentd_hnsw_link(
        inserter: *mut c_void,
        index: *mut c_void,
        label: i64,
        x: *const f32,
    ) -> std::os::raw::c_int;
}

/// A faiss index and what inserts into it keep between calls. Shared (in
/// an `Arc`) by a collection's [`super::index::VectorIndex`] and, while it
/// plans, its merger.
pub struct Faiss {
    index: IndexImpl,
    inserter: Mutex<Option<Inserter>>,
}

impl std::fmt::Debug for Faiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faiss").finish_non_exhaustive()
    }
}

impl Faiss {
    /// `index`, with no inserter yet (made on the first insert).
    pub fn new(index: IndexImpl) -> Arc<Self> {
        Arc::new(Self {
            index,
            inserter: Mutex::new(None),
        })
    }

    /// The index, to search or copy.
    pub fn index(&self) -> &IndexImpl {
        &self.index
    }

    /// Whether an insert went through the shim.
    #[cfg(test)]
    pub fn has_inserter(&self) -> bool {
        lock(&self.inserter).is_some()
    }

    /// The index, to change.
    pub fn index_mut(&mut self) -> &mut IndexImpl {
        &mut self.index
    }

    /// Plans the inserts of `data` (one vector per label of `labels`, back
    /// to back), each against the graph as it is (the points of one batch
    /// do not see each other, as in faiss's parallel add), reading the
    /// index only (see the module docs for why this needs no lock of the
    /// caller's). Ok(false), with nothing planned, when the index is not
    /// an HNSW graph the shim knows.
    pub fn plan(&self, labels: &[i64], data: &[f32]) -> Result<bool> {
        let mut inserter = lock(&self.inserter);
        let inserter = match &mut *inserter {
            Some(inserter) => inserter,
            None => inserter.insert(Inserter::new()?),
        };
        inserter.plan(&self.index, labels, data)
    }

    /// Links `vector`, labelled `label`, as the last [`Self::plan`]
    /// planned it; a batch's points are linked in their order, and may be
    /// skipped, not revisited. Ok(false), with nothing changed, when there
    /// is no such plan or the graph changed since.
    pub fn link(&mut self, label: i64, vector: &[f32]) -> Result<bool> {
        let inserter = self.inserter.get_mut().unwrap_or_else(|p| p.into_inner());
        match inserter {
            Some(inserter) => inserter.link(&mut self.index, label, vector),
            None => Ok(false),
        }
    }

    /// Adds `data` (one vector per label of `labels`, back to back), a plan
    /// and a link per point. Ok(false), with nothing changed, when the
    /// index is not an HNSW graph the shim knows: the caller uses faiss's
    /// add.
    pub fn add_few(&mut self, labels: &[i64], data: &[f32]) -> Result<bool> {
        let dims = self.index.d() as usize;
        if dims == 0 || data.len() != labels.len() * dims {
            return Err(Error::Internal(format!(
                "HNSW insert of {} labels with {} floats at {dims} dimensions",
                labels.len(),
                data.len()
            )));
        }
        // One point per plan: each sees the ones before it.
        for (i, (label, vector)) in labels.iter().zip(data.chunks_exact(dims)).enumerate() {
            if !self.plan(std::slice::from_ref(label), vector)? {
                if i == 0 {
                    return Ok(false);
                }
                return Err(Error::Internal(
                    "faiss shim: a graph it inserted into stopped being one it knows".into(),
                ));
            }
            if !self.link(*label, vector)? {
                return Err(Error::Internal(
                    "faiss shim: a plan made just now did not fit its graph".into(),
                ));
            }
        }
        Ok(true)
    }
}

/// The shim's state for one graph: the plan between its two steps, a
/// visited table as large as the graph, a level generator, and the
/// buffers a link swapped out (freed by the next plan).
struct Inserter(*mut c_void);

// SAFETY: the state is plain memory owned by this value and only touched
// through `&mut self`, so moving it to another thread or sharing
// `&Inserter` (which does nothing) is sound.
#[allow(unsafe_code)]
unsafe impl Send for Inserter {}
#[allow(unsafe_code)]
unsafe impl Sync for Inserter {}

impl Inserter {
    fn new() -> Result<Self> {
        // A different level sequence per graph, as faiss's own generator
        // would give after different histories.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // SAFETY: the constructor takes a number and returns a new object
        // or null; this value frees it once, on drop.
        #[allow(unsafe_code)]
        let inserter = unsafe { agentd_hnsw_inserter_new(seed) };
        if inserter.is_null() {
            return Err(Error::Internal(
                "faiss shim: no memory for an HNSW inserter".into(),
            ));
        }
        Ok(Self(inserter))
    }

    fn plan(&mut self, index: &IndexImpl, labels: &[i64], data: &[f32]) -> Result<bool> {
        if data.len() != labels.len() * index.d() as usize {
            return Err(Error::Internal(format!(
                "HNSW plan of {} labels with {} floats at {} dimensions",
                labels.len(),
                data.len(),
                index.d()
            )));
        }
        // SAFETY: `index` is a live faiss index, borrowed shared: the shim
        // only reads it (concurrent readers are fine; its only writer is
        // the caller, see the module docs); `data` holds `labels.len()`
        // vectors of its dimension and `labels` as many labels, read during
        // the call; `self.0` is exclusively ours. The shim catches every
        // C++ exception.
        #[allow(unsafe_code)]
        let status = unsafe {
            agentd_hnsw_plan(
                self.0,
                index.inner_ptr().cast_const().cast(),
                labels.len() as i64,
                labels.as_ptr(),
                data.as_ptr(),
            )
        };
        match status {
            0 => Ok(true),
            1 => Ok(false),
            _ => Err(Error::Internal(
                "faiss, planning an HNSW insert failed".into(),
            )),
        }
    }

    fn link(&mut self, index: &mut IndexImpl, label: i64, vector: &[f32]) -> Result<bool> {
        check_dims(index, vector)?;
        // SAFETY: `index` is a live faiss index borrowed mutably, so no
        // search or plan runs on it meanwhile; `vector` holds one vector
        // of its dimension, read during the call; `self.0` is exclusively
        // ours. The shim catches every C++ exception.
        #[allow(unsafe_code)]
        let status =
            unsafe { agentd_hnsw_link(self.0, index.inner_ptr().cast(), label, vector.as_ptr()) };
        match status {
            0 => Ok(true),
            2 => Ok(false),
            _ => Err(Error::Internal(
                "faiss, linking a point into the HNSW graph failed".into(),
            )),
        }
    }
}

fn check_dims(index: &IndexImpl, vector: &[f32]) -> Result<()> {
    if vector.len() != index.d() as usize {
        return Err(Error::Internal(format!(
            "HNSW insert of a vector of {} floats at {} dimensions",
            vector.len(),
            index.d()
        )));
    }
    Ok(())
}

impl Drop for Inserter {
    fn drop(&mut self) {
        // SAFETY: made by agentd_hnsw_inserter_new, freed once here.
        #[allow(unsafe_code)]
        unsafe {
            agentd_hnsw_inserter_free(self.0);
        }
    }
}
