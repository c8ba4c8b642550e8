// SPDX-License-Identifier: Apache-2.0
// One attention layer of every layer type of a model, from its config.json, the way an engine
// runs it: the per-layer reader gives each layer type its RoPE (proportional for Gemma 4's full
// layers, YaRN with DeepSeek's MLA slice, M-RoPE for Qwen-VL, none on Llama 4's NoPE layers)
// and what its attention needs (window, chunk, soft-cap, temperature, q/k and v head sizes,
// softmax scaling). Each layer type is checked against the double-precision references of the
// rotation and of attention; the program exits 1 on a mismatch, 2 on a bad config.
//
//   model-families examples/configs/gemma4.json [--tokens N]
#include <ropekit/config_json.hpp>
#include <ropekit/ropekit.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

struct layer_result {
    double rotation_error = 0;   // max |kernel - reference| over rotated q and k
    double attention_error = 0;  // max |o - reference|
};

// Random q, k, v in float; q and k then rotated (or temperature-scaled) by the kernels and by the
// references; k and v stored as bf16 as an engine's cache holds them.
layer_result run_layer(const ropekit::layer_config& layer, std::int64_t n, std::uint32_t seed) {
    const int dk = layer.head_dim, dv = layer.v_head_dim;
    const int kv_heads = 2, q_heads = 4;  // small GQA 2:1, so the reference stays quick
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> q(std::size_t(n * q_heads * dk)), k(std::size_t(n * kv_heads * dk));
    std::vector<float> v(std::size_t(n * kv_heads * dv));
    for (float& x : q) x = u(rng);
    for (float& x : k) x = u(rng);
    for (float& x : v) x = u(rng);
    std::vector<float> q_ref = q, k_ref = k;
    const auto qv = ropekit::packed_view(q.data(), n, q_heads, dk);
    const auto kv = ropekit::packed_view(k.data(), n, kv_heads, dk);
    const auto q_ref_v = ropekit::packed_view(q_ref.data(), n, q_heads, dk);
    const auto k_ref_v = ropekit::packed_view(k_ref.data(), n, kv_heads, dk);

    const ropekit::rope_frequencies freqs = layer.frequencies(n);
    layer_result r;
    if (layer.use_rope) {
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, n);
        if (layer.rope.mrope) {
            // A Qwen-VL prompt: text, one image of 16 x 20 patches (8 x 10 tokens after the 2 x 2
            // merge), text. The three ids per token come from get_rope_index.
            const std::int64_t lead = std::min<std::int64_t>(8, n / 4);
            const std::int64_t image = 80, tail = n - lead - image;
            if (tail < 0) ropekit::detail::fail("tokens", "must be >= 100 for an M-RoPE model", n);
            const ropekit::mrope_index ids = ropekit::get_rope_index(
                {ropekit::mrope_segment::text(lead), ropekit::mrope_segment::image(1, 16, 20),
                 ropekit::mrope_segment::text(tail)},
                ropekit::mrope_index_options{});
            ropekit::validate_mrope_call(table, *layer.rope.mrope, qv, kv, ids.positions(), 0, n);
            ropekit::apply_mrope_qk(table, *layer.rope.mrope, qv, kv, ids.positions(), 0, n);
            ropekit::apply_mrope_reference(freqs, *layer.rope.mrope, q_ref_v, ids.positions(), 0,
                                           n);
            ropekit::apply_mrope_reference(freqs, *layer.rope.mrope, k_ref_v, ids.positions(), 0,
                                           n);
        } else {
            const auto pos = ropekit::positions::contiguous(0);
            ropekit::validate_rope_call(table, qv, kv, pos, 0, n);
            ropekit::apply_rope_qk(table, qv, kv, pos, 0, n);
            ropekit::apply_rope_reference(freqs, q_ref_v, pos, 0, n);
            ropekit::apply_rope_reference(freqs, k_ref_v, pos, 0, n);
        }
    } else if (layer.temperature) {
        // Llama 4's NoPE layers: no rotation, queries scaled by their position's temperature.
        ropekit::apply_attention_temperature(qv, ropekit::positions::contiguous(0),
                                             *layer.temperature);
        for (std::int64_t t = 0; t < n; ++t)
            for (std::int64_t i = 0; i < std::int64_t(q_heads) * dk; ++i)
                q_ref[std::size_t(t * q_heads * dk + i)] *= layer.temperature->scale_at(t);
    }
    for (std::size_t i = 0; i < q.size(); ++i)
        r.rotation_error = std::max(r.rotation_error, double(std::fabs(q[i] - q_ref[i])));
    for (std::size_t i = 0; i < k.size(); ++i)
        r.rotation_error = std::max(r.rotation_error, double(std::fabs(k[i] - k_ref[i])));

    // The cache in bf16 (from the kernel's rotated keys; the reference attention reads the same).
    std::vector<ropekit::bfloat16> k16(k.size()), v16(v.size());
    for (std::size_t i = 0; i < k.size(); ++i) k16[i] = ropekit::bfloat16(k[i]);
    for (std::size_t i = 0; i < v.size(); ++i) v16[i] = ropekit::bfloat16(v[i]);
    const auto k16v = ropekit::packed_view<const ropekit::bfloat16>(k16.data(), n, kv_heads, dk);
    const auto v16v = ropekit::packed_view<const ropekit::bfloat16>(v16.data(), n, kv_heads, dv);

    // The softmax scale: the frequencies' attention factor (RoPE layers) times the layer's
    // `scaling` (DeepSeek's mscale^2, Gemma's query_pre_attn_scalar, Gemma 4's 1).
    ropekit::attention_params p =
        layer.use_rope ? ropekit::attention_params::for_model(freqs).with_scaling(layer.scaling)
                       : ropekit::attention_params::with_softmax_scale(layer.scaling);
    if (layer.attn_logit_softcapping) p.logit_softcap = float(*layer.attn_logit_softcapping);

    std::vector<float> o(std::size_t(n * q_heads * dv));
    const auto ov = ropekit::packed_view(o.data(), n, q_heads, dv);
    const auto qc = ropekit::packed_view<const float>(q.data(), n, q_heads, dk);
    auto ws = std::make_unique<ropekit::attention_workspace>();
    std::vector<double> o_ref, lse_ref;
    const auto run = [&](const auto& mask) {
        ropekit::attention(qc, k16v, v16v, ov, mask, p, *ws);
        ropekit::attention_reference(qc, k16v, v16v, mask, p, o_ref, lse_ref);
    };
    if (layer.layer_type == "sliding_attention")
        run(ropekit::sliding_window_mask{*layer.sliding_window});
    else if (layer.layer_type == "chunked_attention")
        run(ropekit::chunked_mask{*layer.attention_chunk_size});
    else
        run(ropekit::causal_mask{});
    for (std::size_t i = 0; i < o.size(); ++i)
        r.attention_error = std::max(r.attention_error, std::fabs(double(o[i]) - o_ref[i]));
    return r;
}

}  // namespace

int main(int argc, char** argv) {
    std::string path;
    std::int64_t tokens = 320;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--tokens" && i + 1 < argc) {
            tokens = std::atoll(argv[++i]);
        } else if (path.empty() && a.rfind("--", 0) != 0) {
            path = a;
        } else {
            std::fprintf(stderr, "usage: model-families config.json [--tokens N]\n");
            return 2;
        }
    }
    if (path.empty() || tokens < 1 || tokens > 8192) {
        std::fprintf(stderr, "usage: model-families config.json [--tokens N], 1 <= N <= 8192\n");
        return 2;
    }
    try {
        const ropekit::model_layers_config model = ropekit::load_model_config(path);
        std::printf("%s: %s, layers %s\n", path.c_str(), model.model_type.c_str(),
                    ropekit::layer_map_summary(model).c_str());
        bool ok = true;
        for (std::size_t t = 0; t < model.types.size(); ++t) {
            const ropekit::layer_config& layer = model.types[t];
            const ropekit::rope_frequencies f = layer.frequencies(tokens);
            const layer_result r = run_layer(layer, tokens, 1234u + std::uint32_t(t));
            // Rotation: float kernels against double references on |x| <= 1 (a few float
            // roundings: ~1e-7). Attention: both read the same bf16 K/V; the kernel accumulates
            // in float, which on Gemma 4's 512-channel heads with scaling 1 (scores up to ~30)
            // costs ~1e-5; measured 1e-7 to 1.2e-5 over the shipped configs.
            const bool pass = r.rotation_error < 1e-5 && r.attention_error < 5e-5;
            ok = ok && pass;
            std::printf(
                "  %-18s %s q/k %d v %d  rope %-11s rotary %d span %d offset %d%s%s%s%s\n"
                "  %-18s rotation error %.1e, attention error %.1e: %s\n",
                layer.layer_type.c_str(), layer.use_rope ? "rope" : "NoPE", layer.head_dim,
                layer.v_head_dim, layer.rope.rope_type.c_str(), f.rotary_dim, f.neox_pair_span(),
                f.rotary_offset, layer.rope.mrope ? ", M-RoPE" : "",
                layer.attn_logit_softcapping ? ", soft-cap" : "",
                layer.temperature ? ", temperature" : "",
                layer.sliding_window && layer.layer_type == "sliding_attention" ? ", window" : "",
                "", r.rotation_error, r.attention_error, pass ? "ok" : "MISMATCH");
        }
        return ok ? 0 : 1;
    } catch (const ropekit::error& e) {
        std::fprintf(stderr, "model-families: %s\n", e.what());
        return 2;
    }
}
