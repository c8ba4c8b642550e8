// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for position_rule_attention (include/ropekit/attention.hpp) under every rule
// of position_rules.hpp (ReRoPE, Leaky ReRoPE, Self-Extend, StreamingLLM) and every mask of
// mask.hpp, with the rules' parameters taken to their edges (windows near 2^62, Leaky ReRoPE's k
// near 1 or near float's maximum, Self-Extend groups up to 2^62, sinks and windows summing to
// 2^62), extreme attention_params floats (softmax scales from with_scaling, attention factors,
// logit_softcap subnormal to FLT_MAX, sinks), positions by default, contiguous from anywhere
// up to 2^62 or as ids, and small shapes (GQA, head_dim up to 128 with partial rotary, up to 24
// queries and 64 keys, zero rows). The table is built to cover what the rule needs, sometimes
// not. A ropekit::error from a builder or the front door is the expected answer to bad input.
//
// Findings, for a call the front door accepted:
//  - anything but ropekit::error escaping, a sanitizer report, a ROPEKIT_ASSERT (asserts are
//    on: the validators let through a call the kernel rejects);
//  - an output that is not finite, or an LSE that is NaN, +inf, or -inf where the reference's
//    is finite;
//  - a difference from position_rule_attention_reference (the rule's two-matrix definition in
//    double) beyond the tolerance tests/isa/test_position_rules.cpp applies: normwise max
//    relative error 1e-5, NMSE 1e-10, every LSE within 1e-5 (relative above 1). Those hold for
//    logits of order 10; the float kernel's logits carry an error of order 1e-7 of
//    L = softmax_scale * max|q| * max|k| (norms), which softmax turns into the same relative
//    error of the weights, so the bound used is max(1e-5, 5e-7 L) (its square for the NMSE).
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
//       -Iinclude tests/fuzz/fuzz_position_rules.cpp -o /tmp/fuzz_position_rules
//   /tmp/fuzz_position_rules -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
//       /tmp/pr_corpus tests/fuzz/corpus/position_rules
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ropekit/attention.hpp"
#include "ropekit/attention_reference.hpp"

namespace {

using ropekit::attention_params;
using ropekit::head_view;
using ropekit::positions;

constexpr std::int64_t lim62 = ropekit::attention_position_limit;
constexpr std::int64_t lim29 = ropekit::table_position_limit;
// Rows of a table this target builds: a rule needing more is left to the validator's refusal.
constexpr std::int64_t max_table_rows = 4096;

[[noreturn]] void finding(const char* what) {
    std::fprintf(stderr, "fuzz_position_rules finding: %s\n", what);
    std::abort();
}

/// An int64 rule or mask parameter: small, or at one of the limits the validators draw.
std::int64_t pick_param(FuzzedDataProvider& in, std::int64_t lo, std::int64_t hi) {
    static constexpr std::int64_t edges[] = {lim62,
                                             lim62 - 1,
                                             lim62 + 1,
                                             lim62 / 2,
                                             lim29,
                                             lim29 - 1,
                                             std::int64_t(1) << 31,
                                             std::numeric_limits<std::int64_t>::max(),
                                             std::numeric_limits<std::int64_t>::min(),
                                             0,
                                             -1,
                                             1,
                                             2,
                                             3,
                                             64,
                                             65};
    switch (in.ConsumeIntegralInRange<int>(0, 5)) {
        case 0:
            return edges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(edges) - 1)];
        case 1:
            return in.ConsumeIntegral<std::int64_t>();
        default:
            return in.ConsumeIntegralInRange<std::int64_t>(lo, hi);
    }
}

/// A double parameter: moderate, or an edge of float32 / double.
double pick_double(FuzzedDataProvider& in, double lo, double hi) {
    static constexpr double edges[] = {1.0,
                                       1.0 + 0x1p-52,
                                       1.0 + 0x1p-23,
                                       1.0000001,
                                       2.0,
                                       16.0,
                                       1e6,
                                       1e30,
                                       3.4028234663852886e38,
                                       3.4028235677973366e38,
                                       1e39,
                                       1e300,
                                       std::numeric_limits<double>::max(),
                                       std::numeric_limits<double>::infinity(),
                                       std::numeric_limits<double>::quiet_NaN(),
                                       0.5,
                                       0.0,
                                       -1.0,
                                       1e-30,
                                       1e-38,
                                       1.1754943508222875e-38,
                                       1e-39,
                                       1e-45,
                                       1e-46,
                                       5e-324};
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
        case 0:
            return edges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(edges) - 1)];
        default:
            return in.ConsumeFloatingPointInRange<double>(lo, hi);
    }
}

/// float(x) without the undefined conversion of a double beyond float's range: +-inf there,
/// what the hardware gives.
float narrow(double x) {
    if (std::isnan(x)) return std::numeric_limits<float>::quiet_NaN();
    if (std::fabs(x) >= 0x1.ffffffp127) return x > 0 ? INFINITY : -INFINITY;
    return float(x);
}

/// The score inputs of one problem, packed `[tokens][heads][head_dim]`.
struct problem {
    std::int64_t n_q = 0, n_kv = 0;
    int heads = 1, kv_heads = 1, D = 2;
    bool zero_rows = false;
    std::vector<float> q, k, v, o, lse;
    head_view<const float> qv() const { return ropekit::packed_view(q.data(), n_q, heads, D); }
    head_view<const float> kv_k() const {
        return ropekit::packed_view(k.data(), n_kv, kv_heads, D);
    }
    head_view<const float> kv_v() const {
        return ropekit::packed_view(v.data(), n_kv, kv_heads, D);
    }
    head_view<float> ov() { return ropekit::packed_view(o.data(), n_q, heads, D); }
};

/// Tensor values: the input's bytes while they last, then a fixed pseudo-random sequence. The
/// values are decoded after every parameter, so that a large tensor does not starve the
/// decisions that matter of bytes (FuzzedDataProvider gives the minimum once it runs dry).
struct value_source {
    FuzzedDataProvider& in;
    std::uint32_t state = 0x9e3779b9u;
    float next() {
        if (in.remaining_bytes() >= sizeof(std::uint32_t))
            return in.ConsumeFloatingPointInRange<float>(-2.0f, 2.0f);
        state = state * 1664525u + 1013904223u;  // (Numerical Recipes' LCG)
        return float(state >> 8) * 0x1p-22f - 2.0f;
    }
    /// Values of one tensor, variance about 1 (as the tests' normal draws), with whole rows of
    /// zeros now and then when `zero_rows` (padding tokens; a zero score is where 1/cap = inf
    /// gave NaN).
    void fill(std::vector<float>& x, int D, bool zero_rows) {
        for (std::size_t r = 0; r < x.size() / std::size_t(D); ++r) {
            const bool zero = zero_rows && next() < -1.0f;
            for (int d = 0; d < D; ++d)
                x[r * std::size_t(D) + std::size_t(d)] = zero ? 0.0f : next();
        }
    }
};

/// Euclidean norm of the largest row (rotations keep it).
double max_row_norm(const std::vector<float>& x, int D) {
    double best = 0.0;
    for (std::size_t r = 0; r < x.size() / std::size_t(D); ++r) {
        double s = 0.0;
        for (int d = 0; d < D; ++d) {
            const double e = x[r * std::size_t(D) + std::size_t(d)];
            s += e * e;
        }
        best = std::max(best, s);
    }
    return std::sqrt(best);
}

/// The call's positions, as the kernel resolves them, and the attention_params fields.
struct position_plan {
    std::vector<std::int64_t> qpos, kpos;  // resolved values
    std::vector<std::int64_t> q_ids, k_ids;
    std::optional<positions> q, k;
};

/// The first of `n` positions: small, or such that the last lands just below the table's limit
/// 2^29 or the front door's 2^62 (rules rotate and re-rotate by differences up to there), on
/// either side of 0.
std::int64_t first_position(FuzzedDataProvider& in, std::int64_t n) {
    const std::int64_t back = n + in.ConsumeIntegralInRange<std::int64_t>(0, 64);
    switch (in.ConsumeIntegralInRange<int>(0, 5)) {
        case 0:
            return lim29 - back;
        case 1:
            return lim62 - back;
        case 2:
            return -lim62 + 1 + in.ConsumeIntegralInRange<std::int64_t>(0, 64);
        case 3:
            return std::int64_t(1) << in.ConsumeIntegralInRange<int>(29, 61);
        default:
            return in.ConsumeIntegralInRange<std::int64_t>(-5, 300);
    }
}

/// Positions of n tokens: unset (the default), contiguous from a start anywhere below 2^62, or
/// ids (increasing with gaps, or arbitrary). `def(t)` gives the default of token t.
template <class Default>
std::optional<positions> make_positions(FuzzedDataProvider& in, std::int64_t n,
                                        std::vector<std::int64_t>& ids,
                                        std::vector<std::int64_t>& resolved, Default&& def) {
    std::optional<positions> out;
    resolved.resize(std::size_t(n));
    switch (in.ConsumeIntegralInRange<int>(0, 4)) {
        case 0:
        case 1:
            for (std::int64_t t = 0; t < n; ++t) resolved[std::size_t(t)] = def(t);
            return out;
        case 2: {
            // Nearly always a start the front door accepts (|position| < 2^62 for every token).
            std::int64_t start = first_position(in, n);
            if (in.ConsumeIntegralInRange<int>(0, 7) == 0) start = pick_param(in, -5, 300);
            for (std::int64_t t = 0; t < n; ++t)
                resolved[std::size_t(t)] =
                    std::int64_t(std::uint64_t(start) + std::uint64_t(t));  // as the kernel
            return positions::contiguous(start);
        }
        default: {
            ids.resize(std::size_t(n));
            std::int64_t p = first_position(in, 64 * n);
            const bool sorted = in.ConsumeBool();
            for (std::int64_t t = 0; t < n; ++t) {
                ids[std::size_t(t)] = sorted ? p : in.ConsumeIntegralInRange<std::int64_t>(-5, 300);
                p += in.ConsumeIntegralInRange<std::int64_t>(0, 3) == 0
                         ? in.ConsumeIntegralInRange<std::int64_t>(0, 64)
                         : 1;
                resolved[std::size_t(t)] = ids[std::size_t(t)];
            }
            return positions::ids(ids.empty() ? nullptr : ids.data());
        }
    }
}

/// The range of table rows the rule reads (the validator's own rule: unrotated inputs at every
/// position, Self-Extend's far rows where far pairs exist); false when nothing is needed.
template <class Rule>
bool needed_rows(const Rule& rule, const position_plan& pp, std::int64_t& lo, std::int64_t& hi) {
    bool any = false;
    auto take = [&](std::int64_t r) {
        lo = any ? std::min(lo, r) : r;
        hi = any ? std::max(hi, r) : r;
        any = true;
    };
    if constexpr (Rule::inputs == ropekit::rule_inputs::unrotated) {
        for (std::int64_t p : pp.qpos) take(p);
        for (std::int64_t p : pp.kpos) take(p);
    }
    if constexpr (std::is_same_v<Rule, ropekit::self_extend>) {
        // (Parameters the validator refuses read no far row; this runs before it.)
        const bool valid =
            rule.window >= 1 && rule.window <= lim62 && rule.group >= 1 && rule.group <= lim62;
        if (valid && !pp.qpos.empty() && !pp.kpos.empty()) {
            const auto [qlo, qhi] = std::minmax_element(pp.qpos.begin(), pp.qpos.end());
            const auto [klo, khi] = std::minmax_element(pp.kpos.begin(), pp.kpos.end());
            // (Only positions the front door accepts, below 2^62 in magnitude, so that the
            // differences fit in int64.)
            const bool in_range = *qlo > -lim62 && *qhi<lim62&& * klo> - lim62 && *khi < lim62;
            if (in_range && *qhi - *klo >= rule.window) {
                const std::int64_t i0 = std::max(*qlo, *klo + rule.window);
                const std::int64_t j1 = std::min(*khi, *qhi - rule.window);
                take(rule.far_q_index(i0));
                take(rule.far_q_index(*qhi));
                take(rule.far_k_index(*klo));
                take(rule.far_k_index(j1));
            }
        }
    }
    return any;
}

ropekit::attention_workspace& workspace() {
    static const std::unique_ptr<ropekit::attention_workspace> ws =
        std::make_unique<ropekit::attention_workspace>();
    return *ws;
}

/// The case in words, printed with a finding (the reproducer is the input; this is the why).
void describe(const ropekit::rerope& r) {
    std::fprintf(stderr, "rule rerope{window %lld}", (long long)r.window);
}
void describe(const ropekit::leaky_rerope& r) {
    std::fprintf(stderr, "rule leaky_rerope{window %lld, k %.17g}", (long long)r.window, r.k);
}
void describe(const ropekit::self_extend& r) {
    std::fprintf(stderr, "rule self_extend{window %lld, group %lld}", (long long)r.window,
                 (long long)r.group);
}
void describe(const ropekit::streaming_llm& r) {
    std::fprintf(stderr, "rule streaming_llm{n_sink %lld, window %lld}", (long long)r.n_sink,
                 (long long)r.window);
}
void describe(const ropekit::full_mask&) {
    std::fprintf(stderr, ", full_mask");
}
void describe(const ropekit::causal_mask&) {
    std::fprintf(stderr, ", causal_mask");
}
void describe(const ropekit::sliding_window_mask& m) {
    std::fprintf(stderr, ", sliding_window_mask{%lld}", (long long)m.window);
}
void describe(const ropekit::sink_window_mask& m) {
    std::fprintf(stderr, ", sink_window_mask{%lld, %lld}", (long long)m.n_sink,
                 (long long)m.window);
}
void describe(const ropekit::chunked_mask& m) {
    std::fprintf(stderr, ", chunked_mask{%lld}", (long long)m.attention_chunk_size);
}
void describe(const ropekit::parallel_context_mask& m) {
    std::fprintf(stderr, ", parallel_context_mask{%lld windows}", (long long)m.n_windows);
}

template <class Mask, class Rule>
void describe_case(const problem& pr, const Mask& mask, const Rule& rule,
                   const ropekit::rope_frequencies& f, const attention_params& p,
                   const position_plan& pp, const ropekit::cos_sin_table& table) {
    describe(rule);
    describe(mask);
    auto range = [](const std::vector<std::int64_t>& v) {
        if (v.empty()) return std::string("none");
        const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
        return "[" + std::to_string(*lo) + ", " + std::to_string(*hi) + "]";
    };
    std::fprintf(stderr,
                 "\nn_q %lld n_kv %lld heads %d/%d D %d rotary_dim %d %s attention_factor %.9g "
                 "softmax_scale %.9g logit_softcap %.9g sinks %s query_index_offset %lld\nq "
                 "positions %s (%s) k positions %s (%s), table [%lld, +%lld)\n",
                 (long long)pr.n_q, (long long)pr.n_kv, pr.heads, pr.kv_heads, pr.D, f.rotary_dim,
                 f.layout == ropekit::rope_layout::neox ? "neox" : "gptj",
                 double(f.attention_factor), double(p.softmax_scale()), double(p.logit_softcap),
                 p.sink_logits ? "yes" : "no", (long long)p.query_index_offset,
                 range(pp.qpos).c_str(), pp.q ? "given" : "default", range(pp.kpos).c_str(),
                 pp.k ? "given" : "default", (long long)table.first_position(),
                 (long long)table.rows());
}

template <class Mask, class Rule>
void run_case(FuzzedDataProvider& in, problem& pr, const Mask& mask, const Rule& rule,
              const ropekit::rope_frequencies& freqs, attention_params p, const position_plan& pp) {
    // The table: usually exactly what the rule needs (with a little slack), sometimes not.
    std::int64_t lo = 0, hi = 0;
    if (!needed_rows(rule, pp, lo, hi)) hi = in.ConsumeIntegralInRange<std::int64_t>(0, 200);
    // (Rows beyond 2^61 are refused by the table builder anyway; the clamp keeps hi - lo finite.)
    lo = std::clamp(lo, -lim62 / 2, lim62 / 2);
    hi = std::clamp(hi, -lim62 / 2, lim62 / 2);
    lo -= in.ConsumeIntegralInRange<std::int64_t>(0, 3);
    hi += in.ConsumeIntegralInRange<std::int64_t>(0, 3);
    std::int64_t count = hi - lo + 1 <= max_table_rows && hi >= lo ? hi - lo + 1 : max_table_rows;
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {
        lo = pick_param(in, -5, 300);
        count = in.ConsumeIntegralInRange<std::int64_t>(0, 400);
    } else if (in.ConsumeIntegralInRange<int>(0, 15) == 0) {
        count = std::max<std::int64_t>(0, count - in.ConsumeIntegralInRange<std::int64_t>(1, 3));
    }
    const ropekit::cos_sin_table table = ropekit::cos_sin_table::for_range(freqs, lo, count);

    std::vector<float> sinks;
    if (in.ConsumeIntegralInRange<int>(0, 3) == 0) {
        sinks.resize(std::size_t(pr.heads));
        for (float& s : sinks)
            s = in.ConsumeIntegralInRange<int>(0, 5) == 0
                    ? -std::numeric_limits<float>::infinity()
                    : in.ConsumeFloatingPointInRange(-4.f, 4.f);
        p.sink_logits = sinks.data();
    }
    if (in.ConsumeIntegralInRange<int>(0, 5) == 0)
        p.query_index_offset = in.ConsumeIntegralInRange<std::int64_t>(-1, pr.n_kv + 3);
    value_source values{in};
    values.fill(pr.q, pr.D, pr.zero_rows);
    values.fill(pr.k, pr.D, pr.zero_rows);
    values.fill(pr.v, pr.D, false);
    pr.o.assign(std::size_t(pr.n_q * pr.heads * pr.D), std::numeric_limits<float>::quiet_NaN());
    pr.lse.assign(std::size_t(pr.n_q * pr.heads), std::numeric_limits<float>::quiet_NaN());
    p.lse = pr.lse.data();

    try {
        ropekit::position_rule_attention(pr.qv(), pr.kv_k(), pr.kv_v(), pr.ov(), mask, p, rule,
                                         freqs, table, workspace());
    } catch (const ropekit::error&) {
        return;  // the expected outcome for bad input
    }
    std::vector<double> ro, rl;
    ropekit::position_rule_attention_reference(pr.qv(), pr.kv_k(), pr.kv_v(), mask, p, rule, freqs,
                                               ro, rl);
    for (float x : pr.o)
        if (!std::isfinite(x)) {
            describe_case(pr, mask, rule, freqs, p, pp, table);
            finding("an accepted call's output is not finite");
        }
    const double L =
        double(p.softmax_scale()) * max_row_norm(pr.q, pr.D) * max_row_norm(pr.k, pr.D);
    const double tol = std::max(1e-5, 5e-7 * L);
    for (std::size_t i = 0; i < rl.size(); ++i) {
        const float got = pr.lse[i];
        const double want = rl[i];
        const bool ok = std::isinf(want)
                            ? double(got) == want
                            : std::isfinite(got) && std::fabs(double(got) - want) <=
                                                        std::max(tol, 1e-5 * std::fabs(want));
        if (!ok) {
            describe_case(pr, mask, rule, freqs, p, pp, table);
            std::fprintf(stderr, "lse[%zu] %.9g, reference %.9g (tolerance %g)\n", i, double(got),
                         want, tol);
            finding(std::isnan(got) ? "NaN LSE from an accepted call"
                                    : "LSE differs from the rule's two-matrix definition");
        }
    }
    double max_abs = 0, max_ref = 0, se = 0, sr = 0;
    std::size_t worst = 0;
    for (std::size_t i = 0; i < ro.size(); ++i) {
        const double d = double(pr.o[i]) - ro[i];
        if (std::fabs(d) > max_abs) worst = i;
        max_abs = std::max(max_abs, std::fabs(d));
        max_ref = std::max(max_ref, std::fabs(ro[i]));
        se += d * d;
        sr += ro[i] * ro[i];
    }
    const double max_rel = max_ref > 0 ? max_abs / max_ref : max_abs;
    const double nmse = sr > 0 ? se / sr : se;
    if (max_rel > tol || nmse > tol * tol) {
        describe_case(pr, mask, rule, freqs, p, pp, table);
        std::fprintf(stderr, "o[%zu] %.9g, reference %.9g: max_rel %g nmse %g (tolerance %g)\n",
                     worst, double(pr.o[worst]), ro[worst], max_rel, nmse, tol);
        finding("output differs from the rule's two-matrix definition");
    }
}

template <class Rule>
void with_mask(FuzzedDataProvider& in, problem& pr, const Rule& rule,
               const ropekit::rope_frequencies& freqs, const attention_params& p,
               const position_plan& pp) {
    std::vector<std::int64_t> ends(std::size_t(in.ConsumeIntegralInRange<int>(0, 4)));
    std::int64_t prev = 0;
    for (auto& e : ends)
        e = prev = in.ConsumeBool() && prev < lim62
                       ? prev + in.ConsumeIntegralInRange<std::int64_t>(1, 30)
                       : pick_param(in, -3, 80);
    // StreamingLLM is defined for its own mask only: mostly that one, sometimes another (which
    // the front door must refuse).
    int kind = in.ConsumeIntegralInRange<int>(0, 5);
    if constexpr (std::is_same_v<Rule, ropekit::streaming_llm>)
        if (in.ConsumeIntegralInRange<int>(0, 3) != 0) kind = 6;
    switch (kind) {
        case 0:
            return run_case(in, pr, ropekit::full_mask{}, rule, freqs, p, pp);
        case 1:
            return run_case(in, pr, ropekit::causal_mask{}, rule, freqs, p, pp);
        case 2:
            return run_case(in, pr, ropekit::sliding_window_mask{pick_param(in, 1, 80)}, rule,
                            freqs, p, pp);
        case 3:
            return run_case(in, pr,
                            ropekit::sink_window_mask{pick_param(in, 0, 8), pick_param(in, 1, 80)},
                            rule, freqs, p, pp);
        case 4:
            return run_case(in, pr, ropekit::chunked_mask{pick_param(in, 1, 80)}, rule, freqs, p,
                            pp);
        case 5:
            return run_case(in, pr,
                            ropekit::parallel_context_mask{ends.empty() ? nullptr : ends.data(),
                                                           std::int64_t(ends.size())},
                            rule, freqs, p, pp);
        default:
            if constexpr (std::is_same_v<Rule, ropekit::streaming_llm>)
                return run_case(in, pr, rule.mask(), rule, freqs, p, pp);
            return;
    }
}

void run(FuzzedDataProvider& in) {
    problem pr;
    pr.kv_heads = in.ConsumeIntegralInRange<int>(1, 2);
    pr.heads = pr.kv_heads * in.ConsumeIntegralInRange<int>(1, 3);
    static constexpr int dims[] = {2, 4, 6, 8, 16, 32, 48, 64, 80, 96, 128, 256, 258};
    pr.D = in.ConsumeIntegralInRange<int>(0, 15) == 0
               ? dims[in.ConsumeIntegralInRange<std::size_t>(0, std::size(dims) - 1)]
               : dims[in.ConsumeIntegralInRange<std::size_t>(0, 10)];
    pr.n_q = in.ConsumeIntegralInRange<std::int64_t>(0, 24);
    pr.n_kv = in.ConsumeIntegralInRange<std::int64_t>(0, 64);
    pr.q.resize(std::size_t(pr.n_q * pr.heads * pr.D));
    pr.k.resize(std::size_t(pr.n_kv * pr.kv_heads * pr.D));
    pr.v.resize(pr.k.size());
    pr.zero_rows = in.ConsumeBool();

    // The model's frequencies: partial rotary and either layout, an attention factor.
    ropekit::rope_frequencies freqs;
    freqs.head_dim = pr.D;
    freqs.rotary_dim = in.ConsumeBool() ? pr.D : 2 * in.ConsumeIntegralInRange<int>(1, pr.D / 2);
    freqs.layout = in.ConsumeBool() ? ropekit::rope_layout::neox : ropekit::rope_layout::gptj;
    const double base = in.ConsumeBool() ? 10000.0 : in.ConsumeFloatingPointInRange(2.0, 1e7);
    for (int i = 0; i < freqs.rotary_dim / 2; ++i)
        freqs.inv_freq.push_back(float(std::pow(base, -2.0 * i / freqs.rotary_dim)));
    if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
        freqs.attention_factor = narrow(pick_double(in, 0.5, 2.0));

    std::optional<attention_params> maybe;
    try {
        maybe = attention_params::for_model(freqs);
        if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
            maybe = maybe->with_scaling(pick_double(in, 0.01, 2.0));
    } catch (const ropekit::error&) {
        return;  // the builders refuse non-finite or unrepresentable scales
    }
    attention_params p = *maybe;
    if (in.ConsumeIntegralInRange<int>(0, 2) == 0)
        p.logit_softcap = narrow(pick_double(in, 0.5, 60.0));

    position_plan pp;
    const std::int64_t n_q = pr.n_q, n_kv = pr.n_kv;
    pp.q =
        make_positions(in, n_q, pp.q_ids, pp.qpos, [&](std::int64_t t) { return n_kv - n_q + t; });
    p.q_positions = pp.q;
    pp.k = make_positions(in, n_kv, pp.k_ids, pp.kpos, [](std::int64_t j) { return j; });
    p.k_positions = pp.k;

    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
        case 0:
            return with_mask(in, pr, ropekit::rerope{pick_param(in, 1, 80)}, freqs, p, pp);
        case 1:
            return with_mask(
                in, pr, ropekit::leaky_rerope{pick_param(in, 1, 80), pick_double(in, 1.0, 64.0)},
                freqs, p, pp);
        case 2:
            return with_mask(in, pr,
                             ropekit::self_extend{pick_param(in, 1, 80), pick_param(in, 1, 12)},
                             freqs, p, pp);
        default:
            return with_mask(in, pr,
                             ropekit::streaming_llm{pick_param(in, 0, 8), pick_param(in, 1, 80)},
                             freqs, p, pp);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    try {
        run(in);
    } catch (const ropekit::error&) {
        // the expected outcome for bad input (the table builder, a mask's or rule's fields)
    }
    return 0;
}
