// A one-line progress display on stderr: redrawn in place on a terminal, a line every few
// seconds otherwise (logs stay readable).
#pragma once

#include <chrono>
#include <string>

namespace attnrag::cli {

class Progress {
   public:
    explicit Progress(bool enabled);
    // Shows `line` (redraw limited to ~10/s on a terminal, one line per 5 s elsewhere).
    void update(const std::string& line, bool force = false);
    // Ends the display (newline on a terminal).
    void done();

   private:
    bool enabled_;
    bool tty_;
    bool shown_ = false;
    std::chrono::steady_clock::time_point last_{};
};

}  // namespace attnrag::cli
