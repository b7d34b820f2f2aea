// Single-threaded inserts of a few points into an HNSW graph, without the
// per-call cost that faiss's own add pays for the whole graph.
//
// IndexHNSW::add (hnsw_add_vertices) allocates and initialises one OpenMP
// lock per node of the graph, and a visited table as large, on every call,
// so that many threads can insert at once. For the background merger, which
// inserts a handful of points per call into a graph of 100k to millions,
// that O(graph) setup was most of the work: ~1,000 points/s whatever the
// graph's M. This does the same insertion (the same HNSW::add_with_locks,
// highest level first, as faiss orders them) on the calling thread, with
// the locks and the visited table kept between calls and grown as the
// graph grows, so a call costs what its points cost. The graph it
// leaves is what faiss's add would leave. See server/memory/hnsw_insert.rs.

#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/MetricType.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

namespace {

// One initialised OpenMP lock per node of one graph, and a visited table
// as large (faiss advances its mark after each search, so it is reused).
struct Locks {
    std::vector<omp_lock_t> locks;
    faiss::VisitedTable visited{0};

    // Room for n nodes. An initialised OpenMP lock may not be moved, so a
    // larger set is made and initialised whole (the old one destroyed, all
    // unlocked: one thread uses them); doubling keeps that rare.
    void grow(size_t n) {
        if (n <= locks.size()) {
            return;
        }
        std::vector<omp_lock_t> bigger(std::max(n, 2 * locks.size()));
        for (auto& lock : bigger) {
            omp_init_lock(&lock);
        }
        destroy();
        locks.swap(bigger);
        // New slots read 0, never the current mark (at least 1).
        visited.visited.resize(locks.size(), 0);
    }

    void destroy() {
        for (auto& lock : locks) {
            omp_destroy_lock(&lock);
        }
    }

    ~Locks() {
        destroy();
    }
};

} // namespace

extern "C" void* agentd_hnsw_locks_new() {
    try {
        return new Locks();
    } catch (...) {
        return nullptr;
    }
}

extern "C" void agentd_hnsw_locks_free(void* locks) {
    delete static_cast<Locks*>(locks);
}

// Adds n vectors x with labels ids to `index`, an IndexIDMap around an
// IndexHNSW, on the calling thread. `locks` belongs to this index alone.
// Returns 0 when added, 1 when the index is not of that kind (nothing was
// changed: use faiss's add), -1 when faiss failed.
extern "C" int agentd_hnsw_add(
        void* locks,
        void* index,
        int64_t n,
        const float* x,
        const int64_t* ids) {
    try {
        auto* map = dynamic_cast<faiss::IndexIDMap*>(
                reinterpret_cast<faiss::Index*>(index));
        if (map == nullptr) {
            return 1;
        }
        auto* hnsw_index = dynamic_cast<faiss::IndexHNSW*>(map->index);
        if (hnsw_index == nullptr || hnsw_index->storage == nullptr ||
            !hnsw_index->is_trained || !hnsw_index->init_level0 ||
            hnsw_index->hnsw.levels.size() != size_t(hnsw_index->ntotal)) {
            return 1;
        }
        if (n <= 0) {
            return 0;
        }
        faiss::HNSW& hnsw = hnsw_index->hnsw;
        using storage_idx_t = faiss::HNSW::storage_idx_t;
        const storage_idx_t n0 = storage_idx_t(hnsw_index->ntotal);

        // As IndexHNSW::add: codes first, then levels and neighbour slots.
        hnsw_index->storage->add(n, x);
        hnsw_index->ntotal = hnsw_index->storage->ntotal;
        hnsw.prepare_level_tab(size_t(n), false);
        auto& owned = *static_cast<Locks*>(locks);
        owned.grow(size_t(hnsw_index->ntotal));

        // Highest level first, so a point that raises the graph's top
        // level becomes the entry point before the others descend.
        std::vector<storage_idx_t> order(n);
        std::iota(order.begin(), order.end(), n0);
        std::stable_sort(
                order.begin(), order.end(), [&](storage_idx_t a, storage_idx_t b) {
                    return hnsw.levels[a] > hnsw.levels[b];
                });

        std::unique_ptr<faiss::DistanceComputer> dis(
                hnsw_index->storage->get_distance_computer());
        if (faiss::is_similarity_metric(hnsw_index->storage->metric_type)) {
            // HNSW keeps the nearest as the smallest: negate similarities,
            // as faiss's own add does.
            dis.reset(new faiss::NegativeDistanceComputer(dis.release()));
        }
        for (storage_idx_t id : order) {
            dis->set_query(x + size_t(id - n0) * size_t(hnsw_index->d));
            int level = hnsw.levels[id] - 1;
            hnsw.add_with_locks(
                    *dis,
                    level,
                    id,
                    owned.locks,
                    owned.visited,
                    hnsw_index->keep_max_size_level0 && level == 0);
        }

        // As IndexIDMap::add_with_ids.
        map->id_map.insert(map->id_map.end(), ids, ids + n);
        map->ntotal = hnsw_index->ntotal;
        return 0;
    } catch (...) {
        return -1;
    }
}
