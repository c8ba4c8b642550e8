// SPDX-License-Identifier: Apache-2.0
// How an engine spreads ropekit attention over its threads:
//  1. prefill: (query heads x query blocks) work items, one attention_workspace per thread;
//  2. decode: one query against a long cache, keys split over threads, partials merged by
//     log-sum-exp (gpt-oss learned sinks added once, by the merge).
// Both results are checked against the single-threaded front door.
#include <ropekit/attention.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>
#include <vector>

namespace {

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    float m = 0.0f;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
}

}  // namespace

int main() {
    const unsigned n_threads = std::max(2u, std::min(4u, std::thread::hardware_concurrency()));
    const std::int64_t n = 1000, H = 16, KVH = 4;  // GQA: 4 query heads per K/V head
    const int D = 128;
    std::mt19937 rng(42);
    std::normal_distribution<float> nd;
    std::vector<float> q(std::size_t(n * H * D)), o(q.size()), o_ref(q.size());
    std::vector<ropekit::bfloat16> k(std::size_t(n * KVH * D)), v(k.size());
    for (auto& x : q) x = nd(rng);
    for (auto& x : k) x = ropekit::bfloat16(nd(rng));
    for (auto& x : v) x = ropekit::bfloat16(nd(rng));
    const auto qv = ropekit::packed_view<const float>(q.data(), n, H, D);
    const auto kv = ropekit::packed_view<const ropekit::bfloat16>(k.data(), n, KVH, D);
    const auto vv = ropekit::packed_view<const ropekit::bfloat16>(v.data(), n, KVH, D);
    // Each query sees itself and 255 earlier keys. A sliding window is legitimately a plain
    // mask over text positions (models trained with it: Mistral, gpt-oss's SWA layers). A
    // StreamingLLM cache (sinks + window) is not: it also changes positions, so it is
    // position_rule_attention with ropekit::streaming_llm and its mask() (docs/attention.md,
    // "Position rules").
    const ropekit::sliding_window_mask mask{256};
    // No RoPE in this example (random q and k), so the scale is set explicitly; a model with
    // RoPE uses attention_params::for_model(freqs), which includes its attention factor.
    const auto p = ropekit::attention_params::with_softmax_scale(1.0 / std::sqrt(double(D)));

    // --- 1. Prefill: work items = (one K/V head's query heads) x (64-token query blocks). ---
    ropekit::attention(qv, kv, vv, ropekit::packed_view(o_ref.data(), n, H, D), mask, p);
    const std::int64_t group = H / KVH, block = 64;
    const std::int64_t blocks = (n + block - 1) / block, items = KVH * blocks;
    std::atomic<std::int64_t> next{0};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < n_threads; ++t)
        pool.emplace_back([&] {
            auto ws = std::make_unique<ropekit::attention_workspace>();  // once per thread
            for (std::int64_t i = next++; i < items; i = next++) {
                const std::int64_t g = i % KVH, b = i / KVH;
                ropekit::attention_blocked(
                    ropekit::default_arch{}, qv, kv, vv, ropekit::packed_view(o.data(), n, H, D),
                    mask, p, ropekit::head_range{g * group, (g + 1) * group},
                    ropekit::query_range{b * block, std::min(n, (b + 1) * block)},
                    ropekit::key_range{0, n}, *ws);
            }
        });
    for (auto& th : pool) th.join();
    std::printf("prefill  %lld tokens, %u threads: max |threaded - single| = %g\n",
                static_cast<long long>(n), n_threads, double(max_abs_diff(o, o_ref)));

    // --- 2. Decode: the last token against the whole cache, keys split over threads. ---
    std::vector<float> sinks(static_cast<std::size_t>(H));
    for (auto& s : sinks) s = nd(rng);
    const ropekit::causal_mask causal;
    const auto q1 = ropekit::packed_view<const float>(q.data() + (n - 1) * H * D, 1, H, D);
    std::vector<float> d_ref(static_cast<std::size_t>(H * D));
    std::vector<float> lse_ref(static_cast<std::size_t>(H));
    ropekit::attention_params pd = p;
    pd.sink_logits = sinks.data();
    pd.lse = lse_ref.data();
    ropekit::attention(q1, kv, vv, ropekit::packed_view(d_ref.data(), 1, H, D), causal, pd);

    std::vector<std::vector<float>> part_o(n_threads, std::vector<float>(std::size_t(H * D)));
    std::vector<std::vector<float>> part_lse(n_threads, std::vector<float>(std::size_t(H)));
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < n_threads; ++t)
        workers.emplace_back([&, t] {
            auto ws = std::make_unique<ropekit::attention_workspace>();
            ropekit::attention_params pt = p;  // no sinks in the partials: the merge adds them
            pt.lse = part_lse[t].data();
            ropekit::attention_blocked(ropekit::default_arch{}, q1, kv, vv,
                                       ropekit::packed_view(part_o[t].data(), 1, H, D), causal, pt,
                                       ropekit::head_range{0, H}, ropekit::query_range{0, 1},
                                       ropekit::split_keys(n, int(n_threads), int(t)), *ws);
        });
    for (auto& th : workers) th.join();
    for (unsigned t = 1; t < n_threads; ++t)
        ropekit::merge_attention(
            ropekit::packed_view(part_o[0].data(), 1, H, D), part_lse[0].data(),
            ropekit::packed_view<const float>(part_o[t].data(), 1, H, D), part_lse[t].data(),
            ropekit::head_range{0, H}, ropekit::query_range{0, 1},
            t == n_threads - 1 ? sinks.data() : nullptr);  // sinks once
    float lse_diff = 0.0f;
    for (std::int64_t h = 0; h < H; ++h)
        lse_diff =
            std::max(lse_diff, std::abs(part_lse[0][std::size_t(h)] - lse_ref[std::size_t(h)]));
    std::printf("decode   1 query x %lld keys, %u threads: max |merged - single| = %g, LSE %g\n",
                static_cast<long long>(n), n_threads, double(max_abs_diff(part_o[0], d_ref)),
                double(lse_diff));
    const bool ok = max_abs_diff(o, o_ref) < 1e-5f && max_abs_diff(part_o[0], d_ref) < 1e-5f &&
                    lse_diff < 1e-5f;
    return ok ? 0 : 1;
}
