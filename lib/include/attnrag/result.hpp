// Result<T>: a value or an Error (code + message) for expected failures; no exceptions cross APIs.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace attnrag {

enum class Errc {
    InvalidArgument,  // bad input from the caller (bad UTF-8, bad option, ...)
    NotFound,         // missing file, key, tensor
    Io,               // read/write/mmap failure, disk full
    Corrupt,          // a file whose contents contradict its format
    Unsupported,      // valid but not handled (type, architecture, version)
    OutOfRange,       // context full, value outside its domain
    OutOfMemory,
    Cancelled,        // a callback asked to stop
    Internal,
};

const char* errc_name(Errc code);

struct Error {
    Errc code = Errc::Internal;
    std::string message;

    std::string to_string() const { return std::string(errc_name(code)) + ": " + message; }
};

inline Error make_error(Errc code, std::string message) { return Error{code, std::move(message)}; }

template <class T>
class [[nodiscard]] Result {
   public:
    Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
    Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() & {
        assert(ok());
        return std::get<0>(v_);
    }
    const T& value() const& {
        assert(ok());
        return std::get<0>(v_);
    }
    T&& value() && {
        assert(ok());
        return std::get<0>(std::move(v_));
    }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const Error& error() const {
        assert(!ok());
        return std::get<1>(v_);
    }

   private:
    std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
   public:
    Result() = default;
    Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    const Error& error() const {
        assert(!ok_);
        return err_;
    }

   private:
    Error err_;
    bool ok_ = true;
};

using Status = Result<void>;

}  // namespace attnrag

// Propagate an error: ATTNRAG_TRY(expr) returns expr's Error from the enclosing function.
#define ATTNRAG_TRY(expr)                              \
    do {                                               \
        auto&& attnrag_try_r_ = (expr);                \
        if (!attnrag_try_r_.ok()) return attnrag_try_r_.error(); \
    } while (0)
