// SPDX-License-Identifier: Apache-2.0
/// \file
/// The forward pass of a small LLaMA-style decoder (HF LlamaForCausalLM conventions: RMSNorm,
/// GQA attention with NeoX RoPE, SwiGLU MLP, untied lm_head, no biases) in float32 from 16-bit
/// weights. Eigen does the projections (row-major matrices, one GEMM per projection over all
/// tokens of a call); everything positional (rotation tables, rotary kernels, attention, masks
/// and position rules) is ropekit's and is plugged in per layer by the caller (methods.hpp).
///
/// The pieces are separate functions on a caller-owned workspace, so a prefill over a window
/// (forward()) and a streaming decoder (one token, or a chunk, at a time through a KV cache)
/// share them:
///
///     for each layer l:
///         attention_input(m, l, ws)          ws.qkv = [q | k | v] of rms_norm(ws.hidden)
///         (positional attention)             ws.attn from ws.qkv (qkv_layout views)
///         attention_output_and_mlp(m, l, ws) ws.hidden += o_proj(ws.attn); += mlp(norm(...))
///     output_logits(m, ws)                   ws.logits = lm_head(norm(ws.hidden))
#pragma once

#include <ropekit/attention.hpp>
#include <ropekit/config_json.hpp>
#include <ropekit/view.hpp>

// GCC 12 -W(maybe-)uninitialized false positives inside AVX-512 intrinsics (GCC PR 105593),
// inlined from Eigen's packet math (ptranspose) under -march=native, as in
// bench/bench_attention.cpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "safetensors.hpp"

namespace long_context {

/// Row-major float matrix: rows are tokens (activations) or output channels (weights, as
/// torch's nn.Linear stores them, [out][in]).
using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// A norm weight, broadcast over the rows of an activation matrix.
using row_vector = Eigen::RowVectorXf;

/// The sizes of the model, from config.json (every one is read from the file).
struct model_config {
    int hidden_size = 0;                       ///< d_model
    int num_hidden_layers = 0;                 ///< decoder layers
    int num_attention_heads = 0;               ///< query heads
    int num_key_value_heads = 0;               ///< K/V heads (GQA: query head h reads h / group)
    int head_dim = 0;                          ///< channels per head
    int intermediate_size = 0;                 ///< SwiGLU width
    int vocab_size = 0;                        ///< rows of the embedding and of lm_head
    std::int64_t max_position_embeddings = 0;  ///< the training length
    int bos_token_id = -1;                     ///< -1 when the config has none
    float rms_norm_eps = 1e-6f;                ///< RMSNorm epsilon
    bool tie_word_embeddings = false;          ///< lm_head = embed_tokens when true
    ropekit::rope_params rope;                 ///< base, head_dim, rotary_dim, layout (ropekit)

    /// The packed [q heads | k heads | v heads] rows attention_input() writes.
    ropekit::qkv_layout qkv_layout() const {
        return ropekit::qkv_layout{num_attention_heads, num_key_value_heads, head_dim};
    }
    /// Channels of the attention output (num_attention_heads * head_dim).
    int attention_width() const { return num_attention_heads * head_dim; }

    /// Parses config.json text; throws load_error naming the key at fault, and no other
    /// exception: ropekit's own error for a RoPE key becomes a load_error with ropekit's field
    /// (`rope_theta`, `head_dim`), malformed or too deep JSON one with field `config.json`.
    static model_config parse(const std::string& text) {
        try {
            return parse_checked(text);
        } catch (const ropekit::error& e) {
            throw load_error(std::string(e.field()), "config.json: " + detail::cut(e.what(), 300));
        } catch (const nlohmann::json::exception& e) {
            // parse_checked checks a type before each get<>(); this keeps the promise if a
            // later change slips.
            load_fail("config.json", "config.json", "cannot be read", e.what());
        } catch (const std::bad_alloc&) {
            load_fail("config.json", "config.json", "does not fit in memory",
                      std::to_string(text.size()) + " bytes");
        }
    }

  private:
    static model_config parse_checked(const std::string& text) {
        if (text.size() > ropekit::max_config_json_bytes)
            load_fail("config.json", "config.json",
                      "must be at most " + std::to_string(ropekit::max_config_json_bytes) +
                          " bytes (ropekit::max_config_json_bytes)",
                      std::to_string(text.size()) + " bytes");
        const nlohmann::json j =
            detail::parse_json("config.json", "config.json", text.begin(), text.end());
        if (!j.is_object())
            load_fail("config.json", "config.json", "must be an object", detail::show(j));
        auto get_int = [&](const char* key, std::int64_t lo, std::int64_t hi,
                           bool required) -> std::int64_t {
            const auto it = j.find(key);
            if (it == j.end() || it->is_null()) {
                if (required) load_fail("config.json", key, "is missing", "nothing");
                return -1;
            }
            if (!it->is_number_integer() || it->get<std::int64_t>() < lo ||
                it->get<std::int64_t>() > hi)
                load_fail("config.json", key,
                          "must be an integer in [" + std::to_string(lo) + ", " +
                              std::to_string(hi) + "]",
                          detail::show(*it));
            return it->get<std::int64_t>();
        };
        constexpr std::int64_t big = 1 << 20;  // far above this model, bounds every allocation
        model_config c;
        c.hidden_size = int(get_int("hidden_size", 1, 1 << 16, true));
        c.num_hidden_layers = int(get_int("num_hidden_layers", 1, 1024, true));
        c.num_attention_heads = int(get_int("num_attention_heads", 1, 1024, true));
        const std::int64_t kv = get_int("num_key_value_heads", 1, 1024, false);
        c.num_key_value_heads = kv < 0 ? c.num_attention_heads : int(kv);
        if (c.num_attention_heads % c.num_key_value_heads != 0)
            load_fail("config.json", "num_key_value_heads", "must divide num_attention_heads",
                      std::to_string(c.num_key_value_heads));
        c.intermediate_size = int(get_int("intermediate_size", 1, big, true));
        c.vocab_size = int(get_int("vocab_size", 1, big, true));
        c.max_position_embeddings = get_int("max_position_embeddings", 1, big, true);
        c.bos_token_id = int(get_int("bos_token_id", 0, c.vocab_size - 1, false));
        if (const auto it = j.find("rms_norm_eps"); it != j.end()) {
            // Below 1 before the float conversion (1e300 to float is undefined), and > 0 after
            // it (1e-300 would round to an epsilon of 0).
            if (!it->is_number() || !(it->get<double>() < 1.0) || !(it->get<float>() > 0.0f))
                load_fail("config.json", "rms_norm_eps",
                          "must be a number in (0, 1), > 0 in float32", detail::show(*it));
            c.rms_norm_eps = it->get<float>();
        }
        if (const auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
            if (!it->is_boolean())
                load_fail("config.json", "tie_word_embeddings", "must be a boolean",
                          detail::show(*it));
            c.tie_word_embeddings = it->get<bool>();
        }
        if (const auto it = j.find("hidden_act"); it != j.end() && *it != "silu")
            load_fail("config.json", "hidden_act", "must be \"silu\" (SwiGLU)", detail::show(*it));
        for (const char* bias : {"attention_bias", "mlp_bias"})
            if (const auto it = j.find(bias); it != j.end() && *it != false)
                load_fail("config.json", bias, "must be false (no biases)", detail::show(*it));
        // The RoPE keys through ropekit's reader (rope_theta, head_dim, partial rotary, layout).
        const ropekit::model_rope_config rope = ropekit::parse_config_json(text);
        if (ropekit::name(rope.scaling) != "default")
            load_fail("config.json", "rope_scaling",
                      "must be absent: the model is evaluated under each method by long-context",
                      std::string(ropekit::name(rope.scaling)));
        c.rope = rope.params;
        c.head_dim = rope.params.head_dim;
        return c;
    }
};

/// One decoder layer's weights in float32, with the projections that read the same input
/// fused into one matrix (one GEMM each).
struct layer_weights {
    row_vector input_norm;  ///< input_layernorm.weight [hidden]
    matrix qkv;  ///< q_proj, k_proj, v_proj rows stacked: [(hq + 2 hk) * head_dim][hidden]
    matrix o;    ///< o_proj [hidden][hq * head_dim]
    row_vector post_norm;  ///< post_attention_layernorm.weight [hidden]
    matrix gate_up;        ///< gate_proj rows, then up_proj rows: [2 * intermediate][hidden]
    matrix down;           ///< down_proj [hidden][intermediate]
};

/// The whole model: config and float32 weights. Immutable after load(), so any number of
/// threads may run forward passes on it at once (each with its own workspace).
struct model {
    model_config config;                ///< sizes
    matrix embed;                       ///< embed_tokens [vocab][hidden]
    std::vector<layer_weights> layers;  ///< decoder layers
    row_vector norm;                    ///< final norm.weight [hidden]
    matrix lm_head;                     ///< [vocab][hidden] (a copy of embed when tied)

    /// Reads `dir`/config.json and `dir`/model.safetensors (BF16, F16 or F32, converted to
    /// float32 exactly). Throws load_error naming the file and field at fault (a missing
    /// tensor, a wrong shape, a malformed file, a bad RoPE key), and no other exception.
    static model load(const std::string& dir) {
        const std::vector<unsigned char> text = detail::read_file(
            "model", "config.json", dir + "/config.json", ropekit::max_config_json_bytes);
        model m;
        m.config = model_config::parse(std::string(text.begin(), text.end()));
        m.load_weights(safetensors_file::open(dir + "/model.safetensors"));
        return m;
    }

    /// Fills the weights from an open safetensors file (config must be set). Every tensor's
    /// shape is compared with the file before anything is allocated: the sizes come from
    /// config.json (vocab 2^20 x hidden 2^16 is 2^36 floats), and only once they match tensors
    /// whose byte ranges parse() checked is every allocation here bounded by the file's size.
    void load_weights(const safetensors_file& f) {
        const model_config& c = config;
        // Each at most 2^20 (model_config::parse; head_dim 2^16 by ropekit): every product of
        // two or three of them below fits in int64 with room to spare.
        const std::int64_t H = c.hidden_size, D = c.head_dim, hq = c.num_attention_heads,
                           hk = c.num_key_value_heads, I = c.intermediate_size, V = c.vocab_size;
        const bool own_lm_head = f.contains("lm_head.weight") || !c.tie_word_embeddings;
        std::vector<std::pair<std::string, std::vector<std::int64_t>>> expected;
        expected.push_back({"model.embed_tokens.weight", {V, H}});
        for (int l = 0; l < c.num_hidden_layers; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            expected.push_back({p + "input_layernorm.weight", {H}});
            expected.push_back({p + "post_attention_layernorm.weight", {H}});
            expected.push_back({p + "self_attn.q_proj.weight", {hq * D, H}});
            expected.push_back({p + "self_attn.k_proj.weight", {hk * D, H}});
            expected.push_back({p + "self_attn.v_proj.weight", {hk * D, H}});
            expected.push_back({p + "self_attn.o_proj.weight", {H, hq * D}});
            expected.push_back({p + "mlp.gate_proj.weight", {I, H}});
            expected.push_back({p + "mlp.up_proj.weight", {I, H}});
            expected.push_back({p + "mlp.down_proj.weight", {H, I}});
        }
        expected.push_back({"model.norm.weight", {H}});
        if (own_lm_head) expected.push_back({"lm_head.weight", {V, H}});
        // Each tensor holds at most 2^40 elements (parse()), so the sum cannot overflow.
        std::int64_t floats = 0;
        for (const auto& [name, shape] : expected) floats += f.check(name, shape).elements();
        if (!own_lm_head) floats += V * H;
        try {
            read_checked(f);
        } catch (const std::bad_alloc&) {
            load_fail("model", "model.safetensors", "does not fit in memory as float32",
                      std::to_string(floats) + " floats");
        }
    }

  private:
    // load_weights after every shape was checked against the file.
    void read_checked(const safetensors_file& f) {
        const model_config& c = config;
        const std::int64_t H = c.hidden_size, D = c.head_dim, hq = c.num_attention_heads,
                           hk = c.num_key_value_heads, I = c.intermediate_size, V = c.vocab_size;
        auto read_matrix = [&](const std::string& name, matrix& out, std::int64_t rows,
                               std::int64_t cols) {
            out.resize(rows, cols);
            f.read_f32(name, {rows, cols}, out.data());
        };
        auto read_vector = [&](const std::string& name, row_vector& out, std::int64_t n) {
            out.resize(n);
            f.read_f32(name, {n}, out.data());
        };
        read_matrix("model.embed_tokens.weight", embed, V, H);
        layers.resize(std::size_t(c.num_hidden_layers));
        for (int l = 0; l < c.num_hidden_layers; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            layer_weights& w = layers[std::size_t(l)];
            read_vector(p + "input_layernorm.weight", w.input_norm, H);
            read_vector(p + "post_attention_layernorm.weight", w.post_norm, H);
            w.qkv.resize((hq + 2 * hk) * D, H);
            f.read_f32(p + "self_attn.q_proj.weight", {hq * D, H}, w.qkv.data());
            f.read_f32(p + "self_attn.k_proj.weight", {hk * D, H}, w.qkv.data() + hq * D * H);
            f.read_f32(p + "self_attn.v_proj.weight", {hk * D, H},
                       w.qkv.data() + (hq + hk) * D * H);
            read_matrix(p + "self_attn.o_proj.weight", w.o, H, hq * D);
            w.gate_up.resize(2 * I, H);
            f.read_f32(p + "mlp.gate_proj.weight", {I, H}, w.gate_up.data());
            f.read_f32(p + "mlp.up_proj.weight", {I, H}, w.gate_up.data() + I * H);
            read_matrix(p + "mlp.down_proj.weight", w.down, H, I);
        }
        read_vector("model.norm.weight", norm, H);
        if (f.contains("lm_head.weight") || !c.tie_word_embeddings)
            read_matrix("lm_head.weight", lm_head, V, H);
        else
            lm_head = embed;
    }
};

/// Per-thread activations of one forward call of up to some number of tokens: reuse it across
/// calls (Eigen only reallocates when a size changes) and across layers.
struct workspace {
    matrix hidden;   ///< residual stream [tokens][hidden]
    matrix normed;   ///< rms_norm output [tokens][hidden]
    matrix qkv;      ///< packed q | k | v rows [tokens][(hq + 2 hk) * head_dim] (qkv_layout)
    matrix attn;     ///< attention output [tokens][hq * head_dim] (packed heads)
    matrix gate_up;  ///< [tokens][2 * intermediate]; silu(gate) * up in the first half
    matrix logits;   ///< [tokens][vocab]
    /// ropekit's attention scratch (about 1 MB), reused by every call.
    std::unique_ptr<ropekit::attention_workspace> attention =
        std::make_unique<ropekit::attention_workspace>();
};

/// HF LlamaRMSNorm in float32: `x * rsqrt(mean(x^2) + eps) * weight`, row by row.
inline void rms_norm(const matrix& x, const row_vector& weight, float eps, matrix& out) {
    out.resize(x.rows(), x.cols());
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
        const float ms = x.row(t).squaredNorm() / float(x.cols());
        const float r = 1.0f / std::sqrt(ms + eps);
        out.row(t) = (x.row(t) * r).cwiseProduct(weight);
    }
}

/// Starts a call of `n` tokens: ws.hidden = the embeddings of `tokens[0 .. n)` (each in
/// [0, vocab); the caller checks) and ws.attn sized for the attention output.
inline void embed_tokens(const model& m, const std::int32_t* tokens, std::int64_t n,
                         workspace& ws) {
    ws.hidden.resize(n, m.config.hidden_size);
    for (std::int64_t t = 0; t < n; ++t) ws.hidden.row(t) = m.embed.row(tokens[t]);
    ws.attn.resize(n, m.config.attention_width());
}

/// Layer `l`'s attention input: ws.qkv = [q | k | v] of rms_norm(ws.hidden), unrotated, in
/// the rows of m.config.qkv_layout().
inline void attention_input(const model& m, int l, workspace& ws) {
    const layer_weights& w = m.layers[std::size_t(l)];
    rms_norm(ws.hidden, w.input_norm, m.config.rms_norm_eps, ws.normed);
    ws.qkv.resize(ws.hidden.rows(), w.qkv.rows());
    ws.qkv.noalias() = ws.normed * w.qkv.transpose();
}

/// Layer `l` after the attention: ws.hidden += o_proj(ws.attn), then ws.hidden +=
/// down(silu(gate(x)) * up(x)) with x = rms_norm(ws.hidden) (post_attention_layernorm).
inline void attention_output_and_mlp(const model& m, int l, workspace& ws) {
    const layer_weights& w = m.layers[std::size_t(l)];
    const Eigen::Index I = m.config.intermediate_size;
    ws.hidden.noalias() += ws.attn * w.o.transpose();
    rms_norm(ws.hidden, w.post_norm, m.config.rms_norm_eps, ws.normed);
    ws.gate_up.resize(ws.hidden.rows(), 2 * I);
    ws.gate_up.noalias() = ws.normed * w.gate_up.transpose();
    auto gate = ws.gate_up.leftCols(I).array();
    const auto up = ws.gate_up.rightCols(I).array();
    gate = gate / (1.0f + (-gate).exp()) * up;  // silu(g) * u, in place over the gate half
    ws.hidden.noalias() += ws.gate_up.leftCols(I) * w.down.transpose();
}

/// ws.logits = lm_head(rms_norm(ws.hidden)) (final norm).
inline void output_logits(const model& m, workspace& ws) {
    rms_norm(ws.hidden, m.norm, m.config.rms_norm_eps, ws.normed);
    ws.logits.resize(ws.hidden.rows(), m.lm_head.rows());
    ws.logits.noalias() = ws.normed * m.lm_head.transpose();
}

/// The attention step a forward pass plugs in per layer:
/// `attend(layer, qkv_layout, float* qkv, n, float* out, attention_workspace&)` reads the
/// packed unrotated q/k/v rows of n tokens (it may rotate them in place) and writes the packed
/// [n][hq * head_dim] attention output.
///
/// A prefill over `tokens[0 .. n)`: ws.logits holds the logits of every position afterwards.
template <class Attend>
void forward(const model& m, const std::int32_t* tokens, std::int64_t n, workspace& ws,
             const Attend& attend) {
    const ropekit::qkv_layout layout = m.config.qkv_layout();
    embed_tokens(m, tokens, n, ws);
    for (int l = 0; l < m.config.num_hidden_layers; ++l) {
        attention_input(m, l, ws);
        attend(l, layout, ws.qkv.data(), n, ws.attn.data(), *ws.attention);
        attention_output_and_mlp(m, l, ws);
    }
    output_logits(m, ws);
}

/// `-log softmax(logits.row(t))[target]` (natural log), the softmax's log-sum-exp in double.
inline double token_nll(const matrix& logits, Eigen::Index t, std::int32_t target) {
    const auto row = logits.row(t);
    const float mx = row.maxCoeff();
    const double sum = (row.array() - mx).exp().cast<double>().sum();
    return double(mx) + std::log(sum) - double(row(target));
}

/// Sum over rows t of `-log softmax(logits.row(t))[targets[t]]` (natural log), the softmax's
/// log-sum-exp in double.
inline double sum_nll(const matrix& logits, const std::int32_t* targets) {
    double total = 0.0;
    for (Eigen::Index t = 0; t < logits.rows(); ++t) total += token_nll(logits, t, targets[t]);
    return total;
}

}  // namespace long_context
