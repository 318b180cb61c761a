// A fixed pool of worker threads that run one function on every thread and wait (fork-join).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace attnrag::kernels {

// run() is called from one thread at a time (the owner of the pool, e.g. a Context);
// the calling thread takes part as thread 0. Workers spin briefly after each job (decode issues
// hundreds of small jobs per token) and then sleep, so an idle pool costs no CPU.
class ThreadPool {
   public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int n_threads() const { return n_threads_; }

    // fn(thread_idx, n_threads) on every thread; returns when all are done.
    template <class F>
    void run(F&& fn) {
        run_raw(
            [](void* ctx, int idx, int n) { (*static_cast<std::remove_reference_t<F>*>(ctx))(idx, n); },
            const_cast<void*>(static_cast<const void*>(&fn)));
    }

    // fn(begin, end) over contiguous slices of [0, n), slice boundaries multiples of `grain`.
    template <class F>
    void parallel_for(int64_t n, int64_t grain, F&& fn) {
        if (n <= 0) return;
        run([&](int idx, int nt) {
            int64_t n_units = (n + grain - 1) / grain;
            int64_t u0 = n_units * idx / nt;
            int64_t u1 = n_units * (idx + 1) / nt;
            int64_t b = u0 * grain;
            int64_t e = u1 * grain < n ? u1 * grain : n;
            if (b < e) fn(b, e);
        });
    }

    // Default thread count: hardware concurrency (at least 1).
    static int default_threads();

   private:
    using RawFn = void (*)(void* ctx, int idx, int n);
    void run_raw(RawFn fn, void* ctx);
    void worker_main(int idx);

    int n_threads_;
    std::vector<std::thread> workers_;
    RawFn fn_ = nullptr;
    void* ctx_ = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> n_pending_{0};
    std::atomic<bool> stop_{false};
};

}  // namespace attnrag::kernels
