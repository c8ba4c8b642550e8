// SPDX-License-Identifier: Apache-2.0
// Streams a long token sequence (default 1,000,000; `--tokens N`) through StreamingLLM caches
// (ropekit::sink_cache: 4 sinks + a recent window per layer) and their attention. Every 100k
// tokens it prints tokens/s and the resident memory (VmRSS): both stay flat, because the cache
// never grows and nothing is allocated after construction. Exits non-zero if the resident
// memory grows.
//
//   streaming [--tokens N]                     synthetic q/k/v through a 3-layer shape
//   streaming --model DIR --text FILE [--tokens N] [--check]
//       real text through the project's small model (examples/long_context/model), twice at
//       once: 4 sinks + 124 recent tokens, and window-only eviction (the 128 most recent
//       tokens, no sink); prints both running NLLs. --check first compares the streamed NLL of
//       the first 512 tokens with a one-pass prefill under the same rule (exit 1 if not equal).
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

#ifdef ROPEKIT_STREAMING_MODEL
#include "methods.hpp"
#include "model.hpp"
#endif

namespace {

/// Resident memory in kB, from /proc/self/status (0 where it does not exist).
long resident_kb() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
    return 0;
}

/// The flat-memory check both modes make at every report: the first report is the baseline
/// (every page of the caches has been written by then); a later one above it by more than a few
/// pages (stdio buffers) means something grew.
struct memory_watch {
    long baseline_kb = -1;  ///< VmRSS at the first report
    bool grew = false;      ///< a later report exceeded the baseline + slack

    /// Samples VmRSS at a report and returns it.
    long sample() {
        const long kb = resident_kb();
        if (baseline_kb < 0) baseline_kb = kb;
        if (kb > baseline_kb + 64) grew = true;
        return kb;
    }
    /// The last line of a run: exit code 1 when memory grew.
    int verdict(const char* note) const {
        if (grew) {
            std::printf("resident memory grew beyond %ld kB\n", baseline_kb + 64);
            return 1;
        }
        std::printf("memory stayed flat (%ld kB)%s\n", baseline_kb, note);
        return 0;
    }
};

/// Cheap deterministic noise in [-1, 1) (an LCG): the "projections" of each token.
void fill(std::vector<float>& x, std::uint32_t& seed) {
    for (float& e : x) {
        seed = seed * 1664525u + 1013904223u;
        e = float(seed >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

/// The synthetic stream: random q/k/v through a 3-layer shape.
int stream_synthetic(std::int64_t tokens) {
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
    memory_watch memory;
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
            const long kb = memory.sample();
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
    return memory.verdict("");
}

#ifdef ROPEKIT_STREAMING_MODEL
/// One eviction policy streamed through the model: a sink_cache per layer and the running NLL.
struct model_stream {
    std::vector<std::unique_ptr<ropekit::sink_cache<float>>> caches;  ///< one per layer
    std::unique_ptr<ropekit::sink_workspace<float>> sink_ws;  ///< decode scratch (all layers)
    std::unique_ptr<ropekit::sink_partial> partial;           ///< decode scratch (all layers)
    long_context::workspace ws;                               ///< activations of one chunk
    double nll_sum = 0.0;                                     ///< since the last report
    std::size_t keep = 0;           ///< per-token NLLs to keep (--check), from the start
    std::vector<double> token_nll;  ///< the first `keep` tokens' NLL

    model_stream(const long_context::model& m, const ropekit::rope_frequencies& freqs,
                 std::int64_t n_sink, std::int64_t window) {
        const auto& c = m.config;
        ropekit::sink_cache_options opt;  // rotated_once: keys rotated once, at the stream position
        opt.n_kv_heads = c.num_key_value_heads;
        opt.head_dim = c.head_dim;
        opt.n_sink = n_sink;
        opt.window = window;
        for (int l = 0; l < c.num_hidden_layers; ++l)
            caches.push_back(std::make_unique<ropekit::sink_cache<float>>(freqs, opt));
        sink_ws =
            std::make_unique<ropekit::sink_workspace<float>>(*caches[0], c.num_attention_heads);
        partial = std::make_unique<ropekit::sink_partial>(c.num_attention_heads, c.head_dim);
    }

    /// Streams `tokens[0 .. n)` (stream positions next .. next + n - 1) through the model, one
    /// chunk: the projections are one GEMM per chunk, the attention one decode step per token
    /// and layer (append the token's k/v, evicting the oldest, then attend over the cache), so
    /// every token sees exactly the cache StreamingLLM gives it. Adds the NLL of predicting
    /// `targets[t]` from token t.
    void chunk(const long_context::model& m, const ropekit::attention_params& params,
               const std::int32_t* tokens, const std::int32_t* targets, std::int64_t n) {
        const auto& c = m.config;
        const ropekit::qkv_layout layout = c.qkv_layout();
        long_context::embed_tokens(m, tokens, n, ws);
        for (int l = 0; l < c.num_hidden_layers; ++l) {
            long_context::attention_input(m, l, ws);
            const float* qkv = ws.qkv.data();
            for (std::int64_t t = 0; t < n; ++t) {
                const float* row = qkv + t * ws.qkv.cols();
                ropekit::sink_decode_step(
                    *caches[std::size_t(l)], layout.q(row, 1), layout.k(row, 1), layout.v(row, 1),
                    ropekit::packed_view(ws.attn.data() + t * ws.attn.cols(), 1,
                                         c.num_attention_heads, c.head_dim),
                    params, *sink_ws, *partial);
            }
            long_context::attention_output_and_mlp(m, l, ws);
        }
        long_context::output_logits(m, ws);
        for (std::int64_t t = 0; t < n; ++t) {
            const double nll = long_context::token_nll(ws.logits, t, targets[t]);
            nll_sum += nll;
            if (token_nll.size() < keep) token_nll.push_back(nll);
        }
    }
};

/// The stream: BOS, then the file's bytes (repeated if `tokens` is longer than the file).
std::vector<std::int32_t> text_stream(const std::string& path, std::int64_t tokens, int bos) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw long_context::load_error("text", path + ": cannot open");
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (text.empty()) throw long_context::load_error("text", path + ": is empty");
    std::vector<std::int32_t> s(std::size_t(tokens) + 1);  // + the last token's target
    s[0] = bos;
    for (std::size_t i = 1; i < s.size(); ++i)
        s[i] = static_cast<unsigned char>(text[(i - 1) % text.size()]);
    return s;
}

/// --check: the streamed per-token NLL of the first `n` tokens against one prefill of the same
/// tokens under the method's rule (position_rule_attention with streaming_llm for the sinks,
/// the sliding window for window-only): the decode path and the prefill path must agree.
bool check_against_prefill(const long_context::model& m, const std::vector<std::int32_t>& s,
                           std::int64_t n, long_context::method_id id, const model_stream& st) {
    const long_context::method_attention method(long_context::make_method(id, n), m.config.rope);
    long_context::workspace ws;
    long_context::forward(m, s.data(), n, ws, method);
    double worst = 0.0;
    for (std::int64_t t = 0; t < n; ++t) {
        const double nll = long_context::token_nll(ws.logits, t, s[std::size_t(t) + 1]);
        worst = std::max(worst, std::abs(nll - st.token_nll[std::size_t(t)]));
    }
    const bool ok = worst <= 1e-4;
    std::printf("check %-13s streamed vs one prefill over %lld tokens: max |dNLL| %.2e %s\n",
                long_context::method_name(id), static_cast<long long>(n), worst,
                ok ? "ok" : "MISMATCH");
    return ok;
}

/// The model stream: sinks + window and window-only side by side.
int stream_model(const std::string& dir, const std::string& text_path, std::int64_t tokens,
                 bool check) {
    const long_context::model m = long_context::model::load(dir);
    const auto& c = m.config;
    if (c.bos_token_id < 0) throw long_context::load_error("bos_token_id", dir + ": missing");
    const std::vector<std::int32_t> s = text_stream(text_path, tokens, c.bos_token_id);
    const ropekit::rope_frequencies freqs =
        ropekit::make_frequencies(c.rope, ropekit::default_rope{});
    const auto params = ropekit::attention_params::for_model(freqs);
    const long_context::method_settings set;
    // StreamingLLM's cache is the training length: 4 sinks + 124 recent tokens (query
    // included); window-only keeps the 128 most recent, no sink.
    model_stream streams[2] = {model_stream(m, freqs, set.n_sink, set.streaming_window),
                               model_stream(m, freqs, 0, set.window)};
    const std::int64_t check_tokens = std::min<std::int64_t>(tokens, 512);
    if (check)
        for (auto& st : streams) {
            st.keep = std::size_t(check_tokens);
            st.token_nll.reserve(st.keep);
        }

    std::printf(
        "streaming %lld tokens of %s through %s (%d layers, trained at %lld), VmRSS %ld kB\n",
        static_cast<long long>(tokens), text_path.c_str(), dir.c_str(), c.num_hidden_layers,
        static_cast<long long>(c.max_position_embeddings), resident_kb());
    std::printf("%10s  %14s  %14s  %10s  %10s\n", "tokens", "NLL sinks", "NLL window", "tokens/s",
                "VmRSS kB");
    std::fflush(stdout);
    // Chunks of 80 tokens: one GEMM per projection per chunk. 80 divides the report interval,
    // so every chunk but a last partial one has the same size and the activations are never
    // reallocated (with 64, the 32-token chunk at each report resized them, and glibc's heap
    // grew by 260 kB over the first 500k tokens).
    const std::int64_t chunk = 80, report_every = 100000;
    memory_watch memory;
    auto t0 = std::chrono::steady_clock::now();
    std::int64_t since = 0, done = 0;
    while (done < tokens) {
        const std::int64_t next_report = (done / report_every + 1) * report_every;
        const std::int64_t n = std::min({chunk, tokens - done, next_report - done});
        for (auto& st : streams) st.chunk(m, params, s.data() + done, s.data() + done + 1, n);
        done += n;
        since += n;
        if (check && done >= check_tokens && !streams[0].token_nll.empty()) {
            // Both checks run (and print) before the verdict.
            const bool sinks_ok = check_against_prefill(
                m, s, check_tokens, long_context::method_id::streaming_llm, streams[0]);
            const bool window_ok = check_against_prefill(
                m, s, check_tokens, long_context::method_id::window, streams[1]);
            if (!sinks_ok || !window_ok) return 1;
            for (auto& st : streams) {
                st.keep = 0;
                st.token_nll.clear();
                st.token_nll.shrink_to_fit();
            }
        }
        if (done % 4096 == 0 || done == tokens)
            std::fprintf(stderr, "\r%lld / %lld", static_cast<long long>(done),
                         static_cast<long long>(tokens));
        if (done % report_every == 0 || done == tokens) {
            const auto now = std::chrono::steady_clock::now();
            const double secs = std::chrono::duration<double>(now - t0).count();
            const long kb = memory.sample();
            std::fprintf(stderr, "\n");
            std::printf("%10lld  %14.4f  %14.4f  %10.0f  %10ld\n", static_cast<long long>(done),
                        streams[0].nll_sum / double(since), streams[1].nll_sum / double(since),
                        double(since) / secs, kb);
            std::fflush(stdout);
            for (auto& st : streams) st.nll_sum = 0.0;
            t0 = now;
            since = 0;
        }
    }
    return memory.verdict("; NLL is nats per byte over each 100k-token stretch");
}
#endif

}  // namespace

int main(int argc, char** argv) {
    std::int64_t tokens = 1000000;
    std::string model_dir, text_path;
    bool check = false;
    for (int a = 1; a < argc; ++a) {
        const bool has_value = a + 1 < argc;
        if (std::strcmp(argv[a], "--tokens") == 0 && has_value) {
            tokens = std::atoll(argv[++a]);
        } else if (std::strcmp(argv[a], "--model") == 0 && has_value) {
            model_dir = argv[++a];
        } else if (std::strcmp(argv[a], "--text") == 0 && has_value) {
            text_path = argv[++a];
        } else if (std::strcmp(argv[a], "--check") == 0) {
            check = true;
        } else {
            std::fprintf(stderr, "streaming: unknown or incomplete argument '%s'\n", argv[a]);
            return 2;
        }
    }
    if (tokens <= 0 || (model_dir.empty() != text_path.empty()) || (check && model_dir.empty())) {
        std::fprintf(stderr,
                     "usage: streaming [--tokens N]\n"
                     "       streaming --model DIR --text FILE [--tokens N] [--check]  (N > 0)\n");
        return 2;
    }
    if (model_dir.empty()) return stream_synthetic(tokens);
#ifdef ROPEKIT_STREAMING_MODEL
    try {
        return stream_model(model_dir, text_path, tokens, check);
    } catch (const long_context::load_error& e) {
        std::fprintf(stderr, "streaming: %s\n", e.what());
    } catch (const ropekit::error& e) {
        std::fprintf(stderr, "streaming: ropekit: %s\n", e.what());
    }
    return 2;
#else
    std::fprintf(stderr, "streaming: built without --model (it needs Eigen and nlohmann_json)\n");
    return 2;
#endif
}
