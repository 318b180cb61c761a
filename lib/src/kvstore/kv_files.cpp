// Durable file replacement for the passage KV store: temp file, fsync, rename, directory fsync.
#include "kvstore/kv_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

#include "common/mapped_file.h"

namespace attnrag::detail {

namespace {

Error io_error(const std::filesystem::path& path, const std::string& what, int err) {
    return make_error(Errc::Io, path.string() + ": " + what + ": " + errno_text(err));
}

// 0 or the errno of the failed write.
int write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::write(fd, bytes.data(), bytes.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        bytes.remove_prefix(static_cast<size_t>(n));
    }
    return 0;
}

// A name no other writer (thread or process) uses at the same time.
std::filesystem::path temp_path_for(const std::filesystem::path& path) {
    static std::atomic<uint64_t> counter{0};
    std::string name = ".";
    name += path.filename().string();
    name += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    return path.parent_path() / name;
}

}  // namespace

Status write_file_durably(const std::filesystem::path& path, std::string_view bytes) {
    const std::filesystem::path tmp = temp_path_for(path);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return io_error(tmp, "cannot create", errno);
    auto fail = [&](const std::string& what, int err) {
        ::unlink(tmp.c_str());
        return io_error(path, what, err);
    };
    if (const int err = write_all(fd, bytes); err != 0) {
        ::close(fd);
        return fail("cannot write " + std::to_string(bytes.size()) + " bytes", err);
    }
    if (::fsync(fd) != 0) {
        const int err = errno;
        ::close(fd);
        return fail("cannot fsync", err);
    }
    if (::close(fd) != 0) return fail("cannot close", errno);
    if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("cannot rename into place", errno);
    // The rename is durable only once the directory entry is on disk.
    const int dir_fd = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) return io_error(path.parent_path(), "cannot open directory", errno);
    const int rc = ::fsync(dir_fd);
    const int err = errno;
    ::close(dir_fd);
    if (rc != 0) return io_error(path.parent_path(), "cannot fsync directory", err);
    return {};
}

Status remove_file(const std::filesystem::path& path) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        return io_error(path, "cannot remove", errno);
    return {};
}

}  // namespace attnrag::detail
