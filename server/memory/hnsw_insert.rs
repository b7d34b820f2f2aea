//! Inserts of a few points into a large HNSW graph at the cost of the points
//! alone.
//!
//! faiss's `IndexHNSW::add` sets up one OpenMP lock per node of the whole
//! graph (and a visited table as large) on every call, for its parallel
//! build. The background merger inserts a handful of points per call, to
//! keep each hold of the collection's write lock short, so that setup was
//! most of its work: ~1,000 points/s into a 100k graph whatever its M, and
//! ten times worse at 1M. The C++ shim `hnsw_insert.cpp` (compiled by
//! build.rs against faiss-sys's headers) runs faiss's own per-point insert
//! on the calling thread with the locks and the visited table kept from one
//! call to the next ([`HnswLocks`], 5–10 bytes a node), so a call costs what
//! its points cost and the merger can insert one point at a time. Large batches (builds) still go through
//! faiss's add, which spreads them over every core.
//!
//! All of this module's `unsafe` is the FFI; each call says what it relies on.

use faiss::index::NativeIndex;
use faiss_sys::FaissIndex;

use crate::error::{Error, Result};

/// Batches smaller than this go through the shim; larger ones amortise
/// faiss's setup and gain from its threads.
pub const SHIM_BELOW: usize = 1_024;

// The C++ shim of build.rs (server/memory/hnsw_insert.cpp).
#[allow(unsafe_code)] // an extern block is unsafe by nature; see the calls
unsafe extern "C" {
    fn agentd_hnsw_locks_new() -> *mut std::ffi::c_void;
    fn agentd_hnsw_locks_free(locks: *mut std::ffi::c_void);
    fn agentd_hnsw_add(
        locks: *mut std::ffi::c_void,
        index: *mut std::ffi::c_void,
        n: i64,
        x: *const f32,
        ids: *const i64,
    ) -> std::os::raw::c_int;
}

/// One OpenMP lock per node of one graph, kept between inserts. Belongs to
/// one index: its owner ([`super::index::VectorIndex`]) makes a new one
/// whenever it holds a new faiss index.
#[derive(Debug)]
pub struct HnswLocks(*mut std::ffi::c_void);

// SAFETY: the locks are plain memory owned by this value; they are only
// touched through `&mut self` (in `add`), so moving them to another thread
// or sharing `&HnswLocks` (which does nothing) is sound.
#[allow(unsafe_code)]
unsafe impl Send for HnswLocks {}
#[allow(unsafe_code)]
unsafe impl Sync for HnswLocks {}

impl HnswLocks {
    /// No locks yet: they grow with the graph.
    pub fn new() -> Result<Self> {
        // SAFETY: the constructor takes nothing and returns a new object or
        // null; this value frees it once, on drop.
        #[allow(unsafe_code)]
        let locks = unsafe { agentd_hnsw_locks_new() };
        if locks.is_null() {
            return Err(Error::Internal(
                "faiss shim: no memory for HNSW locks".into(),
            ));
        }
        Ok(Self(locks))
    }

    /// Adds `data` (one vector per label of `labels`, back to back) to
    /// `index` on this thread. Ok(false), with nothing changed, when the
    /// index is not an IndexIDMap around an IndexHNSW: the caller uses
    /// faiss's add.
    pub fn add<I>(&mut self, index: &mut I, labels: &[i64], data: &[f32]) -> Result<bool>
    where
        I: NativeIndex<Inner = FaissIndex>,
    {
        let dims = index.d() as usize;
        if dims == 0 || data.len() != labels.len() * dims {
            return Err(Error::Internal(format!(
                "HNSW insert of {} labels with {} floats at {dims} dimensions",
                labels.len(),
                data.len()
            )));
        }
        // SAFETY: `index` is a live faiss index borrowed mutably, so no
        // search or other change runs on it meanwhile; `data` holds
        // `labels.len()` vectors of the index's dimension and `labels` as
        // many ids, both read only during the call; `self.0` is this
        // index's lock set (the shim grows it to the graph's size). The shim
        // catches every C++ exception.
        #[allow(unsafe_code)]
        let status = unsafe {
            agentd_hnsw_add(
                self.0,
                index.inner_ptr().cast(),
                labels.len() as i64,
                data.as_ptr(),
                labels.as_ptr(),
            )
        };
        match status {
            0 => Ok(true),
            1 => Ok(false),
            _ => Err(Error::Internal(
                "faiss, inserting into the HNSW graph failed".into(),
            )),
        }
    }
}

impl Drop for HnswLocks {
    fn drop(&mut self) {
        // SAFETY: made by agentd_hnsw_locks_new, freed once here.
        #[allow(unsafe_code)]
        unsafe {
            agentd_hnsw_locks_free(self.0);
        }
    }
}
