// The passage KV store (DESIGN.md §3 "KV cache"): computed passage states keyed by
// (model fingerprint, prefix hash, passage token hash), kept in memory under a byte budget with
// LRU eviction and, optionally, in files on disk (fp16 or q8) catalogued in the SQLite store.
//
// A file is trusted only after its header (magic, version, sizes, key) and its checksum match;
// anything else (truncated, corrupt, written for another model or prefix) is counted as
// rejected, removed with its catalogue row, and reported as a miss, so the caller recomputes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "attnrag/passage_kv.hpp"
#include "attnrag/result.hpp"

namespace attnrag {

class Store;

enum class KvFileType : uint8_t {
    F16 = 1,  // IEEE half: the round trip equals rounding every float to fp16
    Q8 = 2,   // blocks of 32 values with one f32 scale: |error| <= scale / 2 per value
};

struct PassageKvKey {
    std::string model;          // Model::fingerprint()
    uint64_t prefix_hash = 0;   // hash_tokens(shared prefix the passage was encoded after)
    uint64_t passage_hash = 0;  // hash_tokens(passage tokens)
    bool operator==(const PassageKvKey&) const = default;
};

struct PassageKvStoreOptions {
    size_t memory_budget_bytes = size_t{512} << 20;  // PassageKv::bytes() summed; 0 = no memory tier
    // Files go to directory/<model>/<prefix hex>-<passage hex>.<f16|q8>.kv (created if
    // missing); empty = memory only. The model fingerprint must then be a plain file name
    // ([A-Za-z0-9._-], no leading dot), as Model::fingerprint() (16 hex digits) is.
    std::filesystem::path directory;
    // Required when directory is set; borrowed, must outlive the store. The store calls it only
    // under its own lock, so give it a Store that no other thread uses meanwhile.
    Store* catalogue = nullptr;
    KvFileType file_type = KvFileType::F16;  // for files written; files of either type are read
};

struct PassageKvStoreStats {
    int64_t memory_hits = 0;
    int64_t disk_hits = 0;
    int64_t misses = 0;
    int64_t evictions = 0;       // memory entries dropped to respect the budget
    int64_t rejected_files = 0;  // files that failed the header or checksum check
    int64_t files_written = 0;
    size_t memory_bytes = 0;     // currently resident (<= budget)
    int64_t memory_entries = 0;
};

// Thread-safe: every method may be called from several threads at once (one lock; disk loads
// and writes are serialised, encoding a file is not). Move-only; a moved-from store may only be
// assigned or destroyed.
class PassageKvStore {
   public:
    static Result<PassageKvStore> open(const PassageKvStoreOptions& options);

    PassageKvStore(PassageKvStore&&) noexcept;
    PassageKvStore& operator=(PassageKvStore&&) noexcept;
    ~PassageKvStore();

    // Memory first, then disk (a disk hit is loaded with mmap, verified, kept in memory and its
    // row's last_used moved). nullptr = not stored: no row, a row whose file is gone (the row is
    // removed), a file that fails verification (rejected: file and row removed), or a file that
    // cannot be opened otherwise (left alone). Errors: catalogue I/O only.
    Result<std::shared_ptr<const PassageKv>> get(const PassageKvKey& key);

    // Keeps `kv` in memory (evicting least recently used entries beyond the budget; an entry
    // larger than the whole budget is not kept in memory) and, with persist and a directory,
    // writes its file (temp file + fsync + rename, then the catalogue row). Errors:
    // InvalidArgument (null or inconsistent kv, sizes beyond the format, a model name unfit for
    // a path); Io (disk full, ...) and catalogue errors, which leave any earlier file and row of
    // the key intact and no temp file behind (the memory tier is updated all the same).
    Status put(const PassageKvKey& key, std::shared_ptr<const PassageKv> kv, bool persist = true);

    // True when the key is in memory or catalogued on disk (the file is not verified).
    Result<bool> contains(const PassageKvKey& key);
    // Removes the key from memory, disk and catalogue. Missing keys are not an error.
    Status erase(const PassageKvKey& key);
    // Drops the memory tier only (files stay): what a process restart looks like.
    void clear_memory();

    PassageKvStoreStats stats() const;

   private:
    struct Impl;
    explicit PassageKvStore(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// File codec, exposed for tests and tools: serialise `kv` under `key` as `type`, and parse it
// back (verifying magic, version, sizes, key and checksums; the key must equal `expect`).
// encode requires kv.consistent() and a model of 1..255 bytes (put checks both). decode never
// reads outside [data, data + size); errors are Corrupt (or Unsupported for another format
// version or file type) with a message naming the failed check. The format is described in
// lib/src/kvstore/kv_codec.cpp.
std::string encode_passage_kv(const PassageKvKey& key, const PassageKv& kv, KvFileType type);
Result<PassageKv> decode_passage_kv(const void* data, size_t size, const PassageKvKey& expect);

}  // namespace attnrag
