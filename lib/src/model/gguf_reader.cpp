// GGUF reader: maps a file read-only, validates its structure once, serves metadata and tensors.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <system_error>
#include <unordered_map>

#include "attnrag/gguf.hpp"

#include "common/mapped_file.h"

namespace attnrag {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader loads little-endian fields with memcpy");

namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;
constexpr std::string_view kAlignmentKey = "general.alignment";
// Smallest encodings, used to reject absurd counts before looping or allocating:
// kv = key length (8) + 1 key byte + type (4) + 1 value byte;
// tensor info = name length (8) + 1 name byte + n_dims (4) + 1 dim (8) + type (4) + offset (8).
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

// Byte size of a fixed-size value type; 0 for String and Array.
uint64_t fixed_bytes(GgufType type) {
    switch (type) {
        case GgufType::U8:
        case GgufType::I8:
        case GgufType::Bool: return 1;
        case GgufType::U16:
        case GgufType::I16: return 2;
        case GgufType::U32:
        case GgufType::I32:
        case GgufType::F32: return 4;
        case GgufType::U64:
        case GgufType::I64:
        case GgufType::F64: return 8;
        case GgufType::String:
        case GgufType::Array: return 0;
    }
    return 0;
}

bool is_known_type(uint32_t raw) {
    return raw <= static_cast<uint32_t>(GgufType::F64);
}

bool is_integer(GgufType t) {
    switch (t) {
        case GgufType::U8:
        case GgufType::I8:
        case GgufType::U16:
        case GgufType::I16:
        case GgufType::U32:
        case GgufType::I32:
        case GgufType::U64:
        case GgufType::I64: return true;
        default: return false;
    }
}

const char* type_name(GgufType t) {
    switch (t) {
        case GgufType::U8: return "u8";
        case GgufType::I8: return "i8";
        case GgufType::U16: return "u16";
        case GgufType::I16: return "i16";
        case GgufType::U32: return "u32";
        case GgufType::I32: return "i32";
        case GgufType::F32: return "f32";
        case GgufType::Bool: return "bool";
        case GgufType::String: return "string";
        case GgufType::Array: return "array";
        case GgufType::U64: return "u64";
        case GgufType::I64: return "i64";
        case GgufType::F64: return "f64";
    }
    return "?";
}

template <class T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// Integer value at p of integer type t. Returns false if it does not fit in int64 (u64 only).
bool load_int(GgufType t, const uint8_t* p, int64_t& out) {
    switch (t) {
        case GgufType::U8: out = load<uint8_t>(p); return true;
        case GgufType::I8: out = load<int8_t>(p); return true;
        case GgufType::U16: out = load<uint16_t>(p); return true;
        case GgufType::I16: out = load<int16_t>(p); return true;
        case GgufType::U32: out = load<uint32_t>(p); return true;
        case GgufType::I32: out = load<int32_t>(p); return true;
        case GgufType::I64: out = load<int64_t>(p); return true;
        case GgufType::U64: {
            uint64_t u = load<uint64_t>(p);
            if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
            out = static_cast<int64_t>(u);
            return true;
        }
        default: return false;
    }
}

// Float value at p of a float or integer type t (u64 beyond 2^53 rounds, as doubles do).
double load_float(GgufType t, const uint8_t* p) {
    switch (t) {
        case GgufType::F32: return static_cast<double>(load<float>(p));
        case GgufType::F64: return load<double>(p);
        case GgufType::U64: return static_cast<double>(load<uint64_t>(p));
        default: {
            int64_t v = 0;
            load_int(t, p, v);
            return static_cast<double>(v);
        }
    }
}

std::string quoted(std::string_view s, size_t max_bytes) {
    std::string out = "\"";
    size_t n = std::min(s.size(), max_bytes);
    for (size_t i = 0; i < n; ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    static constexpr char kHex[] = "0123456789abcdef";
                    out += "\\x";
                    out += kHex[c >> 4];
                    out += kHex[c & 15];
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
    if (n < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
    return out;
}

template <class F>
std::string shortest(F v) {
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}

Error error_at(const std::string& path, Errc code, uint64_t offset, const std::string& what) {
    return make_error(code, path + ": offset " + std::to_string(offset) + ": " + what);
}

struct AlignedFree {
    void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t{64}); }
};

// One metadata entry; everything points into the file bytes, so 49k vocabulary strings cost
// one of these, not 49k std::strings.
struct KvEntry {
    std::string_view key;  // into the file bytes
    GgufType type = GgufType::U8;
    GgufType array_type = GgufType::U8;  // arrays only
    uint64_t value_offset = 0;  // scalars: the value; strings: the bytes; arrays: first element
    uint64_t count = 0;         // strings: byte length; arrays: element count
};

}  // namespace

struct GgufFile::Impl {
    std::string path;
    const uint8_t* data = nullptr;  // [size] bytes: the mapping or `owned`
    uint64_t size = 0;
    detail::MappedFile mapping;
    std::unique_ptr<uint8_t[], AlignedFree> owned;

    uint32_t version = 0;
    uint64_t alignment = kDefaultAlignment;
    uint64_t data_offset = 0;  // start of the data section in the file
    std::vector<KvEntry> kvs;  // file order
    std::unordered_map<std::string_view, size_t> kv_index;
    std::vector<GgufTensorInfo> tensors;                        // file order
    std::unordered_map<std::string_view, size_t> tensor_index;  // keys point into the file bytes

    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    Error error_at(Errc code, uint64_t offset, const std::string& what) const {
        return attnrag::error_at(path, code, offset, what);
    }

    const KvEntry* find(std::string_view key) const {
        auto it = kv_index.find(key);
        return it == kv_index.end() ? nullptr : &kvs[it->second];
    }
    Result<const KvEntry*> lookup(std::string_view key) const {
        if (const KvEntry* kv = find(key)) return kv;
        return make_error(Errc::NotFound,
                          path + ": metadata key '" + std::string(key) + "' not found");
    }
    Error wrong_type(const KvEntry& kv, const char* expected) const {
        std::string found = type_name(kv.type);
        if (kv.type == GgufType::Array) found += std::string(" of ") + type_name(kv.array_type);
        return error_at(Errc::Corrupt, kv.value_offset,
                        "metadata key '" + std::string(kv.key) + "' has type " + found +
                            ", expected " + expected);
    }
    std::string_view string_at(uint64_t offset, uint64_t n) const {
        return {reinterpret_cast<const char*>(data + offset), static_cast<size_t>(n)};
    }
    // Calls f(string_view) for each element of a string array (validated at open).
    template <class F>
    void for_each_string(const KvEntry& kv, uint64_t max_items, F&& f) const {
        uint64_t pos = kv.value_offset;
        for (uint64_t i = 0; i < kv.count && i < max_items; ++i) {
            uint64_t n = load<uint64_t>(data + pos);
            f(string_at(pos + 8, n));
            pos += 8 + n;
        }
    }

    // Value as text (arrays: element type, length, the first max_items elements).
    std::string format(const KvEntry& kv, int max_items) const;
    Status parse();
};

namespace {

// Bounds-checked sequential reads over the file bytes; every failure names the offset.
class Cursor {
 public:
    Cursor(const uint8_t* data, uint64_t size, const std::string& path)
        : data_(data), size_(size), path_(path) {}

    uint64_t pos() const { return pos_; }
    uint64_t remaining() const { return size_ - pos_; }

    Status need(uint64_t n, const char* what) const {
        if (n <= remaining()) return {};
        return error_at(path_, Errc::Corrupt, pos_,
                        std::string("truncated: ") + what + " needs " + std::to_string(n) +
                            " bytes, " + std::to_string(remaining()) + " remain (file size " +
                            std::to_string(size_) + ")");
    }
    template <class T>
    Status read(T& out, const char* what) {
        ATTNRAG_TRY(need(sizeof(T), what));
        out = load<T>(data_ + pos_);
        pos_ += sizeof(T);
        return {};
    }
    // A u64 length then that many bytes; the length is checked against the file first.
    Status read_string(std::string_view& out, const char* what) {
        uint64_t n = 0;
        ATTNRAG_TRY(read(n, what));
        if (n > remaining()) {
            return error_at(path_, Errc::Corrupt, pos_ - 8,
                            std::string(what) + " length " + std::to_string(n) + " exceeds the " +
                                std::to_string(remaining()) + " bytes left in the file (size " +
                                std::to_string(size_) + ")");
        }
        out = {reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n)};
        pos_ += n;
        return {};
    }
    void skip(uint64_t n) { pos_ += n; }

 private:
    const uint8_t* data_;
    uint64_t size_;
    const std::string& path_;
    uint64_t pos_ = 0;
};

Error with_context(const Error& e, const std::string& context) {
    return make_error(e.code, e.message + " (" + context + ")");
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t& out) {
    return __builtin_mul_overflow(a, b, &out);
}

}  // namespace

Status GgufFile::Impl::parse() {
    Cursor cur(data, size, path);

    // Header.
    uint32_t magic = 0;
    ATTNRAG_TRY(cur.read(magic, "magic"));
    if (std::memcmp(data, "GGUF", 4) != 0) {
        char found[32];
        std::snprintf(found, sizeof found, "%02x %02x %02x %02x", data[0], data[1], data[2],
                      data[3]);
        return error_at(
            Errc::Corrupt, 0,
            std::string("not a GGUF file: expected magic \"GGUF\" (47 47 55 46), found ") + found);
    }
    uint64_t version_at = cur.pos();
    ATTNRAG_TRY(cur.read(version, "version"));
    if (version == 1) {
        return error_at(Errc::Unsupported, version_at,
                        "GGUF version 1 is not supported (expected 2 or 3); re-convert the model");
    }
    if ((version & 0xffffu) == 0 && (version >> 16) != 0) {
        return error_at(Errc::Unsupported, version_at,
                        "big-endian GGUF (version field reads " + std::to_string(version) +
                            ") is not supported; expected a little-endian file");
    }
    if (version != 2 && version != 3) {
        return error_at(
            Errc::Unsupported, version_at,
            "unsupported GGUF version " + std::to_string(version) + " (expected 2 or 3)");
    }
    uint64_t n_tensors = 0;
    uint64_t n_kv = 0;
    uint64_t n_tensors_at = cur.pos();
    ATTNRAG_TRY(cur.read(n_tensors, "tensor count"));
    uint64_t n_kv_at = cur.pos();
    ATTNRAG_TRY(cur.read(n_kv, "metadata count"));
    if (n_kv > cur.remaining() / kMinKvBytes) {
        return error_at(Errc::Corrupt, n_kv_at,
                        "metadata count " + std::to_string(n_kv) + " needs at least " +
                            std::to_string(kMinKvBytes) + " bytes each, but only " +
                            std::to_string(cur.remaining()) + " bytes remain");
    }
    if (n_tensors > cur.remaining() / kMinTensorInfoBytes) {
        return error_at(Errc::Corrupt, n_tensors_at,
                        "tensor count " + std::to_string(n_tensors) + " needs at least " +
                            std::to_string(kMinTensorInfoBytes) + " bytes each, but only " +
                            std::to_string(cur.remaining()) + " bytes remain");
    }

    // Metadata. Counts are bounded by the bytes left, so reserving is safe; capped anyway.
    kvs.reserve(static_cast<size_t>(std::min<uint64_t>(n_kv, 4096)));
    for (uint64_t i = 0; i < n_kv; ++i) {
        KvEntry kv;
        uint64_t key_at = cur.pos();
        if (auto st = cur.read_string(kv.key, "metadata key"); !st) {
            return with_context(st.error(), "metadata entry #" + std::to_string(i));
        }
        if (kv.key.empty()) {
            return error_at(Errc::Corrupt, key_at,
                            "metadata entry #" + std::to_string(i) + " has an empty key");
        }
        const std::string ctx = "metadata key '" + std::string(kv.key) + "'";
        uint32_t raw_type = 0;
        uint64_t type_at = cur.pos();
        if (auto st = cur.read(raw_type, "value type"); !st) return with_context(st.error(), ctx);
        if (!is_known_type(raw_type)) {
            return error_at(
                Errc::Corrupt, type_at,
                ctx + ": unknown value type " + std::to_string(raw_type) + " (expected 0..12)");
        }
        kv.type = static_cast<GgufType>(raw_type);
        if (kv.type == GgufType::String) {
            std::string_view s;
            if (auto st = cur.read_string(s, "string value"); !st) {
                return with_context(st.error(), ctx);
            }
            kv.value_offset = cur.pos() - s.size();
            kv.count = s.size();
        } else if (kv.type == GgufType::Array) {
            uint32_t raw_elem = 0;
            uint64_t elem_at = cur.pos();
            if (auto st = cur.read(raw_elem, "array element type"); !st) {
                return with_context(st.error(), ctx);
            }
            if (!is_known_type(raw_elem)) {
                return error_at(Errc::Corrupt, elem_at,
                                ctx + ": unknown array element type " + std::to_string(raw_elem) +
                                    " (expected 0..12)");
            }
            kv.array_type = static_cast<GgufType>(raw_elem);
            if (kv.array_type == GgufType::Array) {
                return error_at(Errc::Unsupported, elem_at,
                                ctx + ": nested arrays are not supported");
            }
            uint64_t count_at = cur.pos();
            if (auto st = cur.read(kv.count, "array length"); !st) {
                return with_context(st.error(), ctx);
            }
            kv.value_offset = cur.pos();
            // Strings need at least their 8-byte length each.
            uint64_t elem_bytes =
                kv.array_type == GgufType::String ? 8 : fixed_bytes(kv.array_type);
            if (kv.count > cur.remaining() / elem_bytes) {
                return error_at(Errc::Corrupt, count_at,
                                ctx + ": array of " + std::to_string(kv.count) + " " +
                                    type_name(kv.array_type) + " needs at least " +
                                    std::to_string(elem_bytes) + " bytes each, but only " +
                                    std::to_string(cur.remaining()) + " bytes remain");
            }
            if (kv.array_type == GgufType::String) {
                for (uint64_t j = 0; j < kv.count; ++j) {
                    std::string_view s;
                    if (auto st = cur.read_string(s, "string array element"); !st) {
                        return with_context(st.error(), ctx + ", element " + std::to_string(j));
                    }
                }
            } else {
                cur.skip(kv.count * elem_bytes);
            }
        } else {
            kv.value_offset = cur.pos();
            if (auto st = cur.need(fixed_bytes(kv.type), type_name(kv.type)); !st) {
                return with_context(st.error(), ctx);
            }
            cur.skip(fixed_bytes(kv.type));
        }
        if (!kv_index.emplace(kv.key, kvs.size()).second) {
            return error_at(Errc::Corrupt, key_at, "duplicate " + ctx);
        }
        kvs.push_back(kv);
    }

    if (const KvEntry* kv = find(kAlignmentKey)) {
        if (!is_integer(kv->type)) return wrong_type(*kv, "an unsigned integer");
        int64_t a = 0;
        if (!load_int(kv->type, data + kv->value_offset, a) || a <= 0 ||
            !std::has_single_bit(static_cast<uint64_t>(a))) {
            return error_at(
                Errc::Corrupt, kv->value_offset,
                "general.alignment must be a non-zero power of two, found " + format(*kv, 0));
        }
        alignment = static_cast<uint64_t>(a);
    }

    // Tensor table. Data offsets are checked once the data section start is known.
    std::vector<uint64_t> offset_field_at;  // file offset of each tensor's `offset` field
    for (uint64_t i = 0; i < n_tensors; ++i) {
        std::string_view name;
        uint64_t name_at = cur.pos();
        if (auto st = cur.read_string(name, "tensor name"); !st) {
            return with_context(st.error(), "tensor info #" + std::to_string(i));
        }
        if (name.empty()) {
            return error_at(Errc::Corrupt, name_at,
                            "tensor info #" + std::to_string(i) + " has an empty name");
        }
        const std::string ctx = "tensor '" + std::string(name) + "'";
        if (!tensor_index.emplace(name, tensors.size()).second) {
            return error_at(Errc::Corrupt, name_at, "duplicate " + ctx);
        }
        uint32_t n_dims = 0;
        uint64_t n_dims_at = cur.pos();
        if (auto st = cur.read(n_dims, "dimension count"); !st)
            return with_context(st.error(), ctx);
        if (n_dims == 0 || n_dims > kMaxDims) {
            return error_at(Errc::Corrupt, n_dims_at,
                            ctx + ": expected 1.." + std::to_string(kMaxDims) +
                                " dimensions, found " + std::to_string(n_dims));
        }
        GgufTensorInfo info;
        info.name = std::string(name);
        info.shape.resize(n_dims);
        uint64_t n_elements = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            uint64_t dim = 0;
            uint64_t dim_at = cur.pos();
            if (auto st = cur.read(dim, "dimension"); !st) return with_context(st.error(), ctx);
            if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                return error_at(Errc::Corrupt, dim_at,
                                ctx + ": dimension " + std::to_string(d) +
                                    " must be in [1, 2^63), found " + std::to_string(dim));
            }
            if (mul_overflows(n_elements, dim, n_elements) ||
                n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                return error_at(
                    Errc::Corrupt, dim_at,
                    ctx + ": element count overflows 64 bits at dimension " + std::to_string(d));
            }
            info.shape[d] = static_cast<int64_t>(dim);
        }
        info.n_elements = static_cast<int64_t>(n_elements);

        uint32_t raw_type = 0;
        uint64_t type_at = cur.pos();
        if (auto st = cur.read(raw_type, "tensor type"); !st) return with_context(st.error(), ctx);
        const kernels::TypeTraits* traits = kernels::type_traits(raw_type);
        if (traits == nullptr) {
            return error_at(Errc::Unsupported, type_at,
                            ctx + " has ggml type id " + std::to_string(raw_type) +
                                ", which attnrag does not support (supported: F32, F16, BF16, "
                                "Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K)");
        }
        info.type = static_cast<kernels::DType>(raw_type);
        const auto block_elems = static_cast<uint64_t>(traits->block_elems);
        const auto ne0 = static_cast<uint64_t>(info.shape[0]);
        if (ne0 % block_elems != 0) {
            return error_at(Errc::Corrupt, type_at,
                            ctx + ": row length " + std::to_string(ne0) + " is not a multiple of " +
                                std::to_string(block_elems) + ", the block size of " +
                                std::string(traits->name));
        }
        uint64_t row_bytes = 0;
        if (mul_overflows(ne0 / block_elems, traits->block_bytes, row_bytes) ||
            mul_overflows(row_bytes, n_elements / ne0, info.n_bytes)) {
            return error_at(Errc::Corrupt, type_at, ctx + ": data size overflows 64 bits");
        }

        offset_field_at.push_back(cur.pos());
        if (auto st = cur.read(info.offset, "tensor data offset"); !st) {
            return with_context(st.error(), ctx);
        }
        if (info.offset % alignment != 0) {
            return error_at(Errc::Corrupt, offset_field_at.back(),
                            ctx + ": data offset " + std::to_string(info.offset) +
                                " is not a multiple of the alignment " + std::to_string(alignment));
        }
        tensors.push_back(std::move(info));
    }

    // Data section: the header end rounded up to the alignment.
    const uint64_t header_end = cur.pos();
    if (__builtin_add_overflow(header_end, alignment - 1, &data_offset)) {
        return error_at(Errc::Corrupt, header_end,
                        "alignment " + std::to_string(alignment) + " overflows the data offset");
    }
    data_offset &= ~(alignment - 1);

    for (size_t i = 0; i < tensors.size(); ++i) {
        const GgufTensorInfo& t = tensors[i];
        uint64_t begin = 0;
        uint64_t end = 0;
        if (__builtin_add_overflow(data_offset, t.offset, &begin) ||
            __builtin_add_overflow(begin, t.n_bytes, &end)) {
            return error_at(Errc::Corrupt, offset_field_at[i],
                            "tensor '" + t.name + "' data at " + std::to_string(data_offset) +
                                " + " + std::to_string(t.offset) + " (" +
                                std::to_string(t.n_bytes) +
                                " bytes) overflows 64 bits, past end of file (size " +
                                std::to_string(size) + ")");
        }
        if (end > size) {
            return error_at(Errc::Corrupt, offset_field_at[i],
                            "tensor '" + t.name + "' data [" + std::to_string(begin) + ", " +
                                std::to_string(end) + ") extends past end of file (size " +
                                std::to_string(size) + ")");
        }
    }
    std::vector<size_t> order(tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return tensors[a].offset < tensors[b].offset; });
    for (size_t k = 1; k < order.size(); ++k) {
        const GgufTensorInfo& prev = tensors[order[k - 1]];
        const GgufTensorInfo& next = tensors[order[k]];
        if (prev.offset + prev.n_bytes > next.offset) {
            auto range = [&](const GgufTensorInfo& t) {
                // Built by append: GCC 12 flags `"[" + std::to_string(...)` with a false -Wrestrict.
                std::string r = "[";
                r += std::to_string(data_offset + t.offset);
                r += ", ";
                r += std::to_string(data_offset + t.offset + t.n_bytes);
                r += ")";
                return r;
            };
            return error_at(Errc::Corrupt, offset_field_at[order[k]],
                            "tensor '" + next.name + "' data " + range(next) +
                                " overlaps tensor '" + prev.name + "' data " + range(prev));
        }
    }
    return {};
}

std::string GgufFile::Impl::format(const KvEntry& kv, int max_items) const {
    auto scalar = [&](GgufType t, const uint8_t* p) -> std::string {
        switch (t) {
            case GgufType::F32: return shortest(load<float>(p));
            case GgufType::F64: return shortest(load<double>(p));
            case GgufType::Bool: return load<uint8_t>(p) != 0 ? "true" : "false";
            case GgufType::U64: return std::to_string(load<uint64_t>(p));
            default: {
                int64_t v = 0;
                load_int(t, p, v);
                return std::to_string(v);
            }
        }
    };
    if (kv.type == GgufType::String) return quoted(string_at(kv.value_offset, kv.count), 4096);
    if (kv.type != GgufType::Array) return scalar(kv.type, data + kv.value_offset);

    const uint64_t n_show = static_cast<uint64_t>(std::max(max_items, 0));
    std::string out =
        std::string("[") + type_name(kv.array_type) + "; " + std::to_string(kv.count) + "]";
    if (n_show == 0 || kv.count == 0) return out;
    out += " [";
    uint64_t shown = 0;
    if (kv.array_type == GgufType::String) {
        for_each_string(kv, n_show, [&](std::string_view s) {
            if (shown++ > 0) out += ", ";
            out += quoted(s, 64);
        });
    } else {
        const uint64_t elem = fixed_bytes(kv.array_type);
        for (; shown < kv.count && shown < n_show; ++shown) {
            if (shown > 0) out += ", ";
            out += scalar(kv.array_type, data + kv.value_offset + shown * elem);
        }
    }
    if (shown < kv.count) out += ", ...";
    out += "]";
    return out;
}

// ---- GgufFile ----

GgufFile::GgufFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

Result<GgufFile> GgufFile::open(const std::string& path) {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    auto mapping = detail::MappedFile::open(path);
    if (!mapping) return mapping.error();
    impl->mapping = std::move(mapping).value();
    impl->data = impl->mapping.data();
    impl->size = impl->mapping.size();
    ATTNRAG_TRY(impl->parse());
    return GgufFile(std::move(impl));
}

Result<GgufFile> GgufFile::from_bytes(std::span<const uint8_t> bytes, std::string name) {
    auto impl = std::make_unique<Impl>();
    impl->path = std::move(name);
    impl->size = bytes.size();
    // Exactly sized (so sanitizers see any overread) and 64-byte aligned like a mapping's data.
    impl->owned.reset(static_cast<uint8_t*>(
        ::operator new[](std::max<size_t>(bytes.size(), 1), std::align_val_t{64})));
    if (!bytes.empty()) std::memcpy(impl->owned.get(), bytes.data(), bytes.size());
    impl->data = impl->owned.get();
    ATTNRAG_TRY(impl->parse());
    return GgufFile(std::move(impl));
}

const std::string& GgufFile::path() const {
    return impl_->path;
}
uint32_t GgufFile::version() const {
    return impl_->version;
}
uint64_t GgufFile::alignment() const {
    return impl_->alignment;
}
uint64_t GgufFile::file_bytes() const {
    return impl_->size;
}
uint64_t GgufFile::data_offset() const {
    return impl_->data_offset;
}

std::vector<std::string> GgufFile::keys() const {
    std::vector<std::string> out;
    out.reserve(impl_->kvs.size());
    for (const KvEntry& kv : impl_->kvs) out.emplace_back(kv.key);
    return out;
}

bool GgufFile::has(std::string_view key) const {
    return impl_->find(key) != nullptr;
}

Result<GgufType> GgufFile::type_of(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    return (*kv)->type;
}

Result<GgufType> GgufFile::array_type_of(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    if ((*kv)->type != GgufType::Array) return impl_->wrong_type(**kv, "an array");
    return (*kv)->array_type;
}

Result<uint64_t> GgufFile::array_size(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    if ((*kv)->type != GgufType::Array) return impl_->wrong_type(**kv, "an array");
    return (*kv)->count;
}

Result<std::string> GgufFile::get_string(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    if ((*kv)->type != GgufType::String) return impl_->wrong_type(**kv, "string");
    return std::string(impl_->string_at((*kv)->value_offset, (*kv)->count));
}

Result<int64_t> GgufFile::get_int(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    const KvEntry& e = **kv;
    if (!is_integer(e.type)) return impl_->wrong_type(e, "an integer");
    int64_t v = 0;
    if (!load_int(e.type, impl_->data + e.value_offset, v)) {
        return impl_->error_at(Errc::OutOfRange, e.value_offset,
                               "metadata key '" + std::string(key) + "' value " +
                                   impl_->format(e, 0) + " does not fit in int64");
    }
    return v;
}

Result<double> GgufFile::get_float(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    const KvEntry& e = **kv;
    if (e.type != GgufType::F32 && e.type != GgufType::F64 && !is_integer(e.type)) {
        return impl_->wrong_type(e, "a number");
    }
    return load_float(e.type, impl_->data + e.value_offset);
}

Result<bool> GgufFile::get_bool(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    if ((*kv)->type != GgufType::Bool) return impl_->wrong_type(**kv, "bool");
    return impl_->data[(*kv)->value_offset] != 0;
}

Result<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    const KvEntry& e = **kv;
    if (e.type != GgufType::Array || e.array_type != GgufType::String) {
        return impl_->wrong_type(e, "array of string");
    }
    std::vector<std::string> out;
    out.reserve(static_cast<size_t>(e.count));
    impl_->for_each_string(e, e.count, [&](std::string_view s) { out.emplace_back(s); });
    return out;
}

Result<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    const KvEntry& e = **kv;
    if (e.type != GgufType::Array || !is_integer(e.array_type)) {
        return impl_->wrong_type(e, "array of integers");
    }
    const uint64_t elem = fixed_bytes(e.array_type);
    std::vector<int64_t> out(static_cast<size_t>(e.count));
    for (uint64_t i = 0; i < e.count; ++i) {
        const uint64_t at = e.value_offset + i * elem;
        if (!load_int(e.array_type, impl_->data + at, out[i])) {
            return impl_->error_at(
                Errc::OutOfRange, at,
                "metadata key '" + std::string(key) + "' element " + std::to_string(i) + " " +
                    std::to_string(load<uint64_t>(impl_->data + at)) + " does not fit in int64");
        }
    }
    return out;
}

Result<std::vector<double>> GgufFile::get_float_array(std::string_view key) const {
    auto kv = impl_->lookup(key);
    if (!kv) return kv.error();
    const KvEntry& e = **kv;
    if (e.type != GgufType::Array || (e.array_type != GgufType::F32 &&
                                      e.array_type != GgufType::F64 && !is_integer(e.array_type))) {
        return impl_->wrong_type(e, "array of numbers");
    }
    const uint64_t elem = fixed_bytes(e.array_type);
    std::vector<double> out(static_cast<size_t>(e.count));
    for (uint64_t i = 0; i < e.count; ++i) {
        out[i] = load_float(e.array_type, impl_->data + e.value_offset + i * elem);
    }
    return out;
}

std::string GgufFile::value_to_string(std::string_view key, int max_items) const {
    const KvEntry* kv = impl_->find(key);
    if (kv == nullptr) return "<missing>";
    return impl_->format(*kv, max_items);
}

const std::vector<GgufTensorInfo>& GgufFile::tensors() const {
    return impl_->tensors;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
    auto it = impl_->tensor_index.find(name);
    return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

const uint8_t* GgufFile::tensor_data(const GgufTensorInfo& info) const {
    assert(&info >= impl_->tensors.data() &&
           &info < impl_->tensors.data() + impl_->tensors.size() &&
           "tensor_data: info must come from this file's tensors()");
    return impl_->data + impl_->data_offset + info.offset;
}

const char* gguf_type_name(GgufType type) {
    return type_name(type);
}

}  // namespace attnrag
