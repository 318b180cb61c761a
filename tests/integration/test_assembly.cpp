// Context assembly on the real SmolLM2: block modes against full prefill, passage states reused
// from the store across a restart, fp16 and q8 files spliced.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include "attnrag/context.hpp"
#include "attnrag/generate.hpp"
#include "attnrag/kv_store.hpp"
#include "attnrag/model.hpp"
#include "attnrag/pipelines/assembly.hpp"
#include "attnrag/store.hpp"
#include "real_model.hpp"
#include "test_support.hpp"

using namespace attnrag;
using test::real_model;
using pipelines::Assembly;

namespace {

std::vector<TokenId> encode(const std::string& text) {
    auto ids = real_model().tokenizer().encode(text, true);
    REQUIRE(ids.ok());
    return *ids;
}

int32_t argmax(std::span<const float> x) {
    return static_cast<int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    return m;
}

std::string greedy(Context& ctx, int max_tokens) {
    GenerateParams gp;
    gp.max_tokens = max_tokens;
    auto r = generate_from_context(ctx, gp);
    REQUIRE(r.ok());
    return r->text;
}

const char* kPrefix = "<|im_start|>system\nAnswer the question from the passages.<|im_end|>\n<|im_start|>user\n";
const std::vector<std::string> kPassages = {
    "The Rhine begins in the Swiss Alps and flows north through Germany and the Netherlands into the North Sea.\n\n",
    "Mount Kilimanjaro in Tanzania is the highest mountain in Africa, at 5,895 metres.\n\n",
    "The Danube flows through ten countries, more than any other river, and ends in the Black Sea.\n\n",
};
const char* kQuestion = "Question: Into which sea does the Rhine flow?<|im_end|>\n<|im_start|>assistant\n";

}  // namespace

TEST_CASE("blocks with one passage equals full prefill", "[smollm2][assembly]") {
    const Model& model = real_model();
    auto prefix = encode(kPrefix), question = encode(kQuestion);
    std::vector<std::vector<TokenId>> passages = {encode(kPassages[0])};
    auto cache = pipelines::PassageKvCache::create(model, prefix, nullptr, 2);
    REQUIRE(cache.ok());
    auto full_ctx = Context::create(model, {.n_ctx = 1024, .n_threads = 2});
    auto block_ctx = Context::create(model, {.n_ctx = 1024, .n_threads = 2});
    REQUIRE(full_ctx.ok());
    REQUIRE(block_ctx.ok());
    auto full = pipelines::assemble(*full_ctx, prefix, passages, question, {.mode = Assembly::Full}, nullptr);
    auto blocks = pipelines::assemble(*block_ctx, prefix, passages, question, {.mode = Assembly::Blocks}, &*cache);
    REQUIRE(full.ok());
    REQUIRE(blocks.ok());
    CHECK(blocks->n_passages_encoded == 1);
    CHECK(blocks->passages[0].begin == static_cast<int32_t>(prefix.size()));
    CHECK(full_ctx->n_past() == block_ctx->n_past());
    CHECK(std::equal(full_ctx->slot_tokens().begin(), full_ctx->slot_tokens().end(), block_ctx->slot_tokens().begin()));
    // One passage after the prefix sees exactly what it sees in the full prompt: the two differ
    // only by float rounding (how the tokens were batched; the shared passage state read as its
    // own key run), which SmolLM2's int8 activation quantization amplifies to about one logit,
    // never in the answer.
    const double diff = max_abs_diff(full_ctx->logits(0), block_ctx->logits(0));
    INFO("max |logit difference| " << diff);
    CHECK(diff < 1.5);
    CHECK(argmax(full_ctx->logits(0)) == argmax(block_ctx->logits(0)));
    // The answers agree through the answer itself; the words after it may part (a logit of
    // rounding decides between "." and ", which ..." on some BLAS builds).
    const std::string a = greedy(*full_ctx, 12), b = greedy(*block_ctx, 12);
    INFO("full: " << a << " | blocks: " << b);
    const std::string common(a.begin(), std::mismatch(a.begin(), a.end(), b.begin(), b.end()).first);
    CHECK(common.find("North Sea") != std::string::npos);
}

TEST_CASE("passage states persist across a restart and are reused from disk", "[smollm2][assembly]") {
    const Model& model = real_model();
    auto dir = test::make_temp_dir("assembly-kv");
    auto prefix = encode(kPrefix), question = encode(kQuestion);
    std::vector<std::vector<TokenId>> passages;
    for (const auto& p : kPassages) passages.push_back(encode(p));
    std::string first_answer;
    for (KvFileType type : {KvFileType::F16, KvFileType::Q8}) {
        const auto sub = dir / (type == KvFileType::F16 ? "f16" : "q8");
        std::filesystem::create_directories(sub);
        for (int run = 0; run < 2; ++run) {
            // A "process": its own catalogue connection, store and cache.
            auto catalogue = Store::open(sub / "kv.db");
            REQUIRE(catalogue.ok());
            PassageKvStoreOptions o;
            o.directory = sub / "kv";
            o.catalogue = &*catalogue;
            o.file_type = type;
            auto store = PassageKvStore::open(o);
            REQUIRE(store.ok());
            auto cache = pipelines::PassageKvCache::create(model, prefix, &*store, 2);
            REQUIRE(cache.ok());
            auto ctx = Context::create(model, {.n_ctx = 1024, .n_threads = 2});
            REQUIRE(ctx.ok());
            auto r = pipelines::assemble(*ctx, prefix, passages, question, {.mode = Assembly::Blocks}, &*cache);
            REQUIRE(r.ok());
            const auto st = store->stats();
            if (run == 0) {
                CHECK(r->n_passages_encoded == 3);
                CHECK(st.files_written == 4);  // the prefix and three passages
            } else {
                CHECK(r->n_passages_reused == 3);
                CHECK(r->n_passages_encoded == 0);
                CHECK(st.disk_hits == 4);
                CHECK(st.files_written == 0);
            }
            const std::string answer = greedy(*ctx, 12);
            INFO("file type " << static_cast<int>(type) << " run " << run << ": " << answer);
            CHECK(answer.find("North Sea") != std::string::npos);
            if (first_answer.empty()) first_answer = answer;
        }
    }
}

TEST_CASE("every block mode answers and reports what it did", "[smollm2][assembly]") {
    const Model& model = real_model();
    auto prefix = encode(kPrefix), question = encode(kQuestion);
    std::vector<std::vector<TokenId>> passages;
    for (const auto& p : kPassages) passages.push_back(encode(p));
    PassageKvStoreOptions o;
    auto store = PassageKvStore::open(o);
    REQUIRE(store.ok());
    auto cache = pipelines::PassageKvCache::create(model, prefix, &*store, 2);
    REQUIRE(cache.ok());
    auto ctx = Context::create(model, {.n_ctx = 1024, .n_threads = 2});
    REQUIRE(ctx.ok());

    pipelines::AssemblyOptions ape{.mode = Assembly::BlocksApe};
    auto r = pipelines::assemble(*ctx, prefix, passages, question, ape, &*cache);
    REQUIRE(r.ok());
    CHECK(ctx->default_ape().temperature == Approx(0.9f));
    CHECK(greedy(*ctx, 12).find("North Sea") != std::string::npos);

    pipelines::AssemblyOptions first{.mode = Assembly::BlocksRecompute};
    first.recompute_first = 4;
    r = pipelines::assemble(*ctx, prefix, passages, question, first, &*cache);
    REQUIRE(r.ok());
    CHECK(r->n_recomputed == 12);
    CHECK(r->n_passages_reused == 3);
    CHECK(ctx->default_ape().temperature == 1.0f);  // APE does not leak into the next prompt
    CHECK(greedy(*ctx, 12).find("North Sea") != std::string::npos);

    pipelines::AssemblyOptions drift{.mode = Assembly::BlocksRecompute};
    drift.recompute_ratio = 0.25f;
    r = pipelines::assemble(*ctx, prefix, passages, question, drift, &*cache);
    REQUIRE(r.ok());
    int32_t n_passage_tokens = 0;
    for (const auto& p : passages) n_passage_tokens += static_cast<int32_t>(p.size());
    CHECK(r->n_recomputed == static_cast<int32_t>(std::ceil(0.25 * n_passage_tokens)));

    // Attention read over the passages from the last prompt row.
    ProbeResult att;
    pipelines::AssemblyOptions probed{.mode = Assembly::Blocks};
    r = pipelines::assemble(*ctx, prefix, passages, question, probed, &*cache, &att);
    REQUIRE(r.ok());
    CHECK(att.n_layers == model.hparams().n_layer);
    CHECK(att.n_spans == 3);
    const auto mass = att.mean_span_mass(0);
    for (float m : mass) CHECK(m > 0.0f);

    // Too long for the window.
    auto small = Context::create(model, {.n_ctx = 64, .n_threads = 1});
    REQUIRE(small.ok());
    auto too_long = pipelines::assemble(*small, prefix, passages, question, {.mode = Assembly::Blocks}, &*cache);
    CHECK(too_long.error().code == Errc::OutOfRange);
    CHECK(pipelines::parse_assembly("blocks-ape").value() == Assembly::BlocksApe);
    CHECK(!pipelines::parse_assembly("fast").ok());
}
