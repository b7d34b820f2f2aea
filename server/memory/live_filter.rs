//! Searches that skip tombstones inside faiss, so a collection with many
//! deleted points does not have to over-fetch past all of them.
//!
//! faiss takes an `IDSelector` in its search parameters and only returns
//! ids it accepts. Handed to the `IndexIDMap` that wraps every collection's
//! index, a selector sees external labels: faiss translates each candidate
//! through the id map first, one random read of an 8-byte label per visited
//! node, which made a search at efSearch 1,536 over 100k points 15–30%
//! slower than the same search unfiltered. So [`search_live`] searches the
//! wrapped index itself, whose ids are positions (0, 1, 2, … in insertion
//! order), with a bitmap of live positions ([`LivePositions`], 14 KB for
//! 110k vectors, small enough to stay in cache), and translates the k
//! results through the id map afterwards. The faiss crate's safe wrapper
//! (`SearchParametersImpl::new`) forgets the selector it is given, leaking
//! one C++ object per search, so this module calls the C API directly and
//! frees both objects itself.
//!
//! Searches of one collection run in parallel, so nothing about a search
//! may be set on the shared index: efSearch and nprobe travel in the same
//! parameter object ([`Tuning`]). faiss's C API makes IVF's kind but not
//! HNSW's, which a small C++ shim (`hnsw_params.cpp`, compiled by build.rs
//! against faiss-sys's headers) provides. All of agentd's `unsafe` faiss
//! calls for searching live here; each states what it relies on.

use std::ffi::CStr;

use faiss::index::NativeIndex;
use faiss_sys::{
    FaissIDSelector, FaissIndex, FaissSearchParameters, faiss_IDSelector_free,
    faiss_IDSelectorBitmap_new, faiss_Index_search_with_params, faiss_IndexIDMap_cast,
    faiss_IndexIDMap_id_map, faiss_IndexIDMap_sub_index, faiss_SearchParameters_free,
    faiss_SearchParameters_new, faiss_SearchParametersIVF_new_with, faiss_get_last_error,
};

use crate::error::{Error, Result};

/// Which positions of an index hold live vectors (bit `position` set while
/// it does). Positions only grow: faiss appends.
#[derive(Debug, Clone, Default)]
pub struct LivePositions {
    bits: Vec<u8>,
    len: usize,
}

impl LivePositions {
    /// Appends one position, live or not.
    pub fn push(&mut self, live: bool) {
        let (byte, bit) = place(self.len);
        if byte >= self.bits.len() {
            self.bits.push(0);
        }
        if live {
            self.bits[byte] |= bit;
        }
        self.len += 1;
    }

    /// Marks `position` dead.
    pub fn kill(&mut self, position: usize) {
        let (byte, bit) = place(position);
        if let Some(b) = self.bits.get_mut(byte) {
            *b &= !bit;
        }
    }

    /// Positions recorded, live or dead.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position was recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bits.capacity()
    }
}

fn place(position: usize) -> (usize, u8) {
    (position >> 3, 1 << (position & 7))
}

/// The labels of an `IndexIDMap`, by position. Valid until the index is
/// next changed, which the borrow ensures.
pub fn id_map<I>(index: &I) -> Result<&[i64]>
where
    I: NativeIndex<Inner = FaissIndex>,
{
    let id_map = id_map_of(index)?;
    let mut labels = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: `id_map` is a live IndexIDMap (checked by the cast); faiss
    // hands back a pointer to its label vector and its length, which stay
    // valid while the index is not modified, and `index` is borrowed
    // immutably for the slice's lifetime.
    #[allow(unsafe_code)]
    unsafe {
        faiss_IndexIDMap_id_map(id_map, &mut labels, &mut len);
        if labels.is_null() || len == 0 {
            return Ok(&[]);
        }
        Ok(std::slice::from_raw_parts(labels, len))
    }
}

fn id_map_of<I>(index: &I) -> Result<*mut faiss_sys::FaissIndexIDMap>
where
    I: NativeIndex<Inner = FaissIndex>,
{
    // SAFETY: the cast only inspects the object's dynamic type.
    #[allow(unsafe_code)]
    let id_map = unsafe { faiss_IndexIDMap_cast(index.inner_ptr()) };
    if id_map.is_null() {
        return Err(Error::Internal(
            "a collection index is not wrapped in an IndexIDMap".into(),
        ));
    }
    Ok(id_map)
}

fn last_error(context: &str) -> Error {
    // SAFETY: faiss returns a pointer to its thread-local last error message,
    // a NUL-terminated string valid until the next faiss call on this thread.
    #[allow(unsafe_code)]
    let message = unsafe {
        let p = faiss_get_last_error();
        if p.is_null() {
            "unknown error".to_owned()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Error::Internal(format!("faiss, {context}: {message}"))
}

/// Search-time parameters faiss reads per call, so that searches sharing
/// one index never set anything on it (which would race).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// What the index itself holds.
    Default,
    /// HNSW's candidate list.
    Hnsw {
        /// efSearch.
        ef_search: usize,
    },
    /// IVF's lists probed.
    Ivf {
        /// nprobe.
        nprobe: usize,
    },
}

// The C++ shim of build.rs (server/memory/hnsw_params.cpp).
#[allow(unsafe_code)] // an extern block is unsafe by nature; see `Parameters::new`
unsafe extern "C" {
    fn agentd_search_parameters_hnsw_new(
        out: *mut *mut FaissSearchParameters,
        selector: *mut FaissIDSelector,
        ef_search: std::os::raw::c_int,
    ) -> std::os::raw::c_int;
}

/// The C objects of one search's parameters, freed on drop.
struct Parameters {
    selector: *mut FaissIDSelector,
    params: *mut FaissSearchParameters,
}

impl Parameters {
    /// Parameters skipping positions not in `live` (all kept when None),
    /// tuned by `tuning`. `live` must outlive the parameters, which point
    /// into it.
    fn new(live: Option<&LivePositions>, tuning: Tuning) -> Result<Self> {
        let mut made = Self {
            selector: std::ptr::null_mut(),
            params: std::ptr::null_mut(),
        };
        // SAFETY: each constructor writes a fresh object's pointer into
        // `made`, whose drop frees it once; the bitmap selector reads
        // `live.bits`, which the caller keeps alive and unchanged while the
        // parameters exist (see `search_live`). A null selector means "no
        // filter" to every faiss search.
        #[allow(unsafe_code)]
        unsafe {
            if let Some(live) = live {
                let mut selector = std::ptr::null_mut();
                if faiss_IDSelectorBitmap_new(&mut selector, live.bits.len(), live.bits.as_ptr())
                    != 0
                {
                    return Err(last_error("making a position filter"));
                }
                made.selector = selector.cast();
            }
            let status = match tuning {
                Tuning::Default => faiss_SearchParameters_new(&mut made.params, made.selector),
                Tuning::Ivf { nprobe } => {
                    faiss_SearchParametersIVF_new_with(&mut made.params, made.selector, nprobe, 0)
                }
                Tuning::Hnsw { ef_search } => agentd_search_parameters_hnsw_new(
                    &mut made.params,
                    made.selector,
                    ef_search.clamp(1, std::os::raw::c_int::MAX as usize) as std::os::raw::c_int,
                ),
            };
            if status != 0 {
                return Err(last_error("making search parameters"));
            }
        }
        Ok(made)
    }
}

impl Drop for Parameters {
    fn drop(&mut self) {
        // SAFETY: both pointers came from the faiss constructors above (or
        // are null) and are freed once; the parameters do not own the
        // selector. SearchParameters has a virtual destructor, so freeing
        // the HNSW kind through the base type is right.
        #[allow(unsafe_code)]
        unsafe {
            if !self.params.is_null() {
                faiss_SearchParameters_free(self.params);
            }
            if !self.selector.is_null() {
                faiss_IDSelector_free(self.selector);
            }
        }
    }
}

/// The `k` nearest vectors to `query` in an `IndexIDMap`, among its live
/// positions when `live` is given: (scores, labels), labels -1 where fewer
/// than `k` were found. Takes the index shared: nothing is set on it, so
/// any number of searches may run on one index at once (faiss searches are
/// `const`), as long as nothing changes it meanwhile, which the borrow
/// ensures.
pub fn search_live<I>(
    index: &I,
    live: Option<&LivePositions>,
    query: &[f32],
    k: usize,
    tuning: Tuning,
) -> Result<(Vec<f32>, Vec<i64>)>
where
    I: NativeIndex<Inner = FaissIndex>,
{
    let labels_by_position = id_map(index)?;
    if let Some(live) = live
        && labels_by_position.len() != live.len()
    {
        return Err(Error::Internal(format!(
            "the live bitmap covers {} positions, the index holds {}",
            live.len(),
            labels_by_position.len()
        )));
    }
    let params = Parameters::new(live, tuning)?;
    let mut scores = vec![0f32; k];
    let mut positions = vec![-1i64; k];
    // SAFETY: the wrapped index belongs to `index`, borrowed for the whole
    // call; the parameters (and the bitmap they point into, borrowed as
    // `live`) live until this function returns; `query` holds one vector of
    // the index's dimensions (checked by the caller) and the output buffers
    // hold `k` entries each, as faiss writes for n = 1.
    #[allow(unsafe_code)]
    unsafe {
        let wrapped = faiss_IndexIDMap_sub_index(id_map_of(index)?);
        if faiss_Index_search_with_params(
            wrapped,
            1,
            query.as_ptr(),
            k as i64,
            params.params,
            scores.as_mut_ptr(),
            positions.as_mut_ptr(),
        ) != 0
        {
            return Err(last_error("searching"));
        }
    }
    drop(params);
    let labels = positions
        .into_iter()
        .map(|p| {
            usize::try_from(p)
                .ok()
                .and_then(|p| labels_by_position.get(p))
                .copied()
                .unwrap_or(-1)
        })
        .collect();
    Ok((scores, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use faiss::{Idx, Index, MetricType, index_factory};

    #[test]
    fn only_live_labels_come_back() {
        let mut index = index_factory(2, "IDMap,Flat", MetricType::L2).unwrap();
        let data: Vec<f32> = (0..100).flat_map(|i| [i as f32, 0.0]).collect();
        let ids: Vec<Idx> = (0..100).map(|i| Idx::new(1000 + i)).collect();
        index.add_with_ids(&data, &ids).unwrap();
        let mut live = LivePositions::default();
        for _ in 0..100 {
            live.push(true);
        }
        for position in 0..50 {
            live.kill(position);
        }
        assert_eq!(id_map(&index).unwrap()[7], 1007);
        let (_, labels) =
            search_live(&index, Some(&live), &[0.0, 0.0], 3, Tuning::Default).unwrap();
        assert_eq!(labels, [1050, 1051, 1052]);
        let (_, labels) =
            search_live(&index, Some(&live), &[99.0, 0.0], 3, Tuning::Default).unwrap();
        assert_eq!(labels, [1099, 1098, 1097]);
    }

    /// Exact top 10 by squared distance, for checking recall.
    fn exact(data: &[f32], q: &[f32], k: usize) -> Vec<i64> {
        let mut scored: Vec<(f32, i64)> = data
            .chunks_exact(8)
            .enumerate()
            .map(|(i, v)| {
                let d = v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
                (d, 1000 + i as i64)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored.into_iter().take(k).map(|(_, l)| l).collect()
    }

    #[test]
    fn hnsw_search_parameters_apply_per_call_and_leave_the_index_alone() {
        let mut index = index_factory(8, "IDMap,HNSW4", MetricType::L2).unwrap();
        let n = 3_000usize;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        let data: Vec<f32> = (0..n * 8).map(|_| random()).collect();
        let ids: Vec<Idx> = (0..n as u64).map(|i| Idx::new(1000 + i)).collect();
        index.add_with_ids(&data, &ids).unwrap();
        let queries: Vec<Vec<f32>> = (0..40)
            .map(|_| (0..8).map(|_| random()).collect())
            .collect();
        let search = |q: &[f32], tuning| search_live(&index, None, q, 10, tuning).unwrap().1;
        let (mut exact_at_n, mut exact_at_10) = (0, 0);
        for q in &queries {
            let truth = exact(&data, q, 10);
            exact_at_n += usize::from(search(q, Tuning::Hnsw { ef_search: n }) == truth);
            exact_at_10 += usize::from(search(q, Tuning::Hnsw { ef_search: 10 }) == truth);
        }
        assert_eq!(exact_at_n, queries.len(), "efSearch = n visits everything");
        assert!(
            exact_at_10 < queries.len(),
            "efSearch 10 on M=4 misses some"
        );
        // The index's own efSearch is still faiss's default (16): the
        // searches above set nothing on it.
        for q in &queries {
            assert_eq!(
                search(q, Tuning::Default),
                search(q, Tuning::Hnsw { ef_search: 16 })
            );
        }
    }
}
