// Retrieval-head rankings without a model: (layer, head) lists, the ranking order, and the
// stored JSON file (atomic save, full validation on load, the default directory).
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "attnrag/pipelines/retrieval_heads.hpp"
#include "test_support.hpp"

using namespace attnrag;
using namespace attnrag::pipelines;
namespace fs = std::filesystem;

namespace {

// A 3 x 2 ranking with distinct scores, in ranking order.
HeadRanking sample() {
    HeadRanking r;
    r.fingerprint = "00ff00ff00ff00ff";
    r.model_name = "tiny";
    r.n_layer = 3;
    r.n_head = 2;
    r.setup = {"/data/hay", {1000, 2000}, {0, 50, 100}, 2, 6, 7};
    r.n_trials = 12;
    r.n_rows = 200;
    r.n_rows_correct = 150;
    r.seconds = 1.5;
    const double scores[3][2] = {{0.0, 0.05}, {0.8, 0.1}, {0.3, 0.3}};
    for (int32_t l = 0; l < 3; ++l) {
        for (int32_t h = 0; h < 2; ++h) {
            r.heads.push_back({{l, h}, scores[l][h], scores[l][h] / 2});
        }
    }
    sort_head_scores(r.heads);
    return r;
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void write(const fs::path& p, const std::string& text) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << text;
}

// Restores an environment variable when it goes out of scope.
class EnvGuard {
 public:
    explicit EnvGuard(const char* name) : name_(name) {
        if (const char* v = std::getenv(name)) old_ = v;
    }
    ~EnvGuard() {
        if (old_) {
            ::setenv(name_, old_->c_str(), 1);
        } else {
            ::unsetenv(name_);
        }
    }
    EnvGuard(const EnvGuard&) = delete;
    EnvGuard& operator=(const EnvGuard&) = delete;

 private:
    const char* name_;
    std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("layer head lists parse and format", "[heads]") {
    auto v = parse_layer_heads("15:3, 0:0 ,29:8");
    REQUIRE(v.ok());
    CHECK(*v == std::vector<LayerHead>{{15, 3}, {0, 0}, {29, 8}});
    CHECK(format_layer_heads(*v) == "15:3,0:0,29:8");
    for (const char* bad : {"", "15", "15:", ":3", "a:b", "1:2,", "1:2,,3:4", "-1:2", "1:2:3"}) {
        INFO(bad);
        auto r = parse_layer_heads(bad);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == Errc::InvalidArgument);
    }
    CHECK(check_layer_heads({{0, 0}, {2, 1}}, 3, 2, "x").ok());
    CHECK(check_layer_heads({}, 3, 2, "x").ok());
    auto range = check_layer_heads({{3, 0}}, 3, 2, "x");
    REQUIRE_FALSE(range.ok());
    CHECK(range.error().message.rfind("x: ", 0) == 0);
    CHECK_FALSE(check_layer_heads({{0, 2}}, 3, 2, "x").ok());
    CHECK_FALSE(check_layer_heads({{1, 1}, {0, 0}, {1, 1}}, 3, 2, "x").ok());
}

TEST_CASE("the ranking order is score then score_correct then layer and head", "[heads]") {
    std::vector<HeadScore> h = {{{2, 0}, 0.5, 0.1},
                                {{0, 1}, 0.5, 0.2},
                                {{1, 1}, 0.0, 0.0},
                                {{1, 0}, 0.0, 0.0},
                                {{0, 0}, 0.9, 0.0}};
    sort_head_scores(h);
    const std::vector<LayerHead> want = {{0, 0}, {0, 1}, {2, 0}, {1, 0}, {1, 1}};
    for (size_t i = 0; i < want.size(); ++i) CHECK(h[i].head == want[i]);
    const HeadRanking r = sample();
    CHECK(r.top(2) == std::vector<LayerHead>{{1, 0}, {2, 0}});
    CHECK(r.top(100).size() == 6);
    CHECK(r.top(0).empty());
    CHECK(r.mean_score() == Approx((0.0 + 0.05 + 0.8 + 0.1 + 0.3 + 0.3) / 6));
}

TEST_CASE("a ranking file round trips and is replaced atomically", "[heads]") {
    const fs::path dir = test::make_temp_dir("heads_file");
    const HeadRanking r = sample();
    auto path = save_head_ranking(r, dir);
    REQUIRE(path.ok());
    CHECK(*path == head_ranking_path(dir, r.fingerprint));
    auto back = load_head_ranking(dir, r.fingerprint);
    REQUIRE(back.ok());
    CHECK(back->heads == r.heads);
    CHECK(back->model_name == "tiny");
    CHECK(back->setup.haystack == "/data/hay");
    CHECK(back->setup.lengths == r.setup.lengths);
    CHECK(back->setup.depths == r.setup.depths);
    CHECK(back->setup.n_trials == 2);
    CHECK(back->setup.n_words == 6);
    CHECK(back->setup.seed == 7);
    CHECK(back->n_trials == 12);
    CHECK(back->n_rows == 200);
    CHECK(back->n_rows_correct == 150);
    CHECK(back->seconds == 1.5);

    // Saving again replaces the file; no temporary is left behind.
    HeadRanking r2 = r;
    r2.n_rows = 300;
    REQUIRE(save_head_ranking(r2, dir).ok());
    auto again = load_head_ranking(dir, r.fingerprint);
    REQUIRE(again.ok());
    CHECK(again->n_rows == 300);
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
}

TEST_CASE("broken ranking files give errors", "[heads]") {
    const fs::path dir = test::make_temp_dir("heads_broken");
    const HeadRanking r = sample();
    REQUIRE(save_head_ranking(r, dir).ok());
    const fs::path file = head_ranking_path(dir, r.fingerprint);
    const std::string good = slurp(file);
    const nlohmann::json j = nlohmann::json::parse(good);

    auto expect = [&](const std::string& text, Errc code, const std::string& what) {
        INFO(what);
        write(file, text);
        auto got = load_head_ranking(dir, r.fingerprint);
        REQUIRE_FALSE(got.ok());
        CHECK(got.error().code == code);
        CHECK(got.error().message.find(file.string()) != std::string::npos);
    };
    expect("", Errc::Corrupt, "empty file");
    expect(good.substr(0, good.size() / 2), Errc::Corrupt, "truncated");
    expect("[1, 2, 3]", Errc::Corrupt, "an array");
    auto edited = [&](auto&& change) {
        nlohmann::json k = j;
        change(k);
        return k.dump();
    };
    expect(edited([](auto& k) { k["format"] = "something.else"; }), Errc::Corrupt, "format");
    expect(edited([](auto& k) { k["version"] = 99; }), Errc::Unsupported, "version");
    expect(edited([](auto& k) { k.erase("heads"); }), Errc::Corrupt, "no heads");
    expect(edited([](auto& k) { k["n_layer"] = "three"; }), Errc::Corrupt, "mistyped n_layer");
    expect(edited([](auto& k) { k["setup"]["lengths"] = {1, "x"}; }), Errc::Corrupt, "lengths");
    expect(edited([](auto& k) { k["heads"][0]["score"] = 1.5; }), Errc::Corrupt, "score > 1");
    expect(edited([](auto& k) { k["heads"][0]["layer"] = nullptr; }), Errc::Corrupt, "null layer");
    expect(edited([](auto& k) { k["heads"].erase(5); }), Errc::Corrupt, "a head missing");
    expect(edited([](auto& k) { k["heads"][5] = k["heads"][4]; }), Errc::Corrupt, "a head twice");
    expect(edited([](auto& k) { std::swap(k["heads"][0], k["heads"][1]); }), Errc::Corrupt,
           "out of ranking order");
    expect(edited([](auto& k) { k["heads"][2]["head"] = 7; }), Errc::Corrupt, "head out of range");
    expect(edited([](auto& k) { k["n_rows_correct"] = 1000; }), Errc::Corrupt, "row counts");
    expect(edited([](auto& k) { k["fingerprint"] = "1111222233334444"; }), Errc::Corrupt,
           "another model's file");

    fs::remove(file);
    auto missing = load_head_ranking(dir, r.fingerprint);
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::NotFound);
    fs::create_directories(file);  // a directory where the file should be
    auto not_file = load_head_ranking(dir, r.fingerprint);
    REQUIRE_FALSE(not_file.ok());
    CHECK(not_file.error().code == Errc::Io);
}

TEST_CASE("inconsistent rankings and unsafe fingerprints are not saved", "[heads]") {
    const fs::path dir = test::make_temp_dir("heads_save");
    HeadRanking r = sample();
    r.fingerprint = "../escape";
    auto a = save_head_ranking(r, dir);
    REQUIRE_FALSE(a.ok());
    CHECK(a.error().code == Errc::InvalidArgument);
    r = sample();
    r.heads.pop_back();
    CHECK_FALSE(save_head_ranking(r, dir).ok());
    r = sample();
    std::swap(r.heads[0], r.heads[1]);
    CHECK_FALSE(save_head_ranking(r, dir).ok());
    CHECK(fs::is_empty(dir));
}

TEST_CASE("the default heads directory follows the environment", "[heads]") {
    EnvGuard g1("ATTNRAG_HEADS_DIR"), g2("XDG_CACHE_HOME"), g3("HOME");
    ::setenv("ATTNRAG_HEADS_DIR", "/x/heads", 1);
    ::setenv("XDG_CACHE_HOME", "/x/cache", 1);
    ::setenv("HOME", "/x/home", 1);
    CHECK(default_heads_dir().value() == fs::path("/x/heads"));
    ::unsetenv("ATTNRAG_HEADS_DIR");
    CHECK(default_heads_dir().value() == fs::path("/x/cache/attnrag/heads"));
    ::unsetenv("XDG_CACHE_HOME");
    CHECK(default_heads_dir().value() == fs::path("/x/home/.cache/attnrag/heads"));
    ::unsetenv("HOME");
    auto none = default_heads_dir();
    REQUIRE_FALSE(none.ok());
    CHECK(none.error().code == Errc::NotFound);
}
