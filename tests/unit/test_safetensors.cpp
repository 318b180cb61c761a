// Tests for the safetensors reader: round trips of every float dtype and every structural error.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "attnrag/safetensors.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using attnrag::Errc;
using attnrag::SafetensorsDType;
using attnrag::SafetensorsFile;
using Json = nlohmann::json;

namespace {

// A file from a header object and a data section.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
    std::vector<uint8_t> out(8 + header.size() + data.size());
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
    if (!header.empty()) std::memcpy(out.data() + 8, header.data(), header.size());
    if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
    return out;
}

template <class T>
void append(std::vector<uint8_t>& data, const std::vector<T>& values) {
    size_t at = data.size();
    data.resize(at + values.size() * sizeof(T));
    std::memcpy(data.data() + at, values.data(), values.size() * sizeof(T));
}

// Tensors of every kind the reader must handle: F32 [2,3], F16 [4], BF16 [2,2], I64 [3],
// a scalar F32, an empty F32 [0,5]; plus __metadata__. Header padded with spaces to 8 bytes.
struct Sample {
    std::vector<uint8_t> bytes;
    Json header;
};

Sample make_sample() {
    std::vector<uint8_t> data;
    Json h;
    h["__metadata__"] = {{"format", "pt"}};
    auto add = [&](const std::string& name, const std::string& dtype, Json shape, size_t begin) {
        h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, data.size()}}};
    };
    size_t b = data.size();
    append(data, std::vector<float>{1, 2, 3, -4, 5.5f, 6});
    add("a.f32", "F32", {2, 3}, b);
    b = data.size();
    // 1.0, -2.0, 0.5, 65504 in IEEE half
    append(data, std::vector<uint16_t>{0x3c00, 0xc000, 0x3800, 0x7bff});
    add("b.f16", "F16", {4}, b);
    b = data.size();
    // 1.0, -3.0, 0.25, 256 in bfloat16
    append(data, std::vector<uint16_t>{0x3f80, 0xc040, 0x3e80, 0x4380});
    add("c.bf16", "BF16", {2, 2}, b);
    b = data.size();
    append(data, std::vector<int64_t>{7, -8, 9});
    add("d.i64", "I64", {3}, b);
    b = data.size();
    append(data, std::vector<float>{42});
    add("e.scalar", "F32", Json::array(), b);
    b = data.size();
    add("f.empty", "F32", {0, 5}, b);
    std::string text = h.dump();
    while ((8 + text.size()) % 8 != 0) text += ' ';
    return {make_file(text, data), h};
}

Errc open_error(const std::vector<uint8_t>& bytes, std::string* message = nullptr) {
    auto r = SafetensorsFile::from_bytes(bytes, "bad.safetensors");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message.find("bad.safetensors") != std::string::npos);
    if (message != nullptr) *message = r.error().message;
    return r.error().code;
}

// The sample with one tensor's header entry replaced.
std::vector<uint8_t> with_entry(const std::string& name, const Json& entry) {
    Sample s = make_sample();
    Json h = s.header;
    h[name] = entry;
    size_t header_len = 0;
    for (int i = 0; i < 8; ++i)
        header_len |= static_cast<size_t>(s.bytes[static_cast<size_t>(i)]) << (8 * i);
    std::vector<uint8_t> data(s.bytes.begin() + static_cast<std::ptrdiff_t>(8 + header_len),
                              s.bytes.end());
    return make_file(h.dump(), data);
}

}  // namespace

TEST_CASE("safetensors round trip of float and integer dtypes") {
    Sample s = make_sample();
    fs::path dir = attnrag::test::make_temp_dir("safetensors");
    fs::path path = dir / "sample.safetensors";
    {
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<const char*>(s.bytes.data()),
                static_cast<std::streamsize>(s.bytes.size()));
    }
    for (int from_file = 0; from_file < 2; ++from_file) {
        auto r = from_file ? SafetensorsFile::open(path)
                           : SafetensorsFile::from_bytes(s.bytes, "sample");
        REQUIRE(r.ok());
        const SafetensorsFile& f = *r;
        CHECK(f.file_bytes() == s.bytes.size());
        CHECK(f.data_offset() % 8 == 0);
        REQUIRE(f.tensors().size() == 6);  // __metadata__ is not a tensor
        CHECK(f.find("__metadata__") == nullptr);

        const auto* a = f.find("a.f32");
        REQUIRE(a != nullptr);
        CHECK(a->dtype == SafetensorsDType::F32);
        CHECK(a->shape == std::vector<int64_t>{2, 3});
        CHECK(a->n_elements == 6);
        CHECK(a->n_bytes == 24);
        CHECK(*f.to_f32(*a) == std::vector<float>{1, 2, 3, -4, 5.5f, 6});

        auto b = f.get("b.f16");
        REQUIRE(b.ok());
        CHECK(*f.to_f32(**b) == std::vector<float>{1, -2, 0.5f, 65504});
        CHECK(attnrag::safetensors_kernel_type((*b)->dtype) == attnrag::kernels::DType::F16);

        CHECK(*f.to_f32(*f.find("c.bf16")) == std::vector<float>{1, -3, 0.25f, 256});

        const auto* d = f.find("d.i64");
        REQUIRE(d != nullptr);
        CHECK(d->dtype == SafetensorsDType::I64);
        auto raw = f.data(*d);
        REQUIRE(raw.size() == 24);
        int64_t v[3];
        std::memcpy(v, raw.data(), sizeof v);
        CHECK((v[0] == 7 && v[1] == -8 && v[2] == 9));
        auto d32 = f.to_f32(*d);
        REQUIRE_FALSE(d32.ok());
        CHECK(d32.error().code == Errc::Unsupported);
        CHECK(d32.error().message.find("d.i64") != std::string::npos);

        const auto* e = f.find("e.scalar");
        REQUIRE(e != nullptr);
        CHECK(e->shape.empty());
        CHECK(e->n_elements == 1);
        CHECK(*f.to_f32(*e) == std::vector<float>{42});

        const auto* empty = f.find("f.empty");
        REQUIRE(empty != nullptr);
        CHECK(empty->n_elements == 0);
        CHECK(f.to_f32(*empty)->empty());

        auto missing = f.get("nope");
        REQUIRE_FALSE(missing.ok());
        CHECK(missing.error().code == Errc::NotFound);
        CHECK(missing.error().message.find("nope") != std::string::npos);

        // Tensors come in data order.
        for (size_t i = 1; i < f.tensors().size(); ++i) {
            CHECK(f.tensors()[i - 1].offset <= f.tensors()[i].offset);
        }
    }
    fs::remove_all(dir);
}

TEST_CASE("safetensors dtype names and sizes") {
    using attnrag::safetensors_dtype_from_name;
    for (auto name : {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "U16", "I16", "F16", "BF16", "U32",
                      "I32", "F32", "U64", "I64", "F64"}) {
        auto d = safetensors_dtype_from_name(name);
        REQUIRE(d.has_value());
        CHECK(attnrag::safetensors_dtype_name(*d) == name);
    }
    CHECK_FALSE(safetensors_dtype_from_name("F4").has_value());
    CHECK(attnrag::safetensors_dtype_size(SafetensorsDType::BF16) == 2);
    CHECK(attnrag::safetensors_dtype_size(SafetensorsDType::F64) == 8);
    CHECK_FALSE(attnrag::safetensors_kernel_type(SafetensorsDType::I32).has_value());
}

TEST_CASE("safetensors truncated at every offset gives an error") {
    Sample s = make_sample();
    for (size_t n = 0; n < s.bytes.size(); ++n) {
        std::vector<uint8_t> cut(s.bytes.begin(), s.bytes.begin() + static_cast<std::ptrdiff_t>(n));
        auto r = SafetensorsFile::from_bytes(cut, "cut.safetensors");
        INFO("truncated to " << n << " bytes");
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == Errc::Corrupt);
        CHECK(r.error().message.find("cut.safetensors") != std::string::npos);
        // Inside the header: an offset; inside the data: the tensor that no longer fits.
        bool names_place = r.error().message.find("offset") != std::string::npos ||
                           r.error().message.find("tensor '") != std::string::npos;
        CHECK(names_place);
    }
}

TEST_CASE("safetensors header errors name the offset") {
    std::string msg;
    SECTION("too short for the length") {
        CHECK(open_error({1, 2, 3}, &msg) == Errc::Corrupt);
        CHECK(msg.find("offset 0") != std::string::npos);
    }
    SECTION("huge header length") {
        std::vector<uint8_t> b = make_file("{}", {});
        for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = 0xff;
        CHECK(open_error(b, &msg) == Errc::Corrupt);
        CHECK(msg.find("header length") != std::string::npos);
        b[7] = 0;  // still far beyond the file, below 2^56
        b[6] = 0;
        b[5] = 0;
        b[4] = 0;
        b[3] = 0x01;  // 16 MB + : below the limit, past the end
        CHECK(open_error(b, &msg) == Errc::Corrupt);
        CHECK(msg.find("runs past the end") != std::string::npos);
    }
    SECTION("bad JSON") {
        CHECK(open_error(make_file("{\"a\": {\"dtype\": \"F32\",, }}", {}), &msg) == Errc::Corrupt);
        CHECK(msg.find("not valid JSON") != std::string::npos);
        CHECK(msg.find("offset 30") != std::string::npos);  // 8 + the second comma's index 22
        CHECK(open_error(make_file("{\"a\": 1", {}), &msg) == Errc::Corrupt);
        CHECK(open_error(make_file(std::string("{\"a\xff\": 1}"), {}), &msg) == Errc::Corrupt);
    }
    SECTION("header not an object") {
        CHECK(open_error(make_file("[1, 2]", {}), &msg) == Errc::Corrupt);
        CHECK(msg.find("expected an object") != std::string::npos);
        CHECK(open_error(make_file("{", {}), &msg) == Errc::Corrupt);
        CHECK(open_error(make_file("", {}), &msg) == Errc::Corrupt);
    }
    SECTION("empty object is a file without tensors") {
        auto r = SafetensorsFile::from_bytes(make_file("{}", {}), "empty");
        REQUIRE(r.ok());
        CHECK(r->tensors().empty());
    }
}

TEST_CASE("safetensors tensor entry errors name the tensor") {
    std::string msg;
    auto expect = [&](const Json& entry, Errc code, const std::string& what) {
        INFO(entry.dump());
        CHECK(open_error(with_entry("a.f32", entry), &msg) == code);
        CHECK(msg.find("a.f32") != std::string::npos);
        CHECK(msg.find(what) != std::string::npos);
    };
    expect(Json{{"dtype", "F4"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}, Errc::Unsupported,
           "unsupported dtype 'F4'");
    expect(Json{{"shape", {2, 3}}, {"data_offsets", {0, 24}}}, Errc::Corrupt, "dtype");
    expect(Json{{"dtype", 5}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}, Errc::Corrupt,
           "dtype");
    expect(Json{{"dtype", "F32"}, {"data_offsets", {0, 24}}}, Errc::Corrupt, "shape");
    expect(Json{{"dtype", "F32"}, {"shape", {2, -3}}, {"data_offsets", {0, 24}}}, Errc::Corrupt,
           "not a non-negative integer");
    expect(Json{{"dtype", "F32"}, {"shape", {2, 1.5}}, {"data_offsets", {0, 24}}}, Errc::Corrupt,
           "not a non-negative integer");
    expect(Json{{"dtype", "F32"}, {"shape", {1ull << 40, 1ull << 40}}, {"data_offsets", {0, 24}}},
           Errc::Corrupt, "too large");
    expect(Json{{"dtype", "F32"}, {"shape", {2, 3}}}, Errc::Corrupt, "data_offsets");
    expect(Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0}}}, Errc::Corrupt,
           "data_offsets");
    expect(Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {-1, 23}}}, Errc::Corrupt,
           "data_offsets");
    expect(Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {24, 0}}}, Errc::Corrupt,
           "begin after end");
    expect(Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {1000, 1024}}}, Errc::Corrupt,
           "past the data section");
    expect(Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 20}}}, Errc::Corrupt,
           "needs 24");
    expect(Json{{"dtype", "F16"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}, Errc::Corrupt,
           "needs 12");
    expect(Json("not an object"), Errc::Corrupt, "expected an object");
    // Overlap: a.f32 moved onto b.f16's bytes [24, 32) -> [24, 48) covers them.
    CHECK(open_error(
              with_entry("a.f32",
                         Json{{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {24, 48}}}),
              &msg) == Errc::Corrupt);
    CHECK(msg.find("overlaps") != std::string::npos);
}

TEST_CASE("safetensors open reports missing files and directories") {
    auto r = SafetensorsFile::open("/nonexistent/dir/model.safetensors");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::NotFound);
    CHECK(r.error().message.find("/nonexistent/dir/model.safetensors") != std::string::npos);

    fs::path dir = attnrag::test::make_temp_dir("safetensors_dir");
    auto d = SafetensorsFile::open(dir);
    REQUIRE_FALSE(d.ok());
    CHECK(d.error().code == Errc::Io);
    fs::remove_all(dir);
}

TEST_CASE("safetensors reads the all-MiniLM-L6-v2 weights") {
    fs::path path =
        attnrag::test::source_dir() / "models" / "all-MiniLM-L6-v2" / "model.safetensors";
    INFO("model file " << path << " (run scripts/setup.sh)");
    REQUIRE(fs::exists(path));
    auto r = SafetensorsFile::open(path);
    REQUIRE(r.ok());
    CHECK(r->tensors().size() == 104);
    const auto* emb = r->find("embeddings.word_embeddings.weight");
    REQUIRE(emb != nullptr);
    CHECK(emb->dtype == SafetensorsDType::F32);
    CHECK(emb->shape == std::vector<int64_t>{30522, 384});
    const auto* pos = r->find("embeddings.position_ids");
    REQUIRE(pos != nullptr);
    CHECK(pos->dtype == SafetensorsDType::I64);

    // The real header truncated at a few places inside it and inside the data.
    std::ifstream in(path, std::ios::binary);
    std::vector<uint8_t> head(static_cast<size_t>(r->data_offset()) + 4096);
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    for (size_t n : {size_t{7}, size_t{8}, size_t{100}, static_cast<size_t>(r->data_offset()) - 1,
                     static_cast<size_t>(r->data_offset()), head.size()}) {
        std::vector<uint8_t> cut(head.begin(), head.begin() + static_cast<std::ptrdiff_t>(n));
        auto t = SafetensorsFile::from_bytes(cut, "cut");
        INFO("truncated to " << n);
        REQUIRE_FALSE(t.ok());
        CHECK(t.error().code == Errc::Corrupt);
    }
}
