// Store: documents, chunks, FTS5 BM25, vectors, filters, migrations, atomicity, crashes, disk full.
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "attnrag/store.hpp"
#include "store/fts_query.h"
#include "test_support.hpp"

using namespace attnrag;

namespace {

template <class T>
T must(Result<T> r) {
    if (!r.ok()) FAIL(r.error().to_string());
    return std::move(r).value();
}

void must(const Status& s) {
    if (!s.ok()) FAIL(s.error().to_string());
}

template <class T>
Error must_fail(const Result<T>& r) {
    REQUIRE_FALSE(r.ok());
    return r.error();
}

std::filesystem::path temp_db(const std::string& tag) {
    return test::make_temp_dir("store_" + tag) / "store.db";
}

// A document whose every chunk holds `token` (and its ordinal), with dim-4 embeddings when dim.
DocumentInput make_doc(const std::string& source, const std::string& hash, int n_chunks,
                       const std::string& token, size_t dim = 4) {
    DocumentInput d;
    d.source = source;
    d.title = "title of " + source;
    d.content_hash = hash;
    d.format = "text";
    uint64_t pos = 0;
    for (int i = 0; i < n_chunks; ++i) {
        ChunkInput c;
        c.ordinal = static_cast<uint32_t>(i);
        c.text = "Chunk " + std::to_string(i) + " mentions " + token + " among ordinary words.";
        c.begin = pos;
        c.end = pos + c.text.size();
        c.source_begin = pos + 10;
        c.source_end = c.end + 10;
        c.n_tokens = static_cast<uint32_t>(c.text.size() / 4);
        pos = c.end + 1;
        for (size_t j = 0; j < dim; ++j)
            c.embedding.push_back(static_cast<float>(i) + 0.25f * static_cast<float>(j));
        d.chunks.push_back(std::move(c));
    }
    d.n_bytes = pos;
    return d;
}

std::set<int64_t> bm25_ids(Store& s, std::string_view query, const Filter& f = {}) {
    std::set<int64_t> ids;
    for (const Bm25Hit& h : must(s.search_bm25(query, 1000, f))) ids.insert(h.chunk_id);
    return ids;
}

using Pairs = std::vector<std::pair<std::string, std::string>>;
Filter meta(Pairs pairs) {
    Filter f;
    f.metadata_equals = std::move(pairs);
    return f;
}
Filter ids(std::vector<int64_t> document_ids, Pairs pairs = {}) {
    Filter f;
    f.document_ids = std::move(document_ids);
    f.metadata_equals = std::move(pairs);
    return f;
}

std::set<int64_t> as_set(const std::vector<int64_t>& v) {
    return {v.begin(), v.end()};
}

// A second, raw connection: for checks the Store API does not offer and for hand-made files.
class RawDb {
 public:
    explicit RawDb(const std::filesystem::path& p) {
        REQUIRE(sqlite3_open(p.string().c_str(), &db_) == SQLITE_OK);
    }
    ~RawDb() { sqlite3_close(db_); }
    void exec(const std::string& sql) {
        char* err = nullptr;
        int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
        std::string msg = err ? err : "";
        sqlite3_free(err);
        INFO(sql << ": " << msg);
        REQUIRE(rc == SQLITE_OK);
    }
    int64_t query_int(const std::string& sql) {
        sqlite3_stmt* st = nullptr;
        REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK);
        int64_t v = -1;
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return v;
    }

 private:
    sqlite3* db_ = nullptr;
};

}  // namespace

TEST_CASE("fts query builder quotes terms and drops stopwords", "[store]") {
    using detail::fts5_or_query;
    CHECK(fts5_or_query("The role of BRCA1 in DNA repair") ==
          R"("role" OR "brca1" OR "dna" OR "repair")");
    CHECK(fts5_or_query(R"(a AND ( " * b:c NEAR(x y) ^z -w)") ==
          R"("b" OR "c" OR "near" OR "x" OR "y" OR "z" OR "w")");
    CHECK(fts5_or_query("repair Repair REPAIR") == R"("repair")");
    CHECK(fts5_or_query("the of and is") == "");
    CHECK(fts5_or_query("  ()\"*:^-  ") == "");
    CHECK(fts5_or_query("café naïve") == "\"café\" OR \"naïve\"");
}

TEST_CASE("put get list and delete documents", "[store]") {
    auto s = must(Store::open(temp_db("crud")));
    CHECK(s.schema_version() == kSchemaVersion);
    DocumentInput a = make_doc("docs/a.txt", "aa01", 3, "alphatoken");
    a.metadata_json = R"({"lang": "en"})";
    auto pa = must(s.put_document(a));
    CHECK(pa.outcome == PutOutcome::Added);
    REQUIRE(pa.chunk_ids.size() == 3);
    CHECK(pa.removed_chunk_ids.empty());
    auto pb = must(s.put_document(make_doc("docs/b.txt", "bb02", 2, "betatoken")));
    CHECK(pb.outcome == PutOutcome::Added);
    CHECK(pb.document_id != pa.document_id);

    auto da = must(s.get_document(pa.document_id));
    REQUIRE(da);
    CHECK(da->source == "docs/a.txt");
    CHECK(da->title == "title of docs/a.txt");
    CHECK(da->content_hash == "aa01");
    CHECK(da->metadata_json == R"({"lang": "en"})");
    CHECK(da->format == "text");
    CHECK(da->n_bytes == a.n_bytes);
    CHECK(da->n_chunks == 3);
    CHECK(da->created_at > 0);
    CHECK(da->updated_at == da->created_at);
    auto found = must(s.find_document("docs/a.txt"));
    REQUIRE(found);
    CHECK(found->id == pa.document_id);
    CHECK_FALSE(must(s.find_document("docs/none.txt")));
    CHECK_FALSE(must(s.get_document(999999)));

    auto chunks = must(s.chunks_of(pa.document_id));
    REQUIRE(chunks.size() == 3);
    for (size_t i = 0; i < 3; ++i) {
        CHECK(chunks[i].id == pa.chunk_ids[i]);
        CHECK(chunks[i].document_id == pa.document_id);
        CHECK(chunks[i].ordinal == i);
        CHECK(chunks[i].text == a.chunks[i].text);
        CHECK(chunks[i].begin == a.chunks[i].begin);
        CHECK(chunks[i].end == a.chunks[i].end);
        CHECK(chunks[i].source_begin == a.chunks[i].source_begin);
        CHECK(chunks[i].source_end == a.chunks[i].source_end);
        CHECK(chunks[i].n_tokens == a.chunks[i].n_tokens);
        auto v = must(s.get_embedding(chunks[i].id));
        REQUIRE(v);
        CHECK(*v == a.chunks[i].embedding);
    }
    auto one = must(s.get_chunk(pa.chunk_ids[1]));
    REQUIRE(one);
    CHECK(one->text == a.chunks[1].text);
    CHECK_FALSE(must(s.get_chunk(999999)));
    std::vector<int64_t> want = {pb.chunk_ids[1], 999999, pa.chunk_ids[0], pb.chunk_ids[1]};
    auto got = must(s.get_chunks(want));
    REQUIRE(got.size() == 3);  // the missing id skipped, order and repeats kept
    CHECK(got[0].id == pb.chunk_ids[1]);
    CHECK(got[1].id == pa.chunk_ids[0]);
    CHECK(got[2].id == pb.chunk_ids[1]);

    auto all = must(s.list_documents());
    REQUIRE(all.size() == 2);
    CHECK(all[0].id == pa.document_id);
    CHECK(all[1].id == pb.document_id);
    CHECK(must(s.count_documents()) == 2);
    CHECK(must(s.count_chunks()) == 5);
    CHECK(must(s.count_embeddings()) == 5);

    auto removed = must(s.delete_document(pa.document_id));
    REQUIRE(removed);
    CHECK(*removed == pa.chunk_ids);
    CHECK_FALSE(must(s.get_document(pa.document_id)));
    CHECK(must(s.chunks_of(pa.document_id)).empty());
    CHECK_FALSE(must(s.delete_document(pa.document_id)));  // absent now
    CHECK(must(s.count_documents()) == 1);
    CHECK(must(s.count_chunks()) == 2);
    CHECK(must(s.integrity_check()) == "ok");
}

TEST_CASE("delete cascades to chunks and FTS rows and vectors", "[store]") {
    auto path = temp_db("cascade");
    auto s = must(Store::open(path));
    auto pa = must(s.put_document(make_doc("a", "01", 4, "gammatoken")));
    auto pb = must(s.put_document(make_doc("b", "02", 2, "deltatoken")));
    CHECK(bm25_ids(s, "gammatoken") == as_set(pa.chunk_ids));
    const uint64_t gen = must(s.vector_generation());
    REQUIRE(must(s.delete_document(pa.document_id)));
    CHECK(bm25_ids(s, "gammatoken").empty());
    CHECK(bm25_ids(s, "deltatoken") == as_set(pb.chunk_ids));
    for (int64_t id : pa.chunk_ids) {
        CHECK_FALSE(must(s.get_chunk(id)));
        CHECK_FALSE(must(s.get_embedding(id)));
    }
    CHECK(must(s.count_embeddings()) == 2);
    CHECK(must(s.vector_generation()) > gen);
    RawDb raw(path);
    CHECK(raw.query_int("SELECT count(*) FROM chunk_vectors") == 2);
    CHECK(raw.query_int("SELECT count(*) FROM chunks") == 2);
    // The FTS index itself (not the content table) holds only b's rows.
    CHECK(raw.query_int("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'chunk'") == 2);
    CHECK(must(s.integrity_check()) == "ok");
}

TEST_CASE("identical content is Unchanged and writes nothing", "[store]") {
    auto path = temp_db("dedupe");
    auto s = must(Store::open(path));
    auto first = must(s.put_document(make_doc("a", "0123", 3, "epsilontoken")));
    auto before = must(s.get_document(first.document_id));
    const uint64_t gen = must(s.vector_generation());

    // Another connection's data_version moves when anything commits: prove it with a real write,
    // then see that an identical put does not move it.
    RawDb raw(path);
    const int64_t v0 = raw.query_int("PRAGMA data_version");
    must(s.put_document(make_doc("other", "ff", 1, "othertoken")));
    const int64_t v1 = raw.query_int("PRAGMA data_version");
    CHECK(v1 != v0);

    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    DocumentInput again = make_doc("a", "0123", 3, "epsilontoken");
    again.title = "a new title is not a new version";
    auto second = must(s.put_document(again));
    CHECK(second.outcome == PutOutcome::Unchanged);
    CHECK(second.document_id == first.document_id);
    CHECK(second.chunk_ids.empty());
    CHECK(second.removed_chunk_ids.empty());
    CHECK(raw.query_int("PRAGMA data_version") == v1);
    auto after = must(s.get_document(first.document_id));
    CHECK(after->updated_at == before->updated_at);
    CHECK(after->title == before->title);
    CHECK(must(s.vector_generation()) == gen + 1);  // only "other"'s vector
    CHECK(must(s.count_chunks()) == 4);
    auto chunks = must(s.chunks_of(first.document_id));
    REQUIRE(chunks.size() == 3);
    CHECK(chunks[0].id == first.chunk_ids[0]);
}

TEST_CASE("replace removes old chunks and FTS rows and vectors", "[store]") {
    auto s = must(Store::open(temp_db("replace")));
    auto v1 = must(s.put_document(make_doc("paper.pdf", "aaaa", 3, "oldtoken")));
    auto d1 = must(s.get_document(v1.document_id));
    const uint64_t gen = must(s.vector_generation());
    std::this_thread::sleep_for(std::chrono::milliseconds(5));

    DocumentInput next = make_doc("paper.pdf", "bbbb", 2, "newtoken", 8);
    next.metadata_json = R"({"rev": 2})";
    auto v2 = must(s.put_document(next));
    CHECK(v2.outcome == PutOutcome::Replaced);
    CHECK(v2.document_id == v1.document_id);
    CHECK(v2.removed_chunk_ids == v1.chunk_ids);
    REQUIRE(v2.chunk_ids.size() == 2);
    for (int64_t id : v2.chunk_ids)
        CHECK(std::find(v1.chunk_ids.begin(), v1.chunk_ids.end(), id) == v1.chunk_ids.end());

    for (int64_t id : v1.chunk_ids) {
        CHECK_FALSE(must(s.get_chunk(id)));
        CHECK_FALSE(must(s.get_embedding(id)));
    }
    CHECK(bm25_ids(s, "oldtoken").empty());
    CHECK(bm25_ids(s, "newtoken") == as_set(v2.chunk_ids));
    // The dim may change when the replaced document held the only vectors.
    CHECK(must(s.get_embedding(v2.chunk_ids[0]))->size() == 8);
    CHECK(must(s.count_embeddings()) == 2);
    CHECK(must(s.vector_generation()) > gen);

    auto d2 = must(s.get_document(v2.document_id));
    CHECK(d2->content_hash == "bbbb");
    CHECK(d2->metadata_json == R"({"rev": 2})");
    CHECK(d2->n_chunks == 2);
    CHECK(d2->created_at == d1->created_at);
    CHECK(d2->updated_at > d1->updated_at);
    CHECK(must(s.count_documents()) == 1);
    CHECK(must(s.integrity_check()) == "ok");
}

TEST_CASE("metadata and document id filters", "[store]") {
    auto s = must(Store::open(temp_db("filter")));
    auto en = make_doc("en", "01", 2, "sharedtoken");
    en.metadata_json = R"({"lang": "en", "year": 2020, "peer": true, "a.b": "dot", "tags": ["x"]})";
    auto fr = make_doc("fr", "02", 2, "sharedtoken");
    fr.metadata_json = R"({"lang": "fr", "year": 2021, "peer": false})";
    auto none = make_doc("none", "03", 1, "sharedtoken");
    auto pen = must(s.put_document(en));
    auto pfr = must(s.put_document(fr));
    auto pnone = must(s.put_document(none));

    auto ids_of = [](const std::vector<DocumentRow>& docs) {
        std::vector<int64_t> ids;
        for (const auto& d : docs) ids.push_back(d.id);
        return ids;
    };
    using Ids = std::vector<int64_t>;
    CHECK(ids_of(must(s.list_documents(meta({{"lang", "en"}})))) == Ids{pen.document_id});
    CHECK(ids_of(must(s.list_documents(meta({{"$.lang", "fr"}})))) == Ids{pfr.document_id});
    CHECK(ids_of(must(s.list_documents(meta({{"year", "2021"}})))) == Ids{pfr.document_id});
    CHECK(ids_of(must(s.list_documents(meta({{"peer", "true"}})))) == Ids{pen.document_id});
    CHECK(ids_of(must(s.list_documents(meta({{"peer", "false"}})))) == Ids{pfr.document_id});
    CHECK(ids_of(must(s.list_documents(meta({{"a.b", "dot"}})))) == Ids{pen.document_id});
    CHECK(ids_of(must(s.list_documents(meta({{"$.tags[0]", "x"}})))) == Ids{pen.document_id});
    CHECK(must(s.list_documents(meta({{"lang", "de"}}))).empty());
    CHECK(must(s.list_documents(meta({{"lang", "en"}, {"year", "2021"}}))).empty());
    CHECK(ids_of(must(s.list_documents(ids({pnone.document_id, pfr.document_id})))) ==
          Ids{pfr.document_id, pnone.document_id});
    CHECK(must(s.list_documents(ids({pen.document_id}, {{"lang", "fr"}}))).empty());

    CHECK(bm25_ids(s, "sharedtoken").size() == 5);
    CHECK(bm25_ids(s, "sharedtoken", meta({{"lang", "fr"}})) == as_set(pfr.chunk_ids));
    CHECK(bm25_ids(s, "sharedtoken", ids({pnone.document_id})) == as_set(pnone.chunk_ids));
    CHECK(bm25_ids(s, "sharedtoken", ids({pen.document_id}, {{"peer", "true"}})) ==
          as_set(pen.chunk_ids));
    CHECK(bm25_ids(s, "sharedtoken", ids({pen.document_id}, {{"peer", "false"}})).empty());

    CHECK(must_fail(s.list_documents(meta({{"$[", "x"}}))).code == Errc::InvalidArgument);
    CHECK(must_fail(s.search_bm25("sharedtoken", 5, meta({{"$.a[", "x"}}))).code ==
          Errc::InvalidArgument);
    CHECK(must_fail(s.list_documents(meta({{"a\"b", "x"}}))).code == Errc::InvalidArgument);
}

TEST_CASE("bm25 ranks the chunk with the rare query term first", "[store]") {
    auto s = must(Store::open(temp_db("bm25")));
    const std::vector<std::string> texts = {
        "Protein folding is studied with molecular dynamics simulations of the protein chain.",
        "Kinase activity regulates the cell cycle and protein expression in the cell.",
        "The protein was purified and its structure solved by X-ray crystallography.",
        "Phosphorylation of the receptor by a kinase triggers downstream signalling.",
        "Cell membranes contain lipids and proteins that transport ions.",
        "Gene expression profiles differ between tumour cells and normal cells.",
    };
    DocumentInput d;
    d.source = "corpus";
    d.content_hash = "c0";
    for (size_t i = 0; i < texts.size(); ++i) {
        ChunkInput c;
        c.ordinal = static_cast<uint32_t>(i);
        c.text = texts[i];
        d.chunks.push_back(c);
    }
    auto put = must(s.put_document(d));

    auto hits = must(s.search_bm25("protein kinase phosphorylation", 10));
    REQUIRE(hits.size() >= 4);
    CHECK(hits[0].chunk_id == put.chunk_ids[3]);  // the only chunk with "phosphorylation"
    for (size_t i = 1; i < hits.size(); ++i) CHECK(hits[i - 1].score >= hits[i].score);
    CHECK(hits[0].score > 0);
    CHECK(must(s.search_bm25("protein kinase phosphorylation", 2)).size() == 2);
    CHECK(must(s.search_bm25("protein", 0)).empty());

    // Porter stemming: inflections meet.
    auto stem = must(s.search_bm25("solving structures", 3));
    REQUIRE_FALSE(stem.empty());
    CHECK(stem[0].chunk_id == put.chunk_ids[2]);
    auto tumours = must(s.search_bm25("tumour", 3));
    REQUIRE(tumours.size() == 1);
    CHECK(tumours[0].chunk_id == put.chunk_ids[5]);

    // User text is never FTS5 syntax.
    for (const char* q : {"AND ( \" *", "kinase AND (", "\"unbalanced", "NOT", "OR OR",
                          "col:kinase", "NEAR(kinase cell)", "^kinase", "kinase*", "-kinase",
                          "{text}: kinase", ")", "'", "\\", "\xe2\x80\x94", "", "   "}) {
        INFO(q);
        CHECK(s.search_bm25(q, 5).ok());
    }
    CHECK(must(s.search_bm25("kinase AND (", 10)).size() == 2);
    CHECK(must(s.search_bm25("the of and", 10)).empty());
    CHECK(must(s.search_bm25("", 10)).empty());
}

TEST_CASE("invalid input is rejected and writes nothing", "[store]") {
    auto s = must(Store::open(temp_db("invalid")));
    for (const char* bad : {"[1, 2]", "not json", "{\"a\":", "", "\"str\"", "null", "{'a': 1}"}) {
        INFO(bad);
        auto d = make_doc("x", "01", 2, "token");
        d.metadata_json = bad;
        auto e = must_fail(s.put_document(d));
        CHECK(e.code == Errc::InvalidArgument);
        CHECK(e.message.find("metadata") != std::string::npos);
    }
    auto no_hash = make_doc("x", "xyz!", 1, "token");
    CHECK(must_fail(s.put_document(no_hash)).code == Errc::InvalidArgument);
    auto no_source = make_doc("", "01", 1, "token");
    CHECK(must_fail(s.put_document(no_source)).code == Errc::InvalidArgument);
    auto bad_range = make_doc("x", "01", 1, "token");
    bad_range.chunks[0].begin = 10;
    bad_range.chunks[0].end = 5;
    CHECK(must_fail(s.put_document(bad_range)).code == Errc::InvalidArgument);
    auto mixed_dims = make_doc("x", "01", 2, "token");
    mixed_dims.chunks[1].embedding.push_back(1.0f);
    CHECK(must_fail(s.put_document(mixed_dims)).code == Errc::InvalidArgument);
    CHECK(must(s.count_documents()) == 0);
    CHECK(must(s.count_chunks()) == 0);
    CHECK(must(s.vector_generation()) == 0);
}

TEST_CASE("a put that fails midway leaves nothing behind", "[store]") {
    auto s = must(Store::open(temp_db("atomic")));
    auto kept = must(s.put_document(make_doc("kept", "01", 2, "keptoken")));
    const uint64_t gen = must(s.vector_generation());

    // Duplicate ordinal: chunk 0 (with its vector and FTS row) is in before chunk 2 fails.
    auto dup = make_doc("dup", "02", 3, "duptoken");
    dup.chunks[2].ordinal = 0;
    auto e = must_fail(s.put_document(dup));
    CHECK(e.code == Errc::InvalidArgument);
    CHECK(e.message.find("put_document dup") != std::string::npos);
    CHECK(e.message.find("UNIQUE") != std::string::npos);
    CHECK_FALSE(must(s.find_document("dup")));
    CHECK(bm25_ids(s, "duptoken").empty());
    CHECK(must(s.count_chunks()) == 2);
    CHECK(must(s.count_embeddings()) == 2);
    CHECK(must(s.vector_generation()) == gen);

    // A failed replace keeps the old version whole.
    auto bad_v2 = make_doc("kept", "03", 3, "v2token");
    bad_v2.chunks[1].ordinal = 2;
    CHECK_FALSE(s.put_document(bad_v2).ok());
    auto doc = must(s.find_document("kept"));
    REQUIRE(doc);
    CHECK(doc->content_hash == "01");
    CHECK(doc->n_chunks == 2);
    auto chunks = must(s.chunks_of(doc->id));
    REQUIRE(chunks.size() == 2);
    CHECK(chunks[0].id == kept.chunk_ids[0]);
    CHECK(bm25_ids(s, "keptoken") == as_set(kept.chunk_ids));
    CHECK(bm25_ids(s, "v2token").empty());
    CHECK(must(s.get_embedding(kept.chunk_ids[1])));

    // A dim other than the stored vectors' fails after its rows are written: rolled back too.
    auto wide = make_doc("wide", "04", 2, "widetoken", 16);
    auto we = must_fail(s.put_document(wide));
    CHECK(we.code == Errc::InvalidArgument);
    CHECK(we.message.find("dim") != std::string::npos);
    CHECK_FALSE(must(s.find_document("wide")));
    CHECK(must(s.count_chunks()) == 2);
    CHECK(must(s.vector_generation()) == gen);
    CHECK(must(s.integrity_check()) == "ok");
}

TEST_CASE("embeddings set and stream and move the generation", "[store]") {
    auto s = must(Store::open(temp_db("vectors")));
    auto p = must(s.put_document(make_doc("a", "01", 3, "token", 0)));
    CHECK(must(s.count_embeddings()) == 0);
    CHECK(must(s.vector_generation()) == 0);
    std::vector<std::pair<int64_t, std::vector<float>>> vs = {{p.chunk_ids[2], {1, 2, 3}},
                                                              {p.chunk_ids[0], {4, 5, 6}}};
    must(s.set_embeddings(vs));
    const uint64_t g1 = must(s.vector_generation());
    CHECK(g1 >= 1);
    CHECK(*must(s.get_embedding(p.chunk_ids[2])) == std::vector<float>{1, 2, 3});
    CHECK_FALSE(must(s.get_embedding(p.chunk_ids[1])));

    std::vector<int64_t> order;
    must(s.for_each_embedding([&](int64_t id, std::span<const float> v) {
        order.push_back(id);
        CHECK(v.size() == 3);
        return true;
    }));
    CHECK(order == std::vector<int64_t>{p.chunk_ids[0], p.chunk_ids[2]});
    int calls = 0;
    auto stop = s.for_each_embedding([&](int64_t, std::span<const float>) { return ++calls < 1; });
    REQUIRE_FALSE(stop.ok());
    CHECK(stop.error().code == Errc::Cancelled);
    CHECK(calls == 1);

    // All or nothing: a missing chunk fails the whole batch.
    std::vector<std::pair<int64_t, std::vector<float>>> bad = {{p.chunk_ids[1], {7, 8, 9}},
                                                               {999999, {1, 1, 1}}};
    auto e = s.set_embeddings(bad);
    REQUIRE_FALSE(e.ok());
    CHECK(e.error().code == Errc::NotFound);
    CHECK_FALSE(must(s.get_embedding(p.chunk_ids[1])));
    CHECK(must(s.vector_generation()) == g1);
    std::vector<std::pair<int64_t, std::vector<float>>> wrong_dim = {{p.chunk_ids[1], {1, 2}}};
    CHECK(s.set_embeddings(wrong_dim).error().code == Errc::InvalidArgument);

    std::vector<std::pair<int64_t, std::vector<float>>> remove = {{p.chunk_ids[0], {}}};
    must(s.set_embeddings(remove));
    CHECK_FALSE(must(s.get_embedding(p.chunk_ids[0])));
    CHECK(must(s.vector_generation()) > g1);
    CHECK(must(s.count_embeddings()) == 1);
}

TEST_CASE("settings round trip and persist", "[store]") {
    auto path = temp_db("settings");
    {
        auto s = must(Store::open(path));
        CHECK_FALSE(must(s.get_setting("embedder")));
        must(s.set_setting("embedder", "all-MiniLM-L6-v2"));
        must(s.set_setting("dim", "384"));
        must(s.set_setting("dim", "768"));
        CHECK(*must(s.get_setting("embedder")) == "all-MiniLM-L6-v2");
    }
    auto s = must(Store::open(path, false));
    CHECK(*must(s.get_setting("dim")) == "768");
}

// The v1 schema exactly as release 1 wrote it (no chunk_vectors, settings or counters).
TEST_CASE("a hand-made v1 database migrates with its data", "[store]") {
    auto path = temp_db("migrate");
    {
        RawDb raw(path);
        raw.exec(R"sql(
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL DEFAULT '', content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    format TEXT NOT NULL DEFAULT '', n_bytes INTEGER NOT NULL DEFAULT 0,
    n_chunks INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL, byte_begin INTEGER NOT NULL, byte_end INTEGER NOT NULL,
    source_begin INTEGER NOT NULL, source_end INTEGER NOT NULL, n_tokens INTEGER NOT NULL,
    text TEXT NOT NULL, UNIQUE (document_id, ordinal));
CREATE VIRTUAL TABLE chunks_fts USING fts5(text, content='chunks', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END;
CREATE TRIGGER chunks_fts_update AFTER UPDATE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text); END;
INSERT INTO documents VALUES (7, 'legacy.txt', 'Legacy', 'abcd', '{"lang":"en"}', 'text', 40, 2, 1000, 2000);
INSERT INTO chunks VALUES (11, 7, 0, 0, 20, 0, 20, 5, 'an old migrated passage');
INSERT INTO chunks VALUES (12, 7, 1, 20, 40, 20, 40, 5, 'second legacy sentence');
PRAGMA user_version = 1;
)sql");
    }
    auto s = must(Store::open(path, false));
    CHECK(s.schema_version() == kSchemaVersion);
    {
        RawDb raw(path);
        CHECK(raw.query_int("PRAGMA user_version") == kSchemaVersion);
    }
    auto d = must(s.get_document(7));
    REQUIRE(d);
    CHECK(d->source == "legacy.txt");
    CHECK(d->title == "Legacy");
    CHECK(d->created_at == 1000);
    CHECK(d->updated_at == 2000);
    CHECK(d->n_chunks == 2);
    CHECK(must(s.chunks_of(7)).size() == 2);
    CHECK(bm25_ids(s, "migrated") == std::set<int64_t>{11});
    CHECK(must(s.list_documents(meta({{"lang", "en"}}))).size() == 1);
    CHECK(must(s.vector_generation()) == 0);
    std::vector<std::pair<int64_t, std::vector<float>>> vs = {{11, {1, 2}}, {12, {3, 4}}};
    must(s.set_embeddings(vs));
    CHECK(must(s.vector_generation()) == 2);
    must(s.set_setting("k", "v"));
    // Identity preserved: the same source replaces in place, AUTOINCREMENT continues.
    auto r = must(s.put_document(make_doc("legacy.txt", "ef01", 1, "fresh", 2)));
    CHECK(r.outcome == PutOutcome::Replaced);
    CHECK(r.document_id == 7);
    CHECK(r.removed_chunk_ids == std::vector<int64_t>{11, 12});
    CHECK(r.chunk_ids[0] > 12);
    CHECK(must(s.integrity_check()) == "ok");
    // Reopening a current store does not migrate again.
    auto again = must(Store::open(path, false));
    CHECK(must(again.count_chunks()) == 1);
}

// v3 only adds the passage KV catalogue, so a current store without it is a v2 store.
TEST_CASE("a v2 database migrates to v3 with its data", "[store]") {
    auto path = temp_db("migrate_v2");
    {
        auto s = must(Store::open(path));
        must(s.put_document(make_doc("kept.txt", "aa", 2, "keeptoken")));
        must(s.set_setting("k", "v"));
    }
    {
        RawDb raw(path);
        raw.exec("DROP TABLE passage_kv; PRAGMA user_version = 2;");
    }
    auto s = must(Store::open(path, false));
    CHECK(s.schema_version() == 3);
    {
        RawDb raw(path);
        CHECK(raw.query_int("PRAGMA user_version") == 3);
    }
    CHECK(must(s.count_documents()) == 1);
    CHECK(bm25_ids(s, "keeptoken").size() == 2);
    CHECK(must(s.count_embeddings()) == 2);
    CHECK(*must(s.get_setting("k")) == "v");
    CHECK(must(s.list_passage_kv()).empty());
    PassageKvRow row{.model = "m", .prefix_hash = 1, .passage_hash = 2, .n_tokens = 3,
                     .file_type = 1, .file = "m/f.kv", .n_bytes = 10};
    must(s.put_passage_kv(row));
    CHECK(must(s.find_passage_kv("m", 1, 2))->file == "m/f.kv");
    CHECK(must(s.integrity_check()) == "ok");
}

TEST_CASE("open refuses missing and foreign and newer files", "[store]") {
    auto dir = test::make_temp_dir("store_open");
    auto missing = must_fail(Store::open(dir / "none.db", false));
    CHECK(missing.code == Errc::NotFound);
    CHECK_FALSE(std::filesystem::exists(dir / "none.db"));

    std::ofstream(dir / "garbage.db") << std::string(8192, 'x');
    auto garbage = must_fail(Store::open(dir / "garbage.db"));
    CHECK(garbage.code == Errc::Corrupt);
    CHECK(garbage.message.find("garbage.db") != std::string::npos);

    {
        RawDb raw(dir / "foreign.db");
        raw.exec("CREATE TABLE t(x)");
    }
    CHECK(must_fail(Store::open(dir / "foreign.db")).code == Errc::Unsupported);
    {
        RawDb raw(dir / "newer.db");
        raw.exec("CREATE TABLE t(x); PRAGMA user_version = 99;");
    }
    auto newer = must_fail(Store::open(dir / "newer.db"));
    CHECK(newer.code == Errc::Unsupported);
    CHECK(newer.message.find("99") != std::string::npos);

    auto mem = must(Store::open(":memory:"));
    CHECK(must(mem.put_document(make_doc("m", "01", 1, "memtoken"))).outcome == PutOutcome::Added);
}

TEST_CASE("integrity check catches an FTS index out of step", "[store]") {
    auto path = temp_db("integrity");
    {
        auto s = must(Store::open(path));
        must(s.put_document(make_doc("a", "01", 3, "token")));
        CHECK(must(s.integrity_check()) == "ok");
    }
    {
        RawDb raw(path);  // delete a chunk behind the trigger's back
        raw.exec("DROP TRIGGER chunks_fts_delete; DELETE FROM chunks WHERE ordinal = 1;");
    }
    auto s = must(Store::open(path));
    auto report = must(s.integrity_check());
    CHECK(report != "ok");
    CHECK(report.find("chunks_fts") != std::string::npos);
    {
        RawDb raw(path);  // restore the index, then change a chunk's text behind its back
        raw.exec("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')");
    }
    CHECK(must(s.integrity_check()) == "ok");
    {
        RawDb raw(path);
        raw.exec(
            "DROP TRIGGER chunks_fts_update; UPDATE chunks SET text = 'other words' WHERE ordinal "
            "= 0;");
    }
    CHECK(must(s.integrity_check()) != "ok");
}

namespace {

// Crash-test corpus: document i has 2 + i % 5 chunks, each holding the token u<i>x.
constexpr int kCrashMaxDocs = 100000;
int crash_n_chunks(int i) {
    return 2 + i % 5;
}
std::string crash_token(int i) {
    std::string t = "u";  // appended: GCC 12 warns falsely (-Wrestrict) on "u" + std::string&&
    t += std::to_string(i);
    t += 'x';
    return t;
}
DocumentInput crash_doc(int i) {
    char hash[32];
    std::snprintf(hash, sizeof hash, "%08x", static_cast<unsigned>(i) * 2654435761u);
    auto d = make_doc("crash/" + std::to_string(i), hash, crash_n_chunks(i), crash_token(i), 8);
    for (auto& c : d.chunks)
        c.text += " Filler text about retrieval augmented generation and BM25.";
    return d;
}

// Child: ingest documents 0, 1, ... until killed; one byte per put ('A' added, 'U' unchanged).
[[noreturn]] void crash_child(const std::filesystem::path& path, int fd) {
    auto s = Store::open(path);
    if (!s) _exit(2);
    for (int i = 0; i < kCrashMaxDocs; ++i) {
        auto r = s->put_document(crash_doc(i));
        if (!r) _exit(3);
        char c = r->outcome == PutOutcome::Added ? 'A' : 'U';
        if (write(fd, &c, 1) != 1) _exit(4);
    }
    _exit(0);
}

// Every document present is whole (chunks, FTS rows, vectors); the present ones are 0..n-1.
int64_t check_whole(Store& s) {
    CHECK(must(s.integrity_check()) == "ok");
    auto docs = must(s.list_documents());
    int64_t n_chunks = 0;
    for (size_t i = 0; i < docs.size(); ++i) {
        const int doc = static_cast<int>(i);
        INFO("document " << doc);
        REQUIRE(docs[i].source == "crash/" + std::to_string(doc));
        CHECK(docs[i].n_chunks == crash_n_chunks(doc));
        auto chunks = must(s.chunks_of(docs[i].id));
        REQUIRE(chunks.size() == static_cast<size_t>(crash_n_chunks(doc)));
        std::set<int64_t> ids;
        for (const auto& c : chunks) {
            ids.insert(c.id);
            CHECK(must(s.get_embedding(c.id)));
        }
        CHECK(bm25_ids(s, crash_token(doc)) == ids);
        n_chunks += static_cast<int64_t>(chunks.size());
    }
    const int next = static_cast<int>(docs.size());
    CHECK(bm25_ids(s, crash_token(next)).empty());
    CHECK(must(s.count_chunks()) == n_chunks);
    CHECK(must(s.count_embeddings()) == n_chunks);
    return static_cast<int64_t>(docs.size());
}

}  // namespace

TEST_CASE("a crash mid-ingest leaves each document absent or whole", "[store][crash]") {
    auto path = temp_db("crash");
    int64_t n_present = 0;
    for (int round = 0; round < 3; ++round) {
        INFO("round " << round);
        int fds[2];
        REQUIRE(pipe(fds) == 0);
        // No Store is open in this process across fork().
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(path, fds[1]);
        }
        close(fds[1]);
        int n_added = 0, n_notified = 0;
        char c = 0;
        while (n_added < 10 && read(fds[0], &c, 1) == 1) {
            ++n_notified;
            if (c == 'A') ++n_added;
        }
        REQUIRE(n_added == 10);
        // Land the kill at different points of a transaction.
        std::this_thread::sleep_for(std::chrono::microseconds(round * 1500));
        kill(pid, SIGKILL);
        int wstatus = 0;
        REQUIRE(waitpid(pid, &wstatus, 0) == pid);
        REQUIRE(WIFSIGNALED(wstatus));
        while (read(fds[0], &c, 1) == 1) ++n_notified;  // puts reported before the kill
        close(fds[0]);

        auto s = must(Store::open(path, false));
        n_present = check_whole(s);
        // Every reported commit survived; at most the one in flight committed unreported.
        CHECK(n_present >= n_notified);
        CHECK(n_present <= n_notified + 1);
    }

    // Finishing the ingest: what is there is Unchanged, the rest Added.
    auto s = must(Store::open(path, false));
    const int n_total = static_cast<int>(n_present) + 15;
    for (int i = 0; i < n_total; ++i) {
        auto r = must(s.put_document(crash_doc(i)));
        CHECK(r.outcome == (i < n_present ? PutOutcome::Unchanged : PutOutcome::Added));
    }
    CHECK(check_whole(s) == n_total);
}

TEST_CASE("a full database fails with Io and keeps its data", "[store]") {
    auto s = must(Store::open(temp_db("full")));
    for (int i = 0; i < 3; ++i)
        must(s.put_document(
            make_doc("small/" + std::to_string(i), "0" + std::to_string(i), 3, "smalltoken")));
    const uint64_t gen = must(s.vector_generation());
    const uint64_t cap = must(s.set_max_size_bytes(0));  // no growth past the current size
    CHECK(cap > 0);

    DocumentInput big = make_doc("big", "b1", 200, "bigtoken");
    for (auto& c : big.chunks) c.text += std::string(2000, 'z');
    auto e = must_fail(s.put_document(big));
    CHECK(e.code == Errc::Io);
    CHECK(e.message.find("full") != std::string::npos);
    CHECK(e.message.find("put_document big") != std::string::npos);
    CHECK_FALSE(must(s.find_document("big")));
    CHECK(must(s.count_documents()) == 3);
    CHECK(must(s.count_chunks()) == 9);
    CHECK(must(s.vector_generation()) == gen);
    CHECK(bm25_ids(s, "smalltoken").size() == 9);
    CHECK(must(s.integrity_check()) == "ok");

    CHECK(must(s.set_max_size_bytes(uint64_t{1} << 30)) >= (uint64_t{1} << 29));
    CHECK(must(s.put_document(big)).outcome == PutOutcome::Added);
}
