// DenseIndex over FAISS: factory parsing, add/remove/search with id filters, and checksummed
// persistence.
#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <new>
#include <system_error>
#include <type_traits>
#include <unordered_set>

#include "attnrag/index/dense_index.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/DirectMap.h>
#pragma GCC diagnostic pop

#include <nlohmann/json.hpp>

namespace attnrag::index {
namespace {

using idx_t = faiss::Index::idx_t;
static_assert(std::is_same_v<idx_t, int64_t>, "FAISS ids must be int64_t so spans pass through");

constexpr const char* kSidecarFormat = "attnrag-dense-index";
constexpr int kSidecarVersion = 1;

enum class Kind { Flat, Hnsw, Ivf };

struct Spec {
    Kind kind = Kind::Flat;
    int param = 0;          // HNSW: M; IVF: nlist
    std::string canonical;  // "Flat", "HNSW32", "IVF256,Flat"
};

// Parses a decimal in [lo, hi]; -1 when s is not one.
int parse_int(std::string_view s, int lo, int hi) {
    if (s.empty() || s.size() > 9) return -1;
    int v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return -1;
        v = v * 10 + (c - '0');
    }
    return v >= lo && v <= hi ? v : -1;
}

Result<Spec> parse_spec(std::string_view s) {
    if (s == "Flat") return Spec{Kind::Flat, 0, "Flat"};
    if (s.starts_with("HNSW")) {
        std::string_view m = s.substr(4);
        if (m.ends_with(",Flat")) m.remove_suffix(5);
        // M links per node: FAISS needs >= 2; beyond 256 only wastes memory.
        int n_links = parse_int(m, 2, 256);
        if (n_links < 0) {
            return make_error(Errc::InvalidArgument,
                              "dense index factory '" + std::string(s) +
                                  "': expected HNSW<M> with M in [2, 256], e.g. HNSW32");
        }
        return Spec{Kind::Hnsw, n_links, "HNSW" + std::to_string(n_links)};
    }
    if (s.starts_with("IVF")) {
        std::string_view rest = s.substr(3);
        int n_lists = -1;
        if (rest.ends_with(",Flat"))
            n_lists = parse_int(rest.substr(0, rest.size() - 5), 1, 1 << 20);
        if (n_lists < 0) {
            return make_error(
                Errc::InvalidArgument,
                "dense index factory '" + std::string(s) +
                    "': expected IVF<n>,Flat with n in [1, 1048576], e.g. IVF256,Flat");
        }
        return Spec{Kind::Ivf, n_lists, "IVF" + std::to_string(n_lists) + ",Flat"};
    }
    if (s.empty()) return make_error(Errc::InvalidArgument, "dense index factory is empty");
    return make_error(Errc::Unsupported,
                      "dense index factory '" + std::string(s) +
                          "' is not supported (use Flat, HNSW<M> or IVF<n>,Flat)");
}

// Runs a FAISS call, turning any exception into an Error; FAISS reports everything by throwing.
template <class F>
auto guarded(const char* what, F&& f) -> decltype(f()) {
    try {
        return f();
    } catch (const faiss::FaissException& e) {
        return make_error(Errc::Internal, std::string(what) + ": FAISS: " + e.what());
    } catch (const std::bad_alloc&) {
        return make_error(Errc::OutOfMemory, std::string(what) + ": out of memory");
    } catch (const std::exception& e) {
        return make_error(Errc::Internal, std::string(what) + ": " + e.what());
    } catch (...) {
        return make_error(Errc::Internal, std::string(what) + ": unknown exception");
    }
}

// Sets the calling thread's OpenMP team size for one call and restores it after, so FAISS uses
// the configured number of threads without changing the caller's own OpenMP setting.
class OmpThreads {
 public:
    explicit OmpThreads(int n_threads) : saved_(omp_get_max_threads()) {
        omp_set_num_threads(std::max(1, n_threads));
    }
    ~OmpThreads() { omp_set_num_threads(saved_); }
    OmpThreads(const OmpThreads&) = delete;
    OmpThreads& operator=(const OmpThreads&) = delete;

 private:
    int saved_;
};

// FNV-1a, 64 bit. Every step is a bijection of the state, so any single changed byte always
// changes the result; with the byte count in the sidecar that covers truncation and bit flips.
uint64_t fnv1a64(const uint8_t* data, size_t n_bytes) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n_bytes; ++i) {
        h ^= data[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

std::string hex64(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

std::filesystem::path sidecar_path(const std::filesystem::path& path) {
    std::filesystem::path p = path;
    p += ".json";
    return p;
}

std::string errno_text(int err) {
    return std::error_code(err, std::generic_category()).message();
}

// Writes bytes to `path` through `<path>.tmp.<pid>.<n>`, fsync and rename, then syncs the folder.
Status write_file_atomic(const std::filesystem::path& path, const void* data, size_t n_bytes) {
    static std::atomic<uint64_t> counter{0};
    std::filesystem::path tmp = path;
    tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        return make_error(Errc::Io, "cannot create " + tmp.string() + ": " + errno_text(err));
    }
    const auto* p = static_cast<const uint8_t*>(data);
    size_t n_left = n_bytes;
    while (n_left > 0) {
        ssize_t n = ::write(fd, p, n_left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            return make_error(Errc::Io, "cannot write " + tmp.string() + ": " + errno_text(err));
        }
        p += n;
        n_left -= static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        return make_error(Errc::Io, "cannot flush " + tmp.string() + ": " + errno_text(err));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        return make_error(Errc::Io, "cannot rename " + tmp.string() + " to " + path.string() +
                                        ": " + errno_text(err));
    }
    std::filesystem::path dir = path.parent_path();
    if (dir.empty()) dir = ".";
    int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {  // best effort: the rename is already visible
        (void)::fsync(dir_fd);
        ::close(dir_fd);
    }
    return {};
}

Result<std::vector<uint8_t>> read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(Errc::Io, "cannot open " + path.string());
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    if (in.bad()) return make_error(Errc::Io, "cannot read " + path.string());
    return bytes;
}

bool all_finite(std::span<const float> v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// Keeps the ids an `allow` callback accepts; `id_map` translates FAISS's internal positions to
// caller ids (null when FAISS already sees caller ids, as IVF does). An exception from the
// callback must not unwind through FAISS's OpenMP regions, so it is recorded and reported after.
class AllowSelector final : public faiss::IDSelector {
 public:
    AllowSelector(const std::function<bool(int64_t)>& allow, const std::vector<idx_t>* id_map)
        : allow_(allow), id_map_(id_map) {}
    bool is_member(idx_t i) const override {
        try {
            return allow_(id_map_ ? (*id_map_)[static_cast<size_t>(i)] : i);
        } catch (...) {
            threw_.store(true, std::memory_order_relaxed);
            return false;
        }
    }
    bool threw() const { return threw_.load(std::memory_order_relaxed); }

 private:
    const std::function<bool(int64_t)>& allow_;
    const std::vector<idx_t>* id_map_;
    mutable std::atomic<bool> threw_{false};
};

}  // namespace

namespace detail {

// Ownership: `root` owns the whole FAISS tree. Flat and HNSW sit under an IndexIDMap2 (`map`),
// which keeps id_map (internal position -> caller id) and rev_map. IVF stores caller ids itself
// with a hashtable direct map: IndexIDMap2::remove_ids assumes the sub-index renumbers like a flat
// array after removal, which IVF does not (FAISS 1.7.3), so IDMap2 over IVF would corrupt ids.
struct DenseIndexState {
    int32_t dim = 0;
    Spec spec;
    DenseIndexOptions options;
    std::unique_ptr<faiss::Index> root;
    faiss::IndexIDMap2* map = nullptr;  // Flat, HNSW
    faiss::IndexHNSW* hnsw = nullptr;   // HNSW: the sub-index of map
    faiss::IndexIVF* ivf = nullptr;     // IVF: root itself

    void apply_options() {
        options.n_threads = std::max(1, options.n_threads);
        options.ef_construction = std::max(1, options.ef_construction);
        options.ef_search = std::max(1, options.ef_search);
        options.nprobe = std::max(1, options.nprobe);
        if (hnsw) {
            hnsw->hnsw.efConstruction = options.ef_construction;
            // FAISS 1.7.3's HNSW::search reads the index's efSearch and ignores
            // SearchParametersHNSW::efSearch, so the setting lives here (set_options is a write).
            hnsw->hnsw.efSearch = options.ef_search;
        }
        if (ivf) ivf->nprobe = std::min(static_cast<size_t>(options.nprobe), ivf->nlist);
    }

    bool contains(int64_t id) const {
        if (map) return map->rev_map.count(id) != 0;
        return ivf->direct_map.hashtable.count(id) != 0;
    }

    // Fills map/hnsw/ivf from root; false when root is not a structure `spec` describes.
    bool bind() {
        map = nullptr;
        hnsw = nullptr;
        ivf = nullptr;
        if (!root || root->metric_type != faiss::METRIC_INNER_PRODUCT || root->d != dim)
            return false;
        if (spec.kind == Kind::Ivf) {
            ivf = dynamic_cast<faiss::IndexIVF*>(root.get());
            return ivf && dynamic_cast<faiss::IndexIVFFlat*>(root.get()) &&
                   ivf->nlist == static_cast<size_t>(spec.param) &&
                   ivf->direct_map.type == faiss::DirectMap::Hashtable;
        }
        map = dynamic_cast<faiss::IndexIDMap2*>(root.get());
        if (!map || !map->index || map->id_map.size() != static_cast<size_t>(map->ntotal) ||
            map->rev_map.size() != map->id_map.size() || map->index->ntotal != map->ntotal) {
            return false;
        }
        if (spec.kind == Kind::Hnsw) {
            hnsw = dynamic_cast<faiss::IndexHNSW*>(map->index);
            return hnsw && hnsw->storage && dynamic_cast<faiss::IndexFlat*>(hnsw->storage) &&
                   hnsw->hnsw.nb_neighbors(0) == 2 * spec.param;
        }
        return dynamic_cast<faiss::IndexFlat*>(map->index) != nullptr;
    }
};

}  // namespace detail

using detail::DenseIndexState;

DenseIndex::DenseIndex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DenseIndex::DenseIndex(DenseIndex&&) noexcept = default;
DenseIndex& DenseIndex::operator=(DenseIndex&&) noexcept = default;
DenseIndex::~DenseIndex() = default;

namespace {

// A new empty FAISS structure for `spec` (throws like FAISS).
std::unique_ptr<DenseIndexState> make_impl(int32_t dim, const Spec& spec,
                                           const DenseIndexOptions& options) {
    auto impl = std::make_unique<DenseIndexState>();
    impl->dim = dim;
    impl->spec = spec;
    impl->options = options;
    std::unique_ptr<faiss::Index> inner(
        faiss::index_factory(dim, spec.canonical.c_str(), faiss::METRIC_INNER_PRODUCT));
    if (spec.kind == Kind::Ivf) {
        auto* ivf = dynamic_cast<faiss::IndexIVF*>(inner.get());
        if (!ivf) throw std::runtime_error("index_factory did not return an IVF index");
        ivf->set_direct_map_type(faiss::DirectMap::Hashtable);
        // We accept as few training vectors as lists; silence k-means' "at least 39 per list".
        ivf->cp.min_points_per_centroid = 1;
        impl->root = std::move(inner);
    } else {
        auto map = std::make_unique<faiss::IndexIDMap2>(inner.get());
        map->own_fields = true;
        (void)inner.release();  // now owned by map
        impl->root = std::move(map);
    }
    if (!impl->bind()) throw std::runtime_error("unexpected FAISS structure for " + spec.canonical);
    impl->apply_options();
    return impl;
}

}  // namespace

Result<DenseIndex> DenseIndex::create(int32_t dim, const std::string& factory,
                                      const DenseIndexOptions& options) {
    if (dim <= 0 || dim > (1 << 20)) {
        return make_error(
            Errc::InvalidArgument,
            "DenseIndex::create: dim must be in [1, 1048576], got " + std::to_string(dim));
    }
    auto spec = parse_spec(factory);
    if (!spec) return spec.error();
    return guarded("DenseIndex::create", [&]() -> Result<DenseIndex> {
        return DenseIndex(make_impl(dim, *spec, options));
    });
}

int32_t DenseIndex::dim() const {
    return impl_->dim;
}
int64_t DenseIndex::size() const {
    return impl_->root->ntotal;
}
const std::string& DenseIndex::factory() const {
    return impl_->spec.canonical;
}
const DenseIndexOptions& DenseIndex::options() const {
    return impl_->options;
}
bool DenseIndex::contains(int64_t id) const {
    return impl_->contains(id);
}

void DenseIndex::set_options(const DenseIndexOptions& options) {
    impl_->options = options;
    impl_->apply_options();
}

Status DenseIndex::add(std::span<const int64_t> ids, std::span<const float> vectors) {
    const auto dim = static_cast<size_t>(impl_->dim);
    if (vectors.size() / dim != ids.size() || vectors.size() % dim != 0) {
        return make_error(Errc::InvalidArgument,
                          "DenseIndex::add: " + std::to_string(vectors.size()) + " floats for " +
                              std::to_string(ids.size()) + " ids of dim " + std::to_string(dim) +
                              " (expected " + std::to_string(ids.size() * dim) + ")");
    }
    if (ids.empty()) return {};
    if (!all_finite(vectors)) {
        return make_error(Errc::InvalidArgument, "DenseIndex::add: a vector has NaN or infinity");
    }
    std::unordered_set<int64_t> seen;
    seen.reserve(ids.size());
    for (int64_t id : ids) {
        if (!seen.insert(id).second) {
            return make_error(Errc::InvalidArgument, "DenseIndex::add: id " + std::to_string(id) +
                                                         " repeats in the batch");
        }
        if (impl_->contains(id)) {
            return make_error(Errc::InvalidArgument, "DenseIndex::add: id " + std::to_string(id) +
                                                         " is already stored (remove it first)");
        }
    }
    const auto n = static_cast<idx_t>(ids.size());
    if (impl_->ivf && !impl_->ivf->is_trained && ids.size() < impl_->ivf->nlist) {
        return make_error(Errc::InvalidArgument, "DenseIndex::add: " + impl_->spec.canonical +
                                                     " trains on its first batch, "
                                                     "which needs at least " +
                                                     std::to_string(impl_->ivf->nlist) +
                                                     " vectors, got " + std::to_string(ids.size()));
    }
    return guarded("DenseIndex::add", [&]() -> Status {
        OmpThreads threads(impl_->options.n_threads);
        if (impl_->ivf) {
            if (!impl_->ivf->is_trained) impl_->ivf->train(n, vectors.data());
            impl_->ivf->add_with_ids(n, vectors.data(), ids.data());
        } else {
            impl_->map->add_with_ids(n, vectors.data(), ids.data());
        }
        return {};
    });
}

Status DenseIndex::remove(std::span<const int64_t> ids) {
    // Only ids actually stored, each once: FAISS's hashtable removal wants exactly that.
    std::vector<idx_t> present;
    std::unordered_set<int64_t> seen;
    for (int64_t id : ids) {
        if (impl_->contains(id) && seen.insert(id).second) present.push_back(id);
    }
    if (present.empty()) return {};
    return guarded("DenseIndex::remove", [&]() -> Status {
        OmpThreads threads(impl_->options.n_threads);
        Impl& im = *impl_;
        if (im.ivf) {
            faiss::IDSelectorArray sel(present.size(), present.data());
            im.ivf->remove_ids(sel);
            return {};
        }
        if (!im.hnsw) {
            faiss::IDSelectorBatch sel(present.size(), present.data());
            im.map->remove_ids(sel);
            return {};
        }
        // HNSW has no node deletion: rebuild the graph from the kept vectors, read back from the
        // flat storage in internal order. Built aside and swapped in, so a failure changes nothing.
        const auto dim = static_cast<size_t>(im.dim);
        const auto n_total = static_cast<size_t>(im.map->ntotal);
        std::vector<idx_t> kept_ids;
        std::vector<float> kept(n_total * dim);
        kept_ids.reserve(n_total);
        for (size_t i = 0; i < n_total; ++i) {
            idx_t id = im.map->id_map[i];
            if (seen.count(id)) continue;
            im.hnsw->storage->reconstruct(static_cast<idx_t>(i),
                                          kept.data() + kept_ids.size() * dim);
            kept_ids.push_back(id);
        }
        auto fresh = make_impl(im.dim, im.spec, im.options);
        fresh->map->add_with_ids(static_cast<idx_t>(kept_ids.size()), kept.data(), kept_ids.data());
        impl_ = std::move(fresh);
        return {};
    });
}

Result<std::vector<DenseHit>> DenseIndex::search(std::span<const float> query, int k,
                                                 const std::function<bool(int64_t)>& allow) const {
    const Impl& im = *impl_;
    if (query.size() != static_cast<size_t>(im.dim)) {
        return make_error(Errc::InvalidArgument,
                          "DenseIndex::search: query has " + std::to_string(query.size()) +
                              " floats, index dim is " + std::to_string(im.dim));
    }
    if (k <= 0) {
        return make_error(Errc::InvalidArgument,
                          "DenseIndex::search: k must be positive, got " + std::to_string(k));
    }
    if (!all_finite(query)) {
        return make_error(Errc::InvalidArgument, "DenseIndex::search: query has NaN or infinity");
    }
    const idx_t n_total = im.root->ntotal;
    if (n_total == 0) return std::vector<DenseHit>{};
    const idx_t k_eff = std::min<idx_t>(k, n_total);

    return guarded("DenseIndex::search", [&]() -> Result<std::vector<DenseHit>> {
        OmpThreads threads(im.options.n_threads);
        AllowSelector selector(allow, im.map ? &im.map->id_map : nullptr);
        faiss::IDSelector* sel = allow ? &selector : nullptr;
        std::vector<float> scores(static_cast<size_t>(k_eff));
        std::vector<idx_t> labels(static_cast<size_t>(k_eff));
        std::vector<DenseHit> hits;
        auto run = [&](const faiss::Index& target, const faiss::SearchParameters& params) {
            std::fill(labels.begin(), labels.end(), idx_t{-1});
            target.search(1, query.data(), k_eff, scores.data(), labels.data(), &params);
            hits.clear();
            for (size_t i = 0; i < labels.size(); ++i) {
                if (labels[i] < 0) continue;  // FAISS pads with -1 when it found fewer
                int64_t id = im.map ? im.map->id_map[static_cast<size_t>(labels[i])] : labels[i];
                hits.push_back({id, scores[i]});
            }
        };
        // The approximate structures may come back short (a filtered HNSW walk strands in the
        // graph, IVF probes lists holding too few allowed ids); then an exact pass over the same
        // vectors decides, so fewer than k hits always means fewer than k allowed vectors. That
        // pass costs a brute-force scan: cheap next to the search a restrictive filter implies.
        if (im.hnsw) {
            faiss::SearchParametersHNSW params;
            params.sel = sel;
            params.efSearch = std::max<int>(im.options.ef_search, static_cast<int>(k_eff));
            run(*im.hnsw, params);
            if (static_cast<idx_t>(hits.size()) < k_eff) {
                faiss::SearchParameters exact;
                exact.sel = sel;
                run(*im.hnsw->storage, exact);  // same internal order as the graph
            }
        } else if (im.ivf) {
            faiss::SearchParametersIVF params;
            params.sel = sel;
            params.nprobe = std::min(static_cast<size_t>(im.options.nprobe), im.ivf->nlist);
            run(*im.ivf, params);
            if (static_cast<idx_t>(hits.size()) < k_eff && params.nprobe < im.ivf->nlist) {
                params.nprobe = im.ivf->nlist;  // every list: exhaustive
                run(*im.ivf, params);
            }
        } else {
            faiss::SearchParameters params;
            params.sel = sel;
            run(*im.map->index, params);
        }
        if (selector.threw()) {
            return make_error(Errc::Internal, "DenseIndex::search: the allow callback threw");
        }
        return hits;
    });
}

Result<std::vector<float>> DenseIndex::vector(int64_t id) const {
    const Impl& im = *impl_;
    if (!im.contains(id)) {
        return make_error(Errc::NotFound,
                          "DenseIndex::vector: no vector under id " + std::to_string(id));
    }
    return guarded("DenseIndex::vector", [&]() -> Result<std::vector<float>> {
        std::vector<float> v(static_cast<size_t>(im.dim));
        im.root->reconstruct(id, v.data());
        return v;
    });
}

Status DenseIndex::save(const std::filesystem::path& path, uint64_t generation) const {
    const Impl& im = *impl_;
    faiss::VectorIOWriter writer;
    auto written = guarded("DenseIndex::save", [&]() -> Status {
        faiss::write_index(im.root.get(), &writer);
        return {};
    });
    if (!written) return written.error();
    nlohmann::json meta = {
        {"format", kSidecarFormat},
        {"version", kSidecarVersion},
        {"dim", im.dim},
        {"factory", im.spec.canonical},
        {"count", im.root->ntotal},
        {"generation", generation},
        {"bytes", writer.data.size()},
        {"checksum", "fnv1a64:" + hex64(fnv1a64(writer.data.data(), writer.data.size()))},
    };
    std::string meta_text = meta.dump(2) + "\n";
    ATTNRAG_TRY(write_file_atomic(path, writer.data.data(), writer.data.size()));
    return write_file_atomic(sidecar_path(path), meta_text.data(), meta_text.size());
}

Result<DenseIndex> DenseIndex::load(const std::filesystem::path& path, uint64_t expected_generation,
                                    const DenseIndexOptions& options) {
    const std::filesystem::path meta_path = sidecar_path(path);
    std::error_code ec;
    for (const auto& p : {path, meta_path}) {
        if (!std::filesystem::exists(p, ec)) {
            return make_error(Errc::NotFound, "dense index file " + p.string() + " does not exist");
        }
    }
    auto corrupt = [&](const std::string& why) {
        return make_error(Errc::Corrupt, "dense index " + path.string() + ": " + why);
    };

    auto meta_bytes = read_file(meta_path);
    if (!meta_bytes) return meta_bytes.error();
    auto meta = nlohmann::json::parse(meta_bytes->begin(), meta_bytes->end(), nullptr, false);
    int32_t dim = 0;
    std::string factory;
    int64_t count = 0;
    uint64_t generation = 0;
    uint64_t n_bytes = 0;
    std::string checksum;
    try {
        if (meta.is_discarded() || !meta.is_object())
            return corrupt("sidecar is not a JSON object");
        if (meta.at("format").get<std::string>() != kSidecarFormat ||
            meta.at("version").get<int>() != kSidecarVersion) {
            return corrupt("sidecar has an unknown format or version");
        }
        dim = meta.at("dim").get<int32_t>();
        factory = meta.at("factory").get<std::string>();
        count = meta.at("count").get<int64_t>();
        generation = meta.at("generation").get<uint64_t>();
        n_bytes = meta.at("bytes").get<uint64_t>();
        checksum = meta.at("checksum").get<std::string>();
    } catch (const std::exception& e) {
        return corrupt(std::string("sidecar field missing or mistyped: ") + e.what());
    }
    if (dim <= 0 || count < 0) return corrupt("sidecar has a bad dim or count");
    auto spec = parse_spec(factory);
    if (!spec) return corrupt("sidecar factory: " + spec.error().message);
    // Checked before reading the (possibly large) index: a stale index is rebuilt either way.
    if (generation != expected_generation) {
        return make_error(Errc::OutOfRange, "dense index " + path.string() +
                                                " is stale: generation " +
                                                std::to_string(generation) + ", expected " +
                                                std::to_string(expected_generation));
    }

    auto bytes = read_file(path);
    if (!bytes) return bytes.error();
    if (bytes->size() != n_bytes) {
        return corrupt("size " + std::to_string(bytes->size()) + " bytes, sidecar says " +
                       std::to_string(n_bytes) + " (truncated or overwritten)");
    }
    std::string actual = "fnv1a64:" + hex64(fnv1a64(bytes->data(), bytes->size()));
    if (actual != checksum) return corrupt("checksum " + actual + ", sidecar says " + checksum);

    try {
        faiss::VectorIOReader reader;
        reader.data = std::move(*bytes);
        auto impl = std::make_unique<Impl>();
        impl->dim = dim;
        impl->spec = *spec;
        impl->options = options;
        impl->root.reset(faiss::read_index(&reader, 0));
        if (!impl->bind()) return corrupt("contents do not match factory " + spec->canonical);
        if (impl->root->ntotal != count) {
            return corrupt("holds " + std::to_string(impl->root->ntotal) +
                           " vectors, sidecar says " + std::to_string(count));
        }
        impl->apply_options();
        return DenseIndex(std::move(impl));
    } catch (const std::exception& e) {
        return corrupt(std::string("FAISS cannot read it: ") + e.what());
    } catch (...) {
        return corrupt("FAISS cannot read it");
    }
}

}  // namespace attnrag::index
