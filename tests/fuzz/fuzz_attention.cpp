// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the attention API. The input decodes shapes (GQA, head_dim, K/V storage),
// strides (packed, padded, heads-major, or arbitrary, possibly overlapping or negative), every
// mask type with its parameters, int32 / int64 / contiguous / constant positions, learned
// sinks, query_index_offset, the softmax scale, and the position rules (ReRoPE, Leaky ReRoPE,
// Self-Extend, StreamingLLM) with their tables. Every buffer has exactly the size its view needs,
// so ASan sees any read or write outside it. Findings:
//  - anything but ropekit::error escaping a front door (attention(), position_rule_attention(), the
//    attention_params / rope_frequencies builders);
//  - a NaN in an accepted call's output or LSE;
//  - a hot entry point (attention_blocked, position_rule_attention_blocked, merge_attention) that,
//  on
//    the shapes the front door accepted, trips a ROPEKIT_ASSERT, or whose head x query x key
//    split merged by LSE differs from the whole-problem result;
//  - with ranges outside the views (ROPEKIT_ASSERT is recorded, not fatal, as with asserts
//    compiled out), any write to the output or any out-of-bounds access.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//       tests/fuzz/fuzz_attention.cpp -o /tmp/fuzz_attention
//   UBSAN_OPTIONS=halt_on_error=1 /tmp/fuzz_attention -max_total_time=600 /tmp/attn_corpus \
//       tests/fuzz/corpus/attention

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace fuzz_attention {
/// Set by ROPEKIT_ASSERT instead of aborting, so the fuzzer can check both that valid calls
/// never trip an assert and that invalid ones write nothing once the assert is compiled out.
inline bool assert_fired = false;
/// The message of the last assert that fired (for the finding report).
inline const char* assert_message = "";
inline void fire(const char* msg) {
    assert_fired = true;
    assert_message = msg;
}
}  // namespace fuzz_attention
#define ROPEKIT_ASSERT(cond, msg) ((cond) ? (void)0 : fuzz_attention::fire(msg))

#include <fuzzer/FuzzedDataProvider.h>

#include <ropekit/attention.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

namespace {

using ropekit::attention_params;
using ropekit::head_range;
using ropekit::head_view;
using ropekit::key_range;
using ropekit::positions;
using ropekit::query_range;

[[noreturn]] void finding(const char* what) {
    std::fprintf(stderr, "fuzz_attention finding: %s (last assert: %s)\n", what,
                 fuzz_attention::assert_message);
    std::abort();
}

/// An int64 from a menu of edge values or a small / any value.
std::int64_t pick_int(FuzzedDataProvider& in, std::int64_t small_lo, std::int64_t small_hi) {
    static constexpr std::int64_t edges[] = {0,
                                             -1,
                                             1,
                                             2,
                                             63,
                                             64,
                                             65,
                                             ropekit::attention_position_limit - 1,
                                             ropekit::attention_position_limit,
                                             -ropekit::attention_position_limit + 1,
                                             INT64_MAX,
                                             INT64_MIN,
                                             INT32_MAX,
                                             INT32_MIN};
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
        case 0:
            return edges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(edges) - 1)];
        case 1:
            return in.ConsumeIntegral<std::int64_t>();
        default:
            return in.ConsumeIntegralInRange<std::int64_t>(small_lo, small_hi);
    }
}

/// A float from a menu of edge values or a moderate value.
float pick_float(FuzzedDataProvider& in) {
    static constexpr float edges[] = {0.0f,
                                      -0.0f,
                                      1.0f,
                                      -1.0f,
                                      100.0f,
                                      -100.0f,
                                      std::numeric_limits<float>::infinity(),
                                      -std::numeric_limits<float>::infinity(),
                                      std::numeric_limits<float>::quiet_NaN(),
                                      1e30f,
                                      1e-30f};
    if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
        return edges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(edges) - 1)];
    return in.ConsumeFloatingPointInRange<float>(-12.0f, 12.0f);
}

/// Element count a view with these fields spans (from its lowest to its highest element), and
/// the offset of element (0, 0) from the lowest one; 0 when it spans nothing.
struct extent {
    std::size_t size = 0, origin = 0;
};
extent view_extent(std::int64_t tokens, int heads, int head_dim, std::ptrdiff_t ts,
                   std::ptrdiff_t hs) {
    extent e;
    if (tokens <= 0 || heads <= 0 || head_dim <= 0) return e;
    const std::int64_t tmin = std::min<std::int64_t>(0, (tokens - 1) * ts);
    const std::int64_t tmax = std::max<std::int64_t>(0, (tokens - 1) * ts);
    const std::int64_t hmin = std::min<std::int64_t>(0, std::int64_t(heads - 1) * hs);
    const std::int64_t hmax = std::max<std::int64_t>(0, std::int64_t(heads - 1) * hs);
    e.origin = std::size_t(-(tmin + hmin));
    e.size = std::size_t(tmax + hmax - tmin - hmin + head_dim);
    return e;
}

/// An exact-size buffer and a view over it.
template <class T>
struct tensor {
    std::vector<T> buf;
    head_view<T> view;
};

/// Decodes a layout for tokens x heads x head_dim (occasionally with one field perturbed) and
/// allocates exactly the elements it spans, filled from `fill`.
template <class T, class Fill>
tensor<T> make_tensor(FuzzedDataProvider& in, std::int64_t tokens, int heads, int head_dim,
                      Fill&& fill) {
    tensor<T> t;
    std::ptrdiff_t ts = std::ptrdiff_t(heads) * head_dim, hs = head_dim;
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
        case 0:  // padded rows
            hs = head_dim + in.ConsumeIntegralInRange<int>(0, 5);
            ts = std::ptrdiff_t(heads) * hs + in.ConsumeIntegralInRange<int>(0, 9);
            break;
        case 1:  // [heads][tokens][dim]
            ts = head_dim;
            hs = std::ptrdiff_t(std::max<std::int64_t>(tokens, 1)) * head_dim;
            break;
        case 2:  // anything, including overlapping, zero or negative strides
            ts = in.ConsumeIntegralInRange<std::ptrdiff_t>(-600, 600);
            hs = in.ConsumeIntegralInRange<std::ptrdiff_t>(-600, 600);
            break;
        default:
            break;
    }
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {  // a shape mismatch the front door rejects
        switch (in.ConsumeIntegralInRange<int>(0, 3)) {
            case 0:
                tokens += in.ConsumeIntegralInRange<int>(-2, 2);
                break;
            case 1:
                heads += in.ConsumeIntegralInRange<int>(-2, 2);
                break;
            case 2:
                head_dim += in.ConsumeIntegralInRange<int>(-2, 2);
                break;
            default:
                break;
        }
    }
    const extent e = view_extent(tokens, heads, head_dim, ts, hs);
    t.buf.resize(e.size);
    for (auto& x : t.buf) x = fill();
    const bool null_data = in.ConsumeIntegralInRange<int>(0, 31) == 0;
    t.view = head_view<T>{null_data || t.buf.empty() ? nullptr : t.buf.data() + e.origin,
                          tokens,
                          heads,
                          head_dim,
                          ts,
                          hs};
    return t;
}

/// Positions for n tokens: unset, contiguous, constant, int32 or int64 ids (small, or anything),
/// table_rows, or null ids. `ids32` / `ids64` own the arrays.
std::optional<positions> make_positions(FuzzedDataProvider& in, std::int64_t n,
                                        std::vector<std::int32_t>& ids32,
                                        std::vector<std::int64_t>& ids64) {
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
        case 0:
        case 1:
        case 2:
            return std::nullopt;
        case 3:
            return positions::contiguous(pick_int(in, -50, 300));
        case 4:
            return positions::constant(pick_int(in, -50, 300));
        case 5:
        case 6: {
            ids32.resize(std::size_t(std::max<std::int64_t>(n, 0)));
            const bool wild = in.ConsumeBool();
            for (auto& x : ids32)
                x = wild ? in.ConsumeIntegral<std::int32_t>()
                         : in.ConsumeIntegralInRange<std::int32_t>(-5, 300);
            return positions::ids(ids32.empty() ? nullptr : ids32.data());
        }
        case 7:
        case 8: {
            ids64.resize(std::size_t(std::max<std::int64_t>(n, 0)));
            const bool wild = in.ConsumeBool();
            for (auto& x : ids64)
                x = wild ? pick_int(in, -5, 300) : in.ConsumeIntegralInRange<std::int64_t>(-5, 300);
            return positions::ids(ids64.empty() ? nullptr : ids64.data());
        }
        default:
            return in.ConsumeBool() ? positions::table_rows()
                                    : positions::ids(static_cast<const std::int64_t*>(nullptr));
    }
}

/// The frequencies of a (possibly broken) RoPE model with head_dim D.
ropekit::rope_frequencies make_freqs(FuzzedDataProvider& in, int D) {
    ropekit::rope_frequencies f;
    f.head_dim = D;
    f.rotary_dim = in.ConsumeBool() ? D - D % 2 : in.ConsumeIntegralInRange<int>(-2, D + 2);
    f.layout = in.ConsumeBool() ? ropekit::rope_layout::neox : ropekit::rope_layout::gptj;
    f.attention_factor = in.ConsumeBool() ? 1.0f : pick_float(in);
    const int pairs = std::max(0, f.rotary_dim / 2) + (in.ConsumeIntegralInRange<int>(0, 15) == 0);
    for (int i = 0; i < pairs; ++i)
        f.inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / std::max(2, f.rotary_dim))));
    return f;
}

bool has_nan(const std::vector<float>& x) {
    for (float v : x)
        if (std::isnan(v)) return true;
    return false;
}

/// |a - b| within `tol` relative to the values, or both the same infinity.
bool close(float a, float b, double tol) {
    if (std::isinf(a) || std::isinf(b)) return a == b;
    return std::abs(double(a) - double(b)) <=
           tol * std::max(1.0, std::max(std::abs(double(a)), std::abs(double(b))));
}

/// How far a split run may differ from the whole one. Different ranges take different code
/// paths (decode form or blocks, tile boundaries, Leaky ReRoPE's composed or accurate angles),
/// whose float rounding differs by a few ulps of each logit; softmax turns a logit error e into
/// a relative weight error e, so the bound grows with the largest possible logit
/// `scale * max|q| * max|k| * head_dim` (values are in [-4, 4]).
double split_tolerance(float softmax_scale, int D) {
    return 1e-4 + 4e-7 * double(softmax_scale) * 16.0 * double(D);
}

ropekit::attention_workspace& workspace() {
    static const std::unique_ptr<ropekit::attention_workspace> ws =
        std::make_unique<ropekit::attention_workspace>();
    return *ws;
}

/// Whole-problem results of an accepted call, compared with a split run of the hot kernels.
struct whole_result {
    std::vector<float> o, lse;
};

/// Runs `kernel(heads, queries, keys, o_view, lse_ptr, sinks)` over two head ranges, two query
/// ranges and three key ranges, merging the key parts by LSE (sinks added once, by the last
/// merge), and compares with the whole-problem result.
template <class Kernel>
void check_split(FuzzedDataProvider& in, const whole_result& whole, std::int64_t n_q,
                 std::int64_t n_kv, int H, int D, const float* sinks, double tol, Kernel&& kernel) {
    const std::int64_t hc = in.ConsumeIntegralInRange<std::int64_t>(0, H);
    const std::int64_t qc =
        in.ConsumeIntegralInRange<std::int64_t>(0, std::max<std::int64_t>(n_q, 0));
    std::int64_t k1 = in.ConsumeIntegralInRange<std::int64_t>(0, std::max<std::int64_t>(n_kv, 0));
    std::int64_t k2 = in.ConsumeIntegralInRange<std::int64_t>(0, std::max<std::int64_t>(n_kv, 0));
    if (k1 > k2) std::swap(k1, k2);
    const std::size_t rows = std::size_t(n_q) * std::size_t(H);
    std::vector<float> acc(rows * std::size_t(D)), part(acc.size()), la(rows), lb(rows);
    const auto acc_v = ropekit::packed_view(acc.data(), n_q, H, D);
    const auto part_v = ropekit::packed_view(part.data(), n_q, H, D);
    const key_range cuts[] = {key_range{0, k1}, key_range{k1, k2}, key_range{k2, n_kv}};
    for (const head_range hr : {head_range{0, hc}, head_range{hc, H}})
        for (const query_range qr : {query_range{0, qc}, query_range{qc, n_q}})
            for (int i = 0; i < 3; ++i) {
                kernel(hr, qr, cuts[i], i == 0 ? acc_v : part_v, i == 0 ? la.data() : lb.data());
                if (i > 0)
                    ropekit::merge_attention(acc_v, la.data(), part_v, lb.data(), hr, qr,
                                             i == 2 ? sinks : nullptr);
            }
    if (fuzz_attention::assert_fired) finding("a hot entry point asserted on accepted shapes");
    for (std::size_t i = 0; i < acc.size(); ++i)
        if (!close(acc[i], whole.o[i], tol)) {
            std::fprintf(stderr, "o[%zu]: split %.9g whole %.9g (tolerance %g; H %d D %d)\n", i,
                         double(acc[i]), double(whole.o[i]), tol, H, D);
            finding("split + merge differs from the whole result");
        }
    for (std::size_t i = 0; i < rows; ++i)
        if (!close(la[i], whole.lse[i], tol)) {
            std::fprintf(stderr, "lse[%zu]: split %.9g whole %.9g (tolerance %g)\n", i,
                         double(la[i]), double(whole.lse[i]), tol);
            finding("split + merge LSE differs from the whole result");
        }
}

/// Calls `kernel` with ranges that may lie outside the views: must write nothing whenever it
/// asserts (as with asserts compiled out), and never touch memory outside the buffers.
template <class Kernel>
void check_bad_ranges(FuzzedDataProvider& in, std::int64_t n_q, std::int64_t n_kv, int H, int D,
                      Kernel&& kernel) {
    const std::size_t rows = std::size_t(std::max<std::int64_t>(n_q, 0)) * std::size_t(H);
    std::vector<float> o(rows * std::size_t(D), 7.0f), lse(rows, 7.0f);
    const head_range hr{pick_int(in, -2, H + 2), pick_int(in, -2, H + 2)};
    const query_range qr{pick_int(in, -2, n_q + 2), pick_int(in, -2, n_q + 2)};
    const key_range kr{pick_int(in, -2, n_kv + 2), pick_int(in, -2, n_kv + 2)};
    fuzz_attention::assert_fired = false;
    kernel(hr, qr, kr, ropekit::packed_view(o.data(), n_q, H, D), lse.data());
    const bool fired = fuzz_attention::assert_fired;
    fuzz_attention::assert_fired = false;
    if (!fired) return;
    for (float x : o)
        if (x != 7.0f) finding("a kernel that asserted wrote its output");
    for (float x : lse)
        if (x != 7.0f) finding("a kernel that asserted wrote its LSE");
}

template <class KV>
void run(FuzzedDataProvider& in) {
    const int kv_heads = in.ConsumeIntegralInRange<int>(1, 3);
    const int group = in.ConsumeIntegralInRange<int>(1, 4);
    const int H = kv_heads * group;
    static constexpr int dims[] = {1,  2,  3,  8,   15,  16,  17, 31,  32, 33,
                                   64, 80, 96, 128, 256, 576, 0,  257, 577};
    const int D = dims[in.ConsumeIntegralInRange<std::size_t>(0, std::size(dims) - 1)];
    const std::int64_t n_q = in.ConsumeIntegralInRange<std::int64_t>(0, 70);
    const std::int64_t n_kv = in.ConsumeIntegralInRange<std::int64_t>(0, 140);

    auto value = [&] { return in.ConsumeFloatingPointInRange<float>(-4.0f, 4.0f); };
    auto q = make_tensor<float>(in, n_q, H, D, value);
    auto k =
        make_tensor<KV>(in, n_kv, kv_heads, D, [&] { return ropekit::from_float<KV>(value()); });
    auto v =
        make_tensor<KV>(in, n_kv, kv_heads, D, [&] { return ropekit::from_float<KV>(value()); });
    auto o = make_tensor<float>(in, n_q, H, D, [] { return 7.0f; });
    // Arrays indexed by token or head follow the views, which a perturbation may have changed
    // consistently (then the call is valid and must stay in bounds).
    const std::int64_t vq = std::max<std::int64_t>(q.view.tokens, 0);
    const std::int64_t vkv = std::max<std::int64_t>(k.view.tokens, 0);
    const int vh = std::max(q.view.heads, 0);

    // The parameters: the builders are front doors too.
    const int scale_kind = in.ConsumeIntegralInRange<int>(0, 2);
    const ropekit::rope_frequencies freqs = make_freqs(in, D);
    std::optional<attention_params> maybe;
    try {
        if (scale_kind == 0)
            maybe = attention_params::for_model(freqs);
        else if (scale_kind == 1)
            maybe = attention_params::with_softmax_scale(double(pick_float(in)));
        else
            maybe = attention_params::for_model(freqs).with_scaling(double(pick_float(in)));
    } catch (const ropekit::error&) {
        maybe = attention_params::with_softmax_scale(0.125);
    }
    attention_params p = *maybe;
    std::vector<std::int32_t> q32, k32;
    std::vector<std::int64_t> q64, k64;
    p.q_positions = make_positions(in, vq, q32, q64);
    p.k_positions = make_positions(in, vkv, k32, k64);
    if (in.ConsumeIntegralInRange<int>(0, 3) == 0) p.query_index_offset = pick_int(in, -3, 200);
    std::vector<float> sinks;
    if (in.ConsumeIntegralInRange<int>(0, 2) == 0) {
        sinks.resize(std::size_t(vh));
        for (auto& s : sinks) s = pick_float(in);
        p.sink_logits = sinks.empty() ? nullptr : sinks.data();
    }
    std::vector<float> lse(std::size_t(vq) * std::size_t(vh), 7.0f);
    if (in.ConsumeIntegralInRange<int>(0, 3) != 0) p.lse = lse.data();

    // The mask.
    const int mask_kind = in.ConsumeIntegralInRange<int>(0, 4);
    const ropekit::sliding_window_mask sliding{pick_int(in, 0, 80)};
    const ropekit::sink_window_mask sink_window{pick_int(in, -1, 8), pick_int(in, 0, 80)};
    std::vector<std::int64_t> ends(std::size_t(in.ConsumeIntegralInRange<int>(0, 4)));
    std::int64_t prev = 0;
    for (auto& e : ends)
        e = prev = in.ConsumeBool() && prev < INT64_MAX - 40
                       ? prev + in.ConsumeIntegralInRange<std::int64_t>(1, 40)
                       : pick_int(in, -3, 150);
    const std::int64_t n_windows =
        in.ConsumeIntegralInRange<int>(0, 7) == 0 ? pick_int(in, -2, 6) : std::int64_t(ends.size());
    const ropekit::parallel_context_mask pcw{
        in.ConsumeIntegralInRange<int>(0, 15) == 0 || ends.empty() ? nullptr : ends.data(),
        ends.empty() ? n_windows : std::min<std::int64_t>(n_windows, std::int64_t(ends.size()))};

    // ReRoPE: a rule and a table (possibly too short or of other frequencies).
    const int rule_kind = in.ConsumeIntegralInRange<int>(0, 5);  // 0, 1: none
    const ropekit::rerope rr{pick_int(in, 0, 100)};
    const ropekit::leaky_rerope lr{pick_int(in, 0, 100),
                                   in.ConsumeBool() ? 1.0 : double(pick_float(in))};
    const ropekit::self_extend se{pick_int(in, 0, 100), pick_int(in, 0, 9)};
    // StreamingLLM runs only under its own mask: mostly give it the sink_window mask's fields,
    // sometimes others (the front door must then refuse the mask).
    const bool own_mask = in.ConsumeIntegralInRange<int>(0, 3) != 0;
    const ropekit::streaming_llm sl =
        own_mask ? ropekit::streaming_llm{sink_window.n_sink, sink_window.window}
                 : ropekit::streaming_llm{pick_int(in, -1, 8), pick_int(in, 0, 100)};
    const std::int64_t table_first = in.ConsumeIntegralInRange<std::int64_t>(-20, 20);
    const std::int64_t table_rows = in.ConsumeIntegralInRange<std::int64_t>(0, 400);

    const auto with_mask = [&](auto&& f) {
        switch (mask_kind) {
            case 0:
                return f(ropekit::full_mask{});
            case 1:
                return f(ropekit::causal_mask{});
            case 2:
                return f(sliding);
            case 3:
                return f(sink_window);
            default:
                return f(pcw);
        }
    };
    // The split checks use packed outputs of the decoded shape: only when O is packed and no
    // perturbation changed the views.
    const auto decoded_shapes = [&] {
        return q.view.tokens == n_q && q.view.heads == H && q.view.head_dim == D &&
               k.view.tokens == n_kv && k.view.heads == kv_heads && o.view.tokens == n_q &&
               o.view.token_stride == std::ptrdiff_t(H) * D && o.view.head_stride == D;
    };
    const auto qc = head_view<const float>(q.view);
    const auto kc = head_view<const KV>(k.view);
    const auto vc = head_view<const KV>(v.view);

    if (rule_kind < 2) {
        with_mask([&](const auto& mask) {
            try {
                // Non-const K/V views half of the time: both must be accepted.
                if (rule_kind == 0)
                    ropekit::attention(q.view, k.view, v.view, o.view, mask, p, workspace());
                else
                    ropekit::attention(qc, kc, vc, o.view, mask, p);
            } catch (const ropekit::error&) {
                return;
            }
            // Accepted: the shapes are those decoded (no perturbation survived validation).
            if (fuzz_attention::assert_fired) finding("attention() asserted after validating");
            if (has_nan(o.buf) || (p.lse && has_nan(lse))) finding("NaN in an accepted result");
            if (!decoded_shapes() || !p.lse) return;
            const whole_result whole{o.buf, lse};
            check_split(
                in, whole, n_q, n_kv, H, D, p.sink_logits, split_tolerance(p.softmax_scale(), D),
                [&](head_range hr, query_range qr, key_range kr, head_view<float> ov, float* l) {
                    attention_params pp = p;
                    pp.sink_logits = nullptr;  // added once, by the merge
                    pp.lse = l;
                    ropekit::attention_blocked(ropekit::default_arch{}, qc, kc, vc, ov, mask, pp,
                                               hr, qr, kr, workspace());
                });
            check_bad_ranges(
                in, n_q, n_kv, H, D,
                [&](head_range hr, query_range qr, key_range kr, head_view<float> ov, float* l) {
                    attention_params pp = p;
                    pp.lse = l;
                    ropekit::attention_blocked(ropekit::default_arch{}, qc, kc, vc, ov, mask, pp,
                                               hr, qr, kr, workspace());
                });
        });
        return;
    }

    const auto with_rule = [&](auto&& f) {
        if (rule_kind == 2) return f(rr);
        if (rule_kind == 4) return f(se);
        if (rule_kind == 5) return f(sl);
        return f(lr);
    };
    with_mask([&](const auto& mask) {
        with_rule([&](const auto& rule) {
            std::optional<ropekit::cos_sin_table> table;
            try {
                table = ropekit::cos_sin_table::for_range(freqs, table_first, table_rows);
            } catch (const ropekit::error&) {
                return;
            }
            try {
                ropekit::position_rule_attention(q.view, k.view, v.view, o.view, mask, p, rule,
                                                 freqs, *table, workspace());
            } catch (const ropekit::error&) {
                return;
            }
            if (fuzz_attention::assert_fired)
                finding("position_rule_attention() asserted after validating");
            if (has_nan(o.buf) || (p.lse && has_nan(lse))) finding("NaN in an accepted result");
            if (!decoded_shapes() || !p.lse) return;
            const whole_result whole{o.buf, lse};
            check_split(
                in, whole, n_q, n_kv, H, D, p.sink_logits, split_tolerance(p.softmax_scale(), D),
                [&](head_range hr, query_range qr, key_range kr, head_view<float> ov, float* l) {
                    attention_params pp = p;
                    pp.sink_logits = nullptr;
                    pp.lse = l;
                    ropekit::position_rule_attention_blocked(ropekit::default_arch{}, qc, kc, vc,
                                                             ov, mask, pp, rule, freqs, *table, hr,
                                                             qr, kr, workspace());
                });
            check_bad_ranges(
                in, n_q, n_kv, H, D,
                [&](head_range hr, query_range qr, key_range kr, head_view<float> ov, float* l) {
                    attention_params pp = p;
                    pp.lse = l;
                    ropekit::position_rule_attention_blocked(ropekit::default_arch{}, qc, kc, vc,
                                                             ov, mask, pp, rule, freqs, *table, hr,
                                                             qr, kr, workspace());
                });
        });
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    fuzz_attention::assert_fired = false;
    switch (in.ConsumeIntegralInRange<int>(0, 2)) {
        case 0:
            run<float>(in);
            break;
        case 1:
            run<ropekit::bfloat16>(in);
            break;
        default:
            run<ropekit::half>(in);
            break;
    }
    return 0;
}
