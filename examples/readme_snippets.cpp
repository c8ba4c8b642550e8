// SPDX-License-Identifier: Apache-2.0
// Every C++ snippet of README.md, verbatim between its markers, with the declarations it
// assumes around it: this file is compiled and run by ctest (example_readme_snippets), and
// tests/readme_snippets.py checks that the README's code blocks are exactly these lines. So the
// README cannot show code that does not compile or no longer does what it says.
#include <ropekit/ropekit.hpp>
#if __has_include(<nlohmann/json.hpp>)
#include <ropekit/config_json.hpp>
#define ROPEKIT_SNIPPETS_HAVE_JSON 1
#endif

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

// Where the shipped example configs are (CMake passes the source folder).
#ifndef ROPEKIT_EXAMPLE_CONFIGS
#define ROPEKIT_EXAMPLE_CONFIGS "examples/configs"
#endif

namespace {

ropekit::rope_frequencies scaling_snippet() {
    // clang-format off
    // README snippet 1
    ropekit::rope_params p{/*base*/ 1e6, /*head_dim*/ 128, /*rotary_dim*/ 128};
    ropekit::rope_scaling s = ropekit::yarn_scaling{/*factor*/ 4, /*original_max_position*/ 32768};
    ropekit::rope_frequencies freqs = ropekit::make_frequencies(p, s, /*seq_len*/ 40000);
    auto table = ropekit::cos_sin_table::for_range(freqs, 0, 40000);   // what the kernels read
    auto params = ropekit::attention_params::for_model(freqs);  // softmax scale, attention factor included
    // end README snippet 1
    // clang-format on
    std::printf("snippet 1: %lld table rows, softmax scale %.6f\n", (long long)table.rows(),
                double(params.softmax_scale()));
    return freqs;
}

void rope_snippet(const ropekit::rope_frequencies& freqs) {
    const std::int64_t max_positions = 4096, tokens = 8, start = 100;
    std::vector<ropekit::bfloat16> buffer(std::size_t(tokens) * 48 * 128, ropekit::bfloat16(1.0f));
    ropekit::bfloat16* qkv = buffer.data();
    const std::size_t qkv_elements = buffer.size();
    // clang-format off
    // README snippet 2
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, max_positions);  // |position| < 2^29
    // packed QKV in bf16: [tokens][32 q heads | 8 k heads | 8 v heads][128]; no stride written by hand
    const ropekit::qkv_layout layout{/*q_heads*/ 32, /*kv_heads*/ 8, /*head_dim*/ 128};
    const auto q = layout.q(qkv, tokens), k = layout.k(qkv, tokens);
    const auto pos = ropekit::positions::contiguous(start);
    layout.validate(tokens, qkv_elements);                      // cold path: the views fit the buffer,
    ropekit::validate_rope_call(table, q, k, pos, 0, tokens);  // and everything the call needs
    ropekit::apply_rope_qk(table, q, k, pos, 0, tokens);
    // context shift: rotate cached keys back by 100; no table needed
    ropekit::rerotate_keys(freqs, k, ropekit::positions::constant(-100), 0, tokens);
    // end README snippet 2
    // clang-format on
    std::printf("snippet 2: k[0][0][0] = %g\n", double(float(k.at(0, 0)[0])));
}

void attention_snippet(const ropekit::rope_frequencies& freqs) {
    const std::int64_t n_q = 3, n_kv = 40;
    const int n_heads = 8, n_kv_heads = 2;
    std::vector<float> qb(std::size_t(n_q) * n_heads * 128, 0.5f), ob(qb.size());
    std::vector<ropekit::bfloat16> kb(std::size_t(n_kv) * n_kv_heads * 128,
                                      ropekit::bfloat16(0.25f));
    std::vector<ropekit::bfloat16> vb(kb.size(), ropekit::bfloat16(1.0f));
    std::vector<float> sink_values(std::size_t(n_heads), 0.0f),
        lse_values(std::size_t(n_q * n_heads));
    const std::int32_t q_pos[n_q] = {37, 38, 39};
    const float* q = qb.data();
    float* o = ob.data();
    ropekit::bfloat16* k = kb.data();
    const ropekit::bfloat16* v = vb.data();
    const float* sinks = sink_values.data();
    float* lse = lse_values.data();
    auto workspace_owner = std::make_unique<ropekit::attention_workspace>();
    ropekit::attention_workspace& workspace = *workspace_owner;
    // clang-format off
    // README snippet 3
    // k, v: ropekit::bfloat16 [n_kv][n_kv_heads][128] (const or not); q, o: float [n_q][n_heads][128]
    auto p = ropekit::attention_params::for_model(freqs);  // 1/sqrt(128) x YaRN/LongRoPE factor^2
    p.q_positions = ropekit::positions::ids(q_pos);         // optional: int32 or int64 ids, as for rope
    p.sink_logits = sinks;   // optional: gpt-oss learned sink logits, one per query head
    p.lse = lse;             // optional: [n_q][n_heads] log-sum-exp, for merging partial results
    ropekit::attention(ropekit::packed_view(q, n_q, n_heads, 128), ropekit::packed_view(k, n_kv, n_kv_heads, 128),
                       ropekit::packed_view(v, n_kv, n_kv_heads, 128), ropekit::packed_view(o, n_q, n_heads, 128),
                       ropekit::sliding_window_mask{/*window*/ 4096}, p, workspace);
    // end README snippet 3
    // clang-format on
    // Every value of V is 1 and the sink only joins the denominator: each output is below 1.
    std::printf("snippet 3: o[0][0][0] = %.6f, lse[0] = %.6f\n", double(o[0]), double(lse[0]));
}

void position_rules_snippet(const ropekit::rope_frequencies& freqs) {
    const std::int64_t n = 1200;
    const int n_heads = 8, n_kv_heads = 2;
    std::vector<float> qb(std::size_t(n) * n_heads * 128, 0.5f), ob(qb.size());
    std::vector<float> kb(std::size_t(n) * n_kv_heads * 128, 0.25f), vb(kb.size(), 1.0f);
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, n);
    const auto p = ropekit::attention_params::for_model(freqs);
    const auto q = ropekit::packed_view<const float>(qb.data(), n, n_heads, 128);
    const auto k = ropekit::packed_view<const float>(kb.data(), n, n_kv_heads, 128);
    const auto v = ropekit::packed_view<const float>(vb.data(), n, n_kv_heads, 128);
    const auto o = ropekit::packed_view(ob.data(), n, n_heads, 128);
    const auto q_raw = q, k_raw = k;
    const auto q_new = q.tokens_slice(n - 1, n), k_new = k.tokens_slice(n - 1, n);
    const auto v_new = v.tokens_slice(n - 1, n);
    const auto o_new = o.tokens_slice(0, 1);
    auto workspace_owner = std::make_unique<ropekit::attention_workspace>();
    ropekit::attention_workspace& workspace = *workspace_owner;
    // clang-format off
    // README snippet 4
    // StreamingLLM: q, k rotated at their stream positions as usual; a prompt longer than the
    // cache gets StreamingLLM's exact result in one pass (sinks scored at their cache distance)
    const ropekit::streaming_llm rule{/*n_sink*/ 4, /*window*/ 1020};
    ropekit::position_rule_attention(q, k, v, o, rule.mask(), p, rule, freqs, table, workspace);
    // Self-Extend (also ReRoPE, Leaky ReRoPE): q and k *unrotated*, the kernel rotates them
    ropekit::position_rule_attention(q_raw, k_raw, v, o, ropekit::causal_mask{}, p,
                                     ropekit::self_extend{/*window*/ 1024, /*group*/ 8}, freqs, table, workspace);
    // decode: one sink + window cache per layer; raw k/v in, constant memory, no allocation
    ropekit::sink_cache<ropekit::bfloat16> cache(freqs, {/*n_kv_heads*/ 2, /*head_dim*/ 128, /*n_sink*/ 4, /*window*/ 1020});
    ropekit::sink_workspace<ropekit::bfloat16> ws(cache, /*n_heads*/ 8);
    ropekit::sink_partial part(/*n_heads*/ 8, /*head_dim*/ 128);
    cache.append(k_raw, v);                                             // the prompt: sinks + last window kept
    ropekit::sink_decode_step(cache, q_new, k_new, v_new, o_new, p, ws, part);  // append one token, attend
    // end README snippet 4
    // clang-format on
    // Every value of V is 1: every output is 1 up to rounding.
    std::printf("snippet 4: o[0][0][0] = %.6f, cache at position %lld\n", double(ob[0]),
                (long long)cache.next_position());
}

void paged_snippet(const ropekit::rope_frequencies& freqs) {
    const int n_kv_heads = 2, n_heads = 8, n_pages = 12;
    const std::int64_t n_cached = 150;  // 10 pages of 16 tokens, the last one partly filled
    std::vector<ropekit::bfloat16> kb(std::size_t(n_pages) * 16 * n_kv_heads * 128,
                                      ropekit::bfloat16(0.25f)),
        vb(kb.size(), ropekit::bfloat16(1.0f));
    const ropekit::bfloat16* k_pool = kb.data();
    const ropekit::bfloat16* v_pool = vb.data();
    const std::int32_t table[] = {7, 2, 9, 0, 11, 4, 1, 8, 3, 5};  // any order, shareable
    std::vector<float> qb(std::size_t(n_heads) * 128, 0.5f), ob(qb.size());
    const auto q = ropekit::packed_view<const float>(qb.data(), 1, n_heads, 128);
    const auto o = ropekit::packed_view(ob.data(), 1, n_heads, 128);
    const auto p = ropekit::attention_params::for_model(freqs);
    auto workspace_owner = std::make_unique<ropekit::attention_workspace>();
    ropekit::attention_workspace& workspace = *workspace_owner;
    // clang-format off
    // README snippet 5
    // a paged cache (vLLM / FlashInfer shape): pages of 16 tokens x n_kv_heads x 128, a block table per sequence
    const auto k = ropekit::paged_view<const ropekit::bfloat16>::token_major(k_pool, n_pages, 16, n_kv_heads, 128, table, n_cached);
    const auto v = ropekit::paged_view<const ropekit::bfloat16>::token_major(v_pool, n_pages, 16, n_kv_heads, 128, table, n_cached);
    ropekit::attention(q, k, v, o, ropekit::causal_mask{}, p, workspace);  // any mask, rule or storage type
    // end README snippet 5
    // clang-format on
    // Every value of V is 1: every output is 1 up to rounding.
    std::printf("snippet 5: paged o[0][0][0] = %.6f\n", double(ob[0]));
}

#if ROPEKIT_SNIPPETS_HAVE_JSON
void families_snippet() {
    const std::string config_path = ROPEKIT_EXAMPLE_CONFIGS "/gemma4.json";
    const std::int64_t max_positions = 4096;
    const ropekit::model_layers_config qwen_model =
        ropekit::load_model_config(ROPEKIT_EXAMPLE_CONFIGS "/qwen2_5_vl.json");
    const ropekit::layer_config& qwen = qwen_model.layer(0);
    const auto qwen_table = ropekit::cos_sin_table::for_range(qwen.frequencies(), 0, max_positions);
    const std::int64_t n = 8 + 80 + 40;  // the tokens of the segments below
    std::vector<float> qb(std::size_t(n) * 4 * 128, 0.5f), kb(std::size_t(n) * 2 * 128, 0.25f);
    const auto q = ropekit::packed_view(qb.data(), n, 4, 128);
    const auto k = ropekit::packed_view(kb.data(), n, 2, 128);
    // clang-format off
    // README snippet 6
    // Gemma 2/3/4, gpt-oss, Llama 4, Qwen-VL, DeepSeek: one layer_config per layer type, and the map
    const ropekit::model_layers_config model = ropekit::load_model_config(config_path);  // Gemma 4
    std::vector<ropekit::cos_sin_table> tables;         // one per layer type, shared by its layers
    std::vector<ropekit::attention_params> params;
    for (const ropekit::layer_config& layer : model.types) {
        const ropekit::rope_frequencies freqs = layer.frequencies();  // rotary_dim, pair_span, rotary_offset
        tables.push_back(ropekit::cos_sin_table::for_range(freqs, 0, max_positions));
        auto p = ropekit::attention_params::for_model(freqs).with_scaling(layer.scaling);
        if (layer.attn_logit_softcapping) p.logit_softcap = float(*layer.attn_logit_softcapping);  // Gemma 2
        params.push_back(p);  // masks: sliding_window_mask{*layer.sliding_window}, chunked_mask{...}, causal_mask{}
    }
    // Qwen2.5-VL / Qwen3-VL: three ids per token for text and vision segments; each pair reads its axis
    const ropekit::mrope_index ids = ropekit::get_rope_index(
        {ropekit::mrope_segment::text(8), ropekit::mrope_segment::image(1, 16, 20), ropekit::mrope_segment::text(40)},
        {ropekit::mrope_model::qwen2_5_vl});
    ropekit::apply_mrope_qk(qwen_table, *qwen.rope.mrope, q, k, ids.positions(), 0, ids.tokens);
    // end README snippet 6
    // clang-format on
    std::printf(
        "snippet 6: %s; %zu tables, full-attention rotary_dim %d of %d (span %d); %lld "
        "M-RoPE tokens, next position %lld\n",
        ropekit::layer_map_summary(model).c_str(), tables.size(), tables.back().rotary_dim(),
        model.types.back().head_dim, tables.back().pair_span(), (long long)ids.tokens,
        (long long)(ids.tokens + ids.rope_delta));
}
#endif

}  // namespace

int main() {
    try {
        const ropekit::rope_frequencies freqs = scaling_snippet();
        rope_snippet(freqs);
        attention_snippet(freqs);
        position_rules_snippet(freqs);
        paged_snippet(freqs);
#if ROPEKIT_SNIPPETS_HAVE_JSON
        families_snippet();
#endif
    } catch (const ropekit::error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
    return 0;
}
