// Passage KV store: the file codec (fp16, q8, corruption), the memory LRU, the disk tier with its
// catalogue, failure paths and concurrent use.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "attnrag/kv_store.hpp"
#include "attnrag/store.hpp"
#include "test_support.hpp"

using namespace attnrag;
namespace fs = std::filesystem;

namespace {

template <class T>
T must(Result<T> r) {
    if (!r.ok()) FAIL(r.error().to_string());
    return std::move(r).value();
}

void must(const Status& s) {
    if (!s.ok()) FAIL(s.error().to_string());
}

// A hand-made passage state: floats from `gen`, token i = 100 + i.
template <class Gen>
PassageKv make_kv(int32_t n_layer, int32_t n_tokens, int32_t kv_dim, Gen&& gen) {
    PassageKv kv;
    kv.n_layer = n_layer;
    kv.n_tokens = n_tokens;
    kv.kv_dim = kv_dim;
    kv.encoded_position = 17;
    for (int32_t i = 0; i < n_tokens; ++i) kv.tokens.push_back(100 + i);
    const size_t n = static_cast<size_t>(n_layer) * kv.layer_floats();
    for (size_t i = 0; i < n; ++i) kv.k.push_back(gen());
    for (size_t i = 0; i < n; ++i) kv.v.push_back(gen());
    return kv;
}

PassageKv random_kv(int32_t n_layer, int32_t n_tokens, int32_t kv_dim, uint32_t seed,
                    float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, scale);
    return make_kv(n_layer, n_tokens, kv_dim, [&] { return normal(rng); });
}

// Values that fp16 holds exactly (multiples of 1/8 in [-64, 64)), so a state read back from an
// f16 file equals the one put.
PassageKv f16_exact_kv(int32_t n_layer, int32_t n_tokens, int32_t kv_dim, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> eighths(-512, 511);
    return make_kv(n_layer, n_tokens, kv_dim,
                   [&] { return static_cast<float>(eighths(rng)) / 8.0f; });
}

std::shared_ptr<const PassageKv> shared(PassageKv kv) {
    return std::make_shared<const PassageKv>(std::move(kv));
}

PassageKvKey key_of(uint64_t passage, std::string model = "0123456789abcdef") {
    return PassageKvKey{std::move(model), 0x1111222233334444ull, passage};
}

uint32_t bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}

// x rounded to the nearest fp16 value, ties to even, computed independently of the codec: in
// double, the quantum of x's binade (2^-24 below 2^-14) scales x to an integer exactly.
float round_to_f16(float x) {
    if (std::isnan(x) || std::isinf(x) || x == 0) return x;
    const double a = std::fabs(static_cast<double>(x));
    int e = 0;
    std::frexp(a, &e);  // a in [2^(e-1), 2^e)
    const double quantum = std::ldexp(1.0, std::max(e - 11, -24));
    const double r = std::nearbyint(a / quantum) * quantum;
    const float f = r > 65504.0 ? std::numeric_limits<float>::infinity() : static_cast<float>(r);
    return std::signbit(x) ? -f : f;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool same_state(const PassageKv& a, const PassageKv& b) {
    return a.n_layer == b.n_layer && a.n_tokens == b.n_tokens && a.kv_dim == b.kv_dim &&
           a.encoded_position == b.encoded_position && a.tokens == b.tokens &&
           same_bits(a.k, b.k) && same_bits(a.v, b.v);
}

std::vector<uint8_t> as_bytes(const std::string& s) {
    return {s.begin(), s.end()};
}

// Decodes from an exact-size heap copy, so a read past the end is an ASan error.
Result<PassageKv> decode_copy(const std::vector<uint8_t>& bytes, size_t n, const PassageKvKey& k) {
    std::vector<uint8_t> copy(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    return decode_passage_kv(copy.data(), copy.size(), k);
}

fs::path file_of(const fs::path& dir, const PassageKvKey& key, const char* type = "f16") {
    char name[64];
    std::snprintf(name, sizeof name, "%016llx-%016llx.%s.kv",
                  static_cast<unsigned long long>(key.prefix_hash),
                  static_cast<unsigned long long>(key.passage_hash), type);
    return dir / key.model / name;
}

// The files in a model's directory, temp files included.
std::vector<std::string> files_in(const fs::path& dir) {
    std::vector<std::string> names;
    if (!fs::exists(dir)) return names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

// (A helper, not a designated initializer: GCC 12 warns about the members left out after one.)
PassageKvStore memory_only(size_t budget) {
    PassageKvStoreOptions options;
    options.memory_budget_bytes = budget;
    return must(PassageKvStore::open(options));
}

struct DiskSetup {
    fs::path dir = test::make_temp_dir("kv_store");
    fs::path kv_dir = dir / "kv";
    Store catalogue = must(Store::open(dir / "store.db"));

    PassageKvStore open_store(KvFileType type = KvFileType::F16, size_t budget = size_t{64} << 20) {
        return must(PassageKvStore::open({.memory_budget_bytes = budget,
                                          .directory = kv_dir,
                                          .catalogue = &catalogue,
                                          .file_type = type}));
    }
};

}  // namespace

TEST_CASE("fp16 files round trip bit exact to fp16 rounding", "[kv_store]") {
    // Every range fp16 treats differently: subnormals, normals, overflow, exact ties, specials.
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const float scales[] = {1e-7f, 3e-5f, 1.0f, 700.0f, 60000.0f};
    const float specials[] = {0.0f,
                              -0.0f,
                              65504.0f,
                              65519.99f,
                              65520.0f,
                              -65520.0f,
                              1.0f + 1.0f / 2048.0f,  // tie between 1 and 1 + 2^-10: to 1
                              1.0f + 3.0f / 2048.0f,  // tie: to 1 + 2^-9 (even)
                              std::ldexp(1.0f, -25),  // tie between 0 and 2^-24: to 0
                              std::ldexp(3.0f, -25),  // tie between 2^-24 and 2^-23: to 2^-23
                              std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::denorm_min()};
    size_t i = 0;
    PassageKv kv = make_kv(3, 7, 45, [&] {
        const size_t at = i++;
        if (at % 9 == 0) return specials[(at / 9) % std::size(specials)];
        return normal(rng) * scales[at % std::size(scales)];
    });
    const PassageKvKey key = key_of(42);
    const std::string bytes = encode_passage_kv(key, kv, KvFileType::F16);
    const PassageKv back = must(decode_passage_kv(bytes.data(), bytes.size(), key));

    CHECK(back.n_layer == 3);
    CHECK(back.n_tokens == 7);
    CHECK(back.kv_dim == 45);
    CHECK(back.encoded_position == 17);
    CHECK(back.tokens == kv.tokens);
    REQUIRE(back.consistent());
    size_t n_mismatch = 0;
    for (const auto& [in, out] : {std::pair{&kv.k, &back.k}, std::pair{&kv.v, &back.v}}) {
        for (size_t j = 0; j < in->size(); ++j) {
            const float want = round_to_f16((*in)[j]);
            const bool ok =
                std::isnan(want) ? std::isnan((*out)[j]) : bits(want) == bits((*out)[j]);
            if (!ok) {
                if (n_mismatch++ < 5)
                    UNSCOPED_INFO("value " << (*in)[j] << " decoded as " << (*out)[j]
                                           << ", expected " << want);
            }
        }
    }
    CHECK(n_mismatch == 0);
    // Re-encoding the decoded state writes the same file.
    CHECK(encode_passage_kv(key, back, KvFileType::F16) == bytes);
}

TEST_CASE("q8 files round trip within half a step per block", "[kv_store]") {
    // kv_dim 72 = two full blocks of 32 and a tail of 8, so the tail block is exercised.
    const int32_t kv_dim = GENERATE(72, 32, 5);
    PassageKv kv = random_kv(2, 5, kv_dim, 11, 3.0f);
    kv.k[3] = 0;                                                         // zeros stay zero
    std::fill(kv.v.begin(), kv.v.begin() + std::min(kv_dim, 32), 0.0f);  // an all-zero block
    const PassageKvKey key = key_of(43);
    const std::string bytes = encode_passage_kv(key, kv, KvFileType::Q8);
    const PassageKv back = must(decode_passage_kv(bytes.data(), bytes.size(), key));
    REQUIRE(back.consistent());
    CHECK(back.tokens == kv.tokens);
    CHECK(back.k[3] == 0);

    const auto dim = static_cast<size_t>(kv_dim);
    double worst_ratio = 0;
    for (const auto& [in, out] : {std::pair{&kv.k, &back.k}, std::pair{&kv.v, &back.v}}) {
        for (size_t row = 0; row < in->size(); row += dim) {
            for (size_t b = 0; b < dim; b += 32) {
                const size_t n = std::min<size_t>(32, dim - b);
                float amax = 0;
                for (size_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs((*in)[row + b + j]));
                const double half_step = amax / 127.0 / 2.0;
                for (size_t j = 0; j < n; ++j) {
                    const double err = std::fabs(double((*in)[row + b + j]) - (*out)[row + b + j]);
                    if (half_step == 0) {
                        CHECK(err == 0);
                    } else {
                        worst_ratio = std::max(worst_ratio, err / half_step);
                    }
                }
            }
        }
    }
    // |error| <= d / 2, give or take float rounding of x / d and d * q.
    CHECK(worst_ratio <= 1.0 + 1e-5);
    CHECK(worst_ratio > 0.5);  // the bound is not vacuous: some value used most of it
    // A q8 file is smaller than its f16 twin once a block is full.
    if (kv_dim >= 32) CHECK(bytes.size() < encode_passage_kv(key, kv, KvFileType::F16).size());
}

TEST_CASE("decoding rejects every truncation and trailing bytes", "[kv_store]") {
    const KvFileType type = GENERATE(KvFileType::F16, KvFileType::Q8);
    const PassageKv kv = random_kv(2, 3, 37, 5);
    const PassageKvKey key = key_of(44);
    const auto bytes = as_bytes(encode_passage_kv(key, kv, type));
    REQUIRE(decode_copy(bytes, bytes.size(), key).ok());
    for (size_t n = 0; n < bytes.size(); ++n) {
        auto r = decode_copy(bytes, n, key);
        INFO("truncated to " << n << " of " << bytes.size() << " bytes");
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == Errc::Corrupt);
    }
    auto longer = bytes;
    longer.push_back(0);
    auto r = decode_copy(longer, longer.size(), key);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message.find("trailing") != std::string::npos);
    CHECK(decode_copy(bytes, 10, key).error().message.find("truncated") != std::string::npos);
}

TEST_CASE("decoding rejects a flipped byte anywhere", "[kv_store]") {
    const KvFileType type = GENERATE(KvFileType::F16, KvFileType::Q8);
    const PassageKv kv = random_kv(2, 3, 37, 6);
    const PassageKvKey key = key_of(45);
    const auto bytes = as_bytes(encode_passage_kv(key, kv, type));
    std::mt19937 rng(3);
    for (size_t at = 0; at < bytes.size(); ++at) {
        auto bad = bytes;
        bad[at] ^= static_cast<uint8_t>(1 + rng() % 255);
        auto r = decode_copy(bad, bad.size(), key);
        INFO("byte " << at << " of " << bytes.size());
        REQUIRE_FALSE(r.ok());
        CHECK((r.error().code == Errc::Corrupt || r.error().code == Errc::Unsupported));
    }
    // Each check names itself.
    auto bad = bytes;
    bad[0] = 'X';
    CHECK(decode_copy(bad, bad.size(), key).error().message.find("magic") != std::string::npos);
    bad = bytes;
    bad[bad.size() - 1] ^= 1;
    CHECK(decode_copy(bad, bad.size(), key).error().message.find("payload checksum") !=
          std::string::npos);
    bad = bytes;
    bad[13] ^= 1;  // n_layer
    CHECK(decode_copy(bad, bad.size(), key).error().message.find("header checksum") !=
          std::string::npos);
}

TEST_CASE("decoding rejects a file written for another key", "[kv_store]") {
    const PassageKv kv = random_kv(1, 2, 8, 8);
    const PassageKvKey key = key_of(46);
    const std::string bytes = encode_passage_kv(key, kv, KvFileType::F16);
    PassageKvKey other_model = key;
    other_model.model = "fedcba9876543210";
    PassageKvKey other_prefix = key;
    other_prefix.prefix_hash ^= 1;
    PassageKvKey other_passage = key;
    other_passage.passage_hash ^= 1;
    auto m = decode_passage_kv(bytes.data(), bytes.size(), other_model);
    REQUIRE_FALSE(m.ok());
    CHECK(m.error().code == Errc::Corrupt);
    CHECK(m.error().message.find("model") != std::string::npos);
    for (const PassageKvKey& k : {other_prefix, other_passage}) {
        auto r = decode_passage_kv(bytes.data(), bytes.size(), k);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message.find("key") != std::string::npos);
    }
    CHECK(decode_passage_kv(bytes.data(), bytes.size(), key).ok());
}

TEST_CASE("the memory tier evicts the least recently used entry", "[kv_store]") {
    const size_t one = random_kv(2, 4, 16, 0).bytes();
    auto store = memory_only(3 * one);
    for (uint64_t i = 1; i <= 3; ++i)
        must(store.put(key_of(i), shared(random_kv(2, 4, 16, static_cast<uint32_t>(i)))));
    CHECK(store.stats().memory_entries == 3);
    CHECK(store.stats().memory_bytes == 3 * one);

    // Touch 1: now 2 is the least recently used, and a fourth entry pushes it out.
    REQUIRE(must(store.get(key_of(1))) != nullptr);
    must(store.put(key_of(4), shared(random_kv(2, 4, 16, 4))));
    CHECK(must(store.get(key_of(2))) == nullptr);
    for (uint64_t i : {1, 3, 4}) {
        auto kv = must(store.get(key_of(i)));
        REQUIRE(kv != nullptr);
        CHECK(same_state(*kv, random_kv(2, 4, 16, static_cast<uint32_t>(i))));
    }
    const PassageKvStoreStats s = store.stats();
    CHECK(s.evictions == 1);
    CHECK(s.memory_entries == 3);
    CHECK(s.memory_bytes <= 3 * one);
    CHECK(s.memory_hits == 4);
    CHECK(s.misses == 1);
    CHECK(s.files_written == 0);

    // Replacing a key's state does not count it twice.
    must(store.put(key_of(3), shared(random_kv(2, 4, 16, 33))));
    CHECK(store.stats().memory_bytes == 3 * one);
    CHECK(same_state(*must(store.get(key_of(3))), random_kv(2, 4, 16, 33)));

    store.clear_memory();
    CHECK(store.stats().memory_bytes == 0);
    CHECK(store.stats().memory_entries == 0);
    CHECK(must(store.get(key_of(1))) == nullptr);
}

TEST_CASE("an entry larger than the budget is not kept in memory", "[kv_store]") {
    const size_t small = random_kv(1, 2, 8, 0).bytes();
    auto store = memory_only(2 * small);
    must(store.put(key_of(1), shared(random_kv(1, 2, 8, 1))));
    must(store.put(key_of(2), shared(random_kv(4, 8, 64, 2))));  // far over the budget
    CHECK(must(store.get(key_of(2))) == nullptr);
    CHECK(must(store.get(key_of(1))) != nullptr);  // and nothing was evicted for it
    CHECK(store.stats().evictions == 0);
    CHECK(store.stats().memory_bytes == small);

    auto none = memory_only(0);
    must(none.put(key_of(1), shared(random_kv(1, 2, 8, 1))));
    CHECK(must(none.get(key_of(1))) == nullptr);
    CHECK(none.stats().memory_entries == 0);
}

TEST_CASE("put refuses inconsistent states and unfit model names", "[kv_store]") {
    DiskSetup d;
    auto store = d.open_store();
    PassageKv broken = random_kv(2, 3, 4, 1);
    broken.v.pop_back();
    CHECK(store.put(key_of(1), shared(broken)).error().code == Errc::InvalidArgument);
    CHECK(store.put(key_of(1), nullptr).error().code == Errc::InvalidArgument);
    CHECK(store.put(key_of(1, "../escape"), shared(random_kv(1, 1, 4, 1))).error().code ==
          Errc::InvalidArgument);
    CHECK(store.put(key_of(1, ""), shared(random_kv(1, 1, 4, 1))).error().code ==
          Errc::InvalidArgument);
    CHECK(must(d.catalogue.list_passage_kv()).empty());
    CHECK(files_in(d.kv_dir).empty());
    CHECK(PassageKvStore::open({.directory = d.kv_dir}).error().code == Errc::InvalidArgument);
}

TEST_CASE("the catalogue keeps one row per key", "[kv_store]") {
    Store s = must(Store::open(":memory:"));
    CHECK(s.schema_version() == 3);
    PassageKvRow row{.model = "m1",
                     .prefix_hash = 0xffffffffffffffffull,
                     .passage_hash = 1,
                     .n_tokens = 12,
                     .file_type = 2,
                     .file = "m1/x.q8.kv",
                     .n_bytes = 1234};
    must(s.put_passage_kv(row));
    auto found = must(s.find_passage_kv("m1", 0xffffffffffffffffull, 1));
    REQUIRE(found);
    CHECK(found->n_tokens == 12);
    CHECK(found->file_type == 2);
    CHECK(found->file == "m1/x.q8.kv");
    CHECK(found->n_bytes == 1234);
    CHECK(found->created_at > 0);
    CHECK(found->last_used == found->created_at);
    CHECK_FALSE(must(s.find_passage_kv("m1", 0xffffffffffffffffull, 2)));
    CHECK_FALSE(must(s.find_passage_kv("m2", 0xffffffffffffffffull, 1)));

    row.file = "m1/x.f16.kv";  // same key: replaced
    must(s.put_passage_kv(row));
    row.passage_hash = 2;
    must(s.put_passage_kv(row));
    row.model = "m2";
    must(s.put_passage_kv(row));
    CHECK(must(s.list_passage_kv()).size() == 3);
    CHECK(must(s.list_passage_kv("m1")).size() == 2);
    CHECK(must(s.find_passage_kv("m1", 0xffffffffffffffffull, 1))->file == "m1/x.f16.kv");
    CHECK(must(s.touch_passage_kv("m1", 0xffffffffffffffffull, 1)));
    CHECK_FALSE(must(s.touch_passage_kv("m9", 0, 0)));
    CHECK(must(s.delete_passage_kv("m1", 0xffffffffffffffffull, 1)));
    CHECK_FALSE(must(s.delete_passage_kv("m1", 0xffffffffffffffffull, 1)));
    CHECK(must(s.list_passage_kv("m1")).size() == 1);

    row.n_tokens = 0;
    CHECK(s.put_passage_kv(row).error().code == Errc::InvalidArgument);
}

TEST_CASE("files persist across stores and catalogue reopens", "[kv_store]") {
    const KvFileType type = GENERATE(KvFileType::F16, KvFileType::Q8);
    const char* suffix = type == KvFileType::F16 ? "f16" : "q8";
    const fs::path dir = test::make_temp_dir("kv_persist");
    const PassageKvKey key = key_of(7);
    const PassageKv kv = random_kv(3, 5, 40, 9);
    // What the file holds: the state as its codec rounds it.
    const std::string bytes = encode_passage_kv(key, kv, type);
    const PassageKv expected = must(decode_passage_kv(bytes.data(), bytes.size(), key));
    {
        Store catalogue = must(Store::open(dir / "store.db"));
        auto store = must(PassageKvStore::open(
            {.directory = dir / "kv", .catalogue = &catalogue, .file_type = type}));
        must(store.put(key, shared(kv)));
        CHECK(store.stats().files_written == 1);
        CHECK(must(store.contains(key)));
        // The memory tier holds the state as put, not as rounded.
        CHECK(same_state(*must(store.get(key)), kv));
    }
    REQUIRE(fs::exists(file_of(dir / "kv", key, suffix)));
    CHECK(files_in(dir / "kv" / key.model).size() == 1);  // no temp file left

    Store catalogue = must(Store::open(dir / "store.db"));
    auto rows = must(catalogue.list_passage_kv());
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].model == key.model);
    CHECK(rows[0].prefix_hash == key.prefix_hash);
    CHECK(rows[0].passage_hash == key.passage_hash);
    CHECK(rows[0].n_tokens == 5);
    CHECK(rows[0].file_type == static_cast<int>(type));
    CHECK(rows[0].file == key.model + "/" + file_of(dir / "kv", key, suffix).filename().string());
    CHECK(rows[0].n_bytes == bytes.size());

    // The other file type's store reads it too.
    auto store = must(PassageKvStore::open(
        {.directory = dir / "kv",
         .catalogue = &catalogue,
         .file_type = type == KvFileType::F16 ? KvFileType::Q8 : KvFileType::F16}));
    CHECK(must(store.contains(key)));
    auto back = must(store.get(key));
    REQUIRE(back != nullptr);
    CHECK(same_state(*back, expected));
    CHECK(store.stats().disk_hits == 1);
    CHECK(store.stats().memory_entries == 1);
    REQUIRE(must(store.get(key)) != nullptr);
    CHECK(store.stats().memory_hits == 1);
    CHECK(store.stats().disk_hits == 1);
    CHECK(
        must(catalogue.find_passage_kv(key.model, key.prefix_hash, key.passage_hash))->last_used >=
        rows[0].last_used);

    // Rewriting the key as the other type replaces file and row.
    must(store.put(key, shared(kv)));
    CHECK(files_in(dir / "kv" / key.model).size() == 1);
    CHECK(must(catalogue.list_passage_kv())[0].file_type != static_cast<int>(type));

    must(store.erase(key));
    CHECK_FALSE(must(store.contains(key)));
    CHECK(must(store.get(key)) == nullptr);
    CHECK(files_in(dir / "kv" / key.model).empty());
    CHECK(must(catalogue.list_passage_kv()).empty());
    must(store.erase(key));  // erasing again is fine
}

TEST_CASE("a corrupted file is rejected and removed with its row", "[kv_store]") {
    DiskSetup d;
    const PassageKvKey key = key_of(8);
    must(d.open_store().put(key, shared(random_kv(2, 3, 16, 10))));
    const fs::path path = file_of(d.kv_dir, key);
    {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(-5, std::ios::end);
        char c = 0;
        f.read(&c, 1);
        f.seekp(-5, std::ios::end);
        c = static_cast<char>(c ^ 0x40);
        f.write(&c, 1);
    }
    auto store = d.open_store();
    CHECK(must(store.contains(key)));  // contains does not verify
    CHECK(must(store.get(key)) == nullptr);
    const PassageKvStoreStats s = store.stats();
    CHECK(s.rejected_files == 1);
    CHECK(s.misses == 1);
    CHECK(s.disk_hits == 0);
    CHECK_FALSE(fs::exists(path));
    CHECK_FALSE(must(d.catalogue.find_passage_kv(key.model, key.prefix_hash, key.passage_hash)));
    CHECK_FALSE(must(store.contains(key)));
}

TEST_CASE("a catalogue row whose file is gone is a miss", "[kv_store]") {
    DiskSetup d;
    const PassageKvKey key = key_of(9);
    must(d.open_store().put(key, shared(random_kv(2, 3, 16, 11))));
    fs::remove(file_of(d.kv_dir, key));
    auto store = d.open_store();
    CHECK(must(store.get(key)) == nullptr);
    CHECK(store.stats().misses == 1);
    CHECK(store.stats().rejected_files == 0);
    CHECK_FALSE(must(d.catalogue.find_passage_kv(key.model, key.prefix_hash, key.passage_hash)));
}

TEST_CASE("a failed file write keeps the earlier file and row", "[kv_store]") {
    DiskSetup d;
    const PassageKvKey key = key_of(10);
    const PassageKv kv = f16_exact_kv(2, 3, 16, 12);
    must(d.open_store(KvFileType::F16).put(key, shared(kv)));
    // A non-empty directory where the q8 file would go: the rename into place fails.
    const fs::path blocker = file_of(d.kv_dir, key, "q8");
    fs::create_directories(blocker / "inside");

    auto q8 = d.open_store(KvFileType::Q8);
    auto failed = q8.put(key, shared(kv));
    REQUIRE_FALSE(failed.ok());
    CHECK(failed.error().code == Errc::Io);
    CHECK(failed.error().message.find(blocker.string()) != std::string::npos);
    CHECK(q8.stats().files_written == 0);
    // Only the earlier file and the blocker: no temp file.
    CHECK(files_in(d.kv_dir / key.model) ==
          std::vector<std::string>{file_of(d.kv_dir, key, "f16").filename().string(),
                                   blocker.filename().string()});
    auto row = must(d.catalogue.find_passage_kv(key.model, key.prefix_hash, key.passage_hash));
    REQUIRE(row);
    CHECK(row->file_type == static_cast<int>(KvFileType::F16));
    auto fresh = d.open_store();
    auto back = must(fresh.get(key));
    REQUIRE(back != nullptr);
    CHECK(same_state(*back, kv));
    CHECK(fresh.stats().disk_hits == 1);
}

TEST_CASE("a failed catalogue write leaves no new file behind", "[kv_store]") {
    DiskSetup d;
    auto store = d.open_store(KvFileType::F16, 0);
    must(store.put(key_of(1), shared(random_kv(1, 2, 4, 1))));
    REQUIRE(must(d.catalogue.set_max_size_bytes(0)) > 0);  // the catalogue may not grow
    // Rows fill the catalogue's free space, then a put fails with "disk full".
    Error error;
    uint64_t failed_at = 0;
    for (uint64_t i = 2; i < 2000 && failed_at == 0; ++i) {
        auto r = store.put(key_of(i), shared(random_kv(1, 2, 4, 1)));
        if (!r.ok()) {
            error = r.error();
            failed_at = i;
        }
    }
    REQUIRE(failed_at != 0);
    CHECK(error.code == Errc::Io);
    CHECK(error.message.find("full") != std::string::npos);
    const PassageKvKey lost = key_of(failed_at);
    CHECK_FALSE(fs::exists(file_of(d.kv_dir, lost)));
    CHECK_FALSE(must(d.catalogue.find_passage_kv(lost.model, lost.prefix_hash, lost.passage_hash)));
    // Every file on disk has its row, and nothing else is there.
    const auto names = files_in(d.kv_dir / lost.model);
    CHECK(names.size() == failed_at - 1);
    CHECK(must(d.catalogue.list_passage_kv()).size() == failed_at - 1);
    CHECK(store.stats().files_written == static_cast<int64_t>(failed_at - 1));
}

TEST_CASE("concurrent puts and gets on overlapping keys", "[kv_store]") {
    DiskSetup d;
    const size_t one = f16_exact_kv(2, 4, 24, 0).bytes();
    auto store = d.open_store(KvFileType::F16, 3 * one);  // fewer slots than keys: evictions
    constexpr int kKeys = 6;
    constexpr int kThreads = 4;
    std::vector<PassageKv> states;
    for (int i = 0; i < kKeys; ++i)
        states.push_back(f16_exact_kv(2, 4, 24, static_cast<uint32_t>(i)));
    std::atomic<int> n_wrong{0}, n_errors{0}, n_hits{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(static_cast<uint32_t>(t));
            for (int op = 0; op < 150; ++op) {
                const auto i = static_cast<size_t>(rng() % kKeys);
                const PassageKvKey key = key_of(i);
                switch (rng() % 8) {
                    case 0:
                    case 1:
                        if (!store.put(key, shared(states[i]), rng() % 2 == 0).ok()) ++n_errors;
                        break;
                    case 2:
                        if (!store.erase(key).ok()) ++n_errors;
                        break;
                    case 3:
                        if (rng() % 4 == 0) store.clear_memory();
                        if (!store.contains(key).ok()) ++n_errors;
                        break;
                    default: {
                        auto r = store.get(key);
                        if (!r.ok()) {
                            ++n_errors;
                        } else if (*r != nullptr) {
                            ++n_hits;
                            if (!same_state(**r, states[i])) ++n_wrong;
                        }
                    }
                }
                (void)store.stats();
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(n_errors == 0);
    CHECK(n_wrong == 0);
    CHECK(n_hits > 0);
    const PassageKvStoreStats s = store.stats();
    CHECK(s.memory_bytes <= 3 * one);
    CHECK(s.memory_bytes == static_cast<size_t>(s.memory_entries) * one);
    CHECK(s.rejected_files == 0);
    // Disk and catalogue agree after the dust settles.
    const auto rows = must(d.catalogue.list_passage_kv());
    CHECK(files_in(d.kv_dir / key_of(0).model).size() == rows.size());
    for (const PassageKvRow& row : rows) CHECK(fs::exists(d.kv_dir / row.file));
}
