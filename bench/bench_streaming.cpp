// SPDX-License-Identifier: Apache-2.0
// StreamingLLM decode (sink_cache.hpp): one token through the sink + window caches and the
// attention of several layers, per key storage strategy and stream position.
//
// Shape: n_sink 4, window 1020 (1024 slots), 32 query heads / 8 K/V heads, head_dim 128,
// 4 layers (4 x 8 MB of f32 K/V, so the caches do not sit in L2 together), one thread.
// Each iteration is one decode step of every layer: append the token's k/v (evicting the
// oldest window token), rotate q, attend over the cache (sinks + window).
//
// Storage: f32 at 10^4 and 10^6, bf16, f16 and q8_0 at 10^6, every key storage strategy the
// type allows (block_q8_0 has no rotated_at_slot: sink_cache rejects it, see sink_cache.hpp).
//
// Reaching a stream position: sink_cache::restore builds the exact state appending the whole
// stream would give (same slots, same rotations, same re-base offset), so position 10^6 costs
// no 10^6 appends. The benchmark then streams on from there, one token per iteration. The
// rotated_once re-base (one window rotation every rebase_interval = 2^20 tokens) does not fall
// inside the measured steps: its amortised cost is one window rotation per 2^20 tokens.
//
// Counters:
//   us_per_token  time of one decode step over all layers, microseconds
//   over_read_bw  (per strategy) K/V bytes of all layers per step time, over the bandwidth of a
//                 read-only sweep of as many bytes: 1 is the memory roofline of any decode
//   tokens/s      decode steps per second (all layers)
//   over_pos10k   (streaming/decode/f32/pos1000000) time per token at position 10^6 over the
//                 same at 10^4, default strategy, alternated in the same iterations (goal <= 1.1)
//   over_rerotate (same benchmark) time per token of rotated_at_slot (re-rotating the window on
//                 every eviction, llama.cpp's K-shift) over the default's, at 10^6 (goal >= 2)
#include <benchmark/benchmark.h>

#include <ropekit/scaling.hpp>
#include <ropekit/sink_cache.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "bench_common.hpp"

namespace {

using ropekit::key_storage;

constexpr int n_heads = 32, n_kv_heads = 8, head_dim = 128, n_layers = 4;
constexpr std::int64_t n_sink = 4, window = 1020;

std::vector<float> noise(std::size_t n, std::uint32_t seed) {
    std::vector<float> r(n);
    for (std::size_t i = 0; i < n; ++i) {
        seed = seed * 1664525u + 1013904223u;
        r[i] = float(seed >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
    return r;
}

/// The caches of all layers at one stream position, with one token's q/k/v per layer.
template <class KV>
struct stream {
    ropekit::rope_frequencies freqs;
    std::vector<std::unique_ptr<ropekit::sink_cache<KV>>> caches;
    std::unique_ptr<ropekit::sink_workspace<KV>> ws;
    std::unique_ptr<ropekit::sink_partial> part;
    std::vector<float> q, k, v, o;

    stream(key_storage keys, std::int64_t position)
        : freqs(ropekit::make_frequencies(ropekit::rope_params{500000.0, head_dim, head_dim},
                                          ropekit::default_rope{})) {
        ropekit::sink_cache_options opt;
        opt.n_kv_heads = n_kv_heads;
        opt.head_dim = head_dim;
        opt.n_sink = n_sink;
        opt.window = window;
        opt.keys = keys;
        const std::size_t row = std::size_t(n_kv_heads) * head_dim;
        const auto sk = noise(std::size_t(n_sink) * row, 1),
                   sv = noise(std::size_t(n_sink) * row, 2);
        const auto wk = noise(std::size_t(window) * row, 3),
                   wv = noise(std::size_t(window) * row, 4);
        for (int l = 0; l < n_layers; ++l) {
            caches.push_back(std::make_unique<ropekit::sink_cache<KV>>(freqs, opt));
            // The state after streaming `position` tokens (the next one is at `position`).
            caches.back()->restore(ropekit::packed_view(sk.data(), n_sink, n_kv_heads, head_dim),
                                   ropekit::packed_view(sv.data(), n_sink, n_kv_heads, head_dim),
                                   ropekit::packed_view(wk.data(), window, n_kv_heads, head_dim),
                                   ropekit::packed_view(wv.data(), window, n_kv_heads, head_dim),
                                   position);
        }
        ws = std::make_unique<ropekit::sink_workspace<KV>>(*caches[0], n_heads);
        part = std::make_unique<ropekit::sink_partial>(n_heads, head_dim);
        q = noise(std::size_t(n_heads) * head_dim, 5);
        k = noise(row, 6);
        v = noise(row, 7);
        o.assign(std::size_t(n_heads) * head_dim, 0.0f);
    }

    /// One decode step of every layer (append + attention); returns its time in seconds.
    double step() {
        const auto params = ropekit::attention_params::for_model(freqs);
        const auto t0 = ropekit_bench::clock::now();
        for (auto& c : caches)
            ropekit::sink_decode_step(
                *c, ropekit::packed_view(static_cast<const float*>(q.data()), 1, n_heads, head_dim),
                ropekit::packed_view(static_cast<const float*>(k.data()), 1, n_kv_heads, head_dim),
                ropekit::packed_view(static_cast<const float*>(v.data()), 1, n_kv_heads, head_dim),
                ropekit::packed_view(o.data(), 1, n_heads, head_dim), params, *ws, *part);
        benchmark::ClobberMemory();
        return std::chrono::duration<double>(ropekit_bench::clock::now() - t0).count();
    }
};

void report(benchmark::State& st, double seconds) {
    const double iters = double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    st.counters["us_per_token"] = seconds / iters * 1e6;
    st.counters["tokens/s"] = iters / seconds;
}

/// Bytes per second of a read-only sweep over `bytes` (bench_common.hpp's read_sweep), median.
double read_bandwidth(std::size_t bytes) {
    std::vector<char> buf(bytes, 1);
    const double t =
        ropekit_bench::median_seconds([&] { ropekit_bench::read_sweep(buf.data(), bytes); }, 21);
    return double(bytes) / t;
}

template <class KV>
void decode(benchmark::State& st, key_storage keys, std::int64_t position) {
    stream<KV> s(keys, position);
    double total = 0;
    for (auto _ : st) {
        const double t = s.step();
        st.SetIterationTime(t);
        total += t;
    }
    report(st, total);
    // K and V of every layer are read once per step at least: how close that is to the
    // machine's read bandwidth over the same number of bytes (1 = at the memory roofline).
    const std::size_t kv_bytes = std::size_t(n_layers) * 2 * std::size_t(n_sink + window) *
                                 std::size_t(n_kv_heads) * head_dim * sizeof(KV) /
                                 std::size_t(ropekit::values_per_element_v<KV>);
    const double iters = double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    st.counters["over_read_bw"] = double(kv_bytes) * iters / total / read_bandwidth(kv_bytes);
}

/// The headline: default strategy at 10^6, with the same-run ratios over 10^4 and over
/// rotated_at_slot (the three alternate within every iteration, so drift hits all alike).
void headline(benchmark::State& st) {
    const key_storage def = ropekit::sink_cache_options{}.keys;
    stream<float> at_1m(def, 1000000), at_10k(def, 10000),
        rerotate(key_storage::rotated_at_slot, 1000000);
    double t_1m = 0, t_10k = 0, t_rr = 0;
    for (auto _ : st) {
        const double t = at_1m.step();
        st.SetIterationTime(t);
        t_1m += t;
        t_10k += at_10k.step();
        t_rr += rerotate.step();
    }
    report(st, t_1m);
    st.counters["over_pos10k"] = t_1m / t_10k;
    st.counters["over_rerotate"] = t_rr / t_1m;
}

const char* name_of(key_storage k) {
    switch (k) {
        case key_storage::unrotated:
            return "unrotated";
        case key_storage::rotated_at_slot:
            return "rotated_at_slot";
        case key_storage::rotated_once:
            return "rotated_once";
    }
    return "?";
}

template <class KV>
void register_strategies(const std::vector<std::int64_t>& positions) {
    for (key_storage k :
         {key_storage::rotated_once, key_storage::rotated_at_slot, key_storage::unrotated}) {
        // block_q8_0 keys would be re-quantised at every eviction: the cache rejects it.
        if (std::is_same_v<KV, ropekit::block_q8_0> && k == key_storage::rotated_at_slot) continue;
        for (std::int64_t p : positions) {
            const std::string name = std::string("streaming/decode/") +
                                     ropekit::storage_name<KV>() + "/" + name_of(k) + "/pos" +
                                     std::to_string(p);
            benchmark::RegisterBenchmark(name.c_str(),
                                         [k, p](benchmark::State& st) { decode<KV>(st, k, p); })
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond)
                ->MinTime(0.5);
        }
    }
}

const bool registered = [] {
    benchmark::RegisterBenchmark("streaming/decode/f32/pos1000000", headline)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->MinTime(0.5);
    register_strategies<float>({10000, 1000000});
    register_strategies<ropekit::bfloat16>({1000000});
    register_strategies<ropekit::half>({1000000});
    register_strategies<ropekit::block_q8_0>({1000000});
    return true;
}();

}  // namespace

BENCHMARK_MAIN();
