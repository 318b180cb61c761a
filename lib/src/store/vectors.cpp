// Store: chunk vectors (set, get, stream for index rebuilds) and the vector generation.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "attnrag/store.hpp"
#include "store/store_impl.h"
#include "store/vector_blob.h"

namespace attnrag {

// BLOBs hold the host's floats as they are; the format is little-endian f32.
static_assert(std::endian::native == std::endian::little,
              "vector BLOBs assume a little-endian host");

namespace detail {

Status upsert_vector(Db& db, int64_t chunk_id, std::span<const float> vec, const std::string& op) {
    auto st = db.prepare(
        "INSERT INTO chunk_vectors(chunk_id, dim, vector) VALUES (?1, ?2, ?3) "
        "ON CONFLICT(chunk_id) DO UPDATE SET dim = excluded.dim, vector = excluded.vector",
        op);
    if (!st) return st.error();
    st->bind_int(1, chunk_id)
        .bind_int(2, static_cast<int64_t>(vec.size()))
        .bind_blob(3, std::as_bytes(vec));
    auto r = st->run();
    if (!r && r.error().code == Errc::NotFound)
        return make_error(Errc::NotFound, op + ": no chunk " + std::to_string(chunk_id));
    return r;
}

Status check_vector_dim(Db& db, int64_t dim, const std::string& op) {
    // Uses the index on dim: O(log n), not a scan.
    auto st =
        db.prepare("SELECT dim FROM chunk_vectors WHERE dim <> ?1 LIMIT 1", op + ": check dim");
    if (!st) return st.error();
    st->bind_int(1, dim);
    auto row = st->step();
    if (!row) return row.error();
    if (*row)
        return make_error(Errc::InvalidArgument, op + ": embedding dim " + std::to_string(dim) +
                                                     " differs from the stored vectors' dim " +
                                                     std::to_string(st->column_int(0)));
    return {};
}

}  // namespace detail

namespace {

std::vector<float> decode(std::span<const std::byte> blob, int64_t dim) {
    std::vector<float> v(static_cast<size_t>(dim));
    // The schema's CHECK guarantees length = 4 * dim; copy (column pointers need not be aligned).
    std::memcpy(v.data(), blob.data(), std::min(blob.size(), v.size() * sizeof(float)));
    return v;
}

}  // namespace

Status Store::set_embeddings(std::span<const std::pair<int64_t, std::vector<float>>> vectors) {
    detail::Db& db = impl_->db;
    const std::string op = "set_embeddings";
    size_t dim = 0;
    for (const auto& [id, v] : vectors) {
        if (v.empty()) continue;
        if (dim == 0) dim = v.size();
        if (v.size() != dim)
            return make_error(Errc::InvalidArgument, op + ": chunk " + std::to_string(id) +
                                                         ": dim " + std::to_string(v.size()) +
                                                         " != " + std::to_string(dim));
        for (float x : v)
            if (!std::isfinite(x))
                return make_error(Errc::InvalidArgument,
                                  op + ": chunk " + std::to_string(id) + ": non-finite value");
    }
    detail::Transaction tx(db);
    ATTNRAG_TRY(tx.begin(op));
    for (const auto& [id, v] : vectors) {
        if (v.empty()) {
            auto del = db.prepare("DELETE FROM chunk_vectors WHERE chunk_id = ?1", op + ": delete");
            if (!del) return del.error();
            del->bind_int(1, id);
            ATTNRAG_TRY(del->run());
        } else {
            ATTNRAG_TRY(detail::upsert_vector(db, id, v, op));
        }
    }
    if (dim != 0) ATTNRAG_TRY(detail::check_vector_dim(db, static_cast<int64_t>(dim), op));
    return tx.commit(op);
}

Result<std::optional<std::vector<float>>> Store::get_embedding(int64_t chunk_id) {
    const std::string op = "get_embedding " + std::to_string(chunk_id);
    auto st = impl_->db.prepare("SELECT dim, vector FROM chunk_vectors WHERE chunk_id = ?1", op);
    if (!st) return st.error();
    st->bind_int(1, chunk_id);
    auto row = st->step();
    if (!row) return row.error();
    if (!*row) return std::optional<std::vector<float>>{};
    return std::optional<std::vector<float>>{decode(st->column_blob(1), st->column_int(0))};
}

Status Store::for_each_embedding(
    const std::function<bool(int64_t chunk_id, std::span<const float>)>& fn) {
    auto st = impl_->db.prepare("SELECT chunk_id, dim, vector FROM chunk_vectors ORDER BY chunk_id",
                                "for_each_embedding");
    if (!st) return st.error();
    std::vector<float> buf;
    for (;;) {
        auto row = st->step();
        if (!row) return row.error();
        if (!*row) return {};
        const auto blob = st->column_blob(2);
        buf.resize(static_cast<size_t>(st->column_int(1)));
        std::memcpy(buf.data(), blob.data(), std::min(blob.size(), buf.size() * sizeof(float)));
        if (!fn(st->column_int(0), buf))
            return make_error(Errc::Cancelled, "for_each_embedding: stopped by the callback");
    }
}

Result<int64_t> Store::count_embeddings() {
    return impl_->db.query_int("SELECT count(*) FROM chunk_vectors", "count_embeddings");
}

Result<uint64_t> Store::vector_generation() {
    auto g = impl_->db.query_int("SELECT value FROM counters WHERE name = 'vector_generation'",
                                 "vector_generation");
    if (!g) return g.error();
    return static_cast<uint64_t>(*g);
}

}  // namespace attnrag
