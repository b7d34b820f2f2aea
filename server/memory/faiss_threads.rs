//! How many threads faiss may use on the calling thread.
//!
//! faiss parallelises with OpenMP. A search for one query gains nothing from
//! a thread team (HNSW search is sequential), yet `IndexIDMap` still opens a
//! parallel region to translate ten labels, and afterwards libgomp's workers
//! spin-wait, stealing the core that gRPC and the store need on a small
//! machine. So searches run on one thread and builds, training and inserts
//! on every core. OpenMP keeps the setting per calling thread, and the
//! blocking pool's threads do both kinds of work, so each call sets it.

use std::os::raw::c_int;
use std::sync::OnceLock;

// libgomp, which faiss links (faiss-sys emits `-l gomp`).
#[allow(unsafe_code)] // an extern block is unsafe by nature; see `set`
unsafe extern "C" {
    fn omp_set_num_threads(n: c_int);
}

fn set(n: usize) {
    // SAFETY: omp_set_num_threads takes any positive count and only changes
    // the calling thread's OpenMP settings.
    #[allow(unsafe_code)]
    unsafe {
        omp_set_num_threads(n.clamp(1, c_int::MAX as usize) as c_int);
    }
}

/// One thread: for searches of a single query.
pub fn for_search() {
    set(1);
}

/// One thread: for the merger's small slices of inserts, which run beside
/// searches that need the other cores.
pub fn for_merge() {
    set(1);
}

/// Every core: for builds, training and inserts.
pub fn for_build() {
    static CORES: OnceLock<usize> = OnceLock::new();
    set(*CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    }));
}
