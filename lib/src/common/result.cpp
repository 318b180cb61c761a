// Names of error codes.
#include "attnrag/result.hpp"

namespace attnrag {

const char* errc_name(Errc code) {
    switch (code) {
        case Errc::InvalidArgument: return "invalid argument";
        case Errc::NotFound: return "not found";
        case Errc::Io: return "i/o error";
        case Errc::Corrupt: return "corrupt";
        case Errc::Unsupported: return "unsupported";
        case Errc::OutOfRange: return "out of range";
        case Errc::OutOfMemory: return "out of memory";
        case Errc::Cancelled: return "cancelled";
        case Errc::Internal: return "internal error";
    }
    return "error";
}

}  // namespace attnrag
