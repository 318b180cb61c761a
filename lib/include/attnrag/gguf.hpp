// GGUF v2/v3 model files: memory-mapped reader (metadata, tensor table) and a writer.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attnrag/kernels/types.hpp"
#include "attnrag/result.hpp"

namespace attnrag {

// GGUF metadata value types (the ids stored in the file).
enum class GgufType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7,
    String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12,
};

struct GgufTensorInfo {
    std::string name;
    std::vector<int64_t> shape;  // ggml order: shape[0] is the contiguous (row) dimension
    kernels::DType type = kernels::DType::F32;
    uint64_t offset = 0;   // from the start of the data section
    uint64_t n_bytes = 0;  // size of the data
    int64_t n_elements = 0;
};

// A GGUF file, memory-mapped read-only. Immutable after open; safe to share between threads.
// Every structural problem (truncation, bad magic, unknown types, overlapping or out-of-file
// tensors, bad alignment) is reported by open() with the file name and byte offset.
class GgufFile {
   public:
    static Result<GgufFile> open(const std::string& path);
    // Parses a copy of `bytes` (held 64-byte aligned) with the same checks as open(); `name`
    // stands for the path in messages. For tests and fuzzing.
    static Result<GgufFile> from_bytes(std::span<const uint8_t> bytes,
                                       std::string name = "<memory>");

    GgufFile(GgufFile&&) noexcept;
    GgufFile& operator=(GgufFile&&) noexcept;
    ~GgufFile();

    const std::string& path() const;
    uint32_t version() const;
    uint64_t alignment() const;
    uint64_t file_bytes() const;
    // Start of the tensor data section in the file (header end rounded up to alignment()).
    uint64_t data_offset() const;

    // Metadata keys in file order.
    std::vector<std::string> keys() const;
    bool has(std::string_view key) const;
    // Type of a key (Array for arrays); NotFound if absent.
    Result<GgufType> type_of(std::string_view key) const;
    // Element type of an array key.
    Result<GgufType> array_type_of(std::string_view key) const;
    // Element count of an array key, without materialising it.
    Result<uint64_t> array_size(std::string_view key) const;

    // Typed getters; a wrong type or out-of-range integer is an error naming the key.
    // Codes: NotFound (no such key), Corrupt (wrong type; the message names the actual type),
    // OutOfRange (a u64 above INT64_MAX for get_int/get_int_array).
    Result<std::string> get_string(std::string_view key) const;
    Result<int64_t> get_int(std::string_view key) const;     // any integer type
    Result<double> get_float(std::string_view key) const;    // F32/F64 (ints converted)
    Result<bool> get_bool(std::string_view key) const;
    Result<std::vector<std::string>> get_string_array(std::string_view key) const;
    Result<std::vector<int64_t>> get_int_array(std::string_view key) const;
    Result<std::vector<double>> get_float_array(std::string_view key) const;

    // Human-readable value (arrays: type, length and the first max_items items).
    std::string value_to_string(std::string_view key, int max_items = 8) const;

    const std::vector<GgufTensorInfo>& tensors() const;
    const GgufTensorInfo* find_tensor(std::string_view name) const;
    // Pointer into the mapping; lives as long as this GgufFile.
    const uint8_t* tensor_data(const GgufTensorInfo& info) const;

   private:
    struct Impl;
    explicit GgufFile(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Name of a metadata type as `attnrag info` prints it ("u32", "string", "array", ...).
const char* gguf_type_name(GgufType type);

// Builds a GGUF v3 file (used by tests to make tiny models and broken files, and by tools).
class GgufWriter {
   public:
    // Metadata is written in first-set order; setting a key again replaces its value in place.
    void set_u32(std::string key, uint32_t v);
    void set_i32(std::string key, int32_t v);
    void set_u64(std::string key, uint64_t v);
    void set_f32(std::string key, float v);
    void set_bool(std::string key, bool v);
    void set_string(std::string key, std::string v);
    void set_string_array(std::string key, std::vector<std::string> v);
    void set_i32_array(std::string key, std::vector<int32_t> v);
    void set_f32_array(std::string key, std::vector<float> v);
    void set_alignment(uint32_t alignment);  // writes general.alignment
    // The remaining metadata types, so every GGUF value type can be written.
    void set_u8(std::string key, uint8_t v);
    void set_i8(std::string key, int8_t v);
    void set_u16(std::string key, uint16_t v);
    void set_i16(std::string key, int16_t v);
    void set_i64(std::string key, int64_t v);
    void set_f64(std::string key, double v);
    // An array of a fixed-size type (not String/Array): `elems` holds the little-endian
    // elements back to back, a multiple of the element size.
    void set_array(std::string key, GgufType elem_type, std::span<const uint8_t> elems);

    // data must be row_bytes(type, shape[0]) * prod(shape[1:]) bytes.
    Status add_tensor(std::string name, std::vector<int64_t> shape, kernels::DType type,
                      std::span<const uint8_t> data);

    // Serialized bytes (header, metadata, tensor table, padded data).
    std::vector<uint8_t> to_bytes() const;
    Status write(const std::string& path) const;

   private:
    struct Kv {
        std::string key;
        GgufType type;
        GgufType array_type;
        std::vector<uint8_t> payload;  // serialized value (without key/type)
    };
    struct Tensor {
        std::string name;
        std::vector<int64_t> shape;
        kernels::DType type;
        std::vector<uint8_t> data;
    };
    void set_raw(std::string key, GgufType type, GgufType array_type, std::vector<uint8_t> payload);
    std::vector<Kv> kvs_;
    std::vector<Tensor> tensors_;
    uint32_t alignment_ = 32;
};

}  // namespace attnrag
