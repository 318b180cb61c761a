// PassageKvStore: the memory tier (LRU under a byte budget) over the disk tier (verified files
// catalogued in the SQLite store).
#include "attnrag/kv_store.hpp"

#include <functional>
#include <list>
#include <mutex>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "attnrag/store.hpp"
#include "common/mapped_file.h"
#include "kvstore/kv_codec.h"
#include "kvstore/kv_files.h"

namespace attnrag {

namespace {

struct KeyHash {
    size_t operator()(const PassageKvKey& k) const {
        // The hashes are already uniform; fold them with the model's.
        uint64_t h = std::hash<std::string>{}(k.model);
        h ^= k.prefix_hash + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        h ^= k.passage_hash + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
        return static_cast<size_t>(h);
    }
};

// The model fingerprint names a directory, so it must be one plain path component.
bool is_safe_model_name(const std::string& model) {
    if (model.empty() || model.size() > detail::kKvMaxModelBytes || model[0] == '.') return false;
    for (char c : model) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

bool is_file_type(int v) {
    return v == static_cast<int>(KvFileType::F16) || v == static_cast<int>(KvFileType::Q8);
}

// "<model>/<prefix hex>-<passage hex>.<f16|q8>.kv", relative to the store's directory.
std::string relative_file(const PassageKvKey& key, KvFileType type) {
    return key.model + "/" + detail::kv_hex16(key.prefix_hash) + "-" +
           detail::kv_hex16(key.passage_hash) + (type == KvFileType::F16 ? ".f16.kv" : ".q8.kv");
}

// True when a catalogue row names the file this store would write for key: anything else (a
// hand-edited or foreign row) is never opened or deleted, so a row cannot point outside the
// directory.
bool row_names_own_file(const PassageKvKey& key, const PassageKvRow& row) {
    return is_file_type(row.file_type) &&
           row.file == relative_file(key, static_cast<KvFileType>(row.file_type));
}

Error with_context(const Error& e, const std::string& what) {
    return make_error(e.code, what + ": " + e.message);
}

}  // namespace

struct PassageKvStore::Impl {
    struct Entry {
        PassageKvKey key;
        std::shared_ptr<const PassageKv> kv;
        size_t bytes = 0;  // kv->bytes(), cached
    };

    PassageKvStoreOptions options;
    mutable std::mutex mutex;  // guards everything below and every use of the catalogue
    std::list<Entry> lru;      // most recently used first
    std::unordered_map<PassageKvKey, std::list<Entry>::iterator, KeyHash> index;
    PassageKvStoreStats stats;

    bool has_disk() const { return !options.directory.empty(); }

    void forget(const PassageKvKey& key) {
        auto it = index.find(key);
        if (it == index.end()) return;
        stats.memory_bytes -= it->second->bytes;
        lru.erase(it->second);
        index.erase(it);
    }

    // Holds kv as the most recently used entry, then evicts from the cold end to the budget.
    // The new entry itself is never evicted: it is at most the budget on its own.
    void remember(const PassageKvKey& key, std::shared_ptr<const PassageKv> kv) {
        forget(key);
        const size_t bytes = kv->bytes();
        if (bytes > options.memory_budget_bytes) return;
        lru.push_front(Entry{key, std::move(kv), bytes});
        index.emplace(key, lru.begin());
        stats.memory_bytes += bytes;
        while (stats.memory_bytes > options.memory_budget_bytes) {
            const Entry& cold = lru.back();
            stats.memory_bytes -= cold.bytes;
            index.erase(cold.key);
            lru.pop_back();
            ++stats.evictions;
        }
    }

    // Forgets a catalogue row and, when it names our own file, the file. Best effort: used on
    // the way to reporting a miss, where the caller recomputes either way.
    void drop_row(const PassageKvKey& key, const PassageKvRow& row) {
        if (row_names_own_file(key, row)) (void)detail::remove_file(options.directory / row.file);
        (void)options.catalogue->delete_passage_kv(key.model, key.prefix_hash, key.passage_hash);
    }

    // The disk tier's copy of key, verified; nullptr when there is none or it was rejected.
    Result<std::shared_ptr<const PassageKv>> load(const PassageKvKey& key) {
        std::shared_ptr<const PassageKv> none;
        if (!is_safe_model_name(key.model)) return none;  // put never writes such a key
        Store& catalogue = *options.catalogue;
        auto row = catalogue.find_passage_kv(key.model, key.prefix_hash, key.passage_hash);
        if (!row) return with_context(row.error(), "passage KV get");
        if (!*row) return none;
        if (!row_names_own_file(key, **row)) {
            drop_row(key, **row);
            return none;
        }
        auto file = detail::MappedFile::open((options.directory / (*row)->file).string());
        if (!file) {
            // Gone: the row is stale. Unreadable otherwise (permissions, not a regular file):
            // leave it for the operator and recompute.
            if (file.error().code == Errc::NotFound) drop_row(key, **row);
            return none;
        }
        auto kv = decode_passage_kv(file->data(), static_cast<size_t>(file->size()), key);
        if (!kv) {
            ++stats.rejected_files;
            drop_row(key, **row);
            return none;
        }
        // last_used feeds a future disk budget; a failure to record it does not fail the get.
        (void)catalogue.touch_passage_kv(key.model, key.prefix_hash, key.passage_hash);
        return std::shared_ptr<const PassageKv>(
            std::make_shared<const PassageKv>(std::move(kv).value()));
    }

    // Writes key's file and then its catalogue row. On error the key's earlier file and row are
    // as they were: a new file name is removed again; the same name was replaced by a file of
    // the same key, which the earlier row still describes.
    Status persist(const PassageKvKey& key, const PassageKv& kv, const std::string& bytes) {
        Store& catalogue = *options.catalogue;
        const std::string op = "passage KV put " + relative_file(key, options.file_type);
        auto old = catalogue.find_passage_kv(key.model, key.prefix_hash, key.passage_hash);
        if (!old) return with_context(old.error(), op);
        std::error_code ec;
        std::filesystem::create_directories(options.directory / key.model, ec);
        if (ec)
            return make_error(Errc::Io, op + ": cannot create " +
                                            (options.directory / key.model).string() + ": " +
                                            ec.message());
        const std::string name = relative_file(key, options.file_type);
        const std::filesystem::path path = options.directory / name;
        if (auto w = detail::write_file_durably(path, bytes); !w)
            return with_context(w.error(), op);

        PassageKvRow row;
        row.model = key.model;
        row.prefix_hash = key.prefix_hash;
        row.passage_hash = key.passage_hash;
        row.n_tokens = kv.n_tokens;
        row.file_type = static_cast<int>(options.file_type);
        row.file = name;
        row.n_bytes = bytes.size();
        if (auto put = catalogue.put_passage_kv(row); !put) {
            if (!*old || (*old)->file != name) (void)detail::remove_file(path);
            return with_context(put.error(), op);
        }
        // Same key written as the other file type: the earlier file is now unreferenced.
        if (*old && (*old)->file != name && row_names_own_file(key, **old))
            (void)detail::remove_file(options.directory / (*old)->file);
        ++stats.files_written;
        return {};
    }
};

PassageKvStore::PassageKvStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PassageKvStore::PassageKvStore(PassageKvStore&&) noexcept = default;
PassageKvStore& PassageKvStore::operator=(PassageKvStore&&) noexcept = default;
PassageKvStore::~PassageKvStore() = default;

Result<PassageKvStore> PassageKvStore::open(const PassageKvStoreOptions& options) {
    if (options.file_type != KvFileType::F16 && options.file_type != KvFileType::Q8)
        return make_error(Errc::InvalidArgument, "passage KV store: unknown file type");
    if (!options.directory.empty()) {
        if (options.catalogue == nullptr)
            return make_error(Errc::InvalidArgument,
                              "passage KV store: a directory needs a catalogue Store");
        std::error_code ec;
        std::filesystem::create_directories(options.directory, ec);
        if (ec)
            return make_error(Errc::Io, "passage KV store: cannot create " +
                                            options.directory.string() + ": " + ec.message());
    }
    auto impl = std::make_unique<Impl>();
    impl->options = options;
    return PassageKvStore(std::move(impl));
}

Result<std::shared_ptr<const PassageKv>> PassageKvStore::get(const PassageKvKey& key) {
    std::lock_guard lock(impl_->mutex);
    Impl& s = *impl_;
    if (auto it = s.index.find(key); it != s.index.end()) {
        s.lru.splice(s.lru.begin(), s.lru, it->second);
        ++s.stats.memory_hits;
        return it->second->kv;
    }
    if (!s.has_disk()) {
        ++s.stats.misses;
        return std::shared_ptr<const PassageKv>{};
    }
    auto kv = s.load(key);
    if (!kv) return kv.error();
    if (*kv == nullptr) {
        ++s.stats.misses;
    } else {
        ++s.stats.disk_hits;
        s.remember(key, *kv);
    }
    return kv;
}

Status PassageKvStore::put(const PassageKvKey& key, std::shared_ptr<const PassageKv> kv,
                           bool persist) {
    if (kv == nullptr) return make_error(Errc::InvalidArgument, "passage KV put: null state");
    ATTNRAG_TRY(detail::check_encodable(key, *kv));
    const bool to_disk = persist && impl_->has_disk();
    if (to_disk && !is_safe_model_name(key.model))
        return make_error(Errc::InvalidArgument,
                          "passage KV put: model fingerprint '" + key.model +
                              "' is not a plain file name ([A-Za-z0-9._-], no leading dot)");
    // Encoding is the slow part and touches no shared state: done before taking the lock.
    std::string bytes;
    if (to_disk) bytes = encode_passage_kv(key, *kv, impl_->options.file_type);

    std::lock_guard lock(impl_->mutex);
    impl_->remember(key, kv);  // a copy: kv must outlive persist even when not kept in memory
    if (!to_disk) return {};
    return impl_->persist(key, *kv, bytes);
}

Result<bool> PassageKvStore::contains(const PassageKvKey& key) {
    std::lock_guard lock(impl_->mutex);
    if (impl_->index.count(key) != 0) return true;
    if (!impl_->has_disk() || !is_safe_model_name(key.model)) return false;
    auto row =
        impl_->options.catalogue->find_passage_kv(key.model, key.prefix_hash, key.passage_hash);
    if (!row) return with_context(row.error(), "passage KV contains");
    return row->has_value();
}

Status PassageKvStore::erase(const PassageKvKey& key) {
    std::lock_guard lock(impl_->mutex);
    impl_->forget(key);
    if (!impl_->has_disk() || !is_safe_model_name(key.model)) return {};
    Store& catalogue = *impl_->options.catalogue;
    auto row = catalogue.find_passage_kv(key.model, key.prefix_hash, key.passage_hash);
    if (!row) return with_context(row.error(), "passage KV erase");
    if (!*row) return {};
    // The file first: a row left behind by a failure here is a miss later, never a wrong hit.
    if (row_names_own_file(key, **row))
        ATTNRAG_TRY(detail::remove_file(impl_->options.directory / (*row)->file));
    auto deleted = catalogue.delete_passage_kv(key.model, key.prefix_hash, key.passage_hash);
    if (!deleted) return with_context(deleted.error(), "passage KV erase");
    return {};
}

void PassageKvStore::clear_memory() {
    std::lock_guard lock(impl_->mutex);
    impl_->index.clear();
    impl_->lru.clear();
    impl_->stats.memory_bytes = 0;
}

PassageKvStoreStats PassageKvStore::stats() const {
    std::lock_guard lock(impl_->mutex);
    PassageKvStoreStats s = impl_->stats;
    s.memory_entries = static_cast<int64_t>(impl_->index.size());
    return s;
}

}  // namespace attnrag
