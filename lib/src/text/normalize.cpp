// NFKC normalization of UTF-8 text through ICU's Normalizer2 (UTF-8 in, UTF-8 out).
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <climits>

#include "attnrag/text.hpp"

namespace attnrag::text {

Result<std::string> nfkc(std::string_view s) {
    if (const size_t bad = find_invalid_utf8(s); bad != npos) {
        return make_error(Errc::InvalidArgument,
                          "nfkc: invalid UTF-8 at byte offset " + std::to_string(bad));
    }
    if (s.size() > static_cast<size_t>(INT32_MAX)) {
        return make_error(Errc::OutOfRange, "nfkc: input of " + std::to_string(s.size()) +
                                                " bytes exceeds ICU's 2 GiB limit");
    }
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* norm = icu::Normalizer2::getNFKCInstance(status);
    if (U_FAILURE(status) || norm == nullptr) {
        return make_error(Errc::Internal,
                          std::string("nfkc: ICU NFKC data unavailable: ") + u_errorName(status));
    }
    const icu::StringPiece in(s.data(), static_cast<int32_t>(s.size()));
    // Already-normalized text (the common case) is returned without rebuilding it.
    if (norm->isNormalizedUTF8(in, status) && U_SUCCESS(status)) return std::string(s);
    status = U_ZERO_ERROR;
    std::string out;
    out.reserve(s.size());
    icu::StringByteSink<std::string> sink(&out);
    norm->normalizeUTF8(0, in, sink, nullptr, status);
    if (U_FAILURE(status)) {
        return make_error(Errc::Internal,
                          std::string("nfkc: ICU normalizeUTF8 failed: ") + u_errorName(status));
    }
    return out;
}

}  // namespace attnrag::text
