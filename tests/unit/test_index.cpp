// Dense index (FAISS Flat/HNSW/IVF vs brute force, filters, removal, persistence), RRF and metrics.
#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "attnrag/index/dense_index.hpp"
#include "attnrag/index/fusion.hpp"
#include "attnrag/index/metrics.hpp"
#include "test_support.hpp"

using namespace attnrag;
using namespace attnrag::index;

namespace {

constexpr int32_t kDim = 64;
constexpr size_t kCount = 2000;

// n random unit vectors: [n][dim], f32.
std::vector<float> random_unit_vectors(size_t n, int32_t dim, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal;
    std::vector<float> v(n * static_cast<size_t>(dim));
    for (size_t i = 0; i < n; ++i) {
        float* row = v.data() + i * static_cast<size_t>(dim);
        double norm = 0.0;
        for (int32_t j = 0; j < dim; ++j) {
            row[j] = normal(rng);
            norm += static_cast<double>(row[j]) * row[j];
        }
        for (int32_t j = 0; j < dim; ++j) row[j] = static_cast<float>(row[j] / std::sqrt(norm));
    }
    return v;
}

// The error text of a failed result, for INFO.
template <class R>
std::string why(const R& r) {
    return r.ok() ? std::string() : r.error().to_string();
}

// Sparse, large ids, so a test notices when positions leak out instead of ids.
std::vector<int64_t> test_ids(size_t n) {
    std::vector<int64_t> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = 1'000'000'007LL + 13 * static_cast<int64_t>(i);
    return ids;
}

struct Data {
    std::vector<int64_t> ids = test_ids(kCount);
    std::vector<float> vectors = random_unit_vectors(kCount, kDim, 42);
    std::vector<float> queries = random_unit_vectors(50, kDim, 7);  // [50][kDim]

    std::span<const float> query(size_t q) const {
        return std::span<const float>(queries).subspan(q * kDim, kDim);
    }
};

const Data& data() {
    static const Data d;
    return d;
}

// Exact top-k by inner product in double over the ids that `keep` accepts.
std::vector<DenseHit> brute_force(const Data& d, std::span<const float> query, size_t k,
                                  const std::function<bool(int64_t)>& keep = {}) {
    std::vector<DenseHit> all;
    for (size_t i = 0; i < d.ids.size(); ++i) {
        if (keep && !keep(d.ids[i])) continue;
        double dot = 0.0;
        for (int32_t j = 0; j < kDim; ++j) {
            dot += static_cast<double>(query[static_cast<size_t>(j)]) * d.vectors[i * kDim + j];
        }
        all.push_back({d.ids[i], static_cast<float>(dot)});
    }
    std::sort(all.begin(), all.end(),
              [](const DenseHit& a, const DenseHit& b) { return a.score > b.score; });
    if (all.size() > k) all.resize(k);
    return all;
}

DenseIndex build(const std::string& factory, const DenseIndexOptions& options = {}) {
    auto index = DenseIndex::create(kDim, factory, options);
    REQUIRE(index.ok());
    const Data& d = data();
    auto st = index->add(d.ids, d.vectors);
    INFO(why(st));
    REQUIRE(st.ok());
    REQUIRE(index->size() == static_cast<int64_t>(kCount));
    return std::move(index).value();
}

std::vector<DenseHit> search_ok(const DenseIndex& index, std::span<const float> query, int k,
                                const std::function<bool(int64_t)>& allow = {}) {
    auto r = index.search(query, k, allow);
    INFO(why(r));
    REQUIRE(r.ok());
    return std::move(r).value();
}

// Mean over the 50 queries of |approx top-10 ∩ exact top-10| / 10.
double recall_at_10(const DenseIndex& index, const std::function<bool(int64_t)>& keep = {}) {
    const Data& d = data();
    double sum = 0.0;
    for (size_t q = 0; q < 50; ++q) {
        auto exact = brute_force(d, d.query(q), 10, keep);
        auto got = search_ok(index, d.query(q), 10);
        std::set<int64_t> truth;
        for (const auto& h : exact) truth.insert(h.id);
        size_t n_hit = 0;
        for (const auto& h : got) n_hit += truth.count(h.id);
        sum += static_cast<double>(n_hit) / 10.0;
    }
    return sum / 50.0;
}

void check_exact(const DenseIndex& index, const std::function<bool(int64_t)>& keep = {},
                 const std::function<bool(int64_t)>& allow = {}) {
    const Data& d = data();
    for (size_t q = 0; q < 50; ++q) {
        auto exact = brute_force(d, d.query(q), 10, keep);
        auto got = search_ok(index, d.query(q), 10, allow);
        REQUIRE(got.size() == exact.size());
        for (size_t r = 0; r < got.size(); ++r) {
            INFO("query " << q << " rank " << r);
            CHECK(got[r].id == exact[r].id);
            CHECK(got[r].score == Approx(exact[r].score).margin(1e-5));
        }
    }
}

std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
}

void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
}

bool divisible_by_3(int64_t id) {
    return (id - 1'000'000'007LL) / 13 % 3 == 0;
}

}  // namespace

// ---- Flat ----

TEST_CASE("flat search equals brute force and returns caller ids", "[index][dense]") {
    DenseIndex index = build("Flat");
    CHECK(index.dim() == kDim);
    CHECK(index.factory() == "Flat");
    check_exact(index);
    // A stored vector is its own nearest neighbour with score 1.
    const Data& d = data();
    auto self =
        search_ok(index, std::span<const float>(d.vectors).subspan(size_t{17} * kDim, kDim), 1);
    REQUIRE(self.size() == 1);
    CHECK(self[0].id == d.ids[17]);
    CHECK(self[0].score == Approx(1.0f).margin(1e-5));
    auto v = index.vector(d.ids[17]);
    REQUIRE(v.ok());
    CHECK(std::equal(v->begin(), v->end(), d.vectors.begin() + std::ptrdiff_t{17} * kDim));
    CHECK(index.vector(5).error().code == Errc::NotFound);
}

TEST_CASE("flat search returns all vectors when k exceeds the size", "[index][dense]") {
    auto index = DenseIndex::create(4, "Flat");
    REQUIRE(index.ok());
    std::vector<int64_t> ids = {5, 9, 2};
    std::vector<float> vecs = {1, 0, 0, 0, 0, 1, 0, 0, 0.6f, 0.8f, 0, 0};
    REQUIRE(index->add(ids, vecs).ok());
    std::vector<float> q = {0, 1, 0, 0};
    auto hits = search_ok(*index, q, 10);
    REQUIRE(hits.size() == 3);
    CHECK(hits[0].id == 9);
    CHECK(hits[0].score == Approx(1.0f));
    CHECK(hits[1].id == 2);
    CHECK(hits[1].score == Approx(0.8f));
    CHECK(hits[2].id == 5);
    CHECK(hits[2].score == Approx(0.0f).margin(1e-6));

    auto empty = DenseIndex::create(4, "Flat");
    REQUIRE(empty.ok());
    CHECK(search_ok(*empty, q, 3).empty());
}

TEST_CASE("flat remove drops exactly the given ids", "[index][dense]") {
    DenseIndex index = build("Flat");
    const Data& d = data();
    std::vector<int64_t> gone;
    for (size_t i = 0; i < kCount; i += 3) gone.push_back(d.ids[i]);
    gone.push_back(123);  // never stored: ignored
    REQUIRE(index.remove(gone).ok());
    CHECK(index.size() == static_cast<int64_t>(kCount - (kCount + 2) / 3));
    CHECK_FALSE(index.contains(d.ids[0]));
    CHECK(index.contains(d.ids[1]));
    auto kept = [](int64_t id) { return !divisible_by_3(id); };
    check_exact(index, kept);
    // A removed id can be added again.
    std::vector<int64_t> back = {d.ids[0]};
    REQUIRE(index.add(back, std::span<const float>(d.vectors).subspan(0, kDim)).ok());
    CHECK(index.contains(d.ids[0]));
}

TEST_CASE("flat filter returns only allowed ids and still k of them", "[index][dense]") {
    DenseIndex index = build("Flat");
    check_exact(index, divisible_by_3, divisible_by_3);
    // Fewer allowed than k: all of them and no others.
    const Data& d = data();
    std::set<int64_t> few = {d.ids[3], d.ids[500], d.ids[1999]};
    auto hits = search_ok(index, d.query(0), 10, [&](int64_t id) { return few.count(id) > 0; });
    REQUIRE(hits.size() == 3);
    for (const auto& h : hits) CHECK(few.count(h.id) == 1);
    auto none = search_ok(index, d.query(0), 10, [](int64_t) { return false; });
    CHECK(none.empty());
}

TEST_CASE("a throwing filter is an error not a crash", "[index][dense]") {
    DenseIndex index = build("Flat");
    auto r =
        index.search(data().query(0), 5, [](int64_t) -> bool { throw std::runtime_error("x"); });
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::Internal);
}

// ---- HNSW ----

TEST_CASE("hnsw recall at 10 against brute force is at least 0.9", "[index][dense]") {
    DenseIndex index = build("HNSW32");
    CHECK(index.factory() == "HNSW32");
    double recall = recall_at_10(index);
    INFO("recall@10 = " << recall);
    CHECK(recall >= 0.9);
    // ef_search must reach FAISS: a wide beam on a sparser graph finds (nearly) everything.
    DenseIndex sparse = build("HNSW16", {.ef_search = 256});
    double wide = recall_at_10(sparse);
    INFO("HNSW16 ef_search 256 recall@10 = " << wide);
    CHECK(wide >= 0.99);
    // Scores are inner products, not negated distances.
    const Data& d = data();
    auto hits = search_ok(index, d.query(0), 3);
    auto exact = brute_force(d, d.query(0), 1);
    REQUIRE(!hits.empty());
    CHECK(hits[0].score == Approx(exact[0].score).margin(1e-5));
    CHECK(hits[0].score >= hits[1].score);
}

TEST_CASE("hnsw remove rebuilds without the removed ids", "[index][dense]") {
    DenseIndex index = build("HNSW16", {.ef_search = 96});
    const Data& d = data();
    std::vector<int64_t> gone;
    for (size_t i = 0; i < kCount; i += 3) gone.push_back(d.ids[i]);
    REQUIRE(index.remove(gone).ok());
    CHECK(index.size() == static_cast<int64_t>(kCount - (kCount + 2) / 3));
    CHECK(index.options().ef_search == 96);  // options survive the rebuild
    auto kept = [](int64_t id) { return !divisible_by_3(id); };
    for (size_t q = 0; q < 50; ++q) {
        for (const auto& h : search_ok(index, d.query(q), 10)) CHECK(kept(h.id));
    }
    double recall = recall_at_10(index, kept);
    INFO("recall@10 after removal = " << recall);
    CHECK(recall >= 0.9);
    auto v = index.vector(d.ids[1]);
    REQUIRE(v.ok());
    CHECK(std::equal(v->begin(), v->end(), d.vectors.begin() + std::ptrdiff_t{1} * kDim));
}

TEST_CASE("hnsw filter returns only allowed ids and all of a small allowed set", "[index][dense]") {
    DenseIndex index = build("HNSW32");
    const Data& d = data();
    for (size_t q = 0; q < 10; ++q) {
        auto hits = search_ok(index, d.query(q), 10, divisible_by_3);
        CHECK(hits.size() == 10);
        for (const auto& h : hits) CHECK(divisible_by_3(h.id));
    }
    // Five allowed ids scattered through the graph: the filtered walk cannot be relied on to
    // reach them all, the exact fallback must.
    std::set<int64_t> few = {d.ids[1], d.ids[400], d.ids[801], d.ids[1202], d.ids[1603]};
    auto allow = [&](int64_t id) { return few.count(id) > 0; };
    auto hits = search_ok(index, d.query(3), 10, allow);
    auto exact = brute_force(d, d.query(3), 10, allow);
    REQUIRE(hits.size() == 5);
    for (size_t r = 0; r < 5; ++r) CHECK(hits[r].id == exact[r].id);
}

// ---- IVF ----

TEST_CASE("ivf trains on the first batch and needs enough vectors", "[index][dense]") {
    auto small = DenseIndex::create(kDim, "IVF32,Flat");
    REQUIRE(small.ok());
    const Data& d = data();
    auto st = small->add(std::span<const int64_t>(d.ids).first(10),
                         std::span<const float>(d.vectors).first(size_t{10} * kDim));
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == Errc::InvalidArgument);
    CHECK(small->size() == 0);

    // Probing every list is exhaustive, hence exact.
    DenseIndex index = build("IVF32,Flat", {.nprobe = 32});
    CHECK(index.factory() == "IVF32,Flat");
    check_exact(index);
    check_exact(index, divisible_by_3, divisible_by_3);
    std::vector<int64_t> gone;
    for (size_t i = 0; i < kCount; i += 3) gone.push_back(d.ids[i]);
    REQUIRE(index.remove(gone).ok());
    CHECK(index.size() == static_cast<int64_t>(kCount - (kCount + 2) / 3));
    check_exact(index, [](int64_t id) { return !divisible_by_3(id); });
    // With the default nprobe the search is approximate but never short of k.
    index.set_options({.nprobe = 2});
    CHECK(search_ok(index, d.query(0), 10).size() == 10);
}

// ---- validation ----

TEST_CASE("bad factories and dims are rejected", "[index][dense]") {
    CHECK(DenseIndex::create(0, "Flat").error().code == Errc::InvalidArgument);
    CHECK(DenseIndex::create(kDim, "HNSW0").error().code == Errc::InvalidArgument);
    CHECK(DenseIndex::create(kDim, "HNSWx").error().code == Errc::InvalidArgument);
    CHECK(DenseIndex::create(kDim, "IVF16").error().code == Errc::InvalidArgument);
    CHECK(DenseIndex::create(kDim, "PQ16").error().code == Errc::Unsupported);
    CHECK(DenseIndex::create(kDim, "").error().code == Errc::InvalidArgument);
    auto h = DenseIndex::create(kDim, "HNSW8,Flat");
    REQUIRE(h.ok());
    CHECK(h->factory() == "HNSW8");
}

TEST_CASE("wrong dim vectors and duplicate ids are invalid arguments", "[index][dense]") {
    auto index = DenseIndex::create(4, "Flat");
    REQUIRE(index.ok());
    std::vector<int64_t> ids = {1, 2};
    std::vector<float> seven(7, 0.5f);
    auto st = index->add(ids, seven);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == Errc::InvalidArgument);
    std::vector<float> eight(8, 0.5f);
    REQUIRE(index->add(ids, eight).ok());

    std::vector<int64_t> dup = {3, 2};
    st = index->add(dup, eight);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().code == Errc::InvalidArgument);
    std::vector<int64_t> dup_in_batch = {7, 7};
    CHECK(index->add(dup_in_batch, eight).error().code == Errc::InvalidArgument);
    CHECK(index->size() == 2);  // nothing of a rejected batch was added

    std::vector<float> nan_vec = {1, 0, 0, std::nanf("")};
    std::vector<int64_t> one = {9};
    CHECK(index->add(one, nan_vec).error().code == Errc::InvalidArgument);

    std::vector<float> q3(3, 0.1f);
    CHECK(index->search(q3, 1).error().code == Errc::InvalidArgument);
    std::vector<float> q4(4, 0.1f);
    CHECK(index->search(q4, 0).error().code == Errc::InvalidArgument);
}

TEST_CASE("searches may run concurrently and the caller's omp setting is kept", "[index][dense]") {
    DenseIndex index = build("HNSW32", {.n_threads = 2});
    const Data& d = data();
    std::vector<std::vector<DenseHit>> expected;
    for (size_t q = 0; q < 50; ++q) expected.push_back(search_ok(index, d.query(q), 10));
    std::atomic<int> n_mismatch{0};
    auto worker = [&](size_t first) {
        for (int rep = 0; rep < 4; ++rep) {
            for (size_t q = first; q < 50; q += 2) {
                auto r = index.search(d.query(q), 10);
                if (!r.ok() || r->size() != expected[q].size()) {
                    ++n_mismatch;
                    continue;
                }
                for (size_t i = 0; i < r->size(); ++i)
                    n_mismatch += (*r)[i].id != expected[q][i].id;
            }
        }
    };
    std::thread a(worker, 0), b(worker, 1);
    a.join();
    b.join();
    CHECK(n_mismatch == 0);

    omp_set_num_threads(3);
    REQUIRE(index.search(d.query(0), 5).ok());
    CHECK(omp_get_max_threads() == 3);
}

// ---- persistence ----

TEST_CASE("save and load round trip gives identical results", "[index][dense][persist]") {
    auto dir = test::make_temp_dir("dense_index");
    const Data& d = data();
    for (std::string factory : {"Flat", "HNSW32", "IVF16,Flat"}) {
        INFO(factory);
        DenseIndex index = build(factory);
        auto path = dir / "vectors.faiss";
        auto st = index.save(path, 7);
        INFO(why(st));
        REQUIRE(st.ok());
        CHECK(std::filesystem::exists(dir / "vectors.faiss.json"));
        auto loaded = DenseIndex::load(path, 7);
        INFO(why(loaded));
        REQUIRE(loaded.ok());
        CHECK(loaded->dim() == kDim);
        CHECK(loaded->size() == index.size());
        CHECK(loaded->factory() == index.factory());
        for (size_t q = 0; q < 50; ++q) {
            auto a = search_ok(index, d.query(q), 10);
            auto b = search_ok(*loaded, d.query(q), 10);
            REQUIRE(a.size() == b.size());
            for (size_t i = 0; i < a.size(); ++i) {
                CHECK(a[i].id == b[i].id);
                CHECK(a[i].score == b[i].score);
            }
        }
        // The loaded index stays writable: remove and add behave.
        std::vector<int64_t> gone = {d.ids[0]};
        REQUIRE(loaded->remove(gone).ok());
        CHECK_FALSE(loaded->contains(d.ids[0]));
        REQUIRE(loaded->add(gone, std::span<const float>(d.vectors).first(kDim)).ok());
    }
    std::filesystem::remove_all(dir);
}

TEST_CASE("load reports missing stale and corrupt files", "[index][dense][persist]") {
    auto dir = test::make_temp_dir("dense_index_bad");
    auto path = dir / "vectors.faiss";
    auto sidecar = dir / "vectors.faiss.json";

    auto missing = DenseIndex::load(path, 1);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::NotFound);

    DenseIndex index = build("HNSW16");
    REQUIRE(index.save(path, 41).ok());
    const auto good = read_bytes(path);
    const auto good_meta = read_bytes(sidecar);
    REQUIRE(good.size() > 1000);

    SECTION("generation mismatch is stale") {
        auto r = DenseIndex::load(path, 42);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == Errc::OutOfRange);
        CHECK_THAT(r.error().message, Catch::Contains("stale"));
        CHECK(DenseIndex::load(path, 41).ok());
    }
    SECTION("truncated index is corrupt") {
        for (size_t keep : {size_t{0}, size_t{10}, good.size() / 2, good.size() - 1}) {
            write_bytes(path,
                        std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(keep)));
            auto r = DenseIndex::load(path, 41);
            REQUIRE_FALSE(r.ok());
            CHECK(r.error().code == Errc::Corrupt);
        }
    }
    SECTION("bit flips anywhere are corrupt") {
        for (size_t at : {size_t{0}, size_t{5}, good.size() / 3, good.size() - 1}) {
            auto bad = good;
            bad[at] ^= 0x10;
            write_bytes(path, bad);
            auto r = DenseIndex::load(path, 41);
            REQUIRE_FALSE(r.ok());
            CHECK(r.error().code == Errc::Corrupt);
            CHECK_THAT(r.error().message, Catch::Contains("checksum"));
        }
    }
    SECTION("a missing or mangled sidecar") {
        std::filesystem::remove(sidecar);
        CHECK(DenseIndex::load(path, 41).error().code == Errc::NotFound);
        write_bytes(sidecar, std::vector<uint8_t>(good_meta.begin(), good_meta.begin() + 20));
        CHECK(DenseIndex::load(path, 41).error().code == Errc::Corrupt);
        std::string other = "{\"format\":\"attnrag-dense-index\",\"version\":1,\"dim\":\"x\"}";
        write_bytes(sidecar, std::vector<uint8_t>(other.begin(), other.end()));
        CHECK(DenseIndex::load(path, 41).error().code == Errc::Corrupt);
    }
    SECTION("a sidecar from another index is corrupt") {
        auto flat = DenseIndex::create(kDim, "Flat");
        REQUIRE(flat.ok());
        auto other_path = dir / "other.faiss";
        REQUIRE(flat->save(other_path, 41).ok());
        std::filesystem::copy_file(other_path, path,
                                   std::filesystem::copy_options::overwrite_existing);
        CHECK(DenseIndex::load(path, 41).error().code == Errc::Corrupt);
    }
    std::filesystem::remove_all(dir);
}

// ---- reciprocal rank fusion ----

TEST_CASE("rrf matches a hand computed example with ties", "[index][fusion]") {
    // k = 60. dense: 10 20 30; lexical: 30 40 10.
    //   10: 1/61 + 1/63 = 0.0322664   (dense 1, lexical 3)
    //   30: 1/63 + 1/61 = 0.0322664   (dense 3, lexical 1)  tie with 10, best rank 1 each -> id
    //   20: 1/62        = 0.0161290   (dense only)
    //   40: 1/62        = 0.0161290   (lexical only)        tie with 20, best rank 2 each -> id
    std::vector<int64_t> dense = {10, 20, 30};
    std::vector<int64_t> lexical = {30, 40, 10};
    auto fused = reciprocal_rank_fusion(dense, lexical);
    REQUIRE(fused.size() == 4);
    CHECK(fused[0].id == 10);
    CHECK(fused[0].score == Approx(1.0 / 61 + 1.0 / 63));
    CHECK(fused[0].dense_rank == 1);
    CHECK(fused[0].lexical_rank == 3);
    CHECK(fused[1].id == 30);
    CHECK(fused[1].score == Approx(1.0 / 61 + 1.0 / 63));
    CHECK(fused[2].id == 20);
    CHECK(fused[2].score == Approx(1.0 / 62));
    CHECK(fused[2].lexical_rank == 0);
    CHECK(fused[3].id == 40);
    CHECK(fused[3].score == Approx(1.0 / 62));
    CHECK(fused[3].dense_rank == 0);
    CHECK(fused[3].lexical_rank == 2);
}

TEST_CASE("rrf with a small k and a limit", "[index][fusion]") {
    // k = 1. dense: 1 2 (2 repeated); lexical: 2 3.
    //   2: 1/(1+2) + 1/(1+1) = 0.8333   1: 1/(1+1) = 0.5   3: 1/(1+2) = 0.3333
    std::vector<int64_t> dense = {1, 2, 2};
    std::vector<int64_t> lexical = {2, 3};
    auto fused = reciprocal_rank_fusion(dense, lexical, 1);
    REQUIRE(fused.size() == 3);
    CHECK(fused[0].id == 2);
    CHECK(fused[0].score == Approx(1.0 / 3 + 1.0 / 2));
    CHECK(fused[0].dense_rank == 2);
    CHECK(fused[1].id == 1);
    CHECK(fused[1].score == Approx(0.5));
    CHECK(fused[2].id == 3);
    CHECK(fused[2].score == Approx(1.0 / 3));
    auto top2 = reciprocal_rank_fusion(dense, lexical, 1, 2);
    REQUIRE(top2.size() == 2);
    CHECK(top2[0].id == 2);
    CHECK(top2[1].id == 1);
    CHECK(reciprocal_rank_fusion({}, {}).empty());
}

// ---- metrics ----

TEST_CASE("ndcg and recall match hand computed BEIR values", "[index][metrics]") {
    // qrels: d1=3 d2=2 d3=1 d4=0 (judged not relevant) d5=2; ranking: d2 dX d1 d4 d3.
    // DCG@10  = 2/log2(2) + 0/log2(3) + 3/log2(4) + 0/log2(5) + 1/log2(6)
    //         = 2 + 0 + 1.5 + 0 + 0.3868528 = 3.8868528
    // IDCG@10 = 3/log2(2) + 2/log2(3) + 2/log2(4) + 1/log2(5)   (relevances sorted 3 2 2 1)
    //         = 3 + 1.2618595 + 1 + 0.4306766 = 5.6925361
    // nDCG@10 = 0.6827981; nDCG@3 = (2 + 1.5) / (3 + 1.2618595 + 1) = 0.6651641
    // recall@10 = |{d2 d1 d3}| / |{d1 d2 d3 d5}| = 0.75; recall@3 = |{d2 d1}| / 4 = 0.5
    std::map<std::string, int> qrels = {{"d1", 3}, {"d2", 2}, {"d3", 1}, {"d4", 0}, {"d5", 2}};
    std::vector<std::string> ranked = {"d2", "dX", "d1", "d4", "d3"};
    CHECK(ndcg_at_k(ranked, qrels, 10) == Approx(0.6827981).epsilon(1e-6));
    CHECK(ndcg_at_k(ranked, qrels, 3) == Approx(0.6651641).epsilon(1e-6));
    CHECK(recall_at_k(ranked, qrels, 10) == Approx(0.75));
    CHECK(recall_at_k(ranked, qrels, 3) == Approx(0.5));

    // The ideal ranking scores 1; nothing relevant retrieved scores 0.
    std::vector<std::string> ideal = {"d1", "d2", "d5", "d3"};
    CHECK(ndcg_at_k(ideal, qrels, 10) == Approx(1.0));
    CHECK(recall_at_k(ideal, qrels, 4) == Approx(1.0));
    std::vector<std::string> junk = {"x", "d4"};
    CHECK(ndcg_at_k(junk, qrels, 10) == 0.0);
    CHECK(recall_at_k(junk, qrels, 10) == 0.0);
}

TEST_CASE("metrics edge cases", "[index][metrics]") {
    std::map<std::string, int> qrels = {{"a", 1}, {"b", 1}};
    // A repeated document counts once and takes no rank: a a b at k=2 is a b.
    std::vector<std::string> repeated = {"a", "a", "b"};
    CHECK(ndcg_at_k(repeated, qrels, 2) == Approx(1.0));
    CHECK(recall_at_k(repeated, qrels, 2) == Approx(1.0));
    // Binary relevance: b at rank 2 only. DCG = 1/log2(3) = 0.6309298; IDCG = 1 + 0.6309298.
    std::vector<std::string> late = {"x", "b"};
    CHECK(ndcg_at_k(late, qrels, 10) == Approx(0.6309298 / 1.6309298).epsilon(1e-6));
    CHECK(recall_at_k(late, qrels, 1) == 0.0);
    CHECK(ndcg_at_k(late, qrels, 0) == 0.0);
    std::map<std::string, int> none = {{"a", 0}};
    CHECK(ndcg_at_k(repeated, none, 10) == 0.0);
    CHECK(recall_at_k(repeated, none, 10) == 0.0);
}
