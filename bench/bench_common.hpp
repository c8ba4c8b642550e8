// SPDX-License-Identifier: Apache-2.0
// What every ropekit benchmark compares itself with, measured in the same run on this machine:
// memcpy bandwidth (the limit of a memory-bound kernel), a read-only sweep (the limit of decode
// attention) and the fp32 FMA peak of one core (the limit of compute-bound kernels).
#pragma once

#include <benchmark/benchmark.h>
#include <ropekit/config.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace ropekit_bench {

using clock = std::chrono::steady_clock;

/// Median of repeated timings of f(), in seconds.
template <class F>
double median_seconds(F&& f, int repetitions) {
    std::vector<double> t;
    for (int r = 0; r < repetitions; ++r) {
        const auto t0 = clock::now();
        f();
        t.push_back(std::chrono::duration<double>(clock::now() - t0).count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

/// Repetitions so that one measurement moves about `target_bytes` in total.
inline int repetitions_for(std::size_t bytes, std::size_t target_bytes = std::size_t(1) << 30) {
    return int(std::clamp<std::size_t>(target_bytes / std::max<std::size_t>(bytes, 1), 5, 20000));
}

/// Bytes per second of memcpy between two buffers of `bytes` each, counted like a kernel that
/// reads and writes `bytes` (2 * bytes moved per call). Median of many calls, cached per size.
inline double memcpy_bytes_per_second(std::size_t bytes) {
    static std::mutex m;
    static std::map<std::size_t, double> cache;
    std::lock_guard<std::mutex> lock(m);
    if (auto it = cache.find(bytes); it != cache.end()) return it->second;
    std::vector<char> src(bytes, 1), dst(bytes, 0);
    std::memcpy(dst.data(), src.data(), bytes);  // fault the pages in
    const int reps = repetitions_for(bytes);
    // Chunks of calls, median over chunks: small copies are timed in batches.
    const int per_chunk = std::max(1, reps / 9);
    const double t = median_seconds(
        [&] {
            for (int i = 0; i < per_chunk; ++i) {
                std::memcpy(dst.data(), src.data(), bytes);
                benchmark::ClobberMemory();
            }
        },
        9);
    const double bw = 2.0 * double(bytes) * per_chunk / t;
    cache[bytes] = bw;
    return bw;
}

/// A fixed team of threads pinned to distinct cores, as an engine's thread pool would be: the
/// caller is member 0 and n - 1 workers wait (spinning) for run(). Spawning threads per call
/// instead left both threads on one core for part of a 50 ms prefill often enough to cut the
/// measured 2-thread speed-up from 1.8x to 1.3x on this VM. One team at a time: two teams
/// pin their workers to the same cores, and a spinning worker halves the other's core.
class thread_team {
  public:
    explicit thread_team(int n) : n_(n) {
#if defined(__linux__)
        pthread_getaffinity_np(pthread_self(), sizeof saved_, &saved_);
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &saved_)) cpus_.push_back(c);
        pin(0);
#endif
        for (int i = 1; i < n; ++i)
            workers_.emplace_back([this, i] {
                pin(i);
                int seen = 0;
                for (;;) {
                    int g;
                    while ((g = generation_.load(std::memory_order_acquire)) == seen) relax();
                    if (g < 0) return;
                    seen = g;
                    job_(i);
                    done_.fetch_add(1, std::memory_order_acq_rel);
                }
            });
    }
    thread_team(const thread_team&) = delete;
    thread_team& operator=(const thread_team&) = delete;
    ~thread_team() {
        generation_.store(-1, std::memory_order_release);
        for (auto& t : workers_) t.join();
#if defined(__linux__)
        pthread_setaffinity_np(pthread_self(), sizeof saved_, &saved_);
#endif
    }
    int size() const noexcept {
        return n_;
    }
    /// Calls f(i) on member i for every i in [0, size()) and returns when all are done.
    void run(const std::function<void(int)>& f) {
        job_ = f;
        done_.store(0, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_acq_rel);
        f(0);
        while (done_.load(std::memory_order_acquire) < n_ - 1) relax();
    }

  private:
    static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#else
        std::this_thread::yield();
#endif
    }
    void pin(int i) noexcept {
#if defined(__linux__)
        if (cpus_.empty()) return;
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpus_[std::size_t(i) % cpus_.size()], &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
#else
        (void)i;
#endif
    }

    int n_;
    std::vector<std::thread> workers_;
    std::function<void(int)> job_;
    std::atomic<int> generation_{0};
    std::atomic<int> done_{0};
#if defined(__linux__)
    cpu_set_t saved_{};
    std::vector<int> cpus_;
#endif
};

/// Reads `bytes` bytes from `p` once, as a vectorised sum of 32-bit integers (integers: K/V bit
/// patterns read as floats could be denormals and slow the sweep down). The bandwidth limit of
/// a kernel that reads the same bytes once.
inline void read_sweep(const void* p, std::size_t bytes) {
    const char* c = static_cast<const char*>(p);
#if defined(__GNUC__) || defined(__clang__)
    // Two independent 64-byte vector sums (GCC / clang vector extension: the plain-array form
    // is not always vectorised, and a scalar sweep would understate the bandwidth).
    typedef std::uint32_t u16x __attribute__((vector_size(64)));
    u16x a{}, b{};
    std::size_t i = 0;
    for (; i + 128 <= bytes; i += 128) {
        u16x x, y;
        std::memcpy(&x, c + i, sizeof x);
        std::memcpy(&y, c + i + 64, sizeof y);
        a += x;
        b += y;
    }
    a += b;
#else
    std::uint32_t a[16] = {};
    std::size_t i = 0;
    for (; i + 64 <= bytes; i += 64)
        for (int j = 0; j < 16; ++j) {
            std::uint32_t x;
            std::memcpy(&x, c + i + 4 * j, 4);
            a[j] += x;
        }
#endif
    std::uint32_t tail = 0;
    for (; i < bytes; ++i) tail += std::uint8_t(c[i]);
    benchmark::DoNotOptimize(a);
    benchmark::DoNotOptimize(tail);
}

/// fp32 FLOP/s of one core running independent FMA chains (2 FLOP per lane per FMA), measured
/// once per process. This is the ceiling `of_fma_peak` counters divide by.
inline double fma_peak_flops() {
    static const double peak = [] {
#if defined(__AVX512F__)
        using V = __m512;
        constexpr int lanes = 16;
        auto fma = [](V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); };
        auto set = [](float x) { return _mm512_set1_ps(x); };
#elif defined(__FMA__)
        using V = __m256;
        constexpr int lanes = 8;
        auto fma = [](V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); };
        auto set = [](float x) { return _mm256_set1_ps(x); };
#else
        using V = float;
        constexpr int lanes = 1;
        auto fma = [](V a, V b, V c) { return a * b + c; };
        auto set = [](float x) { return x; };
#endif
        constexpr int chains = 12;
        const long iters = 20'000'000;
        const double t = median_seconds(
            [&] {
                V acc[chains];
                ROPEKIT_UNROLL
                for (int c = 0; c < chains; ++c) acc[c] = set(1.0f + 0.001f * float(c));
                // Opaque start values: equal ones (1 + 1e-7 c rounds to the same float for
                // neighbouring c) let the compiler merge chains and inflate the "peak" by 20%.
                benchmark::DoNotOptimize(acc);
                const V mul = set(0.9999999f), add = set(1e-7f);
                // Unrolled at every optimisation level: at -O2 GCC kept acc[] on the stack and
                // the "peak" came out 2.5x low (ROPEKIT_BENCH_OPT=-O2).
                for (long i = 0; i < iters; ++i) {
                    ROPEKIT_UNROLL
                    for (int c = 0; c < chains; ++c) acc[c] = fma(acc[c], mul, add);
                }
                benchmark::DoNotOptimize(acc);
            },
            5);
        return 2.0 * lanes * chains * double(iters) / t;
    }();
    return peak;
}

}  // namespace ropekit_bench
