// A one-line progress display on stderr.
#include "progress.h"

#include <unistd.h>

#include <cstdio>

namespace attnrag::cli {

Progress::Progress(bool enabled) : enabled_(enabled), tty_(::isatty(2) != 0) {}

void Progress::update(const std::string& line, bool force) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    auto gap = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
    if (!force && shown_ && now - last_ < gap) return;
    last_ = now;
    shown_ = true;
    if (tty_) {
        std::fprintf(stderr, "\r\033[K%s", line.c_str());
    } else {
        std::fprintf(stderr, "%s\n", line.c_str());
    }
    std::fflush(stderr);
}

void Progress::done() {
    if (enabled_ && tty_ && shown_) std::fprintf(stderr, "\n");
    shown_ = false;
}

}  // namespace attnrag::cli
