// A whole regular file mapped read-only, errno text.
#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

namespace attnrag::detail {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

Result<MappedFile> MappedFile::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        return make_error(err == ENOENT ? Errc::NotFound : Errc::Io, path + ": cannot open: " + errno_text(err));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        return make_error(Errc::Io, path + ": cannot stat: " + errno_text(err));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        return make_error(Errc::Io, path + ": not a regular file");
    }
    MappedFile f;
    f.size_ = static_cast<uint64_t>(st.st_size);
    if (f.size_ > 0) {
        void* p = ::mmap(nullptr, static_cast<size_t>(f.size_), PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int err = errno;
            ::close(fd);
            return make_error(Errc::Io, path + ": cannot map " + std::to_string(f.size_) + " bytes: " + errno_text(err));
        }
        f.map_ = p;
    }
    ::close(fd);  // the mapping keeps the file alive
    return f;
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : map_(std::exchange(o.map_, nullptr)), size_(std::exchange(o.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
    if (this != &o) {
        if (map_ != nullptr) ::munmap(map_, static_cast<size_t>(size_));
        map_ = std::exchange(o.map_, nullptr);
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

MappedFile::~MappedFile() {
    if (map_ != nullptr) ::munmap(map_, static_cast<size_t>(size_));
}

}  // namespace attnrag::detail
