// Tests for the GGUF reader and writer: round trips, every structural error, the real model.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "attnrag/gguf.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using attnrag::Errc;
using attnrag::GgufFile;
using attnrag::GgufType;
using attnrag::GgufWriter;
using attnrag::kernels::DType;

namespace {

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<uint8_t> out(n);
    for (auto& b : out) b = static_cast<uint8_t>(rng());
    return out;
}

// Bytes of a tensor of `type` and `shape` (ggml order).
size_t tensor_bytes(DType type, const std::vector<int64_t>& shape) {
    size_t n = attnrag::kernels::row_bytes(type, shape[0]);
    for (size_t i = 1; i < shape.size(); ++i) n *= static_cast<size_t>(shape[i]);
    return n;
}

template <class T>
std::vector<uint8_t> le_bytes(std::initializer_list<T> values) {
    std::vector<uint8_t> out(values.size() * sizeof(T));
    size_t at = 0;
    for (T v : values) {
        std::memcpy(out.data() + at, &v, sizeof v);
        at += sizeof v;
    }
    return out;
}

template <class T>
void poke(std::vector<uint8_t>& buf, size_t at, T v) {
    REQUIRE(at + sizeof v <= buf.size());
    std::memcpy(buf.data() + at, &v, sizeof v);
}

template <class T>
T peek(const std::vector<uint8_t>& buf, size_t at) {
    T v;
    std::memcpy(&v, buf.data() + at, sizeof v);
    return v;
}

// Position of the first occurrence of a length-prefixed string (as GGUF stores keys and names).
size_t find_gguf_string(const std::vector<uint8_t>& buf, std::string_view s) {
    std::vector<uint8_t> needle = le_bytes<uint64_t>({s.size()});
    needle.insert(needle.end(), s.begin(), s.end());
    auto it = std::search(buf.begin(), buf.end(), needle.begin(), needle.end());
    REQUIRE(it != buf.end());
    return static_cast<size_t>(it - buf.begin());
}

// Field positions in a tensor info: name, n_dims, dims..., type, offset.
struct TensorInfoAt {
    size_t name, n_dims, dims, type, offset;
};
TensorInfoAt tensor_info_at(const std::vector<uint8_t>& buf, std::string_view name) {
    TensorInfoAt at{};
    at.name = find_gguf_string(buf, name);
    at.n_dims = at.name + 8 + name.size();
    at.dims = at.n_dims + 4;
    at.type = at.dims + 8 * peek<uint32_t>(buf, at.n_dims);
    at.offset = at.type + 4;
    return at;
}
// Position of a metadata entry's type field.
size_t kv_type_at(const std::vector<uint8_t>& buf, std::string_view key) {
    return find_gguf_string(buf, key) + 8 + key.size();
}

// A small file with two tensors of different types and a few keys.
GgufWriter small_writer() {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set_string_array("tokenizer.ggml.tokens", {"a", "", "bc"});
    w.set_f32_array("some.floats", {1.5f, -2.0f});
    REQUIRE(w.add_tensor("tensor.one", {32, 2}, DType::Q8_0,
                         random_bytes(tensor_bytes(DType::Q8_0, {32, 2}), 1))
                .ok());
    REQUIRE(w.add_tensor("tensor.two", {3}, DType::F32, random_bytes(12, 2)).ok());
    return w;
}

// Checks that `r` failed with `code` and a message naming the file, an offset and each of `parts`.
template <class T>
void check_error(const attnrag::Result<T>& r, Errc code, const std::string& file,
                 std::initializer_list<std::string_view> parts) {
    REQUIRE_FALSE(r.ok());
    INFO(r.error().to_string());
    CHECK(r.error().code == code);
    CHECK(r.error().message.find(file) != std::string::npos);
    CHECK(r.error().message.find("offset ") != std::string::npos);
    for (std::string_view p : parts) CHECK(r.error().message.find(p) != std::string::npos);
}

attnrag::Result<GgufFile> parse(const std::vector<uint8_t>& bytes) {
    return GgufFile::from_bytes(bytes, "test.gguf");
}

void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    REQUIRE(f.good());
}

// Minimal hand-built header: magic, version 3, counts; the caller appends the rest.
std::vector<uint8_t> header(uint64_t n_tensors, uint64_t n_kv) {
    std::vector<uint8_t> b = {'G', 'G', 'U', 'F'};
    auto v = le_bytes<uint32_t>({3});
    b.insert(b.end(), v.begin(), v.end());
    auto c = le_bytes<uint64_t>({n_tensors, n_kv});
    b.insert(b.end(), c.begin(), c.end());
    return b;
}
void append_string(std::vector<uint8_t>& b, std::string_view s) {
    auto n = le_bytes<uint64_t>({s.size()});
    b.insert(b.end(), n.begin(), n.end());
    b.insert(b.end(), s.begin(), s.end());
}
void append_u32(std::vector<uint8_t>& b, uint32_t v) {
    auto x = le_bytes<uint32_t>({v});
    b.insert(b.end(), x.begin(), x.end());
}
void append_u64(std::vector<uint8_t>& b, uint64_t v) {
    auto x = le_bytes<uint64_t>({v});
    b.insert(b.end(), x.begin(), x.end());
}

}  // namespace

TEST_CASE("metadata of every type round-trips through a file") {
    GgufWriter w;
    w.set_u8("k.u8", 200);
    w.set_i8("k.i8", -100);
    w.set_u16("k.u16", 60000);
    w.set_i16("k.i16", -30000);
    w.set_u32("k.u32", 4000000000u);
    w.set_i32("k.i32", -2000000000);
    w.set_u64("k.u64", 1ull << 40);
    w.set_u64("k.u64_big", std::numeric_limits<uint64_t>::max());
    w.set_i64("k.i64", std::numeric_limits<int64_t>::min());
    w.set_f32("k.f32", 0.25f);
    w.set_f64("k.f64", 1e300);
    w.set_bool("k.true", true);
    w.set_bool("k.false", false);
    w.set_string("k.str", "h\xc3\xa9llo \"world\"\n");
    w.set_string("k.empty_str", "");
    w.set_string_array("k.strs", {"<|endoftext|>", "", "\xe2\x96\x81the", std::string(300, 'x')});
    w.set_string_array("k.empty_strs", {});
    w.set_i32_array("k.i32s", {1, -2, 3});
    w.set_i32_array("k.empty_i32s", {});
    w.set_f32_array("k.f32s", {0.5f, -1.0f});
    w.set_f32_array("k.empty_f32s", {});
    w.set_array("k.u8s", GgufType::U8, le_bytes<uint8_t>({1, 255}));
    w.set_array("k.u64s", GgufType::U64, le_bytes<uint64_t>({7, 1ull << 63}));
    w.set_array("k.f64s", GgufType::F64, le_bytes<double>({2.5, -0.125}));
    w.set_array("k.bools", GgufType::Bool, le_bytes<uint8_t>({1, 0}));
    w.set_u32("k.replaced", 1);
    w.set_u32("k.replaced", 2);  // replaces in place, no duplicate key

    auto dir = attnrag::test::make_temp_dir("gguf_meta");
    auto path = (dir / "meta.gguf").string();
    REQUIRE(w.write(path).ok());
    auto r = GgufFile::open(path);
    REQUIRE(r.ok());
    const GgufFile& f = *r;

    CHECK(f.version() == 3);
    CHECK(f.alignment() == 32);
    CHECK(f.path() == path);
    CHECK(f.file_bytes() == fs::file_size(path));
    CHECK(f.tensors().empty());
    auto keys = f.keys();
    REQUIRE(keys.size() == 26);
    CHECK(keys.front() == "k.u8");
    CHECK(keys.back() == "k.replaced");

    CHECK(*f.get_int("k.u8") == 200);
    CHECK(*f.get_int("k.i8") == -100);
    CHECK(*f.get_int("k.u16") == 60000);
    CHECK(*f.get_int("k.i16") == -30000);
    CHECK(*f.get_int("k.u32") == 4000000000ll);
    CHECK(*f.get_int("k.i32") == -2000000000);
    CHECK(*f.get_int("k.u64") == (1ll << 40));
    CHECK(*f.get_int("k.i64") == std::numeric_limits<int64_t>::min());
    CHECK(*f.get_int("k.replaced") == 2);
    CHECK(*f.get_float("k.f32") == 0.25);
    CHECK(*f.get_float("k.f64") == 1e300);
    CHECK(*f.get_float("k.i32") == -2e9);
    CHECK(*f.get_bool("k.true"));
    CHECK_FALSE(*f.get_bool("k.false"));
    CHECK(*f.get_string("k.str") == "h\xc3\xa9llo \"world\"\n");
    CHECK(f.get_string("k.empty_str").value().empty());

    auto strs = f.get_string_array("k.strs");
    REQUIRE(strs.ok());
    CHECK(*strs ==
          std::vector<std::string>{"<|endoftext|>", "", "\xe2\x96\x81the", std::string(300, 'x')});
    CHECK(f.get_string_array("k.empty_strs")->empty());
    CHECK(*f.get_int_array("k.i32s") == std::vector<int64_t>{1, -2, 3});
    CHECK(f.get_int_array("k.empty_i32s")->empty());
    CHECK(*f.get_float_array("k.f32s") == std::vector<double>{0.5, -1.0});
    CHECK(f.get_float_array("k.empty_f32s")->empty());
    CHECK(*f.get_int_array("k.u8s") == std::vector<int64_t>{1, 255});
    CHECK(*f.get_float_array("k.f64s") == std::vector<double>{2.5, -0.125});
    CHECK(*f.get_float_array("k.i32s") == std::vector<double>{1, -2, 3});

    CHECK(*f.type_of("k.u16") == GgufType::U16);
    CHECK(*f.type_of("k.strs") == GgufType::Array);
    CHECK(*f.array_type_of("k.strs") == GgufType::String);
    CHECK(*f.array_type_of("k.bools") == GgufType::Bool);
    CHECK(*f.array_size("k.strs") == 4);
    CHECK(*f.array_size("k.empty_f32s") == 0);
    CHECK(f.has("k.u8"));
    CHECK_FALSE(f.has("k.nope"));

    SECTION("wrong types and ranges are errors naming the key and the actual type") {
        auto e = f.get_int("k.str");
        REQUIRE_FALSE(e.ok());
        CHECK(e.error().code == Errc::Corrupt);
        CHECK(e.error().message.find("k.str") != std::string::npos);
        CHECK(e.error().message.find("string") != std::string::npos);
        auto big = f.get_int("k.u64_big");
        REQUIRE_FALSE(big.ok());
        CHECK(big.error().code == Errc::OutOfRange);
        CHECK(big.error().message.find("18446744073709551615") != std::string::npos);
        auto big_elem = f.get_int_array("k.u64s");
        REQUIRE_FALSE(big_elem.ok());
        CHECK(big_elem.error().code == Errc::OutOfRange);
        CHECK(big_elem.error().message.find("element 1") != std::string::npos);
        CHECK(f.get_float("k.u64_big").ok());
        CHECK_FALSE(f.get_bool("k.u8").ok());
        CHECK_FALSE(f.get_float("k.true").ok());
        CHECK_FALSE(f.get_string("k.strs").ok());
        auto arr = f.get_string_array("k.i32s");
        REQUIRE_FALSE(arr.ok());
        CHECK(arr.error().message.find("array of i32") != std::string::npos);
        CHECK_FALSE(f.get_int_array("k.f32s").ok());
        CHECK_FALSE(f.array_type_of("k.u8").ok());
        auto missing = f.get_int("k.nope");
        REQUIRE_FALSE(missing.ok());
        CHECK(missing.error().code == Errc::NotFound);
        CHECK(missing.error().message.find("k.nope") != std::string::npos);
        CHECK(f.type_of("k.nope").error().code == Errc::NotFound);
    }

    SECTION("value_to_string") {
        CHECK(f.value_to_string("k.i8") == "-100");
        CHECK(f.value_to_string("k.u64_big") == "18446744073709551615");
        CHECK(f.value_to_string("k.f32") == "0.25");
        CHECK(f.value_to_string("k.true") == "true");
        CHECK(f.value_to_string("k.str") == "\"h\xc3\xa9llo \\\"world\\\"\\n\"");
        CHECK(f.value_to_string("k.i32s") == "[i32; 3] [1, -2, 3]");
        CHECK(f.value_to_string("k.i32s", 2) == "[i32; 3] [1, -2, ...]");
        CHECK(f.value_to_string("k.empty_strs") == "[string; 0]");
        CHECK(f.value_to_string("k.strs", 2) == "[string; 4] [\"<|endoftext|>\", \"\", ...]");
        CHECK(f.value_to_string("k.nope") == "<missing>");
    }
}

TEST_CASE("tensors of several types round-trip with aligned offsets") {
    const uint32_t alignment = GENERATE(32u, 64u);
    struct Spec {
        std::string name;
        std::vector<int64_t> shape;
        DType type;
    };
    const std::vector<Spec> specs = {
        {"f32.vec", {7}, DType::F32},
        {"f16.mat", {3, 5}, DType::F16},
        {"bf16.mat", {5, 3}, DType::BF16},
        {"q4_0.mat", {64, 3}, DType::Q4_0},
        {"q4_1.cube", {32, 3, 2}, DType::Q4_1},
        {"q8_0.mat", {96, 2}, DType::Q8_0},
        {"q4_k.mat", {256, 2}, DType::Q4_K},
        {"q5_k.vec", {512}, DType::Q5_K},
        {"q6_k.4d", {256, 1, 2, 1}, DType::Q6_K},
    };
    GgufWriter w;
    if (alignment != 32) w.set_alignment(alignment);
    w.set_string("general.architecture", "llama");
    std::vector<std::vector<uint8_t>> datas;
    for (size_t i = 0; i < specs.size(); ++i) {
        datas.push_back(random_bytes(tensor_bytes(specs[i].type, specs[i].shape),
                                     static_cast<uint32_t>(i + 10)));
        REQUIRE(w.add_tensor(specs[i].name, specs[i].shape, specs[i].type, datas.back()).ok());
    }
    auto dir = attnrag::test::make_temp_dir("gguf_tensors");
    auto path = (dir / "t.gguf").string();
    REQUIRE(w.write(path).ok());
    // No temporary left beside the file.
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);

    auto r = GgufFile::open(path);
    REQUIRE(r.ok());
    const GgufFile& f = *r;
    CHECK(f.alignment() == alignment);
    CHECK(f.data_offset() % alignment == 0);
    if (alignment != 32) CHECK(*f.get_int("general.alignment") == alignment);
    REQUIRE(f.tensors().size() == specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
        const auto& t = f.tensors()[i];
        INFO(t.name);
        CHECK(t.name == specs[i].name);
        CHECK(t.shape == specs[i].shape);
        CHECK(t.type == specs[i].type);
        CHECK(t.offset % alignment == 0);
        CHECK(t.n_bytes == datas[i].size());
        int64_t n = 1;
        for (int64_t d : specs[i].shape) n *= d;
        CHECK(t.n_elements == n);
        CHECK(f.find_tensor(specs[i].name) == &t);
        const uint8_t* p = f.tensor_data(t);
        CHECK(reinterpret_cast<uintptr_t>(p) % alignment == 0);
        CHECK(std::equal(datas[i].begin(), datas[i].end(), p));
    }
    CHECK(f.find_tensor("nope") == nullptr);

    // The same bytes parse identically from memory.
    auto bytes = w.to_bytes();
    CHECK(bytes.size() == f.file_bytes());
    auto m = GgufFile::from_bytes(bytes);
    REQUIRE(m.ok());
    CHECK(m->tensors().size() == specs.size());
    CHECK(
        std::equal(datas[3].begin(), datas[3].end(), m->tensor_data(*m->find_tensor("q4_0.mat"))));

    // Moving keeps the mapping and the tensor pointers valid.
    const uint8_t* before = f.tensor_data(f.tensors()[0]);
    GgufFile moved = std::move(*r);
    CHECK(moved.tensor_data(moved.tensors()[0]) == before);
    CHECK(std::equal(datas[0].begin(), datas[0].end(), before));
}

TEST_CASE("a v2 file reads like v3") {
    auto bytes = small_writer().to_bytes();
    poke<uint32_t>(bytes, 4, 2);
    auto dir = attnrag::test::make_temp_dir("gguf_v2");
    auto path = dir / "v2.gguf";
    write_file(path, bytes);
    auto r = GgufFile::open(path.string());
    REQUIRE(r.ok());
    CHECK(r->version() == 2);
    CHECK(*r->get_string("general.architecture") == "llama");
    CHECK(*r->get_string_array("tokenizer.ggml.tokens") == std::vector<std::string>{"a", "", "bc"});
    REQUIRE(r->tensors().size() == 2);
    CHECK(r->find_tensor("tensor.two")->n_bytes == 12);
}

TEST_CASE("a file truncated at any byte is an error, never a crash") {
    auto bytes = small_writer().to_bytes();
    auto full = parse(bytes);
    REQUIRE(full.ok());
    // Only the padding after the last tensor's data may be cut.
    uint64_t data_end = 0;
    for (const auto& t : full->tensors()) {
        data_end = std::max(data_end, full->data_offset() + t.offset + t.n_bytes);
    }
    REQUIRE(data_end <= bytes.size());
    for (size_t n = 0; n < bytes.size(); ++n) {
        std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
        auto r = parse(cut);
        INFO("truncated to " << n << " of " << bytes.size() << " bytes");
        if (n >= data_end) {
            CHECK(r.ok());
            continue;
        }
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == Errc::Corrupt);
        CHECK(r.error().message.rfind("test.gguf: offset ", 0) == 0);
    }

    SECTION("also through open(), including an empty file") {
        auto dir = attnrag::test::make_temp_dir("gguf_trunc");
        for (size_t n : {size_t{0}, size_t{3}, size_t{20}, size_t{100}}) {
            auto p = dir / ("cut" + std::to_string(n) + ".gguf");
            write_file(p, std::vector<uint8_t>(bytes.begin(),
                                               bytes.begin() + static_cast<std::ptrdiff_t>(n)));
            check_error(GgufFile::open(p.string()), Errc::Corrupt, p.string(), {"truncated"});
        }
        const auto n = static_cast<std::ptrdiff_t>(data_end - 1);
        auto p = dir / "cut_data.gguf";
        write_file(p, std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
        check_error(
            GgufFile::open(p.string()), Errc::Corrupt, p.string(),
            {"tensor.two", ", " + std::to_string(data_end) + ") extends past end of file (size " +
                               std::to_string(data_end - 1) + ")"});
    }
}

TEST_CASE("missing file and bad headers") {
    auto dir = attnrag::test::make_temp_dir("gguf_hdr");
    auto missing = GgufFile::open((dir / "absent.gguf").string());
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().code == Errc::NotFound);
    CHECK(missing.error().message.find("absent.gguf") != std::string::npos);
    CHECK(GgufFile::open(dir.string()).error().code == Errc::Io);  // a directory

    auto bytes = small_writer().to_bytes();
    SECTION("bad magic") {
        bytes[0] = 'X';
        check_error(parse(bytes), Errc::Corrupt, "test.gguf", {"offset 0", "magic", "58 47 55 46"});
    }
    SECTION("version 1") {
        poke<uint32_t>(bytes, 4, 1);
        check_error(parse(bytes), Errc::Unsupported, "test.gguf", {"offset 4", "version 1"});
    }
    SECTION("version 4") {
        poke<uint32_t>(bytes, 4, 4);
        check_error(parse(bytes), Errc::Unsupported, "test.gguf", {"offset 4", "version 4"});
    }
    SECTION("big-endian") {
        poke<uint32_t>(bytes, 4, 3u << 24);
        check_error(parse(bytes), Errc::Unsupported, "test.gguf", {"big-endian"});
    }
    SECTION("absurd tensor count") {
        poke<uint64_t>(bytes, 8, uint64_t{1} << 62);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf", {"offset 8", "tensor count"});
    }
    SECTION("absurd metadata count") {
        poke<uint64_t>(bytes, 16, ~uint64_t{0});
        check_error(parse(bytes), Errc::Corrupt, "test.gguf", {"offset 16", "metadata count"});
    }
}

TEST_CASE("corrupt metadata is reported with its offset") {
    auto bytes = small_writer().to_bytes();
    SECTION("huge key length does not allocate") {
        const size_t at = find_gguf_string(bytes, "general.architecture");
        poke<uint64_t>(bytes, at, uint64_t{1} << 60);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"offset " + std::to_string(at), "1152921504606846976", "metadata key"});
    }
    SECTION("huge string value length") {
        const size_t at = kv_type_at(bytes, "general.architecture") + 4;
        poke<uint64_t>(bytes, at, uint64_t{1} << 60);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"offset " + std::to_string(at), "general.architecture"});
    }
    SECTION("huge string array count") {
        const size_t at = kv_type_at(bytes, "tokenizer.ggml.tokens") + 8;
        poke<uint64_t>(bytes, at, uint64_t{1} << 61);
        check_error(
            parse(bytes), Errc::Corrupt, "test.gguf",
            {"offset " + std::to_string(at), "tokenizer.ggml.tokens", "2305843009213693952"});
    }
    SECTION("huge f32 array count (count * 4 overflows)") {
        const size_t at = kv_type_at(bytes, "some.floats") + 8;
        poke<uint64_t>(bytes, at, ~uint64_t{0} / 2);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf", {"some.floats", "f32"});
    }
    SECTION("huge string inside an array") {
        const size_t at = kv_type_at(bytes, "tokenizer.ggml.tokens") + 16;  // first element
        poke<uint64_t>(bytes, at, uint64_t{1} << 62);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"offset " + std::to_string(at), "element 0"});
    }
    SECTION("unknown value type") {
        const size_t at = kv_type_at(bytes, "llama.block_count");
        poke<uint32_t>(bytes, at, 13);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"offset " + std::to_string(at), "llama.block_count", "unknown value type 13"});
    }
    SECTION("unknown array element type") {
        const size_t at = kv_type_at(bytes, "some.floats") + 4;
        poke<uint32_t>(bytes, at, 77);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf", {"some.floats", "77"});
    }
    SECTION("nested arrays are rejected cleanly") {
        const size_t at = kv_type_at(bytes, "some.floats") + 4;
        poke<uint32_t>(bytes, at, static_cast<uint32_t>(GgufType::Array));
        check_error(parse(bytes), Errc::Unsupported, "test.gguf", {"some.floats", "nested"});
    }
    SECTION("duplicate key") {
        GgufWriter w;
        w.set_u32("key.a", 1);
        w.set_u32("key.b", 2);
        auto b = w.to_bytes();
        b[find_gguf_string(b, "key.b") + 8 + 4] = 'a';
        check_error(parse(b), Errc::Corrupt, "test.gguf", {"duplicate", "key.a"});
    }
    SECTION("empty key") {
        auto b = header(0, 1);
        append_string(b, "");
        append_u32(b, static_cast<uint32_t>(GgufType::U32));
        append_u32(b, 5);
        check_error(parse(b), Errc::Corrupt, "test.gguf", {"offset 24", "empty key"});
    }
    SECTION("bad alignment values") {
        for (uint32_t a : {0u, 3u, 48u}) {
            GgufWriter w = small_writer();
            w.set_u32("general.alignment", a);
            check_error(parse(w.to_bytes()), Errc::Corrupt, "test.gguf",
                        {"general.alignment", "power of two", std::to_string(a)});
        }
        GgufWriter w = small_writer();
        w.set_string("general.alignment", "32");
        check_error(parse(w.to_bytes()), Errc::Corrupt, "test.gguf",
                    {"general.alignment", "string"});
    }
}

TEST_CASE("corrupt tensor tables are reported with the tensor and the offset") {
    auto bytes = small_writer().to_bytes();
    const TensorInfoAt one = tensor_info_at(bytes, "tensor.one");
    const TensorInfoAt two = tensor_info_at(bytes, "tensor.two");
    SECTION("unknown tensor type") {
        poke<uint32_t>(bytes, two.type, 99);
        check_error(parse(bytes), Errc::Unsupported, "test.gguf",
                    {"offset " + std::to_string(two.type), "tensor.two", "99"});
    }
    SECTION("a ggml type attnrag does not implement (Q5_0)") {
        poke<uint32_t>(bytes, one.type, 6);
        check_error(parse(bytes), Errc::Unsupported, "test.gguf", {"tensor.one", "type id 6"});
    }
    SECTION("tensor out of bounds") {
        poke<uint64_t>(bytes, two.offset, 1024 * 32);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"offset " + std::to_string(two.offset), "tensor.two",
                     "extends past end of file (size " + std::to_string(bytes.size()) + ")"});
    }
    SECTION("tensor offset that overflows") {
        poke<uint64_t>(bytes, two.offset, ~uint64_t{31});
        check_error(parse(bytes), Errc::Corrupt, "test.gguf", {"tensor.two", "past end of file"});
    }
    SECTION("misaligned offset") {
        poke<uint64_t>(bytes, two.offset, peek<uint64_t>(bytes, two.offset) + 4);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"offset " + std::to_string(two.offset), "tensor.two", "alignment 32"});
    }
    SECTION("overlapping tensors") {
        poke<uint64_t>(bytes, two.offset, 32);  // tensor.one is [0, 68)
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"tensor.two", "overlaps", "tensor.one"});
    }
    SECTION("duplicate tensor name") {
        bytes[two.name + 8 + 7] = 'o';
        bytes[two.name + 8 + 8] = 'n';
        bytes[two.name + 8 + 9] = 'e';
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"offset " + std::to_string(two.name), "duplicate tensor 'tensor.one'"});
    }
    SECTION("ne0 not a multiple of the block size") {
        poke<uint64_t>(bytes, one.dims, 48);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"tensor.one", "48", "not a multiple of 32",
                     attnrag::kernels::type_traits(DType::Q8_0)->name});
    }
    SECTION("zero dimension") {
        poke<uint64_t>(bytes, one.dims + 8, 0);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf",
                    {"offset " + std::to_string(one.dims + 8), "tensor.one", "dimension 1"});
    }
    SECTION("too many dimensions") {
        poke<uint32_t>(bytes, one.n_dims, 5);
        check_error(parse(bytes), Errc::Corrupt, "test.gguf", {"tensor.one", "found 5"});
    }
    SECTION("element count overflow") {
        auto b = header(1, 0);
        append_string(b, "big");
        append_u32(b, 3);
        for (uint64_t d : {uint64_t{1} << 31, uint64_t{1} << 31, uint64_t{1} << 31})
            append_u64(b, d);
        append_u32(b, 0);
        append_u64(b, 0);
        check_error(parse(b), Errc::Corrupt, "test.gguf", {"big", "overflows"});
    }
    SECTION("data size overflow") {
        auto b = header(1, 0);
        append_string(b, "wide");
        append_u32(b, 2);
        append_u64(b, uint64_t{1} << 62);
        append_u64(b, 1);
        append_u32(b, 0);  // F32: 4 bytes per element
        append_u64(b, 0);
        check_error(parse(b), Errc::Corrupt, "test.gguf", {"wide", "overflows"});
    }
}

TEST_CASE("the writer validates tensors and reports write errors") {
    GgufWriter w;
    auto data = random_bytes(34, 3);
    auto wrong = w.add_tensor("t", {32}, DType::Q8_0, std::span(data).first(33));
    REQUIRE_FALSE(wrong.ok());
    CHECK(wrong.error().code == Errc::InvalidArgument);
    CHECK(wrong.error().message.find("33 bytes, expected 34") != std::string::npos);
    CHECK_FALSE(w.add_tensor("t", {16}, DType::Q8_0, data).ok());
    CHECK_FALSE(w.add_tensor("t", {0}, DType::F32, {}).ok());
    CHECK_FALSE(w.add_tensor("t", {1, 1, 1, 1, 1}, DType::F32, std::span(data).first(4)).ok());
    CHECK_FALSE(w.add_tensor("t", {1}, static_cast<DType>(6), std::span(data).first(1)).ok());
    CHECK_FALSE(w.add_tensor("", {32}, DType::Q8_0, data).ok());
    REQUIRE(w.add_tensor("t", {32}, DType::Q8_0, data).ok());
    auto dup = w.add_tensor("t", {32}, DType::Q8_0, data);
    REQUIRE_FALSE(dup.ok());
    CHECK(dup.error().message.find("duplicate") != std::string::npos);

    auto dir = attnrag::test::make_temp_dir("gguf_write");
    auto bad = (dir / "no_such_dir" / "x.gguf").string();
    auto st = w.write(bad);
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().message.find(bad) != std::string::npos);
    CHECK(st.error().message.find("No such file or directory") != std::string::npos);

    // Renaming over a directory fails; the temporary must not be left behind.
    fs::create_directory(dir / "occupied");
    auto over_dir = w.write((dir / "occupied").string());
    REQUIRE_FALSE(over_dir.ok());
    CHECK(over_dir.error().code == Errc::Io);
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);

    // Writing over an existing file replaces it.
    auto path = (dir / "m.gguf").string();
    write_file(path, {'o', 'l', 'd'});
    REQUIRE(w.write(path).ok());
    auto r = GgufFile::open(path);
    REQUIRE(r.ok());
    CHECK(r->tensors().size() == 1);
}

TEST_CASE("the real model's header") {
    const fs::path model = attnrag::test::model_path();
    if (model.empty()) {
        WARN("model not found: skipping (set ATTNRAG_MODEL)");
        return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto r = GgufFile::open(model.string());
    const auto ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(r.ok());
    INFO("open took " << ms << " ms");
    const GgufFile& f = *r;
    CHECK(f.version() == 3);
    CHECK(f.tensors().size() == 272);
    CHECK(*f.get_string("general.architecture") == "llama");
    CHECK(*f.get_int("llama.block_count") == 30);
    CHECK(*f.get_int("llama.embedding_length") == 576);
    CHECK(*f.array_size("tokenizer.ggml.tokens") == 49152);
    auto tokens = f.get_string_array("tokenizer.ggml.tokens");
    REQUIRE(tokens.ok());
    REQUIRE(tokens->size() == 49152);
    CHECK((*tokens)[0] == "<|endoftext|>");
    auto merges = f.get_string_array("tokenizer.ggml.merges");
    REQUIRE(merges.ok());
    CHECK(merges->size() == 48900);

    const auto* embd = f.find_tensor("token_embd.weight");
    REQUIRE(embd != nullptr);
    CHECK(embd->type == DType::Q8_0);
    CHECK(embd->shape == std::vector<int64_t>{576, 49152});
    const auto* q = f.find_tensor("blk.0.attn_q.weight");
    REQUIRE(q != nullptr);
    CHECK(q->type == DType::Q4_1);
    CHECK(q->shape == std::vector<int64_t>{576, 576});
    CHECK(q->n_bytes == 576 / 32 * 20 * 576);
    uint64_t data_end = 0;
    for (const auto& t : f.tensors())
        data_end = std::max(data_end, f.data_offset() + t.offset + t.n_bytes);
    CHECK(data_end <= f.file_bytes());
    CHECK(f.file_bytes() - data_end < f.alignment());
}
