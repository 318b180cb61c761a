// A searchable corpus on disk: the SQLite store, the FAISS index beside it and the embedder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/result.hpp"
#include "attnrag/store.hpp"

namespace attnrag::index {

enum class SearchMode { Bm25, Dense, Hybrid };
const char* search_mode_name(SearchMode mode);
Result<SearchMode> parse_search_mode(std::string_view name);

struct CorpusOptions {
    std::filesystem::path embedder_dir;  // empty: default_embedder_dir()
    std::string factory;                 // FAISS factory for a new index; empty: "Flat"
    uint32_t chunk_tokens = 256;         // chunk budget in embedder tokens
    uint32_t overlap_tokens = 0;
    int32_t n_threads = 0;               // 0: all cores
    bool read_only = false;              // search only: no embedder load needed for bm25
};

struct SearchHit {
    int64_t chunk_id = 0;
    int64_t document_id = 0;
    std::string source;
    std::string title;
    std::string text;                            // the chunk's text
    uint64_t begin = 0, end = 0;                 // byte range in the document's extracted text
    uint64_t source_begin = 0, source_end = 0;   // byte range in the source file (see text::Document)
    double score = 0;                            // mode-specific: bm25, cosine, or RRF
    int dense_rank = 0, lexical_rank = 0;        // 1-based ranks in each list; 0 = absent
};

struct IngestProgress {
    size_t files_done = 0, files_total = 0;
    int64_t chunks_done = 0;
    double elapsed_s = 0;
    std::string current;  // the file being read
};

struct SkippedFile {
    std::string path;
    std::string reason;
};

struct IngestReport {
    int64_t added = 0, unchanged = 0, replaced = 0;
    std::vector<SkippedFile> skipped;
    int64_t n_chunks = 0;  // chunks written
    double seconds = 0;
};

// Not thread-safe: one Corpus per thread (it owns a store connection and an embedder).
class Corpus {
   public:
    // Opens (creating when missing) <dir>/attnrag.db and <dir>/dense.faiss. A FAISS file that is
    // missing, corrupt or older than the store's vectors is rebuilt from the stored vectors.
    static Result<Corpus> open(const std::filesystem::path& dir, const CorpusOptions& options = {});

    Corpus(Corpus&&) noexcept;
    Corpus& operator=(Corpus&&) noexcept;
    ~Corpus();

    // Ingests files and folders (recursively, sorted). Unreadable or invalid files are skipped
    // with a reason and the rest goes on. Each document is one store transaction; the dense
    // index is saved at the end (and rebuilt on the next open if the process dies before).
    // progress returns false to cancel (the documents done so far stay).
    Result<IngestReport> ingest(std::span<const std::filesystem::path> paths,
                                const std::function<bool(const IngestProgress&)>& progress = {});

    // Ingests one text given in memory (e.g. a BEIR record); `source` is its identity.
    Result<PutResult> ingest_text(const std::string& source, std::string_view text,
                                  const std::string& title, const std::string& metadata_json = "{}");
    // Saves the dense index if it changed since the last save.
    Status flush();

    Result<std::vector<SearchHit>> search(std::string_view query, int k, SearchMode mode,
                                          const Filter& filter = {});

    // Deletes a document, its chunks, vectors and index entries; false if absent.
    Result<bool> delete_document(int64_t id);

    Store& store();
    const std::filesystem::path& dir() const;
    // Whether this Corpus rebuilt the dense index from the stored vectors (its file was missing,
    // corrupt or older than the store); the dense index is loaded on first use.
    bool index_rebuilt() const;

   private:
    struct Impl;
    explicit Corpus(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// 128-bit content hash (hex) used to recognise unchanged documents.
std::string content_hash(std::string_view bytes);

}  // namespace attnrag::index
