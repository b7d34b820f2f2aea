//! Searches that skip tombstones inside faiss, so a collection with many
//! deleted points does not have to over-fetch past all of them.
//!
//! faiss takes an `IDSelector` in its search parameters and only returns
//! ids it accepts; over an `IndexIDMap` the selector sees the external
//! labels (the store's). [`LiveLabels`] keeps a bitmap of live labels and
//! [`search_live`] hands it to faiss as an `IDSelectorBitmap`. The faiss
//! crate's safe wrapper (`SearchParametersImpl::new`) forgets the selector
//! it is given, leaking one C++ object per search, so this module calls the
//! C API directly and frees both objects itself.

use std::ffi::CStr;

use faiss::index::NativeIndex;
use faiss_sys::{
    FaissIDSelector, FaissSearchParameters, faiss_IDSelector_free, faiss_IDSelectorBitmap_new,
    faiss_Index_search_with_params, faiss_SearchParameters_free, faiss_SearchParameters_new,
    faiss_SearchParametersIVF_new_with, faiss_get_last_error,
};

use crate::error::{Error, Result};

/// A bitmap of live labels (bit `label` set while it is live).
#[derive(Debug, Clone, Default)]
pub struct LiveLabels {
    bits: Vec<u8>,
}

impl LiveLabels {
    /// Marks `label` live.
    pub fn insert(&mut self, label: i64) {
        let (byte, bit) = position(label);
        if byte >= self.bits.len() {
            // Labels only grow; double to amortise.
            self.bits.resize((byte + 1).max(self.bits.len() * 2), 0);
        }
        self.bits[byte] |= bit;
    }

    /// Marks `label` dead.
    pub fn remove(&mut self, label: i64) {
        let (byte, bit) = position(label);
        if let Some(b) = self.bits.get_mut(byte) {
            *b &= !bit;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bits.len()
    }
}

fn position(label: i64) -> (usize, u8) {
    let label = label.max(0) as u64;
    ((label >> 3) as usize, 1 << (label & 7))
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

/// The C objects of one filtered search, freed on drop.
struct Filter {
    selector: *mut FaissIDSelector,
    params: *mut FaissSearchParameters,
}

impl Drop for Filter {
    fn drop(&mut self) {
        // SAFETY: both pointers came from the faiss constructors below (or are
        // null) and are freed once; the parameters do not own the selector.
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

/// The `k` nearest vectors to `query` among live labels: (scores, labels),
/// labels -1 where fewer than `k` were found. IVF indexes take their own
/// parameter type, so they pass `nprobe`; others pass None.
pub fn search_live<I>(
    index: &I,
    live: &LiveLabels,
    query: &[f32],
    k: usize,
    nprobe: Option<usize>,
) -> Result<(Vec<f32>, Vec<i64>)>
where
    I: NativeIndex<Inner = faiss_sys::FaissIndex>,
{
    let mut filter = Filter {
        selector: std::ptr::null_mut(),
        params: std::ptr::null_mut(),
    };
    let mut scores = vec![0f32; k];
    let mut labels = vec![-1i64; k];
    // SAFETY: the bitmap outlives the selector (both live until this function
    // returns, and `live` is borrowed for all of it); `query` holds one vector
    // of the index's dimensions (checked by the caller) and the output
    // buffers hold `k` entries each, as faiss writes for n = 1.
    #[allow(unsafe_code)]
    unsafe {
        let mut selector = std::ptr::null_mut();
        if faiss_IDSelectorBitmap_new(&mut selector, live.bits.len(), live.bits.as_ptr()) != 0 {
            return Err(last_error("making a label filter"));
        }
        filter.selector = selector.cast();
        let made = match nprobe {
            Some(nprobe) => {
                faiss_SearchParametersIVF_new_with(&mut filter.params, filter.selector, nprobe, 0)
            }
            None => faiss_SearchParameters_new(&mut filter.params, filter.selector),
        };
        if made != 0 {
            return Err(last_error("making search parameters"));
        }
        if faiss_Index_search_with_params(
            index.inner_ptr(),
            1,
            query.as_ptr(),
            k as i64,
            filter.params,
            scores.as_mut_ptr(),
            labels.as_mut_ptr(),
        ) != 0
        {
            return Err(last_error("searching live labels"));
        }
    }
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
        let mut live = LiveLabels::default();
        for label in 1000..1100 {
            live.insert(label);
        }
        for label in 1000..1050 {
            live.remove(label);
        }
        let (_, labels) = search_live(&index, &live, &[0.0, 0.0], 3, None).unwrap();
        assert_eq!(labels, [1050, 1051, 1052]);
    }
}
