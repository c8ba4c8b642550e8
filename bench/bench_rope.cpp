// SPDX-License-Identifier: Apache-2.0
// Rotary application at memory speed: tokens x 32 heads x head_dim 128, fp32 and bf16, neox and
// gptj, table and table-free, plus the fused q+k (32 q heads, 8 kv heads) call, and the fused
// rotate-and-store of new keys into an f32 / bf16 / f16 / q8_0 cache (rope_store, below).
//
// Each benchmark reports bytes/s (one read and one write of the rotated tensor) and two ratios
// measured in the same run:
//   over_memcpy  kernel bytes/s / memcpy bytes/s of the same tensor size (both count 2 x bytes)
//   over_naive   speed-up over rope_reference.hpp (double math), timed on min(tokens, 64)
//                tokens and scaled linearly (its cost per token is constant)
//   over_1d      (M-RoPE only) its time / the 1-D apply_rope time on the same buffer and table,
//                measured in the same run (median CPU time of 31 calls)
// Names: rope_apply[_free|_qk|_qk_free]/<layout>/<storage>/<tokens>,
// rope_store/<layout>/<dst>/<tokens>, and
// rope_apply/mrope[_interleaved]/f32/<tokens> (NeoX, Qwen2-VL sections [16, 24, 24] contiguous
// or Qwen3-VL [24, 20, 20] interleaved, positions of repeated 64 text tokens + one 32 x 32-patch
// image from get_rope_index, so most tokens take the gather path).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "bench_common.hpp"
#include "ropekit/mrope.hpp"
#include "ropekit/rope.hpp"
#include "ropekit/rope_reference.hpp"

namespace {

constexpr int head_dim = 128;
constexpr int q_heads = 32;
constexpr int kv_heads = 8;
constexpr std::int64_t first_position = 1000;

ropekit::rope_frequencies make_freqs(ropekit::rope_layout layout) {
    ropekit::rope_frequencies f;
    f.head_dim = head_dim;
    f.rotary_dim = head_dim;
    f.layout = layout;
    for (int i = 0; i < head_dim / 2; ++i)
        f.inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / head_dim)));
    return f;
}

template <class T>
std::vector<T> random_tensor(std::size_t n) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<T> v(n);
    for (auto& x : v) x = ropekit::from_float<T>(u(rng));
    return v;
}

// Seconds per call of the double reference on `tokens` tokens (measured on at most 64).
template <class T>
double naive_seconds(ropekit::rope_layout layout, std::int64_t tokens, int heads) {
    static std::map<std::tuple<int, std::int64_t, int>, double> cache;
    const auto key = std::make_tuple(int(layout), tokens, heads);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    const std::int64_t measured = std::min<std::int64_t>(tokens, 64);
    auto x = random_tensor<T>(std::size_t(measured) * heads * head_dim);
    const auto freqs = make_freqs(layout);
    const auto view = ropekit::head_view<T>::packed(x.data(), measured, heads, head_dim);
    const double t = ropekit_bench::median_seconds(
        [&] {
            ropekit::apply_rope_reference(
                freqs, view, ropekit::positions::contiguous(first_position), 0, measured);
            benchmark::ClobberMemory();
        },
        3);
    const double per_call = t * double(tokens) / double(measured);
    cache[key] = per_call;
    return per_call;
}

enum class source { table, table_free };

template <class T>
void bench_apply(benchmark::State& state, ropekit::rope_layout layout, source src,
                 std::int64_t tokens) {
    const auto freqs = make_freqs(layout);
    const auto table = ropekit::cos_sin_table::for_range(freqs, first_position, tokens);
    auto x = random_tensor<T>(std::size_t(tokens) * q_heads * head_dim);
    const auto view = ropekit::head_view<T>::packed(x.data(), tokens, q_heads, head_dim);
    const auto pos = ropekit::positions::contiguous(first_position);
    for (auto _ : state) {
        if (src == source::table)
            ropekit::apply_rope(table, view, pos, 0, tokens);
        else
            ropekit::apply_rope(freqs, view, pos, 0, tokens);
        benchmark::ClobberMemory();
    }
    const std::size_t bytes = x.size() * sizeof(T);
    state.SetBytesProcessed(std::int64_t(state.iterations()) * 2 * std::int64_t(bytes));
    state.counters["over_memcpy"] =
        benchmark::Counter(2.0 * double(bytes) / ropekit_bench::memcpy_bytes_per_second(bytes),
                           benchmark::Counter::kIsIterationInvariantRate);
    state.counters["over_naive"] = benchmark::Counter(
        naive_seconds<T>(layout, tokens, q_heads), benchmark::Counter::kIsIterationInvariantRate);
}

template <class T>
void bench_apply_qk(benchmark::State& state, ropekit::rope_layout layout, source src,
                    std::int64_t tokens) {
    const auto freqs = make_freqs(layout);
    const auto table = ropekit::cos_sin_table::for_range(freqs, first_position, tokens);
    // One packed QKV buffer, as engines produce it: per token 32 q heads, 8 k heads, 8 v heads.
    const std::ptrdiff_t token_stride = std::ptrdiff_t(q_heads + 2 * kv_heads) * head_dim;
    auto qkv = random_tensor<T>(std::size_t(tokens) * std::size_t(token_stride));
    const ropekit::head_view<T> q{qkv.data(), tokens, q_heads, head_dim, token_stride, head_dim};
    const ropekit::head_view<T> k{
        qkv.data() + q_heads * head_dim, tokens, kv_heads, head_dim, token_stride, head_dim};
    const auto pos = ropekit::positions::contiguous(first_position);
    for (auto _ : state) {
        if (src == source::table)
            ropekit::apply_rope_qk(table, q, k, pos, 0, tokens);
        else
            ropekit::apply_rope_qk(freqs, q, k, pos, 0, tokens);
        benchmark::ClobberMemory();
    }
    const std::size_t bytes = std::size_t(tokens) * (q_heads + kv_heads) * head_dim * sizeof(T);
    state.SetBytesProcessed(std::int64_t(state.iterations()) * 2 * std::int64_t(bytes));
    state.counters["over_memcpy"] =
        benchmark::Counter(2.0 * double(bytes) / ropekit_bench::memcpy_bytes_per_second(bytes),
                           benchmark::Counter::kIsIterationInvariantRate);
    state.counters["over_naive"] =
        benchmark::Counter(naive_seconds<T>(layout, tokens, q_heads + kv_heads),
                           benchmark::Counter::kIsIterationInvariantRate);
}

// Median thread CPU time of `repetitions` calls of f.
template <class F>
double thread_cpu_median_seconds(F&& f, int repetitions) {
    auto now = [] {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
    };
    std::vector<double> t;
    for (int r = 0; r < repetitions; ++r) {
        const double t0 = now();
        f();
        t.push_back(now() - t0);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// M-RoPE on text + image positions, with the 1-D kernel on the same buffer as the yardstick.
void bench_mrope(benchmark::State& state, ropekit::mrope_sections sections, std::int64_t tokens) {
    using ropekit::mrope_segment;
    std::vector<mrope_segment> segs;
    for (std::int64_t n = 0; n < tokens;) {
        const std::int64_t text = std::min<std::int64_t>(64, tokens - n);
        segs.push_back(mrope_segment::text(text));
        n += text;
        if (n + 256 > tokens) continue;
        segs.push_back(mrope_segment::image(1, 32, 32));  // 16 x 16 merged = 256 tokens
        n += 256;
    }
    ropekit::mrope_index_options opt;
    opt.model = sections.layout == ropekit::mrope_layout::interleaved
                    ? ropekit::mrope_model::qwen3_vl
                    : ropekit::mrope_model::qwen2_vl;
    const auto idx = ropekit::get_rope_index(segs, opt);
    const auto freqs = make_freqs(ropekit::rope_layout::neox);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, first_position + tokens);
    auto x = random_tensor<float>(std::size_t(tokens) * q_heads * head_dim);
    const auto view = ropekit::head_view<float>::packed(x.data(), tokens, q_heads, head_dim);
    ropekit::validate_mrope_call(table, sections, view, idx.positions(), 0, tokens);
    std::int64_t gathered = 0;
    for (std::int64_t t = 0; t < tokens; ++t)
        gathered += idx.at(0, t) != idx.at(1, t) || idx.at(1, t) != idx.at(2, t);
    const std::size_t bytes = x.size() * sizeof(float);
    // CPU seconds, like the benchmark's own time (the cores are shared: wall time would count
    // other processes' slices in one of the two and not the other).
    const double one_d = thread_cpu_median_seconds(
        [&] {
            ropekit::apply_rope(table, view, ropekit::positions::contiguous(first_position), 0,
                                tokens);
            benchmark::ClobberMemory();
        },
        31);
    for (auto _ : state) {
        ropekit::apply_mrope(table, sections, view, idx.positions(), 0, tokens);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(std::int64_t(state.iterations()) * 2 * std::int64_t(bytes));
    state.counters["over_memcpy"] =
        benchmark::Counter(2.0 * double(bytes) / ropekit_bench::memcpy_bytes_per_second(bytes),
                           benchmark::Counter::kIsIterationInvariantRate);
    // (time per iteration) / one_d: an iteration-invariant rate of one_d, inverted.
    state.counters["over_1d"] = benchmark::Counter(
        one_d, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
    state.counters["gathered"] = double(gathered) / double(tokens);
}

// Fused rotate-and-store of new keys into a KV cache (rope_store): float k rows of
// tokens x 8 kv heads x 128, NeoX or GPT-J, table angles, into a Dst cache. Counters:
//   over_memcpy    (bytes read + bytes written) per second / memcpy bandwidth of the same bytes
//   over_two_pass  time of the unfused path (apply_rope on the float rows in place, then the
//                  library's SIMD conversion / q8_0 quantiser into the cache) / fused time
template <class Dst>
void bench_store(benchmark::State& state, ropekit::rope_layout layout, std::int64_t tokens) {
    const auto freqs = make_freqs(layout);
    const auto table = ropekit::cos_sin_table::for_range(freqs, first_position, tokens);
    const std::size_t values = std::size_t(tokens) * kv_heads * head_dim;
    auto k = random_tensor<float>(values);
    std::vector<Dst> cache(values / std::size_t(ropekit::values_per_element_v<Dst>));
    const auto src = ropekit::head_view<const float>::packed(k.data(), tokens, kv_heads, head_dim);
    const auto dst = ropekit::head_view<Dst>::packed(cache.data(), tokens, kv_heads, head_dim);
    const auto pos = ropekit::positions::contiguous(first_position);
    ropekit::validate_rope_store_call(table, src, dst, pos, 0, tokens);
    // The unfused path on its own copy (rotated in place again and again: rotations keep norms).
    auto k2 = k;
    const auto k2v = ropekit::head_view<float>::packed(k2.data(), tokens, kv_heads, head_dim);
    using arch = ropekit::default_arch;
    const double two_pass = thread_cpu_median_seconds(
        [&] {
            ropekit::apply_rope(table, k2v, pos, 0, tokens);
            if constexpr (std::is_same_v<Dst, ropekit::block_q8_0>) {
                for (std::size_t b = 0; b < cache.size(); ++b)
                    ropekit::detail::quantize_block_q8_0_arch<arch>(k2.data() + 32 * b, cache[b]);
            } else {
                ropekit::detail::store_convert_run<arch, Dst>(k2.data(), cache.data(), int(values));
            }
            benchmark::ClobberMemory();
        },
        31);
    for (auto _ : state) {
        ropekit::rope_store(table, src, dst, pos, 0, tokens);
        benchmark::ClobberMemory();
    }
    const std::size_t bytes = values * sizeof(float) + cache.size() * sizeof(Dst);
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
    // memcpy_bytes_per_second(n) counts the 2n bytes of an n-byte copy: n = bytes / 2.
    state.counters["over_memcpy"] =
        benchmark::Counter(double(bytes) / ropekit_bench::memcpy_bytes_per_second(bytes / 2),
                           benchmark::Counter::kIsIterationInvariantRate);
    state.counters["over_two_pass"] =
        benchmark::Counter(two_pass, benchmark::Counter::kIsIterationInvariantRate);
}

template <class Dst>
void register_store() {
    for (auto layout : {ropekit::rope_layout::neox, ropekit::rope_layout::gptj})
        for (std::int64_t tokens : {512, 4096})
            benchmark::RegisterBenchmark(
                ("rope_store/" + std::string(ropekit::to_string(layout)) + "/" +
                 ropekit::storage_name<Dst>() + "/" + std::to_string(tokens))
                    .c_str(),
                bench_store<Dst>, layout, tokens);
}

template <class T>
void register_type() {
    for (auto layout : {ropekit::rope_layout::neox, ropekit::rope_layout::gptj}) {
        for (std::int64_t tokens : {1, 16, 512, 4096}) {
            const std::string tail = std::string(ropekit::to_string(layout)) + "/" +
                                     ropekit::storage_name<T>() + "/" + std::to_string(tokens);
            benchmark::RegisterBenchmark(("rope_apply/" + tail).c_str(), bench_apply<T>, layout,
                                         source::table, tokens);
            benchmark::RegisterBenchmark(("rope_apply_free/" + tail).c_str(), bench_apply<T>,
                                         layout, source::table_free, tokens);
            benchmark::RegisterBenchmark(("rope_apply_qk/" + tail).c_str(), bench_apply_qk<T>,
                                         layout, source::table, tokens);
            benchmark::RegisterBenchmark(("rope_apply_qk_free/" + tail).c_str(), bench_apply_qk<T>,
                                         layout, source::table_free, tokens);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    register_type<float>();
    register_type<ropekit::bfloat16>();
    for (std::int64_t tokens : {512, 4096}) {
        benchmark::RegisterBenchmark(
            ("rope_apply/mrope/f32/" + std::to_string(tokens)).c_str(), bench_mrope,
            ropekit::mrope_sections{{16, 24, 24}, ropekit::mrope_layout::contiguous}, tokens);
        benchmark::RegisterBenchmark(
            ("rope_apply/mrope_interleaved/f32/" + std::to_string(tokens)).c_str(), bench_mrope,
            ropekit::mrope_sections{{24, 20, 20}, ropekit::mrope_layout::interleaved}, tokens);
    }
    register_store<float>();
    register_store<ropekit::bfloat16>();
    register_store<ropekit::half>();
    register_store<ropekit::block_q8_0>();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("rope_arch", ropekit::arch_name<ropekit::default_arch>());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
