// SPDX-License-Identifier: Apache-2.0
// Streams a long token sequence (default 1,000,000; `--tokens N`) through StreamingLLM caches
// (ropekit::sink_cache: 4 sinks + a recent window per layer) and their attention, with
// synthetic q/k/v. Every 100k tokens it prints tokens/s and the resident memory (VmRSS): both
// stay flat, because the cache never grows and nothing is allocated after construction. Exits
// non-zero if the resident memory grows.
#include <ropekit/scaling.hpp>
#include <ropekit/sink_cache.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace {

/// Resident memory in kB, from /proc/self/status (0 where it does not exist).
long resident_kb() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
    return 0;
}

/// Cheap deterministic noise in [-1, 1) (an LCG): the "projections" of each token.
void fill(std::vector<float>& x, std::uint32_t& seed) {
    for (float& e : x) {
        seed = seed * 1664525u + 1013904223u;
        e = float(seed >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::int64_t tokens = 1000000;
    for (int a = 1; a + 1 < argc; ++a)
        if (std::strcmp(argv[a], "--tokens") == 0) tokens = std::atoll(argv[a + 1]);
    if (tokens <= 0) {
        std::fprintf(stderr, "usage: streaming [--tokens N]  (N > 0)\n");
        return 2;
    }

    // A small model so a million tokens take seconds: 3 layers, 8 query / 2 K/V heads (GQA),
    // head_dim 64, Llama-3-style scaled frequencies.
    const int layers = 3, n_heads = 8, n_kv = 2, head_dim = 64;
    const ropekit::rope_frequencies freqs = ropekit::make_frequencies(
        ropekit::rope_params{500000.0, head_dim, head_dim}, ropekit::llama3_scaling{});
    ropekit::sink_cache_options opt;  // default key storage: rotated_once
    opt.n_kv_heads = n_kv;
    opt.head_dim = head_dim;
    opt.n_sink = 4;
    opt.window = 124;
    // Re-base every 2^18 tokens (default 2^20) so a million tokens show a few: the offset
    // column jumps, the output does not.
    opt.rebase_interval = std::int64_t(1) << 18;

    // Everything is allocated here, once: caches, one workspace and one partial (reused by every
    // layer, one thread), the token buffers.
    std::vector<std::unique_ptr<ropekit::sink_cache<float>>> caches;
    for (int l = 0; l < layers; ++l)
        caches.push_back(std::make_unique<ropekit::sink_cache<float>>(freqs, opt));
    ropekit::sink_workspace<float> ws(*caches[0], n_heads);
    ropekit::sink_partial partial(n_heads, head_dim);
    const auto params = ropekit::attention_params::for_model(freqs);
    std::vector<float> q(std::size_t(n_heads * head_dim)), k(std::size_t(n_kv * head_dim)),
        v(k.size()), o(q.size());
    std::uint32_t seed = 1;

    // Print and read /proc once before streaming, so stdout's buffer and the reader's heap use
    // exist before the first measurement.
    std::printf("streaming %lld tokens through %d layers (sinks %lld, window %lld), VmRSS %ld kB\n",
                static_cast<long long>(tokens), layers, static_cast<long long>(opt.n_sink),
                static_cast<long long>(opt.window), resident_kb());
    std::fflush(stdout);
    const std::int64_t report_every = 100000;
    long baseline_kb = -1;
    bool grew = false;
    auto t0 = std::chrono::steady_clock::now();
    std::int64_t since = 0;
    for (std::int64_t t = 0; t < tokens; ++t) {
        for (int l = 0; l < layers; ++l) {
            fill(q, seed);
            fill(k, seed);
            fill(v, seed);
            // One decode step: append this token's raw k/v (evicting the oldest window token),
            // rotate q, attend over sinks + window. The output would feed the next layer.
            ropekit::sink_decode_step(
                *caches[std::size_t(l)],
                ropekit::packed_view(static_cast<const float*>(q.data()), 1, n_heads, head_dim),
                ropekit::packed_view(static_cast<const float*>(k.data()), 1, n_kv, head_dim),
                ropekit::packed_view(static_cast<const float*>(v.data()), 1, n_kv, head_dim),
                ropekit::packed_view(o.data(), 1, n_heads, head_dim), params, ws, partial);
        }
        ++since;
        if (t % 1000 == 0) {  // progress bar on stderr
            const int width = 40, done = int(width * (t + 1) / tokens);
            std::fprintf(stderr, "\r[%.*s%*s] %lld", done,
                         "========================================", width - done, "",
                         static_cast<long long>(t + 1));
        }
        if ((t + 1) % report_every == 0 || t + 1 == tokens) {
            const auto now = std::chrono::steady_clock::now();
            const double secs = std::chrono::duration<double>(now - t0).count();
            const long kb = resident_kb();
            // The first report is the baseline (every page of the caches has been written by
            // then); later ones must not exceed it. A few pages of slack for stdio buffers.
            if (baseline_kb < 0) baseline_kb = kb;
            if (kb > baseline_kb + 64) grew = true;
            std::fprintf(stderr, "\n");
            std::printf(
                "%10lld tokens  %9.0f tokens/s  VmRSS %ld kB  (position %lld, offset %lld)\n",
                static_cast<long long>(t + 1), double(since) / secs, kb,
                static_cast<long long>(caches[0]->last_position()),
                static_cast<long long>(caches[0]->rotation_offset()));
            std::fflush(stdout);
            t0 = now;
            since = 0;
        }
    }
    if (grew) {
        std::printf("resident memory grew beyond %ld kB\n", baseline_kb + 64);
        return 1;
    }
    std::printf("memory stayed flat (%ld kB)\n", baseline_kb);
    return 0;
}
