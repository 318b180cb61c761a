// DenseIndex: chunk vectors keyed by chunk id in a FAISS index (inner product), with persistence.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "attnrag/result.hpp"

namespace attnrag::index {

namespace detail {
struct DenseIndexState;  // the FAISS objects; defined in dense_faiss.cpp
}

// One search result: a caller id and its inner product with the query (the cosine similarity when
// both are L2-normalised). Higher is better.
struct DenseHit {
    int64_t id = 0;
    float score = 0.0f;
};

// Tuning knobs; none of them changes which vectors are stored, so they are not persisted.
struct DenseIndexOptions {
    // OpenMP threads FAISS may use inside one call (the calling thread's setting is restored
    // afterwards). 1 keeps a 2-core box from being oversubscribed when callers search in parallel.
    int n_threads = 1;
    // HNSW: candidate list size while building (FAISS default 40) and while searching; a search
    // uses max(ef_search, k).
    int ef_construction = 40;
    int ef_search = 64;
    // IVF: inverted lists probed per query.
    int nprobe = 8;
};

// Vectors of one fixed dimension, each stored under a caller-chosen int64 id (the chunk id),
// searched by inner product. The factory string picks the structure:
//   "Flat"          exact search (IndexFlatIP), brute force; right for up to ~10^5 vectors.
//   "HNSW<M>"       graph search (IndexHNSWFlat, M links per node, e.g. "HNSW32"); approximate,
//                   fast at any size; removal rebuilds the graph (see remove()).
//   "IVF<n>,Flat"   n k-means lists, nprobe of them scanned per query; trained on the vectors
//                   of the first add(), which must bring at least n of them.
// Every structure is wrapped in IndexIDMap2, so ids are arbitrary and vectors can be read back.
//
// Move-only. Thread-safety: add(), remove(), set_options() and moving are writes and need exclusive
// access; any number of threads may call search(), save() and the accessors concurrently while no
// write is in progress.
class DenseIndex {
 public:
    // An empty index of `dim`-dimensional vectors. Errors: InvalidArgument for dim <= 0 or a
    // malformed spec ("HNSW0"), Unsupported for a spec outside the list above.
    static Result<DenseIndex> create(int32_t dim, const std::string& factory = "Flat",
                                     const DenseIndexOptions& options = {});

    DenseIndex(DenseIndex&&) noexcept;
    DenseIndex& operator=(DenseIndex&&) noexcept;
    DenseIndex(const DenseIndex&) = delete;
    DenseIndex& operator=(const DenseIndex&) = delete;
    ~DenseIndex();

    int32_t dim() const;
    // Number of stored vectors.
    int64_t size() const;
    // The factory string this index was created with, e.g. "HNSW32".
    const std::string& factory() const;
    const DenseIndexOptions& options() const;
    void set_options(const DenseIndexOptions& options);
    // Whether a vector is stored under `id`.
    bool contains(int64_t id) const;

    // Stores vectors[i*dim, (i+1)*dim) under ids[i]; vectors are copied. All-or-nothing: on error
    // nothing was added. Errors: InvalidArgument when vectors.size() != ids.size()*dim, an id
    // repeats within the batch or is already stored (duplicates are rejected, not replaced: remove
    // the old id first), or a vector is not finite; InvalidArgument for an untrained IVF index
    // given fewer vectors than lists. Vectors are stored as given: normalise them first for cosine.
    Status add(std::span<const int64_t> ids, std::span<const float> vectors);

    // Removes the given ids; ids not stored are ignored. Flat and IVF remove in place (O(size)).
    // HNSW cannot delete graph nodes, so the index is rebuilt from the kept vectors, which costs
    // as much as adding them all again (seconds for 10^5 vectors): batch removals.
    Status remove(std::span<const int64_t> ids);

    // The up to k stored vectors with the highest inner product with `query` (dim floats), best
    // first; fewer than k only when fewer than k (allowed) vectors are stored. `allow`, when set,
    // keeps only ids for which it returns true; it may be called from a FAISS worker thread, so it
    // must not depend on thread-local state. Errors: InvalidArgument for a query of the wrong
    // size or k <= 0.
    Result<std::vector<DenseHit>> search(std::span<const float> query, int k,
                                         const std::function<bool(int64_t)>& allow = {}) const;

    // The vector stored under `id` (dim floats). NotFound when absent.
    Result<std::vector<float>> vector(int64_t id) const;

    // Writes the index to `path` and a sidecar `<path>.json`
    //   {"format":"attnrag-dense-index","version":1,"dim","factory","count","generation",
    //    "bytes","checksum":"fnv1a64:<16 hex>"}
    // each through a temporary file and rename, so a crash leaves the old pair or the new one
    // (or, between the two renames, a mismatched pair that load() reports as Corrupt). The
    // `generation` is the caller's version of the data (e.g. the store's vector generation).
    // Errors: Io.
    Status save(const std::filesystem::path& path, uint64_t generation) const;

    // Reads an index written by save() and checks it against its sidecar. Errors the caller
    // should answer by rebuilding from the database:
    //   NotFound   `path` or its sidecar does not exist;
    //   Corrupt    size or checksum mismatch, unreadable sidecar, or FAISS rejects the data;
    //   OutOfRange the index is intact but stale: its generation differs from
    //              `expected_generation` (the message says "stale" and both generations).
    // Errors: Io when a file exists but cannot be read.
    static Result<DenseIndex> load(const std::filesystem::path& path, uint64_t expected_generation,
                                   const DenseIndexOptions& options = {});

 private:
    using Impl = detail::DenseIndexState;
    explicit DenseIndex(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace attnrag::index
