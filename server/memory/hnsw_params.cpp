// The one faiss object its C API cannot make: HNSW search parameters.
//
// faiss reads efSearch per call from a SearchParametersHNSW passed to
// search(), recognised by its C++ type (dynamic_cast), so Rust cannot build
// one field by field. Without it efSearch lives on the index itself, and
// setting it per search would race with every other search of the same
// collection. The object is freed with faiss_SearchParameters_free (the
// base class has a virtual destructor). See server/memory/live_filter.rs.

#include <faiss/impl/HNSW.h>
#include <faiss/impl/IDSelector.h>

extern "C" int agentd_search_parameters_hnsw_new(
        void** out,
        void* selector,
        int ef_search) {
    try {
        auto* params = new faiss::SearchParametersHNSW();
        params->sel = reinterpret_cast<faiss::IDSelector*>(selector);
        params->efSearch = ef_search;
        *out = static_cast<faiss::SearchParameters*>(params);
        return 0;
    } catch (...) {
        return -1;
    }
}
