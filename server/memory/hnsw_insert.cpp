// Inserts into an HNSW graph in two steps, so that searches need not wait
// for the expensive one. See server/memory/hnsw_insert.rs.
//
// An HNSW insert first searches the graph for the new point's neighbours
// on each of its levels (a beam search of efConstruction at level 0: most
// of the cost) and then links it: its own neighbour lists, and a link back
// from each neighbour, pruning a neighbour's list when it is full. Only the
// second step changes the graph. `agentd_hnsw_plan` does the first on a
// graph it only reads (beside searches), `agentd_hnsw_link` the second
// (alone with the graph). A plan is valid while the graph has not changed:
// its caller is the graph's only writer, and the link checks that the
// graph still has the size it was planned against.
//
// The link never reallocates: when an array an insert appends to (codes,
// neighbours, levels, offsets, labels) is full, the plan copies it into a
// buffer twice as large, and the link swaps that in. faiss's own add would
// let the vector grow in place, copying a 1M-point graph's codes while the
// writer holds the graph (100+ ms).
//
// The insert follows faiss's (HNSW::add_with_locks): levels drawn from the
// graph's level probabilities, a greedy descent on the levels above the
// point's, neighbours on each of its levels chosen by faiss's pruning rule
// (HNSW::shrink_neighbor_list) from an efConstruction-wide search, the same
// rule pruning a neighbour's full list. It runs on the calling thread
// without OpenMP locks: the caller links one point at a time (the points
// of a batch are planned against the same graph, so they do not see each
// other, as in faiss's parallel add).

#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/MetricType.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/HNSW.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <queue>
#include <random>
#include <vector>

namespace {

using faiss::HNSW;
using storage_idx_t = HNSW::storage_idx_t;

// The parts of an IndexIDMap around an IndexHNSW whose storage holds codes
// in memory it owns (flat or scalar-quantized), trained, with a level for
// every node: the graphs this shim knows.
struct Parts {
    faiss::IndexIDMap* map = nullptr;
    faiss::IndexHNSW* index = nullptr;
    faiss::IndexFlatCodes* storage = nullptr;

    bool of(faiss::Index* any) {
        map = dynamic_cast<faiss::IndexIDMap*>(any);
        if (map == nullptr) {
            return false;
        }
        index = dynamic_cast<faiss::IndexHNSW*>(map->index);
        if (index == nullptr) {
            return false;
        }
        storage = dynamic_cast<faiss::IndexFlatCodes*>(index->storage);
        return storage != nullptr && index->is_trained && index->init_level0 &&
                storage->codes.is_owned && index->hnsw.neighbors.is_owned &&
                index->hnsw.levels.size() == size_t(index->ntotal) &&
                storage->ntotal == index->ntotal &&
                map->id_map.size() == size_t(index->ntotal);
    }
};

// Distances in the graph's order: HNSW keeps the nearest as the smallest,
// so similarities are negated, as faiss's own add does.
std::unique_ptr<faiss::DistanceComputer> distances(const faiss::IndexHNSW& index) {
    std::unique_ptr<faiss::DistanceComputer> dis(
            index.storage->get_distance_computer());
    if (faiss::is_similarity_metric(index.storage->metric_type)) {
        dis.reset(new faiss::NegativeDistanceComputer(dis.release()));
    }
    return dis;
}

// Up to `max_size` of `candidates` (nearest on top), by faiss's pruning
// rule; all of them when there are no more than that.
std::vector<storage_idx_t> prune(
        faiss::DistanceComputer& dis,
        std::priority_queue<HNSW::NodeDistFarther>& candidates,
        int max_size,
        bool keep_max_size_level0) {
    std::vector<HNSW::NodeDistFarther> kept;
    if (candidates.size() <= size_t(max_size)) {
        while (!candidates.empty()) {
            kept.push_back(candidates.top());
            candidates.pop();
        }
    } else {
        HNSW::shrink_neighbor_list(
                dis, candidates, kept, max_size, keep_max_size_level0);
    }
    std::vector<storage_idx_t> ids;
    ids.reserve(kept.size());
    for (const auto& node : kept) {
        ids.push_back(node.id);
    }
    return ids;
}

// Adds `dest` to `src`'s neighbours at `level`; a full list keeps the best
// of its neighbours and `dest` by the pruning rule.
void link_one(
        HNSW& hnsw,
        faiss::DistanceComputer& dis,
        storage_idx_t src,
        storage_idx_t dest,
        int level,
        bool keep_max_size_level0) {
    size_t begin, end;
    hnsw.neighbor_range(src, level, &begin, &end);
    storage_idx_t* neighbors = hnsw.neighbors.data();
    if (neighbors[end - 1] == -1) {
        size_t free = end;
        while (free > begin && neighbors[free - 1] == -1) {
            free--;
        }
        neighbors[free] = dest;
        return;
    }
    std::priority_queue<HNSW::NodeDistFarther> candidates;
    candidates.emplace(dis.symmetric_dis(src, dest), dest);
    for (size_t i = begin; i < end; i++) {
        candidates.emplace(dis.symmetric_dis(src, neighbors[i]), neighbors[i]);
    }
    std::vector<storage_idx_t> kept =
            prune(dis, candidates, int(end - begin), keep_max_size_level0);
    size_t i = begin;
    for (storage_idx_t id : kept) {
        neighbors[i++] = id;
    }
    while (i < end) {
        neighbors[i++] = -1;
    }
}

// A copy of `from` with room for `more` elements after its end, in a buffer
// at least twice as large, when `from` lacks that room; left empty if not.
template <class T>
void copy_if_full(const std::vector<T>& from, size_t more, std::vector<T>& into) {
    into = std::vector<T>();
    if (from.size() + more <= from.capacity()) {
        return;
    }
    into.reserve(std::max(2 * from.capacity(), from.size() + more));
    into.assign(from.begin(), from.end());
}

// Swaps a copy made by copy_if_full in (O(1)); `spare` then holds the old
// buffer, freed by the next plan, outside the caller's lock.
template <class T>
void swap_in(std::vector<T>& target, std::vector<T>& spare) {
    if (spare.capacity() > target.capacity()) {
        target.swap(spare);
    }
}

template <class T>
void swap_in(faiss::MaybeOwnedVector<T>& target, std::vector<T>& spare) {
    if (spare.capacity() > target.owned_data.capacity()) {
        target.owned_data.swap(spare);
        target.c_ptr = target.owned_data.data();
        target.c_size = target.owned_data.size();
    }
}

// The insert of one point, planned against a graph of `ntotal` nodes.
struct Plan {
    int64_t label = 0;
    // The point's top level (0: level 0 only).
    int level = 0;
    // links[l]: its neighbours at level l, for each level the graph has
    // (none when the graph is empty: it becomes the entry point).
    std::vector<std::vector<storage_idx_t>> links;
};

// Larger copies of the arrays an insert appends to, made where they lack
// room for a batch (empty where there is room); after the link swaps
// them in, they hold the old buffers until the next plan frees them.
struct Grown {
    std::vector<uint8_t> codes;
    std::vector<storage_idx_t> neighbors;
    std::vector<int> levels;
    std::vector<size_t> offsets;
    std::vector<faiss::idx_t> labels;
};

struct Inserter {
    faiss::VisitedTable visited{0};
    std::mt19937_64 rng;
    // The batch planned last, against `graph` at `ntotal` nodes, in the
    // order its points are to be linked; `next` is the first not linked.
    std::vector<Plan> plans;
    const faiss::Index* graph = nullptr;
    size_t ntotal = 0;
    size_t next = 0;
    size_t linked = 0;
    Grown grown;

    explicit Inserter(uint64_t seed) : rng(seed) {}

    void forget() {
        plans.clear();
        graph = nullptr;
        next = linked = 0;
    }

    // A level drawn from the graph's level probabilities, as
    // HNSW::random_level (whose generator is the graph's, not ours).
    int draw_level(const HNSW& hnsw) {
        double f = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        for (size_t level = 0; level < hnsw.assign_probas.size(); level++) {
            if (f < hnsw.assign_probas[level]) {
                return int(level);
            }
            f -= hnsw.assign_probas[level];
        }
        return int(hnsw.assign_probas.size()) - 1;
    }

    // Plans the n points of x, labelled `labels`, each against the graph
    // as it is (the points of a batch do not see each other, as in faiss's
    // parallel add), and makes room for all of them. Into an empty graph only
// the first is planned.
    void make_plans(const Parts& parts, int64_t n, const int64_t* labels, const float* x) {
        // Buffers the last link swapped out are freed here, not under the
        // caller's lock.
        forget();
        grown = Grown();
        const faiss::IndexHNSW& index = *parts.index;
        const HNSW& hnsw = index.hnsw;
        graph = parts.map;
        ntotal = size_t(index.ntotal);
        if (visited.visited.size() < ntotal) {
            // New slots read 0, never the current mark (at least 1).
            visited.visited.resize(std::max(ntotal, 2 * visited.visited.size()), 0);
        }
        auto dis = distances(index);
        size_t neighbor_slots = 0;
        for (int64_t i = 0; i < n; i++) {
            if (hnsw.entry_point < 0 && i > 0) {
                // Into an empty graph one point at a time: a second point
                // planned now would link to nothing.
                break;
            }
            Plan plan;
            plan.label = labels[i];
            plan.level = draw_level(hnsw);
            neighbor_slots += size_t(hnsw.cum_nb_neighbors(plan.level + 1));
            if (hnsw.entry_point >= 0) {
                dis->set_query(x + size_t(i) * size_t(index.d));
                storage_idx_t nearest = hnsw.entry_point;
                float d_nearest = (*dis)(nearest);
                int level = hnsw.max_level;
                for (; level > plan.level; level--) {
                    faiss::greedy_update_nearest(hnsw, *dis, level, nearest, d_nearest);
                }
                plan.links.resize(size_t(level) + 1);
                bool keep = index.keep_max_size_level0 && plan.level == 0;
                for (; level >= 0; level--) {
                    std::priority_queue<HNSW::NodeDistCloser> found;
                    // Takes the graph non-const but only reads it.
                    faiss::search_neighbors_to_add(
                            const_cast<HNSW&>(hnsw),
                            *dis,
                            found,
                            nearest,
                            d_nearest,
                            level,
                            visited);
                    std::priority_queue<HNSW::NodeDistFarther> candidates;
                    for (; !found.empty(); found.pop()) {
                        candidates.emplace(found.top().d, found.top().id);
                    }
                    plan.links[level] = prune(
                            *dis, candidates, hnsw.nb_neighbors(level), keep);
                }
            }
            plans.push_back(std::move(plan));
        }
        copy_if_full(
                parts.storage->codes.owned_data,
                size_t(n) * parts.storage->code_size,
                grown.codes);
        copy_if_full(hnsw.neighbors.owned_data, neighbor_slots, grown.neighbors);
        copy_if_full(hnsw.levels, size_t(n), grown.levels);
        copy_if_full(hnsw.offsets, size_t(n), grown.offsets);
        copy_if_full(parts.map->id_map, size_t(n), grown.labels);
    }

    // The plan of `label` if it is still to be linked (skipping planned
    // points before it: they died meanwhile) on the graph as this batch
    // left it; null if none.
    const Plan* planned(const Parts& parts, int64_t label) {
        if (graph != parts.map || size_t(parts.index->ntotal) != ntotal + linked) {
            return nullptr;
        }
        for (size_t i = next; i < plans.size(); i++) {
            if (plans[i].label == label) {
                next = i + 1;
                return &plans[i];
            }
        }
        return nullptr;
    }

    void link(const Parts& parts, const Plan& plan, const float* x) {
        faiss::IndexHNSW& index = *parts.index;
        HNSW& hnsw = index.hnsw;
        swap_in(parts.storage->codes, grown.codes);
        swap_in(hnsw.neighbors, grown.neighbors);
        swap_in(hnsw.levels, grown.levels);
        swap_in(hnsw.offsets, grown.offsets);
        swap_in(parts.map->id_map, grown.labels);

        // As IndexHNSW::add: codes, then the level and neighbour slots.
        const auto id = storage_idx_t(index.ntotal);
        parts.storage->add(1, x);
        index.ntotal = parts.storage->ntotal;
        hnsw.levels.push_back(plan.level + 1);
        hnsw.offsets.push_back(
                hnsw.offsets.back() + hnsw.cum_nb_neighbors(plan.level + 1));
        hnsw.neighbors.resize(hnsw.offsets.back(), -1);

        if (hnsw.entry_point < 0) {
            hnsw.entry_point = id;
            hnsw.max_level = plan.level;
        } else {
            auto dis = distances(index);
            bool keep = index.keep_max_size_level0 && plan.level == 0;
            for (int level = int(plan.links.size()) - 1; level >= 0; level--) {
                for (storage_idx_t other : plan.links[level]) {
                    link_one(hnsw, *dis, id, other, level, keep);
                }
                for (storage_idx_t other : plan.links[level]) {
                    link_one(hnsw, *dis, other, id, level, keep);
                }
            }
            if (plan.level > hnsw.max_level) {
                hnsw.max_level = plan.level;
                hnsw.entry_point = id;
            }
        }

        // As IndexIDMap::add_with_ids.
        parts.map->id_map.push_back(plan.label);
        parts.map->ntotal = index.ntotal;
        linked++;
    }
};

} // namespace

extern "C" void* agentd_hnsw_inserter_new(uint64_t seed) {
    try {
        return new Inserter(seed);
    } catch (...) {
        return nullptr;
    }
}

extern "C" void agentd_hnsw_inserter_free(void* inserter) {
    delete static_cast<Inserter*>(inserter);
}

// Plans the inserts of the n vectors x, labelled `labels`, into `index`,
// which is only read, replacing the last plans. Returns 0 when planned, 1
// when the index is not a graph this shim knows (nothing planned), -1 when
// faiss failed.
extern "C" int agentd_hnsw_plan(
        void* inserter,
        const void* index,
        int64_t n,
        const int64_t* labels,
        const float* x) {
    auto& owned = *static_cast<Inserter*>(inserter);
    try {
        Parts parts;
        if (!parts.of(const_cast<faiss::Index*>(static_cast<const faiss::Index*>(index)))) {
            owned.forget();
            return 1;
        }
        owned.make_plans(parts, n, labels, x);
        return 0;
    } catch (...) {
        owned.forget();
        return -1;
    }
}

// Links x, labelled `label`, into `index` as planned. The points of a
// batch are linked in their order; a point may be skipped (it died), not
// revisited. Returns 0 when linked, 2 when there is no plan for it on the
// graph as it is (nothing changed), -1 when faiss failed (the graph may
// be half-changed: drop it).
extern "C" int agentd_hnsw_link(
        void* inserter,
        void* index,
        int64_t label,
        const float* x) {
    auto& owned = *static_cast<Inserter*>(inserter);
    try {
        Parts parts;
        if (!parts.of(static_cast<faiss::Index*>(index))) {
            return 2;
        }
        const Plan* plan = owned.planned(parts, label);
        if (plan == nullptr) {
            return 2;
        }
        owned.link(parts, *plan, x);
        return 0;
    } catch (...) {
        return -1;
    }
}
