// Fork-join thread pool: spin-then-sleep workers woken by a generation counter.
#include "attnrag/kernels/thread_pool.hpp"

#include <chrono>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace attnrag::kernels {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
    _mm_pause();
#endif
}

// How long a worker spins for the next job before sleeping. Decode issues a job every few
// microseconds, so a short spin avoids futex wake-ups on the hot path.
constexpr auto kSpin = std::chrono::microseconds(200);

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    workers_.reserve(static_cast<size_t>(n_threads_ - 1));
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    generation_.notify_all();
    for (auto& t : workers_) t.join();
}

int ThreadPool::default_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

void ThreadPool::run_raw(RawFn fn, void* ctx) {
    if (n_threads_ == 1) {
        fn(ctx, 0, 1);
        return;
    }
    fn_ = fn;
    ctx_ = ctx;
    n_pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    generation_.notify_all();
    fn(ctx, 0, n_threads_);
    // Spin briefly (the common case: workers finish within microseconds), then yield so that a
    // descheduled worker can run when the machine is oversubscribed (other processes, ctest -j).
    for (int spins = 0; n_pending_.load(std::memory_order_acquire) != 0; ++spins) {
        if (spins < 4096) {
            cpu_relax();
        } else {
            std::this_thread::yield();
        }
    }
}

void ThreadPool::worker_main(int idx) {
    uint64_t seen = 0;
    for (;;) {
        // Wait for a new generation: spin first, then sleep on the atomic.
        auto t0 = std::chrono::steady_clock::now();
        uint64_t g = generation_.load(std::memory_order_acquire);
        int spins = 0;
        while (g == seen) {
            cpu_relax();
            if (++spins % 256 == 0) {
                if (std::chrono::steady_clock::now() - t0 > kSpin) {
                    generation_.wait(seen, std::memory_order_acquire);
                } else {
                    std::this_thread::yield();  // let the owner run if we share its core
                }
            }
            g = generation_.load(std::memory_order_acquire);
        }
        seen = g;
        if (stop_.load(std::memory_order_acquire)) return;
        fn_(ctx_, idx, n_threads_);
        n_pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

}  // namespace attnrag::kernels
