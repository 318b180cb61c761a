// Corpus end to end: ingest real files, search three ways, dedupe/replace/delete, index rebuild.
#include <catch2/catch.hpp>

#include <fstream>

#include "attnrag/index/corpus.hpp"
#include "test_support.hpp"

using namespace attnrag;
using namespace attnrag::index;
namespace fs = std::filesystem;

namespace {

void write_file(const fs::path& p, const std::string& content) {
    std::ofstream out(p, std::ios::binary);
    out << content;
}

fs::path make_docs() {
    auto dir = test::make_temp_dir("corpus_docs");
    write_file(dir / "volcano.txt",
               "Volcanoes form where magma reaches the surface. Mount Etna in Sicily is one of the most "
               "active volcanoes in the world.\n\nIts eruptions have been recorded for thousands of years.");
    write_file(dir / "bread.md",
               "# Baking bread\n\nKneading develops gluten in the dough. Sourdough bread rises with wild "
               "yeast and lactic acid bacteria instead of commercial yeast.");
    write_file(dir / "chess.html",
               "<html><head><title>Chess openings</title><style>p{color:red}</style>"
               "<script>var x = 'magma';</script></head><body><h1>Openings</h1>"
               "<p>The Sicilian Defence answers 1.e4 with 1...c5 and is the most popular reply.</p>"
               "</body></html>");
    write_file(dir / "broken.txt", std::string("valid start \xC3\x28 invalid", 24));
    write_file(dir / "empty.txt", "");
    return dir;
}

CorpusOptions options() {
    CorpusOptions o;
    o.embedder_dir = test::source_dir() / "models" / "all-MiniLM-L6-v2";
    o.n_threads = 2;
    return o;
}

}  // namespace

TEST_CASE("ingest a folder then find each document by BM25 dense and hybrid search", "[corpus]") {
    auto docs = make_docs();
    auto db = test::make_temp_dir("corpus_db");
    auto corpus = Corpus::open(db, options());
    REQUIRE(corpus.ok());
    std::vector<fs::path> paths = {docs};
    auto report = corpus->ingest(paths);
    REQUIRE(report.ok());
    CHECK(report->added == 3);
    CHECK(report->skipped.size() == 2);  // invalid UTF-8 and empty
    bool saw_offset = false;
    for (const auto& s : report->skipped) {
        if (s.path.find("broken.txt") != std::string::npos) saw_offset = s.reason.find("offset") != std::string::npos;
    }
    CHECK(saw_offset);

    for (SearchMode mode : {SearchMode::Bm25, SearchMode::Dense, SearchMode::Hybrid}) {
        INFO("mode " << search_mode_name(mode));
        auto hits = corpus->search("Which volcano in Sicily erupts often?", 3, mode);
        REQUIRE(hits.ok());
        REQUIRE_FALSE(hits->empty());
        CHECK(hits->front().source.find("volcano.txt") != std::string::npos);
        auto bread = corpus->search("how does sourdough rise", 3, mode);
        REQUIRE(bread.ok());
        REQUIRE_FALSE(bread->empty());
        CHECK(bread->front().source.find("bread.md") != std::string::npos);
    }
    // Script text is not indexed: "magma" only occurs in volcano.txt's prose.
    auto magma = corpus->search("magma", 5, SearchMode::Bm25);
    REQUIRE(magma.ok());
    REQUIRE(magma->size() == 1);
    CHECK(magma->front().source.find("volcano.txt") != std::string::npos);
    // The hit's source range points at the chunk's bytes in the file.
    auto chess = corpus->search("Sicilian Defence", 1, SearchMode::Bm25);
    REQUIRE(chess.ok());
    REQUIRE(chess->size() == 1);
    CHECK(chess->front().title == "Chess openings");
}

TEST_CASE("re-ingest is a no-op and a changed file replaces its chunks", "[corpus]") {
    auto docs = make_docs();
    auto db = test::make_temp_dir("corpus_db");
    {
        auto corpus = Corpus::open(db, options());
        REQUIRE(corpus.ok());
        std::vector<fs::path> paths = {docs};
        REQUIRE(corpus->ingest(paths).ok());
    }
    auto corpus = Corpus::open(db, options());
    REQUIRE(corpus.ok());
    std::vector<fs::path> paths = {docs};
    auto again = corpus->ingest(paths);
    REQUIRE(again.ok());
    CHECK(again->added == 0);
    CHECK(again->unchanged == 3);

    write_file(docs / "bread.md", "# Baking bread\n\nRye bread is dense and dark; pumpernickel is a kind of rye bread.");
    auto changed = corpus->ingest(paths);
    REQUIRE(changed.ok());
    CHECK(changed->replaced == 1);
    auto old = corpus->search("sourdough wild yeast", 3, SearchMode::Bm25);
    REQUIRE(old.ok());
    for (const auto& h : *old) CHECK(h.source.find("bread.md") == std::string::npos);
    auto rye = corpus->search("pumpernickel", 3, SearchMode::Dense);
    REQUIRE(rye.ok());
    REQUIRE_FALSE(rye->empty());
    CHECK(rye->front().source.find("bread.md") != std::string::npos);

    auto list = corpus->store().list_documents();
    REQUIRE(list.ok());
    int64_t bread_id = 0;
    for (const auto& d : *list) {
        if (d.source.find("bread.md") != std::string::npos) bread_id = d.id;
    }
    REQUIRE(bread_id != 0);
    auto del = corpus->delete_document(bread_id);
    REQUIRE(del.ok());
    CHECK(*del);
    auto after = corpus->search("pumpernickel rye", 3, SearchMode::Hybrid);
    REQUIRE(after.ok());
    for (const auto& h : *after) CHECK(h.source.find("bread.md") == std::string::npos);
}

TEST_CASE("a lost or damaged FAISS file is rebuilt from the stored vectors", "[corpus]") {
    auto docs = make_docs();
    auto db = test::make_temp_dir("corpus_db");
    {
        auto corpus = Corpus::open(db, options());
        REQUIRE(corpus.ok());
        std::vector<fs::path> paths = {docs};
        REQUIRE(corpus->ingest(paths).ok());
    }
    REQUIRE(fs::exists(db / "dense.faiss"));
    fs::remove(db / "dense.faiss");
    {
        auto corpus = Corpus::open(db, options());
        REQUIRE(corpus.ok());
        auto hits = corpus->search("active volcano", 1, SearchMode::Dense);
        REQUIRE(hits.ok());
        CHECK(corpus->index_rebuilt());
        REQUIRE(hits->size() == 1);
        CHECK(hits->front().source.find("volcano.txt") != std::string::npos);
    }
    // Corrupt it: flip bytes in the middle.
    {
        std::fstream f(db / "dense.faiss", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(64);
        f.write("garbage!", 8);
    }
    auto corpus = Corpus::open(db, options());
    REQUIRE(corpus.ok());
    auto hits = corpus->search("baking sourdough", 1, SearchMode::Dense);
    REQUIRE(hits.ok());
    CHECK(corpus->index_rebuilt());
    REQUIRE(hits->size() == 1);
    CHECK(hits->front().source.find("bread.md") != std::string::npos);
}

TEST_CASE("the FAISS factory chosen at creation is kept across rebuilds", "[corpus]") {
    auto docs = make_docs();
    auto db = test::make_temp_dir("corpus_db");
    {
        CorpusOptions o = options();
        o.factory = "HNSW16";
        auto corpus = Corpus::open(db, o);
        REQUIRE(corpus.ok());
        std::vector<fs::path> paths = {docs};
        REQUIRE(corpus->ingest(paths).ok());
    }
    fs::remove(db / "dense.faiss");
    auto corpus = Corpus::open(db, options());  // no factory given
    REQUIRE(corpus.ok());
    auto hits = corpus->search("sourdough", 1, SearchMode::Dense);
    REQUIRE(hits.ok());
    CHECK(corpus->index_rebuilt());
    auto factory = corpus->store().get_setting("faiss_factory");
    REQUIRE(factory.ok());
    REQUIRE(factory->has_value());
    CHECK(**factory == "HNSW16");
}
