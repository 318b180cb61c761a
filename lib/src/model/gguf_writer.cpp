// GGUF writer: serializes metadata and tensors as a GGUF v3 file, written atomically.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "attnrag/gguf.hpp"

#include "common/mapped_file.h"

namespace attnrag {
namespace {

constexpr uint32_t kVersion = 3;

void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
    // resize + memcpy rather than insert: GCC 12 reports a false -Wstringop-overflow for
    // range-insert into an empty vector.
    if (n == 0) return;
    const size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, p, n);
}
template <class T>
void put(std::vector<uint8_t>& out, T v) {
    static_assert(std::endian::native == std::endian::little);
    put_bytes(out, &v, sizeof v);
}
void put_string(std::vector<uint8_t>& out, std::string_view s) {
    put<uint64_t>(out, s.size());
    put_bytes(out, s.data(), s.size());
}
void pad_to(std::vector<uint8_t>& out, uint64_t alignment) {
    out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
}
template <class T>
std::vector<uint8_t> scalar_payload(T v) {
    std::vector<uint8_t> p;
    put(p, v);
    return p;
}
template <class T>
std::vector<uint8_t> array_payload(GgufType elem, const std::vector<T>& v) {
    std::vector<uint8_t> p;
    put(p, static_cast<uint32_t>(elem));
    put<uint64_t>(p, v.size());
    for (const T& x : v) put(p, x);
    return p;
}

size_t elem_size(GgufType t) {
    switch (t) {
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
        case GgufType::Array: break;
    }
    return 1;
}

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "{";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "}";
}

// Writes all of [data, data + n) to fd; returns 0 or an errno value.
int write_all(int fd, const uint8_t* data, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (w == 0) return EIO;
        data += w;
        n -= static_cast<size_t>(w);
    }
    return 0;
}

}  // namespace

void GgufWriter::set_raw(std::string key, GgufType type, GgufType array_type,
                         std::vector<uint8_t> payload) {
    // Setting a key twice replaces the value and keeps the first position.
    for (Kv& kv : kvs_) {
        if (kv.key == key) {
            kv.type = type;
            kv.array_type = array_type;
            kv.payload = std::move(payload);
            return;
        }
    }
    kvs_.push_back(Kv{std::move(key), type, array_type, std::move(payload)});
}

void GgufWriter::set_u32(std::string key, uint32_t v) {
    set_raw(std::move(key), GgufType::U32, GgufType::U32, scalar_payload(v));
}
void GgufWriter::set_i32(std::string key, int32_t v) {
    set_raw(std::move(key), GgufType::I32, GgufType::I32, scalar_payload(v));
}
void GgufWriter::set_u64(std::string key, uint64_t v) {
    set_raw(std::move(key), GgufType::U64, GgufType::U64, scalar_payload(v));
}
void GgufWriter::set_f32(std::string key, float v) {
    set_raw(std::move(key), GgufType::F32, GgufType::F32, scalar_payload(v));
}
void GgufWriter::set_bool(std::string key, bool v) {
    set_raw(std::move(key), GgufType::Bool, GgufType::Bool,
            scalar_payload(static_cast<uint8_t>(v ? 1 : 0)));
}
void GgufWriter::set_string(std::string key, std::string v) {
    std::vector<uint8_t> p;
    put_string(p, v);
    set_raw(std::move(key), GgufType::String, GgufType::String, std::move(p));
}
void GgufWriter::set_string_array(std::string key, std::vector<std::string> v) {
    std::vector<uint8_t> p;
    put(p, static_cast<uint32_t>(GgufType::String));
    put<uint64_t>(p, v.size());
    for (const std::string& s : v) put_string(p, s);
    set_raw(std::move(key), GgufType::Array, GgufType::String, std::move(p));
}
void GgufWriter::set_i32_array(std::string key, std::vector<int32_t> v) {
    set_raw(std::move(key), GgufType::Array, GgufType::I32, array_payload(GgufType::I32, v));
}
void GgufWriter::set_f32_array(std::string key, std::vector<float> v) {
    set_raw(std::move(key), GgufType::Array, GgufType::F32, array_payload(GgufType::F32, v));
}

void GgufWriter::set_u8(std::string key, uint8_t v) {
    set_raw(std::move(key), GgufType::U8, GgufType::U8, scalar_payload(v));
}
void GgufWriter::set_i8(std::string key, int8_t v) {
    set_raw(std::move(key), GgufType::I8, GgufType::I8, scalar_payload(v));
}
void GgufWriter::set_u16(std::string key, uint16_t v) {
    set_raw(std::move(key), GgufType::U16, GgufType::U16, scalar_payload(v));
}
void GgufWriter::set_i16(std::string key, int16_t v) {
    set_raw(std::move(key), GgufType::I16, GgufType::I16, scalar_payload(v));
}
void GgufWriter::set_i64(std::string key, int64_t v) {
    set_raw(std::move(key), GgufType::I64, GgufType::I64, scalar_payload(v));
}
void GgufWriter::set_f64(std::string key, double v) {
    set_raw(std::move(key), GgufType::F64, GgufType::F64, scalar_payload(v));
}
void GgufWriter::set_array(std::string key, GgufType elem_type, std::span<const uint8_t> elems) {
    assert(elem_type != GgufType::String && elem_type != GgufType::Array &&
           "set_array takes fixed-size elements; use set_string_array for strings");
    const size_t elem_bytes = elem_size(elem_type);
    assert(elems.size() % elem_bytes == 0 && "set_array: partial element");
    std::vector<uint8_t> p;
    put(p, static_cast<uint32_t>(elem_type));
    put<uint64_t>(p, elems.size() / elem_bytes);
    put_bytes(p, elems.data(), elems.size());
    set_raw(std::move(key), GgufType::Array, elem_type, std::move(p));
}

void GgufWriter::set_alignment(uint32_t alignment) {
    assert(alignment != 0 && std::has_single_bit(alignment) && "alignment must be a power of two");
    alignment_ = alignment;
    // Setting general.alignment directly with set_u32 changes only the stored value, not the
    // layout: that is how tests make files whose alignment key lies.
    set_u32("general.alignment", alignment);
}

Status GgufWriter::add_tensor(std::string name, std::vector<int64_t> shape, kernels::DType type,
                              std::span<const uint8_t> data) {
    auto fail = [&](const std::string& what) {
        return make_error(Errc::InvalidArgument, "GgufWriter::add_tensor '" + name + "': " + what);
    };
    if (name.empty()) return fail("empty name");
    for (const Tensor& t : tensors_) {
        if (t.name == name) return fail("duplicate name");
    }
    const kernels::TypeTraits* traits = kernels::type_traits(type);
    if (traits == nullptr) {
        return fail("unsupported type id " + std::to_string(static_cast<uint32_t>(type)));
    }
    if (shape.empty() || shape.size() > 4) {
        return fail("expected 1..4 dimensions, got " + std::to_string(shape.size()));
    }
    uint64_t n_rows = 1;
    for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] <= 0) return fail("dimension " + std::to_string(d) + " is not positive");
        if (d > 0 && __builtin_mul_overflow(n_rows, static_cast<uint64_t>(shape[d]), &n_rows)) {
            return fail("shape " + shape_text(shape) + " overflows");
        }
    }
    if (shape[0] % traits->block_elems != 0) {
        return fail("row length " + std::to_string(shape[0]) + " is not a multiple of the " +
                    std::string(traits->name) + " block size " +
                    std::to_string(traits->block_elems));
    }
    uint64_t expected = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(kernels::row_bytes(type, shape[0])), n_rows,
                               &expected)) {
        return fail("shape " + shape_text(shape) + " overflows");
    }
    if (data.size() != expected) {
        return fail("data is " + std::to_string(data.size()) + " bytes, expected " +
                    std::to_string(expected) + " for shape " + shape_text(shape) + " of " +
                    std::string(traits->name));
    }
    tensors_.push_back(Tensor{std::move(name), std::move(shape), type,
                              std::vector<uint8_t>(data.begin(), data.end())});
    return {};
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
    std::vector<uint8_t> out;
    put_bytes(out, "GGUF", 4);
    put<uint32_t>(out, kVersion);
    put<uint64_t>(out, tensors_.size());
    put<uint64_t>(out, kvs_.size());
    for (const Kv& kv : kvs_) {
        put_string(out, kv.key);
        put(out, static_cast<uint32_t>(kv.type));
        put_bytes(out, kv.payload.data(), kv.payload.size());
    }
    // Each tensor's data starts at a multiple of the alignment from the data section start.
    uint64_t offset = 0;
    for (const Tensor& t : tensors_) {
        put_string(out, t.name);
        put(out, static_cast<uint32_t>(t.shape.size()));
        for (int64_t d : t.shape) put(out, static_cast<uint64_t>(d));
        put(out, static_cast<uint32_t>(t.type));
        put(out, offset);
        offset += (t.data.size() + alignment_ - 1) / alignment_ * alignment_;
    }
    pad_to(out, alignment_);
    for (const Tensor& t : tensors_) {
        put_bytes(out, t.data.data(), t.data.size());
        pad_to(out, alignment_);
    }
    return out;
}

Status GgufWriter::write(const std::string& path) const {
    const std::vector<uint8_t> bytes = to_bytes();
    // A temporary in the same directory, renamed over `path` once complete: readers never see a
    // partial file and a failed write leaves the old file (if any) in place.
    std::string tmp = path + ".tmp.XXXXXX";
    int fd = ::mkstemp(tmp.data());
    if (fd < 0) {
        int err = errno;
        return make_error(err == ENOENT ? Errc::NotFound : Errc::Io,
                          path + ": cannot create temporary file " + tmp + ": " + detail::errno_text(err));
    }
    auto fail = [&](int err, const char* what) {
        ::close(fd);
        ::unlink(tmp.c_str());
        return make_error(Errc::Io, path + ": " + what + " " + tmp + ": " + detail::errno_text(err));
    };
    if (::fchmod(fd, 0644) != 0) return fail(errno, "cannot set permissions of");
    if (int err = write_all(fd, bytes.data(), bytes.size()); err != 0) {
        return fail(err, "cannot write");
    }
    if (::fsync(fd) != 0) return fail(errno, "cannot flush");
    if (::close(fd) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        return make_error(Errc::Io, path + ": cannot close " + tmp + ": " + detail::errno_text(err));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        return make_error(Errc::Io, path + ": cannot rename " + tmp + " to it: " + detail::errno_text(err));
    }
    return {};
}

}  // namespace attnrag
