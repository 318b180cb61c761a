// Corpus: ingest (read, chunk, embed, store, index) and hybrid search over store + FAISS.
#include "attnrag/index/corpus.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "attnrag/index/dense_index.hpp"
#include "attnrag/index/embedder.hpp"
#include "attnrag/index/fusion.hpp"
#include "attnrag/text.hpp"

namespace attnrag::index {

namespace fs = std::filesystem;

const char* search_mode_name(SearchMode mode) {
    switch (mode) {
        case SearchMode::Bm25: return "bm25";
        case SearchMode::Dense: return "dense";
        case SearchMode::Hybrid: return "hybrid";
    }
    return "?";
}

Result<SearchMode> parse_search_mode(std::string_view name) {
    if (name == "bm25") return SearchMode::Bm25;
    if (name == "dense") return SearchMode::Dense;
    if (name == "hybrid") return SearchMode::Hybrid;
    return make_error(Errc::InvalidArgument, "unknown search mode '" + std::string(name) + "' (bm25, dense, hybrid)");
}

std::string content_hash(std::string_view bytes) {
    // Two FNV-1a 64 streams with different offset bases: identity of content, not security.
    uint64_t a = 0xcbf29ce484222325ull, b = 0x84222325cbf29ce4ull;
    for (unsigned char c : bytes) {
        a = (a ^ c) * 0x100000001b3ull;
        b = (b ^ static_cast<unsigned char>(c + 0x5b)) * 0x100000001b3ull;
    }
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a),
                  static_cast<unsigned long long>(b));
    return buf;
}

struct Corpus::Impl {
    fs::path dir;
    CorpusOptions options;
    Store store;
    std::optional<Embedder> embedder;
    std::optional<DenseIndex> dense;
    bool dense_dirty = false;
    bool rebuilt = false;

    Impl(fs::path d, const CorpusOptions& o, Store s) : dir(std::move(d)), options(o), store(std::move(s)) {}

    fs::path index_path() const { return dir / "dense.faiss"; }

    Status ensure_embedder() {
        if (embedder) return {};
        EmbedderParams p;
        p.n_threads = options.n_threads;
        auto e = Embedder::load(options.embedder_dir.empty() ? fs::path(default_embedder_dir()) : options.embedder_dir, p);
        if (!e) return e.error();
        embedder.emplace(std::move(e).value());
        // The store remembers which embedder made its vectors; another one would mix spaces.
        auto name = store.get_setting("embedder");
        if (!name) return name.error();
        std::string id = embedder->name() + ":" + std::to_string(embedder->dim());
        if (!*name) {
            ATTNRAG_TRY(store.set_setting("embedder", id));
        } else if (**name != id) {
            return make_error(Errc::InvalidArgument, dir.string() + ": the corpus was embedded with " + **name +
                                                         ", not " + id + "; use a new --db");
        }
        return {};
    }

    // Loads the FAISS file, or rebuilds it from the stored vectors when missing or stale.
    Status ensure_dense() {
        if (dense) return {};
        ATTNRAG_TRY(ensure_embedder());
        auto gen = store.vector_generation();
        if (!gen) return gen.error();
        auto loaded = DenseIndex::load(index_path(), *gen);
        if (loaded && loaded->dim() == embedder->dim()) {
            dense.emplace(std::move(loaded).value());
            return {};
        }
        // The factory is part of the corpus: chosen when it is created, remembered in the store,
        // and reused by every rebuild unless the caller names another.
        std::string factory = options.factory;
        if (factory.empty()) {
            auto saved = store.get_setting("faiss_factory");
            if (!saved) return saved.error();
            factory = saved->value_or("Flat");
        }
        auto idx = DenseIndex::create(embedder->dim(), factory);
        if (!idx) return idx.error();
        ATTNRAG_TRY(store.set_setting("faiss_factory", idx->factory()));
        std::vector<int64_t> ids;
        std::vector<float> vecs;
        Status add_status;
        auto flush_batch = [&]() -> Status {
            if (ids.empty()) return {};
            ATTNRAG_TRY(idx->add(ids, vecs));
            ids.clear();
            vecs.clear();
            return {};
        };
        ATTNRAG_TRY(store.for_each_embedding([&](int64_t id, std::span<const float> v) {
            if (static_cast<int32_t>(v.size()) != embedder->dim()) return true;
            ids.push_back(id);
            vecs.insert(vecs.end(), v.begin(), v.end());
            if (ids.size() >= 4096) {
                add_status = flush_batch();
                return add_status.ok();
            }
            return true;
        }));
        ATTNRAG_TRY(add_status);
        ATTNRAG_TRY(flush_batch());
        dense.emplace(std::move(idx).value());
        rebuilt = true;
        dense_dirty = true;
        return save_dense();
    }

    Status save_dense() {
        if (!dense || !dense_dirty) return {};
        auto gen = store.vector_generation();
        if (!gen) return gen.error();
        ATTNRAG_TRY(dense->save(index_path(), *gen));
        dense_dirty = false;
        return {};
    }

    // Chunks, embeds and stores one document's text; updates the dense index.
    Result<PutResult> put_text(const std::string& source, const text::Document& doc, const std::string& hash,
                               const std::string& title, const std::string& metadata_json) {
        ATTNRAG_TRY(ensure_dense());
        text::ChunkOptions co;
        co.max_tokens = options.chunk_tokens;
        co.overlap_tokens = options.overlap_tokens;
        const Embedder& emb = *embedder;
        auto chunks = text::chunk_text(doc.text, co, [&emb](std::string_view s) { return emb.count_tokens(s); });

        DocumentInput in;
        in.source = source;
        in.title = title.empty() ? doc.title : title;
        in.content_hash = hash;
        in.metadata_json = metadata_json;
        in.n_bytes = doc.source_bytes;
        in.format = format_name(doc.format);
        std::vector<std::string> texts;
        texts.reserve(chunks.size());
        for (const auto& c : chunks) {
            ChunkInput ci;
            ci.ordinal = c.ordinal;
            ci.begin = c.span.begin;
            ci.end = c.span.end;
            ci.source_begin = text::to_source_offset(doc, c.span.begin);
            ci.source_end = text::to_source_offset(doc, c.span.end);
            ci.n_tokens = c.n_tokens;
            ci.text = doc.text.substr(c.span.begin, c.span.end - c.span.begin);
            auto norm = text::nfkc(ci.text);
            texts.push_back(norm ? *norm : ci.text);
            in.chunks.push_back(std::move(ci));
        }
        auto vecs = embedder->embed_batch(texts);
        if (!vecs) return vecs.error();
        for (size_t i = 0; i < in.chunks.size(); ++i) in.chunks[i].embedding = std::move((*vecs)[i]);

        auto put = store.put_document(in);
        if (!put) return put.error();
        if (put->outcome == PutOutcome::Unchanged) return put;
        if (!put->removed_chunk_ids.empty()) ATTNRAG_TRY(dense->remove(put->removed_chunk_ids));
        std::vector<float> flat;
        flat.reserve(in.chunks.size() * static_cast<size_t>(embedder->dim()));
        for (const auto& c : in.chunks) flat.insert(flat.end(), c.embedding.begin(), c.embedding.end());
        ATTNRAG_TRY(dense->add(put->chunk_ids, flat));
        dense_dirty = true;
        return put;
    }

    static std::string format_name(text::Format f) {
        switch (f) {
            case text::Format::Text: return "text";
            case text::Format::Markdown: return "markdown";
            case text::Format::Html: return "html";
            case text::Format::Pdf: return "pdf";
        }
        return "text";
    }
};

Corpus::Corpus(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Corpus::Corpus(Corpus&&) noexcept = default;
Corpus& Corpus::operator=(Corpus&&) noexcept = default;
Corpus::~Corpus() {
    if (impl_) (void)impl_->save_dense();
}

Result<Corpus> Corpus::open(const fs::path& dir, const CorpusOptions& options) {
    std::error_code ec;
    if (!options.read_only) fs::create_directories(dir, ec);
    if (ec) return make_error(Errc::Io, dir.string() + ": cannot create the corpus directory: " + ec.message());
    auto store = Store::open(dir / "attnrag.db", !options.read_only);
    if (!store) return store.error();
    return Corpus(std::make_unique<Impl>(dir, options, std::move(store).value()));
}

Result<IngestReport> Corpus::ingest(std::span<const fs::path> paths,
                                    const std::function<bool(const IngestProgress&)>& progress) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    IngestReport report;
    // Expand folders (recursively, in sorted order, hidden entries skipped).
    std::vector<fs::path> files;
    for (const auto& p : paths) {
        std::error_code ec;
        if (fs::is_directory(p, ec)) {
            std::vector<fs::path> found;
            for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::skip_permission_denied, ec);
                 !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
                const auto name = it->path().filename().string();
                if (!name.empty() && name[0] == '.') {
                    if (it->is_directory()) it.disable_recursion_pending();
                    continue;
                }
                if (it->is_regular_file()) found.push_back(it->path());
            }
            if (ec) report.skipped.push_back({p.string(), "cannot list folder: " + ec.message()});
            std::sort(found.begin(), found.end());
            files.insert(files.end(), found.begin(), found.end());
        } else if (fs::exists(p, ec)) {
            files.push_back(p);
        } else {
            report.skipped.push_back({p.string(), "no such file or folder"});
        }
    }

    IngestProgress prog;
    prog.files_total = files.size();
    for (const auto& file : files) {
        prog.current = file.string();
        const std::string source = fs::absolute(file).lexically_normal().string();
        auto doc = text::read_file(file);
        if (!doc) {
            report.skipped.push_back({file.string(), doc.error().message});
        } else if (doc->text.find_first_not_of(" \t\r\n") == std::string::npos) {
            report.skipped.push_back({file.string(), "empty document (no text)"});
        } else {
            std::string hash = content_hash(doc->text);
            auto existing = impl_->store.find_document(source);
            if (!existing) return existing.error();
            if (*existing && (*existing)->content_hash == hash) {
                ++report.unchanged;
            } else {
                auto put = impl_->put_text(source, *doc, hash, "", nlohmann::json{{"path", source}}.dump());
                if (!put) {
                    if (put.error().code == Errc::Io || put.error().code == Errc::Internal) return put.error();
                    report.skipped.push_back({file.string(), put.error().message});
                } else {
                    if (put->outcome == PutOutcome::Added) ++report.added;
                    if (put->outcome == PutOutcome::Replaced) ++report.replaced;
                    if (put->outcome == PutOutcome::Unchanged) ++report.unchanged;
                    report.n_chunks += static_cast<int64_t>(put->chunk_ids.size());
                    prog.chunks_done += static_cast<int64_t>(put->chunk_ids.size());
                }
            }
        }
        ++prog.files_done;
        prog.elapsed_s = std::chrono::duration<double>(clock::now() - t0).count();
        if (progress && !progress(prog)) {
            ATTNRAG_TRY(impl_->save_dense());
            return make_error(Errc::Cancelled, "ingest cancelled after " + std::to_string(prog.files_done) + " files");
        }
    }
    ATTNRAG_TRY(impl_->save_dense());
    report.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    return report;
}

Result<PutResult> Corpus::ingest_text(const std::string& source, std::string_view text_bytes, const std::string& title,
                                      const std::string& metadata_json) {
    const std::string hash = content_hash(text_bytes);
    auto existing = impl_->store.find_document(source);
    if (!existing) return existing.error();
    if (*existing && (*existing)->content_hash == hash) {
        PutResult r;
        r.outcome = PutOutcome::Unchanged;
        r.document_id = (*existing)->id;
        return r;
    }
    auto doc = text::read_bytes(text_bytes, text::Format::Text, source);
    if (!doc) return doc.error();
    return impl_->put_text(source, *doc, hash, title, metadata_json);
}

Status Corpus::flush() { return impl_->save_dense(); }

Result<std::vector<SearchHit>> Corpus::search(std::string_view query, int k, SearchMode mode, const Filter& filter) {
    if (k <= 0) return make_error(Errc::InvalidArgument, "search: k must be positive");
    // Each list is fetched deeper than k so that fusion has candidates from both.
    const int depth = mode == SearchMode::Hybrid ? std::max(k, 100) : k;
    std::vector<int64_t> lexical, dense_ids;
    std::unordered_map<int64_t, double> lex_score, dense_score;
    if (mode != SearchMode::Dense) {
        auto hits = impl_->store.search_bm25(query, depth, filter);
        if (!hits) return hits.error();
        for (const auto& h : *hits) {
            lexical.push_back(h.chunk_id);
            lex_score[h.chunk_id] = h.score;
        }
    }
    if (mode != SearchMode::Bm25) {
        ATTNRAG_TRY(impl_->ensure_dense());
        auto qv = impl_->embedder->embed(query);
        if (!qv) return qv.error();
        std::function<bool(int64_t)> allow;
        std::unordered_map<int64_t, bool> allowed_docs_cache;
        if (!filter.document_ids.empty() || !filter.metadata_equals.empty()) {
            auto docs = impl_->store.list_documents(filter);
            if (!docs) return docs.error();
            auto allowed = std::make_shared<std::unordered_map<int64_t, bool>>();
            for (const auto& d : *docs) {
                auto chunks = impl_->store.chunks_of(d.id);
                if (!chunks) return chunks.error();
                for (const auto& c : *chunks) (*allowed)[c.id] = true;
            }
            allow = [allowed](int64_t id) { return allowed->count(id) != 0; };
        }
        auto hits = impl_->dense->search(*qv, depth, allow);
        if (!hits) return hits.error();
        for (const auto& h : *hits) {
            dense_ids.push_back(h.id);
            dense_score[h.id] = h.score;
        }
    }

    std::vector<std::pair<int64_t, double>> ranked;
    std::unordered_map<int64_t, std::pair<int, int>> ranks;
    if (mode == SearchMode::Hybrid) {
        for (const auto& f : reciprocal_rank_fusion(dense_ids, lexical, 60, static_cast<size_t>(k))) {
            ranked.emplace_back(f.id, f.score);
            ranks[f.id] = {f.dense_rank, f.lexical_rank};
        }
    } else {
        const auto& ids = mode == SearchMode::Bm25 ? lexical : dense_ids;
        const auto& scores = mode == SearchMode::Bm25 ? lex_score : dense_score;
        for (size_t i = 0; i < ids.size() && static_cast<int>(i) < k; ++i) {
            ranked.emplace_back(ids[i], scores.at(ids[i]));
            int r = static_cast<int>(i) + 1;
            ranks[ids[i]] = mode == SearchMode::Bm25 ? std::pair{0, r} : std::pair{r, 0};
        }
    }
    std::vector<int64_t> chunk_ids;
    for (const auto& [id, s] : ranked) chunk_ids.push_back(id);
    auto rows = impl_->store.get_chunks(chunk_ids);
    if (!rows) return rows.error();
    std::unordered_map<int64_t, const ChunkRow*> by_id;
    for (const auto& r : *rows) by_id[r.id] = &r;
    std::unordered_map<int64_t, DocumentRow> docs;
    std::vector<SearchHit> out;
    for (const auto& [id, score] : ranked) {
        auto it = by_id.find(id);
        if (it == by_id.end()) continue;  // deleted since the index was written
        const ChunkRow& c = *it->second;
        if (!docs.count(c.document_id)) {
            auto d = impl_->store.get_document(c.document_id);
            if (!d) return d.error();
            if (!*d) continue;
            docs.emplace(c.document_id, **d);
        }
        const DocumentRow& d = docs.at(c.document_id);
        SearchHit h;
        h.chunk_id = id;
        h.document_id = c.document_id;
        h.source = d.source;
        h.title = d.title;
        h.text = c.text;
        h.begin = c.begin;
        h.end = c.end;
        h.source_begin = c.source_begin;
        h.source_end = c.source_end;
        h.score = score;
        h.dense_rank = ranks[id].first;
        h.lexical_rank = ranks[id].second;
        out.push_back(std::move(h));
    }
    return out;
}

Result<bool> Corpus::delete_document(int64_t id) {
    auto removed = impl_->store.delete_document(id);
    if (!removed) return removed.error();
    if (!*removed) return false;
    // A dense index not loaded yet is rebuilt (stale generation) when first needed.
    if (impl_->dense && !(*removed)->empty()) {
        ATTNRAG_TRY(impl_->dense->remove(**removed));
        impl_->dense_dirty = true;
        ATTNRAG_TRY(impl_->save_dense());
    }
    return true;
}

Store& Corpus::store() { return impl_->store; }
const fs::path& Corpus::dir() const { return impl_->dir; }
bool Corpus::index_rebuilt() const { return impl_->rebuilt; }

}  // namespace attnrag::index
