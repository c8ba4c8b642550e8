// SPDX-License-Identifier: Apache-2.0
// An engine's attention layer on ropekit, end to end, for a StreamingLLM deployment:
//   1. the model's config.json -> frequencies (any scaling method; here Llama-3.1's),
//   2. q/k/v in one packed projection buffer (what a fused QKV GEMM writes), viewed in place,
//   3. the prompt's raw k/v appended to a sink + window cache, then q and k rotated in place,
//   4. a prompt longer than the cache attended in one call with the streaming_llm rule, threads
//      over heads,
//   5. decode steps through the cache, threads over keys, partials merged,
// and a check that the two sides agree: the decode output for the last token equals the
// one-call prefill of the whole stream at that row. `engine-walkthrough [prompt] [steps]`.
#include <ropekit/config_json.hpp>
#include <ropekit/ropekit.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <thread>
#include <vector>

namespace {

// A Llama-3.1-style config.json (trimmed to what attention needs).
const char* const config_json = R"({
  "architectures": ["LlamaForCausalLM"],
  "hidden_size": 1024, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128,
  "max_position_embeddings": 131072, "rope_theta": 500000.0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
})";

// Stands in for the QKV projection of `tokens` rows: deterministic, so the check below can
// recompute the whole stream.
void project(std::vector<float>& qkv, std::int64_t first_token, std::int64_t tokens,
             std::ptrdiff_t row_stride) {
    for (std::int64_t t = 0; t < tokens; ++t) {
        std::mt19937 rng(std::uint32_t(first_token + t) * 2654435761u);
        std::normal_distribution<float> nd;
        for (std::ptrdiff_t i = 0; i < row_stride; ++i)
            qkv[std::size_t(t * row_stride + i)] = nd(rng);
    }
}

}  // namespace

int main(int argc, char** argv) try {
    const std::int64_t prompt = argc > 1 ? std::atoll(argv[1]) : 1500;
    const std::int64_t steps = argc > 2 ? std::atoll(argv[2]) : 16;
    if (prompt < 1 || steps < 1) {
        std::fprintf(stderr,
                     "usage: engine-walkthrough [prompt tokens >= 1] [decode steps >= 1]\n");
        return 2;
    }

    // --- 1. config.json -> frequencies; the head counts are the engine's own business. -----
    const ropekit::model_rope_config rope = ropekit::parse_config_json(config_json);
    const auto cfg = nlohmann::json::parse(config_json);
    const int n_heads = cfg.at("num_attention_heads"), n_kv_heads = cfg.at("num_key_value_heads");
    const int head_dim = rope.params.head_dim;
    // Llama-3.1's frequencies do not depend on the length; dynamic NTK would take seq_len here.
    const ropekit::rope_frequencies freqs = rope.frequencies();
    const auto params =
        ropekit::attention_params::for_model(freqs);  // scale incl. attention factor
    // One table for every position the stream will reach (engines keep one per model).
    const std::int64_t total = prompt + steps;
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, total);

    // --- 2. The packed projection buffer: [token][q heads | k heads | v heads]. -------------
    const ropekit::qkv_layout layout{n_heads, n_kv_heads, head_dim};
    std::vector<float> qkv(std::size_t(layout.elements(prompt)));
    layout.validate(prompt, qkv.size());  // once, on the cold path: the views below fit
    project(qkv, 0, prompt, layout.row_stride());
    float* buf = qkv.data();

    // --- 3. The cache gets the *raw* keys (it rotates them itself, once, at their stream
    //        positions: key_storage::rotated_once, the default). float storage keeps the check
    //        below tight; ropekit::bfloat16 halves the bytes decode reads.
    const ropekit::streaming_llm rule{/*n_sink*/ 4, /*window*/ 508};  // a 512-slot cache
    ropekit::sink_cache_options opt;
    opt.n_kv_heads = n_kv_heads;
    opt.head_dim = head_dim;
    opt.n_sink = rule.n_sink;
    opt.window = rule.window;
    ropekit::sink_cache<float> cache(freqs, opt);
    const float* cbuf = buf;
    cache.append(layout.k(cbuf, prompt), layout.v(cbuf, prompt));  // keeps sinks + last window
    // Then q and k in place, in one fused pass, at stream positions 0 .. prompt - 1.
    ropekit::apply_rope_qk(table, layout.q(buf, prompt), layout.k(buf, prompt),
                           ropekit::positions::contiguous(0), 0, prompt);

    // --- 4. Prefill: StreamingLLM's exact result for a prompt longer than the cache, in one
    //        pass (sinks scored at their cache distance). Threads over heads: each K/V head's
    //        query heads stay on one thread; one workspace per thread, no allocation inside.
    std::vector<float> out(std::size_t(prompt) * std::size_t(n_heads * head_dim));
    const auto ov = ropekit::packed_view(out.data(), prompt, n_heads, head_dim);
    const auto qv = layout.q(cbuf, prompt), kv = layout.k(cbuf, prompt),
               vv = layout.v(cbuf, prompt);
    {
        const int n_threads = 2, per_thread = n_heads / n_threads;
        std::vector<std::thread> pool;
        for (int t = 0; t < n_threads; ++t)
            pool.emplace_back([&, t] {
                auto ws = std::make_unique<ropekit::attention_workspace>();
                const ropekit::head_range heads{
                    t * per_thread, t + 1 == n_threads ? n_heads : (t + 1) * per_thread};
                ropekit::position_rule_attention_blocked(ropekit::default_arch{}, qv, kv, vv, ov,
                                                         rule.mask(), params, rule, freqs, table,
                                                         heads, ropekit::query_range{0, prompt},
                                                         ropekit::key_range{0, prompt}, *ws);
            });
        for (auto& th : pool) th.join();
    }

    // --- 5. Decode: append the token's raw k/v, attend with its raw q (rotated inside, at
    //        the positions StreamingLLM needs), keys split over two threads, then merged.
    std::vector<float> row(std::size_t(layout.row_stride()));
    std::vector<float> o(std::size_t(n_heads * head_dim));
    const auto o1 = ropekit::packed_view(o.data(), 1, n_heads, head_dim);
    const int parts = 2;
    std::vector<std::unique_ptr<ropekit::sink_workspace<float>>> ws;
    std::vector<ropekit::sink_partial> partials;
    for (int t = 0; t < parts; ++t) {  // allocated once, reused by every step and layer
        ws.push_back(std::make_unique<ropekit::sink_workspace<float>>(cache, n_heads));
        partials.emplace_back(n_heads, head_dim);
    }
    for (std::int64_t s = 0; s < steps; ++s) {
        project(row, prompt + s, 1, layout.row_stride());
        const float* r = row.data();
        cache.append_token(layout.k(r, 1), layout.v(r, 1));
        std::thread helper([&] {
            ropekit::sink_attention_part(ropekit::default_arch{}, cache, layout.q(r, 1), params, 1,
                                         parts, *ws[1], partials[1]);
        });
        ropekit::sink_attention_part(ropekit::default_arch{}, cache, layout.q(r, 1), params, 0,
                                     parts, *ws[0], partials[0]);
        helper.join();
        ropekit::sink_attention_merge(ropekit::default_arch{}, partials.data(), parts, o1);
    }

    // --- Check: the one-call prefill of the whole stream, at the last token's row. ---------
    std::vector<float> all(std::size_t(layout.elements(total)));
    project(all, 0, total, layout.row_stride());
    float* abuf = all.data();
    ropekit::apply_rope_qk(table, layout.q(abuf, total), layout.k(abuf, total),
                           ropekit::positions::contiguous(0), 0, total);
    const float* cabuf = abuf;
    std::vector<float> ref(std::size_t(total) * std::size_t(n_heads * head_dim));
    ropekit::position_rule_attention(layout.q(cabuf, total), layout.k(cabuf, total),
                                     layout.v(cabuf, total),
                                     ropekit::packed_view(ref.data(), total, n_heads, head_dim),
                                     rule.mask(), params, rule, freqs, table);
    double err = 0.0, norm = 0.0, prefill_err = 0.0;
    const float* last = ref.data() + std::size_t(total - 1) * std::size_t(n_heads * head_dim);
    for (std::size_t i = 0; i < o.size(); ++i) {
        err = std::max(err, double(std::abs(o[i] - last[i])));
        norm = std::max(norm, double(std::abs(last[i])));
    }
    for (std::size_t i = 0; i < out.size(); ++i)  // the threaded prefill = the front door's rows
        prefill_err = std::max(prefill_err, double(std::abs(out[i] - ref[i])));
    std::printf("%s: %d heads (%d kv) x %d, rope_type %s, attention factor %.4f, kernels %s\n",
                cfg.at("architectures")[0].get<std::string>().c_str(), n_heads, n_kv_heads,
                head_dim, rope.rope_type.c_str(), freqs.attention_factor,
                ropekit::arch_name<ropekit::default_arch>());
    std::printf("prefill %lld tokens (cache %lld = %lld sinks + %lld window), %lld decode steps\n",
                (long long)prompt, (long long)rule.cache_size(), (long long)rule.n_sink,
                (long long)rule.window, (long long)steps);
    std::printf("threaded prefill vs front door: max |diff| %.3g\n", prefill_err);
    std::printf(
        "decode through the cache vs one-call prefill of the stream: max |diff| %.3g "
        "(max |o| %.3g)\n",
        err, norm);
    return prefill_err <= 1e-6 && err <= 1e-4 * std::max(1.0, norm) ? 0 : 1;
} catch (const ropekit::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
}
