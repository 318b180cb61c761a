// The passage KV file format: encode a PassageKv under its key as fp16 or q8, decode and verify.
//
// Layout (all little-endian; m = model fingerprint bytes):
//   [0, 4)      magic "ARKV"
//   [4, 8)      u32 format version (kFormatVersion)
//   [8, 12)     u32 file type (KvFileType: 1 f16, 2 q8)
//   [12, 28)    i32 n_layer, n_tokens, kv_dim, encoded_position
//   [28, 32)    u32 m, in [1, kKvMaxModelBytes]
//   [32, 32+m)  model fingerprint
//   then        u64 prefix_hash, u64 passage_hash, u64 payload bytes,
//               u32 crc32 of the payload, u32 crc32 of every header byte before it
//   payload     tokens [n_tokens] i32, then K [n_layer][n_tokens] rows, then V likewise;
//               a row is [kv_dim] f16, or for q8 ceil(kv_dim / 32) blocks of (f32 scale d,
//               int8 q[32]) whose last block holds only the kv_dim % 32 remaining values.
// The header has its own checksum so a flipped size or position is caught before the payload is
// read; with both CRCs every single-byte change anywhere in the file is detected.
#include "kvstore/kv_codec.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>
#include <span>

#include "attnrag/kernels/types.hpp"
#include "attnrag/kv_store.hpp"

namespace attnrag {

static_assert(std::endian::native == std::endian::little,
              "passage KV files are written with the host's little-endian layout");

namespace {

constexpr char kMagic[4] = {'A', 'R', 'K', 'V'};
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kFixedHeadBytes = 32;  // magic .. model length
constexpr size_t kTailHeadBytes = 32;   // prefix hash .. header crc
constexpr size_t kQ8Block = 32;

using detail::kKvMaxDim;
using detail::kKvMaxLayers;
using detail::kKvMaxModelBytes;
using detail::kKvMaxTokens;

uint32_t crc32_of(const uint8_t* p, size_t n) {
    return static_cast<uint32_t>(crc32_z(0, p, n));
}

size_t row_bytes(KvFileType type, size_t kv_dim) {
    if (type == KvFileType::F16) return 2 * kv_dim;
    const size_t n_blocks = (kv_dim + kQ8Block - 1) / kQ8Block;
    return n_blocks * sizeof(float) + kv_dim;
}

// Payload bytes for validated dimensions.
uint64_t payload_bytes(KvFileType type, int32_t n_layer, int32_t n_tokens, int32_t kv_dim) {
    const auto n_rows = static_cast<uint64_t>(n_layer) * static_cast<uint64_t>(n_tokens);
    return static_cast<uint64_t>(n_tokens) * sizeof(TokenId) +
           2 * n_rows * row_bytes(type, static_cast<size_t>(kv_dim));
}

class Writer {
 public:
    explicit Writer(std::string& out) : out_(out) {}
    template <class T>
    void put(T v) {
        char b[sizeof(T)];
        std::memcpy(b, &v, sizeof v);
        out_.append(b, sizeof v);
    }
    void put_bytes(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }

 private:
    std::string& out_;
};

template <class T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

void encode_rows_f16(std::string& out, std::span<const float> x) {
    const size_t at = out.size();
    out.resize(at + 2 * x.size());
    auto* p = reinterpret_cast<uint8_t*>(out.data() + at);
    for (size_t i = 0; i < x.size(); ++i) {
        const uint16_t h = kernels::f32_to_f16(x[i]);
        std::memcpy(p + 2 * i, &h, 2);
    }
}

// One q8 block: d = max|x| / 127 over the finite values, q = round(x / d) (ties to even) clamped
// to [-127, 127]; NaN is stored as 0 and +-inf as +-127 (KV states should hold neither).
void encode_block_q8(Writer& w, std::span<const float> x) {
    float amax = 0;
    for (float v : x)
        if (std::isfinite(v)) amax = std::max(amax, std::fabs(v));
    const float d = amax / 127.0f;
    w.put(d);
    for (float v : x) {
        float q = 0;
        if (d > 0 && !std::isnan(v)) q = std::clamp(std::nearbyint(v / d), -127.0f, 127.0f);
        w.put(static_cast<int8_t>(q));
    }
}

void encode_rows_q8(std::string& out, std::span<const float> x, size_t kv_dim) {
    Writer w(out);
    for (size_t row = 0; row < x.size(); row += kv_dim)
        for (size_t b = 0; b < kv_dim; b += kQ8Block)
            encode_block_q8(w, x.subspan(row + b, std::min(kQ8Block, kv_dim - b)));
}

void decode_rows_f16(const uint8_t* p, std::span<float> x) {
    for (size_t i = 0; i < x.size(); ++i) x[i] = kernels::f16_to_f32(load<uint16_t>(p + 2 * i));
}

// Returns false on a scale that is negative or not finite (the encoder writes neither).
bool decode_rows_q8(const uint8_t* p, std::span<float> x, size_t kv_dim) {
    for (size_t row = 0; row < x.size(); row += kv_dim) {
        for (size_t b = 0; b < kv_dim; b += kQ8Block) {
            const size_t n = std::min(kQ8Block, kv_dim - b);
            const auto d = load<float>(p);
            if (!(d >= 0) || !std::isfinite(d)) return false;
            p += sizeof(float);
            for (size_t i = 0; i < n; ++i)
                x[row + b + i] = d * static_cast<float>(static_cast<int8_t>(p[i]));
            p += n;
        }
    }
    return true;
}

Error corrupt(const std::string& what) {
    return make_error(Errc::Corrupt, "passage KV file: " + what);
}

}  // namespace

namespace detail {

std::string kv_hex16(uint64_t v) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s(16, '0');
    for (int i = 15; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = kDigits[v & 0xf];
    return s;
}

Status check_encodable(const PassageKvKey& key, const PassageKv& kv) {
    auto bad = [](const std::string& why) {
        return make_error(Errc::InvalidArgument, "passage KV: " + why);
    };
    if (key.model.empty() || key.model.size() > kKvMaxModelBytes)
        return bad("model fingerprint of " + std::to_string(key.model.size()) +
                   " bytes, must be 1.." + std::to_string(kKvMaxModelBytes));
    if (!kv.consistent()) return bad("inconsistent sizes (n_layer, n_tokens, kv_dim, vectors)");
    if (kv.n_layer > kKvMaxLayers || kv.n_tokens > kKvMaxTokens || kv.kv_dim > kKvMaxDim)
        return bad("n_layer " + std::to_string(kv.n_layer) + ", n_tokens " +
                   std::to_string(kv.n_tokens) + " or kv_dim " + std::to_string(kv.kv_dim) +
                   " beyond the file format's bounds");
    return {};
}

}  // namespace detail

std::string encode_passage_kv(const PassageKvKey& key, const PassageKv& kv, KvFileType type) {
    assert(detail::check_encodable(key, kv).ok());
    const auto kv_dim = static_cast<size_t>(kv.kv_dim);
    const uint64_t n_payload = payload_bytes(type, kv.n_layer, kv.n_tokens, kv.kv_dim);
    std::string out;
    out.reserve(kFixedHeadBytes + key.model.size() + kTailHeadBytes + n_payload);
    Writer w(out);
    w.put_bytes(kMagic, sizeof kMagic);
    w.put(kFormatVersion);
    w.put(static_cast<uint32_t>(type));
    w.put(kv.n_layer);
    w.put(kv.n_tokens);
    w.put(kv.kv_dim);
    w.put(kv.encoded_position);
    w.put(static_cast<uint32_t>(key.model.size()));
    w.put_bytes(key.model.data(), key.model.size());
    w.put(key.prefix_hash);
    w.put(key.passage_hash);
    w.put(n_payload);
    const size_t crc_at = out.size();
    w.put(uint32_t{0});  // payload crc, filled in below
    w.put(uint32_t{0});  // header crc

    const size_t payload_at = out.size();
    w.put_bytes(kv.tokens.data(), kv.tokens.size() * sizeof(TokenId));
    for (const std::vector<float>* kv_part : {&kv.k, &kv.v}) {
        if (type == KvFileType::F16)
            encode_rows_f16(out, *kv_part);
        else
            encode_rows_q8(out, *kv_part, kv_dim);
    }

    auto* bytes = reinterpret_cast<uint8_t*>(out.data());
    const uint32_t payload_crc = crc32_of(bytes + payload_at, out.size() - payload_at);
    std::memcpy(bytes + crc_at, &payload_crc, sizeof payload_crc);
    const uint32_t header_crc = crc32_of(bytes, crc_at + sizeof payload_crc);
    std::memcpy(bytes + crc_at + sizeof payload_crc, &header_crc, sizeof header_crc);
    return out;
}

Result<PassageKv> decode_passage_kv(const void* data, size_t size, const PassageKvKey& expect) {
    const auto* p = static_cast<const uint8_t*>(data);
    if (size < kFixedHeadBytes)
        return corrupt("truncated header (" + std::to_string(size) + " bytes)");
    if (std::memcmp(p, kMagic, sizeof kMagic) != 0) return corrupt("bad magic (not an ARKV file)");
    const auto version = load<uint32_t>(p + 4);
    if (version != kFormatVersion)
        return make_error(Errc::Unsupported, "passage KV file: format version " +
                                                 std::to_string(version) + ", expected " +
                                                 std::to_string(kFormatVersion));
    const auto model_bytes = load<uint32_t>(p + 28);
    if (model_bytes == 0 || model_bytes > kKvMaxModelBytes)
        return corrupt("model fingerprint length " + std::to_string(model_bytes) + " outside [1, " +
                       std::to_string(kKvMaxModelBytes) + "]");
    const size_t tail_at = kFixedHeadBytes + model_bytes;
    const size_t header_bytes = tail_at + kTailHeadBytes;
    if (size < header_bytes)
        return corrupt("truncated header (" + std::to_string(size) + " of " +
                       std::to_string(header_bytes) + " bytes)");
    if (crc32_of(p, header_bytes - 4) != load<uint32_t>(p + header_bytes - 4))
        return corrupt("header checksum mismatch");

    // The header is as written; now check that what it says makes sense.
    const auto raw_type = load<uint32_t>(p + 8);
    if (raw_type != static_cast<uint32_t>(KvFileType::F16) &&
        raw_type != static_cast<uint32_t>(KvFileType::Q8))
        return make_error(Errc::Unsupported,
                          "passage KV file: unknown file type " + std::to_string(raw_type));
    const auto type = static_cast<KvFileType>(raw_type);
    PassageKv kv;
    kv.n_layer = load<int32_t>(p + 12);
    kv.n_tokens = load<int32_t>(p + 16);
    kv.kv_dim = load<int32_t>(p + 20);
    kv.encoded_position = load<int32_t>(p + 24);
    if (kv.n_layer <= 0 || kv.n_layer > kKvMaxLayers)
        return corrupt("n_layer " + std::to_string(kv.n_layer) + " out of range");
    if (kv.n_tokens <= 0 || kv.n_tokens > kKvMaxTokens)
        return corrupt("n_tokens " + std::to_string(kv.n_tokens) + " out of range");
    if (kv.kv_dim <= 0 || kv.kv_dim > kKvMaxDim)
        return corrupt("kv_dim " + std::to_string(kv.kv_dim) + " out of range");

    PassageKvKey key;
    key.model.assign(reinterpret_cast<const char*>(p + kFixedHeadBytes), model_bytes);
    key.prefix_hash = load<uint64_t>(p + tail_at);
    key.passage_hash = load<uint64_t>(p + tail_at + 8);
    if (key.model != expect.model)
        return corrupt("written for model " + key.model + ", expected " + expect.model);
    if (key.prefix_hash != expect.prefix_hash || key.passage_hash != expect.passage_hash)
        return corrupt("written for key " + detail::kv_hex16(key.prefix_hash) + "-" +
                       detail::kv_hex16(key.passage_hash) + ", expected " +
                       detail::kv_hex16(expect.prefix_hash) + "-" +
                       detail::kv_hex16(expect.passage_hash));

    const uint64_t n_payload = payload_bytes(type, kv.n_layer, kv.n_tokens, kv.kv_dim);
    const auto stated = load<uint64_t>(p + tail_at + 16);
    if (stated != n_payload)
        return corrupt("payload size " + std::to_string(stated) + " does not match the " +
                       std::to_string(n_payload) + " bytes its dimensions need");
    if (size - header_bytes != n_payload)
        return corrupt(std::string(size - header_bytes < n_payload ? "truncated" : "trailing") +
                       " payload: " + std::to_string(size - header_bytes) + " bytes, expected " +
                       std::to_string(n_payload));
    const uint8_t* payload = p + header_bytes;
    if (crc32_of(payload, n_payload) != load<uint32_t>(p + tail_at + 24))
        return corrupt("payload checksum mismatch");

    const auto n_tokens = static_cast<size_t>(kv.n_tokens);
    const auto kv_dim = static_cast<size_t>(kv.kv_dim);
    const size_t n_floats = static_cast<size_t>(kv.n_layer) * kv.layer_floats();
    kv.tokens.resize(n_tokens);
    std::memcpy(kv.tokens.data(), payload, n_tokens * sizeof(TokenId));
    const uint8_t* at = payload + n_tokens * sizeof(TokenId);
    const size_t part_bytes = n_floats / kv_dim * row_bytes(type, kv_dim);
    for (std::vector<float>* kv_part : {&kv.k, &kv.v}) {
        kv_part->resize(n_floats);
        if (type == KvFileType::F16) {
            decode_rows_f16(at, *kv_part);
        } else if (!decode_rows_q8(at, *kv_part, kv_dim)) {
            return corrupt("q8 block with a negative or non-finite scale");
        }
        at += part_bytes;
    }
    return kv;
}

}  // namespace attnrag
