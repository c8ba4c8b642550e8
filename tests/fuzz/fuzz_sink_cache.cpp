// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for sink_cache (StreamingLLM sinks + window): one cache per input, of float,
// bfloat16 or half storage and any key_storage strategy, driven by a decoded sequence of its
// operations: chunk append (packed, padded or head-major views), append_token, append_unchecked,
// restore (up to stream position 2^62), clear, and the decode step (the sink_attention front
// door, sink_decode_step, and sink_attention_part split over 1 to 4 parts and merged). Sizes
// and positions come from menus of edge values (2^28 slots, 2^30 values, 2^62 positions, INT
// limits) as well as small ones; a configuration the constructor accepts is built only when it
// is small (the fuzzer runs with -malloc_limit_mb=2048), one above sink_cache_max_values always
// reaches the validators. Every token's raw q/k/v is a function of its stream position, so the
// expected decode output is recomputed from scratch in double (the StreamingLLM definition).
// Findings:
//  - anything but ropekit::error escaping a front door (constructors, append, restore,
//    sink_attention), or a cache above sink_cache_max_values values that is accepted;
//  - a ROPEKIT_ASSERT on calls the front doors accept (asserts are on), or a hot-path call
//    with bad arguments that asserts but changes the cache or writes a non-empty partial;
//  - a rejected call that changed the cache; slot bookkeeping that differs from the definition
//    (which stream position each slot holds, cache and key positions in range);
//  - with tame inputs, a NaN or a decode output / LSE farther from the definition than the
//    rounding bound of the storage type and strategy, or a split decode that differs from the
//    whole one; with wild inputs (inf, NaN, 1e30 values), only the sanitizers judge.
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude
//       tests/fuzz/fuzz_sink_cache.cpp -o /tmp/fuzz_sink_cache
//   UBSAN_OPTIONS=halt_on_error=1 /tmp/fuzz_sink_cache -max_total_time=600 -malloc_limit_mb=2048
//       /tmp/sink_corpus tests/fuzz/corpus/sink_cache
//   (one command each, written over two lines)

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace fuzz_sink {
/// Set by ROPEKIT_ASSERT instead of aborting, so both directions can be checked: accepted calls
/// never assert, and a bad hot-path call asserts without side effects (asserts compiled out).
inline bool assert_fired = false;
inline const char* assert_message = "";
inline void fire(const char* msg) {
    assert_fired = true;
    assert_message = msg;
}
/// Forgets an assert the harness provoked on purpose.
inline void reset() {
    assert_fired = false;
    assert_message = "";
}
}  // namespace fuzz_sink
#define ROPEKIT_ASSERT(cond, msg) ((cond) ? (void)0 : fuzz_sink::fire(msg))

#include <fuzzer/FuzzedDataProvider.h>

#include <ropekit/attention_reference.hpp>
#include <ropekit/sink_cache.hpp>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

namespace {

using ropekit::attention_params;
using ropekit::head_view;
using ropekit::key_storage;
using ropekit::sink_cache;
using ropekit::sink_cache_options;

[[noreturn]] void finding(const char* what) {
    std::fprintf(stderr, "fuzz_sink_cache finding: %s (last assert: %s)\n", what,
                 fuzz_sink::assert_message);
    std::abort();
}

// Largest cache (values per K store) and query row this target builds for real; bigger
// accepted ones would allocate up to 8 GiB. Larger requests still reach the validators when
// they must be rejected.
constexpr std::int64_t max_built_values = std::int64_t(1) << 15;
// Work units (one value of one head touched once) an input may spend: a few ms under the
// sanitizers. A decode step costs about (keys + a 64-key tile) x n_heads x head_dim per
// attention pass, and runs about six (the front door, the parts, the bad part).
constexpr std::int64_t work_budget = 600000;
// Longest chunk appended at once (a longer one only adds evicted tokens the cache skips).
constexpr std::int64_t max_chunk = 300;

/// n_kv_heads x head_dim x slots saturated at INT64_MAX (0 when a factor is <= 0).
std::int64_t saturated_product(std::int64_t a, std::int64_t b, std::int64_t c) {
    if (a <= 0 || b <= 0 || c <= 0) return 0;
    constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
    if (a > max / b) return max;
    const std::int64_t ab = a * b;
    return ab > max / c ? max : ab * c;
}

/// An int64 from a menu of boundaries, small, or anything.
std::int64_t pick_int(FuzzedDataProvider& in, std::int64_t lo, std::int64_t hi) {
    static constexpr std::int64_t edges[] = {0,
                                             -1,
                                             1,
                                             63,
                                             64,
                                             65,
                                             1020,
                                             4096,
                                             4097,
                                             65536,
                                             (std::int64_t(1) << 22) - 3,
                                             (std::int64_t(1) << 22) + 1,
                                             (std::int64_t(1) << 26),
                                             (std::int64_t(1) << 27) - 4,
                                             (std::int64_t(1) << 28) - 5,
                                             (std::int64_t(1) << 28),
                                             (std::int64_t(1) << 29) - 70,
                                             (std::int64_t(1) << 29),
                                             (std::int64_t(1) << 30),
                                             (std::int64_t(1) << 30) + 1,
                                             (std::int64_t(1) << 62) - 3,
                                             (std::int64_t(1) << 62),
                                             (std::int64_t(1) << 62) + 1,
                                             INT32_MAX,
                                             INT32_MIN,
                                             INT64_MAX,
                                             INT64_MIN};
    switch (in.ConsumeIntegralInRange<int>(0, 9)) {
        case 0:
        case 1: {
            // An edge, or next to one (saturating: INT64_MAX + 1 would be UB in the harness).
            const std::int64_t e =
                edges[in.ConsumeIntegralInRange<std::size_t>(0, std::size(edges) - 1)];
            const std::int64_t d = in.ConsumeIntegralInRange<std::int64_t>(-2, 2);
            if ((d > 0 && e > INT64_MAX - d) || (d < 0 && e < INT64_MIN - d)) return e;
            return e + d;
        }
        case 2:
            return in.ConsumeIntegral<std::int64_t>();
        default:
            return in.ConsumeIntegralInRange<std::int64_t>(lo, hi);
    }
}

int pick_int32(FuzzedDataProvider& in, int lo, int hi) {
    const std::int64_t v = pick_int(in, lo, hi);
    return int(std::clamp<std::int64_t>(v, INT32_MIN, INT32_MAX));
}

/// splitmix64.
std::uint64_t mix(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/// The raw tensors of the stream: channel d of head h of tensor `what` (0 q, 1 k, 2 v) of the
/// token at stream position j, in [-1, 1), or (wild runs) now and then a value no model emits.
struct source {
    std::uint64_t seed = 0;
    bool wild = false;
    float operator()(std::int64_t j, int what, int h, int d) const {
        const std::uint64_t u =
            mix(seed + std::uint64_t(j) * 0x9e3779b97f4a7c15ull + (std::uint64_t(what) << 56) +
                (std::uint64_t(h) << 40) + std::uint64_t(d));
        if (wild && u % 11 == 0) {
            static constexpr float odd[] = {std::numeric_limits<float>::infinity(),
                                            -std::numeric_limits<float>::infinity(),
                                            std::numeric_limits<float>::quiet_NaN(),
                                            1e30f,
                                            -1e30f,
                                            65504.0f,
                                            3.0e38f,
                                            1e-40f};
            return odd[(u >> 8) % std::size(odd)];
        }
        return float(double(u >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
};

/// A buffer of tokens [j0, j0 + n) of tensor `what` and a view over it: packed, padded rows, or
/// head-major, with exactly the elements the view spans.
struct chunk {
    std::vector<float> buf;
    head_view<const float> view{};
};

chunk make_chunk(FuzzedDataProvider& in, const source& src, std::int64_t j0, std::int64_t n,
                 int what, int heads, int D) {
    chunk c;
    std::ptrdiff_t hs = D, ts = std::ptrdiff_t(heads) * D;
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
        case 0:  // padded rows
            hs = D + in.ConsumeIntegralInRange<int>(0, 3);
            ts = std::ptrdiff_t(heads) * hs + in.ConsumeIntegralInRange<int>(0, 5);
            break;
        case 1:  // [heads][tokens][dim]
            ts = D;
            hs = std::ptrdiff_t(std::max<std::int64_t>(n, 1)) * D;
            break;
        default:
            break;
    }
    if (n > 0) {
        const std::size_t span =
            std::size_t((n - 1) * ts + std::ptrdiff_t(heads - 1) * hs + std::ptrdiff_t(D));
        c.buf.assign(span, 0.0f);
        for (std::int64_t t = 0; t < n; ++t)
            for (int h = 0; h < heads; ++h)
                for (int d = 0; d < D; ++d)
                    c.buf[std::size_t(t * ts + std::ptrdiff_t(h) * hs + d)] =
                        src(j0 + t, what, h, d);
    }
    c.view = head_view<const float>{n > 0 ? c.buf.data() : nullptr, n, heads, D, ts, hs};
    return c;
}

/// Unit roundoff of the storage type.
template <class KV>
double unit_roundoff() {
    if constexpr (std::is_same_v<KV, float>)
        return std::ldexp(1.0, -24);
    else if constexpr (std::is_same_v<KV, ropekit::bfloat16>)
        return std::ldexp(1.0, -8);
    else
        return std::ldexp(1.0, -11);
}

/// One run: the cache, its scratch, and what the definition needs.
template <class KV>
struct run {
    FuzzedDataProvider& in;
    source src;
    ropekit::rope_frequencies freqs;
    sink_cache_options opt;
    int H = 0;  // query heads
    std::optional<sink_cache<KV>> cache;
    std::optional<ropekit::sink_workspace<KV>> ws;
    std::optional<ropekit::sink_partial> part;
    // cos and sin of cache position r and pair p, in double: [r][p] then [r][pairs + p]. The
    // definition only ever rotates at cache positions (<= c), so they are computed once.
    std::vector<double> cs;
    // Longest chain of roundings / float rotations any stored key went through since it was
    // stored (restore and clear start afresh): the error bound's n.
    std::int64_t roundings = 2;
    std::int64_t budget = work_budget;

    explicit run(FuzzedDataProvider& in_) : in(in_) {}

    std::int64_t slots() const { return opt.n_sink + opt.window; }

    // --- bookkeeping ---------------------------------------------------------------------

    /// The slot state the definition gives after `next` tokens, checked slot by slot.
    void check_slots() const {
        const sink_cache<KV>& c = *cache;
        const std::int64_t next = c.next_position();
        const std::int64_t ns = std::min(next, opt.n_sink);
        const std::int64_t nw = std::min(opt.window, std::max<std::int64_t>(0, next - opt.n_sink));
        if (c.sink_count() != ns || c.window_count() != nw || c.last_position() != next - 1)
            finding("sink_count / window_count / last_position differ from the definition");
        std::vector<std::int64_t> expect(std::size_t(slots()), -1);
        for (std::int64_t s = 0; s < ns; ++s) expect[std::size_t(s)] = s;
        for (std::int64_t j = next - nw; j < next; ++j)
            expect[std::size_t(opt.n_sink + (j - opt.n_sink) % opt.window)] = j;
        const std::int64_t cmax = slots() - 1;
        for (std::int64_t s = 0; s < slots(); ++s) {
            if (c.stream_position(s) != expect[std::size_t(s)])
                finding("a slot holds another stream position than the definition's");
            if (expect[std::size_t(s)] < 0) continue;
            const std::int64_t cp = c.cache_position(s), kp = c.key_position(s);
            if (cp < 0 || cp > cmax) finding("cache position outside [0, n_sink + window)");
            if (s < opt.n_sink ? kp != s
                               : (kp < opt.n_sink || kp >= cmax + 1 + opt.rebase_interval))
                finding("key position outside [n_sink, c + rebase_interval)");
            if (opt.keys != key_storage::rotated_once && kp != cp)
                finding("key position differs from the cache position");
        }
        if (c.query_cache_position() != std::min(next - 1, cmax) && next > 0)
            finding("query cache position is not min(i, c)");
    }

    /// Raw bytes of the cache's mutable state, to check that a rejected call changed nothing.
    struct snapshot {
        std::int64_t next;
        std::vector<std::int64_t> pos;
        std::vector<unsigned char> k, v;
    };
    snapshot take() const {
        const sink_cache<KV>& c = *cache;
        const std::size_t n = std::size_t(slots()) * std::size_t(opt.n_kv_heads) *
                              std::size_t(opt.head_dim) * sizeof(KV);
        snapshot s{
            c.next_position(), {c.stream_positions(), c.stream_positions() + slots()}, {}, {}};
        const auto* kb = reinterpret_cast<const unsigned char*>(c.keys().data);
        const auto* vb = reinterpret_cast<const unsigned char*>(c.values().data);
        s.k.assign(kb, kb + n);
        s.v.assign(vb, vb + n);
        return s;
    }
    void same_as(const snapshot& s, const char* what) const {
        const snapshot now = take();
        if (now.next != s.next || now.pos != s.pos || now.k != s.k || now.v != s.v) finding(what);
    }

    // --- the definition ------------------------------------------------------------------

    /// Key roundings a stored key may have gone through after `calls` more append calls
    /// (rotated_at_slot re-rotates on every eviction, rotated_once on every re-base).
    void note_appends(std::int64_t calls) {
        if (opt.keys == key_storage::rotated_at_slot)
            roundings = std::min<std::int64_t>(roundings + calls, 2 + opt.window);
        else if (opt.keys == key_storage::rotated_once)
            roundings =
                std::min<std::int64_t>(roundings + calls, 3 + opt.window / opt.rebase_interval);
    }

    /// x rotated at cache position r: pair p by the angle r * inv_freq[p] (NeoX or GPT-J pairs).
    std::vector<double> rotate(std::vector<double> x, std::int64_t r) const {
        const int pairs = freqs.pairs();
        const double* c = cs.data() + std::size_t(r) * 2 * std::size_t(pairs);
        const double* sn = c + pairs;
        const bool neox = freqs.layout == ropekit::rope_layout::neox;
        for (int p = 0; p < pairs; ++p) {
            const std::size_t i0 = std::size_t(neox ? p : 2 * p);
            const std::size_t i1 = std::size_t(neox ? p + pairs : 2 * p + 1);
            const double a = x[i0], b = x[i1];
            x[i0] = a * c[p] - b * sn[p];
            x[i1] = b * c[p] + a * sn[p];
        }
        return x;
    }

    /// Checks the decode output `o` (and `lse` when not null) of the last token against the
    /// StreamingLLM definition in double, within the bound of KV's rounding and the float
    /// rotations: every score may move by dS = scale |q| |k| (n u + rotation error), which
    /// moves a softmax average by at most (e^{2 dS} - 1) max|v| and the LSE by dS.
    void check_reference(const attention_params& p, const std::vector<float>& o,
                         const float* lse) const {
        const std::int64_t i = cache->last_position();
        const std::int64_t c = slots() - 1, shift = std::max<std::int64_t>(0, i - c);
        const int D = opt.head_dim, KVH = opt.n_kv_heads, group = H / KVH;
        std::vector<std::int64_t> held;
        for (std::int64_t j = 0; j < std::min(opt.n_sink, i + 1); ++j) held.push_back(j);
        for (std::int64_t j = std::max(opt.n_sink, i - opt.window + 1); j <= i; ++j)
            held.push_back(j);
        // Keys rotated at their cache positions, once per KV head.
        std::vector<std::vector<double>> keys;
        std::vector<double> knorm, vals;  // vals: [kv head][held token][d]
        for (int kh = 0; kh < KVH; ++kh)
            for (std::int64_t j : held) {
                for (int d = 0; d < D; ++d) vals.push_back(src(j, 2, kh, d));
                std::vector<double> k(std::size_t(D), 0.0);
                for (int d = 0; d < D; ++d) k[std::size_t(d)] = src(j, 1, kh, d);
                knorm.push_back(std::sqrt(ropekit::detail::attn_ref::dot(k, k)));
                keys.push_back(rotate(std::move(k), j < opt.n_sink ? j : j - shift));
            }
        const double scale = double(p.softmax_scale()), cap = double(p.logit_softcap);
        const double u = unit_roundoff<KV>();
        const double rot = 1e-6 * double(2 + roundings) + double(D) * 1.2e-7;
        for (int h = 0; h < H; ++h) {
            const int kh = h / group;
            std::vector<double> q(std::size_t(D), 0.0);
            for (int d = 0; d < D; ++d) q[std::size_t(d)] = src(i, 0, h, d);
            const double qn = std::sqrt(ropekit::detail::attn_ref::dot(q, q));
            q = rotate(std::move(q), i - shift);
            std::vector<double> sc;
            double kmax = 0.0;
            for (std::size_t n = 0; n < held.size(); ++n) {
                const std::size_t r = std::size_t(kh) * held.size() + n;
                double s = scale * ropekit::detail::attn_ref::dot(q, keys[r]);
                if (cap > 0.0) s = cap * std::tanh(s / cap);
                sc.push_back(s);
                kmax = std::max(kmax, knorm[r]);
            }
            double mx = -std::numeric_limits<double>::infinity();
            for (double x : sc) mx = std::max(mx, x);
            double den = 0.0;
            std::vector<double> ref(std::size_t(D), 0.0);
            for (std::size_t n = 0; n < held.size(); ++n) {
                const double w = std::exp(sc[n] - mx);
                den += w;
                const double* v =
                    vals.data() + (std::size_t(kh) * held.size() + n) * std::size_t(D);
                for (int d = 0; d < D; ++d) ref[std::size_t(d)] += w * v[d];
            }
            const double dS = scale * qn * kmax * (double(roundings) * u + rot);
            const double tol = std::expm1(2.0 * dS) + u + 1e-5;
            for (int d = 0; d < D; ++d) {
                const double got = double(o[std::size_t(h) * std::size_t(D) + std::size_t(d)]);
                const double want = ref[std::size_t(d)] / den;
                if (!(std::fabs(got - want) <= tol)) {
                    std::fprintf(stderr,
                                 "head %d d %d: %.9g, definition %.9g (tolerance %g; i %lld, "
                                 "strategy %d, n %lld)\n",
                                 h, d, got, want, tol, static_cast<long long>(i), int(opt.keys),
                                 static_cast<long long>(roundings));
                    finding("decode output differs from the StreamingLLM definition");
                }
            }
            if (lse) {
                const double want = mx + std::log(den);
                if (!(std::fabs(double(lse[h]) - want) <= dS + 1e-5 * (1.0 + std::fabs(want))))
                    finding("decode LSE differs from the StreamingLLM definition");
            }
        }
    }

    // --- setup ---------------------------------------------------------------------------

    void make_freqs(int D) {
        const bool valid = in.ConsumeIntegralInRange<int>(0, 9) != 0;
        freqs.head_dim = valid || in.ConsumeBool() ? D : D + 2;
        const int rd = valid ? 2 * in.ConsumeIntegralInRange<int>(1, std::max(1, D / 2))
                             : in.ConsumeIntegralInRange<int>(-2, D + 2);
        freqs.rotary_dim = rd;
        freqs.layout = in.ConsumeBool() ? ropekit::rope_layout::neox : ropekit::rope_layout::gptj;
        static constexpr double bases[] = {10000.0, 500000.0, 2.0, 1e9};
        const double base = bases[in.ConsumeIntegralInRange<std::size_t>(0, std::size(bases) - 1)];
        // Now and then an inv_freq above 1, which lowers the accurate position range.
        const double boost = in.ConsumeIntegralInRange<int>(0, 7) == 0 ? 3.5 : 1.0;
        for (int i = 0; i < std::max(0, rd / 2); ++i)
            freqs.inv_freq.push_back(float(boost * std::pow(base, -2.0 * i / std::max(2, rd))));
        static constexpr float factors[] = {1.0f, 1.0f, 1.0f, 1.2f, 0.7f, 0.0f, 1e30f};
        freqs.attention_factor =
            factors[in.ConsumeIntegralInRange<std::size_t>(0, std::size(factors) - 1)];
        if (!valid) {
            switch (in.ConsumeIntegralInRange<int>(0, 3)) {
                case 0:
                    freqs.pair_span = in.ConsumeIntegralInRange<int>(0, D);
                    break;
                case 1:
                    freqs.rotary_offset = in.ConsumeIntegralInRange<int>(0, 4);
                    break;
                case 2:
                    if (!freqs.inv_freq.empty())
                        freqs.inv_freq.back() = std::numeric_limits<float>::infinity();
                    break;
                default:
                    break;
            }
        }
    }

    /// Decodes the options and builds the cache; false when the input ends the run (rejected,
    /// or too large to build).
    bool build() {
        // Mostly small heads (each input must stay fast under the sanitizers); the wide ones
        // (odd pair counts, 128, the 256 limit) now and then.
        static constexpr int narrow[] = {2, 4, 6, 8, 16, 32, 64};
        static constexpr int wide[] = {66, 80, 128, 256};
        // Mode 0-3: a small cache; 4: each size from a menu of the bounds' edges (mostly
        // caches the validators must reject: 2^30 values, 2^28 slots, a product that wraps);
        // 5: anything.
        const int mode = in.ConsumeIntegralInRange<int>(0, 5);
        const bool small = mode < 4;
        int D = in.ConsumeIntegralInRange<int>(0, 5) != 0
                    ? narrow[in.ConsumeIntegralInRange<std::size_t>(0, std::size(narrow) - 1)]
                    : wide[in.ConsumeIntegralInRange<std::size_t>(0, std::size(wide) - 1)];
        if (mode == 5 && in.ConsumeBool()) D = pick_int32(in, 0, 300);
        if (mode == 4 && in.ConsumeIntegralInRange<int>(0, 3) == 0) D = in.ConsumeBool() ? 0 : 257;
        opt.head_dim = D;
        opt.n_kv_heads = small ? in.ConsumeIntegralInRange<int>(1, 3) : pick_int32(in, -1, 4);
        opt.n_sink = small ? in.ConsumeIntegralInRange<std::int64_t>(0, 5) : pick_int(in, -1, 8);
        // Windows past 64 keys span two attention tiles (and give the split parts keys each).
        opt.window = small ? in.ConsumeIntegralInRange<std::int64_t>(1, in.ConsumeBool() ? 20 : 70)
                           : pick_int(in, 0, 80);
        if (mode == 4) {
            static constexpr int heads[] = {1, 2, 8, 4096, 4097, 65536, 1 << 30, INT32_MAX, 0};
            static constexpr std::int64_t sinks[] = {0, 4, (std::int64_t(1) << 22) + 1,
                                                     (std::int64_t(1) << 28) - 1, -1};
            static constexpr std::int64_t windows[] = {1,
                                                       60,
                                                       1020,
                                                       (std::int64_t(1) << 22) - 3,
                                                       std::int64_t(1) << 26,
                                                       (std::int64_t(1) << 27) - 4,
                                                       (std::int64_t(1) << 28) - 5,
                                                       std::int64_t(1) << 28,
                                                       0,
                                                       INT64_MAX};
            opt.n_kv_heads = heads[in.ConsumeIntegralInRange<std::size_t>(0, std::size(heads) - 1)];
            opt.n_sink = sinks[in.ConsumeIntegralInRange<std::size_t>(0, std::size(sinks) - 1)];
            opt.window = windows[in.ConsumeIntegralInRange<std::size_t>(0, std::size(windows) - 1)];
        }
        opt.keys = key_storage(in.ConsumeIntegralInRange<int>(0, 2));
        opt.rebase_interval = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::int64_t>(1, 90)
                                               : pick_int(in, -1, 300);
        make_freqs(std::clamp(D, 2, 256));
        src.seed = in.ConsumeIntegral<std::uint64_t>();
        src.wild = in.ConsumeIntegralInRange<int>(0, 7) == 0;

        // Build only what cannot allocate much: a small cache, or one the size bound or another
        // field must reject before allocating anything.
        const bool shape_ok = opt.n_kv_heads > 0 && opt.head_dim >= 1 && opt.head_dim <= 256 &&
                              opt.n_sink >= 0 && opt.n_sink < (std::int64_t(1) << 28) &&
                              opt.window >= 1 && opt.window < (std::int64_t(1) << 28) - opt.n_sink;
        const std::int64_t values =
            shape_ok ? saturated_product(opt.n_kv_heads, opt.head_dim, opt.n_sink + opt.window) : 0;
        const bool over = values > ropekit::sink_cache_max_values;
        if (shape_ok && !over && values > max_built_values) return false;
        try {
            cache.emplace(freqs, opt);
        } catch (const ropekit::error&) {
            return false;
        }
        if (!shape_ok || over) finding("the constructor accepted a cache it must reject");
        if (fuzz_sink::assert_fired) finding("the constructor asserted");

        // Query heads: a multiple of n_kv_heads, or (rejected) anything.
        H = opt.n_kv_heads * in.ConsumeIntegralInRange<int>(1, 3);
        if (in.ConsumeIntegralInRange<int>(0, 7) == 0) {
            const int bad = pick_int32(in, -2, 9);
            const std::int64_t row = saturated_product(bad, opt.head_dim, 1);
            const bool must_fail =
                bad <= 0 || bad % opt.n_kv_heads != 0 || row > ropekit::sink_cache_max_values;
            if (must_fail || row <= max_built_values) {
                try {
                    ropekit::sink_workspace<KV> w(*cache, bad);
                    ropekit::sink_partial p(bad, opt.head_dim);
                    if (must_fail) finding("sink_workspace / sink_partial accepted a bad n_heads");
                } catch (const ropekit::error&) {
                    if (!must_fail)
                        finding("sink_workspace / sink_partial rejected a good n_heads");
                }
            }
        }
        ws.emplace(*cache, H);
        part.emplace(H, opt.head_dim);
        const int pairs = freqs.pairs();
        cs.resize(std::size_t(slots()) * 2 * std::size_t(pairs));
        for (std::int64_t r = 0; r < slots(); ++r)
            for (int p = 0; p < pairs; ++p) {
                const double a = double(r) * double(freqs.inv_freq[std::size_t(p)]);
                cs[std::size_t(r) * 2 * std::size_t(pairs) + std::size_t(p)] = std::cos(a);
                cs[std::size_t(r) * 2 * std::size_t(pairs) + std::size_t(pairs + p)] = std::sin(a);
            }
        check_slots();
        return true;
    }

    // --- operations ----------------------------------------------------------------------

    /// Chunk append (front door, append_token, or the hot path), sometimes with a bad shape.
    void op_append(int how) {
        sink_cache<KV>& c = *cache;
        const std::int64_t next = c.next_position();
        std::int64_t m =
            how == 1
                ? 1
                : in.ConsumeIntegralInRange<std::int64_t>(
                      0, std::min(in.ConsumeBool() ? slots() + 3 : 2 * slots() + 3, max_chunk));
        int kh = opt.n_kv_heads, vh = opt.n_kv_heads, kd = opt.head_dim;
        const bool bad = in.ConsumeIntegralInRange<int>(0, 7) == 0;
        std::int64_t mv = m;
        if (bad) {
            switch (in.ConsumeIntegralInRange<int>(0, 3)) {
                case 0:
                    kh += in.ConsumeBool() ? 1 : -1;
                    break;
                case 1:
                    vh += 1;
                    break;
                case 2:
                    kd += in.ConsumeBool() ? 1 : -1;
                    break;
                default:
                    mv = m + 1;
                    if (how == 1) m = mv = 2;  // append_token of two tokens
                    break;
            }
        }
        if (kh <= 0 || kd <= 0) return;
        budget -= (m + 1) * std::int64_t(opt.n_kv_heads) * opt.head_dim * 4;
        const chunk k = make_chunk(in, src, next, m, 1, kh, kd);
        const chunk v = make_chunk(in, src, next, mv, 2, vh, opt.head_dim);
        const snapshot before = take();
        const bool overflow = next > std::numeric_limits<std::int64_t>::max() / 2 - m;
        const bool shape_bad = kh != opt.n_kv_heads || vh != opt.n_kv_heads || kd != opt.head_dim ||
                               mv != m || (how == 1 && m != 1);
        if (how == 2) {            // hot path: a bad shape asserts and changes nothing
            if (overflow) return;  // the caller's contract (append() checks it)
            c.template append_unchecked<ropekit::default_arch>(k.view, v.view);
            if (fuzz_sink::assert_fired != shape_bad)
                finding(shape_bad ? "append_unchecked did not assert on a bad shape"
                                  : "append_unchecked asserted on a good shape");
            fuzz_sink::reset();
            if (shape_bad) {
                same_as(before, "append_unchecked that asserted changed the cache");
                return;
            }
        } else {
            try {
                if (how == 1)
                    c.append_token(k.view, v.view);
                else
                    c.append(k.view, v.view);
            } catch (const ropekit::error&) {
                same_as(before, "a rejected append changed the cache");
                return;
            }
            if (shape_bad) finding("append accepted a bad shape");
            if (overflow) finding("append accepted a stream position past 2^62");
            if (fuzz_sink::assert_fired) finding("append asserted after validating");
        }
        if (m > 0) note_appends(1);
        check_slots();
    }

    /// restore() at a decoded stream position, from the stream's own tokens.
    void op_restore() {
        sink_cache<KV>& c = *cache;
        const std::int64_t cmax = slots() - 1;
        std::int64_t next;
        switch (in.ConsumeIntegralInRange<int>(0, 3)) {
            case 0:
                next = in.ConsumeIntegralInRange<std::int64_t>(0, 3 * slots());
                break;
            case 1:  // around a re-base boundary
                next = cmax + 1 +
                       opt.rebase_interval * in.ConsumeIntegralInRange<std::int64_t>(0, 1000) +
                       in.ConsumeIntegralInRange<std::int64_t>(-2, 2);
                break;
            default:
                next = pick_int(in, 0, 5000);
                break;
        }
        const bool valid_next = next >= 0 && next <= std::numeric_limits<std::int64_t>::max() / 2;
        const std::int64_t n = std::max<std::int64_t>(next, 0);
        const std::int64_t ns = std::min(n, opt.n_sink);
        const std::int64_t nw = std::min(opt.window, std::max<std::int64_t>(0, n - opt.n_sink));
        const bool bad = in.ConsumeIntegralInRange<int>(0, 9) == 0;
        const std::int64_t ns_given = bad && in.ConsumeBool() ? ns + 1 : ns;
        const std::int64_t nw_given = bad && ns_given == ns ? nw + 1 : nw;
        budget -= (ns + nw + 1) * std::int64_t(opt.n_kv_heads) * opt.head_dim * 4;
        const chunk sk = make_chunk(in, src, 0, ns_given, 1, opt.n_kv_heads, opt.head_dim);
        const chunk sv = make_chunk(in, src, 0, ns_given, 2, opt.n_kv_heads, opt.head_dim);
        const chunk wk = make_chunk(in, src, n - nw, nw_given, 1, opt.n_kv_heads, opt.head_dim);
        const chunk wv = make_chunk(in, src, n - nw, nw_given, 2, opt.n_kv_heads, opt.head_dim);
        const snapshot before = take();
        try {
            c.restore(sk.view, sv.view, wk.view, wv.view, next);
        } catch (const ropekit::error&) {
            if (valid_next && !bad) finding("restore rejected a valid stream");
            same_as(before, "a rejected restore changed the cache");
            return;
        }
        if (!valid_next || bad) finding("restore accepted a bad position or token count");
        if (fuzz_sink::assert_fired) finding("restore asserted after validating");
        roundings = 2;
        check_slots();
    }

    /// Parameters for a decode step; none when the frequencies admit no softmax scale (an
    /// attention factor whose square overflows float32).
    std::optional<attention_params> decode_params(std::vector<float>& lse_buf, bool& must_reject) {
        std::optional<attention_params> p;
        must_reject = false;
        try {
            switch (in.ConsumeIntegralInRange<int>(0, 5)) {
                case 0:  // a scale without the attention factor: rejected unless it is 1
                    p = attention_params::with_softmax_scale(
                        in.ConsumeBool()
                            ? 0.125
                            : double(in.ConsumeFloatingPointInRange<float>(1e-3f, 30.0f)));
                    must_reject = std::fabs(freqs.logit_scale() - 1.0) > 1e-6;
                    break;
                case 1:
                    p = attention_params::for_model(freqs).with_scaling(
                        double(in.ConsumeFloatingPointInRange<float>(1e-3f, 4.0f)));
                    break;
                default:
                    p = attention_params::for_model(freqs);
                    break;
            }
        } catch (const ropekit::error&) {
            must_reject = false;
            try {
                p = attention_params::for_model(freqs);
            } catch (const ropekit::error&) {
                return std::nullopt;
            }
        }
        switch (in.ConsumeIntegralInRange<int>(0, 7)) {
            case 0:
                p->logit_softcap = in.ConsumeFloatingPointInRange<float>(0.5f, 60.0f);
                break;
            case 1: {
                static constexpr float bad[] = {-1.0f, std::numeric_limits<float>::infinity(),
                                                std::numeric_limits<float>::quiet_NaN()};
                p->logit_softcap = bad[in.ConsumeIntegralInRange<std::size_t>(0, 2)];
                must_reject = true;
                break;
            }
            default:
                break;
        }
        if (in.ConsumeBool()) p->lse = lse_buf.data();
        return p;
    }

    /// One decode step over the cache: the front door (or sink_decode_step), then, when it was
    /// accepted, the same step split over parts and merged.
    void op_decode(bool with_append) {
        sink_cache<KV>& c = *cache;
        const int D = opt.head_dim;
        budget -= (slots() + 64) * std::int64_t(H) * D * 6;
        std::vector<float> lse(std::size_t(H), 7.0f);
        bool must_reject = false;
        const std::optional<attention_params> maybe = decode_params(lse, must_reject);
        if (!maybe) return;
        const attention_params p = *maybe;
        // A bad query / output shape now and then.
        int qh = H, qd = D;
        if (in.ConsumeIntegralInRange<int>(0, 11) == 0) {
            if (in.ConsumeBool())
                qh += opt.n_kv_heads;  // the workspace was sized for H
            else
                qd += 1;
            must_reject = true;
        }
        if (with_append) {
            // sink_decode_step appends first (and throws before changing anything if k/v are bad):
            // keep k/v valid so that the rejection, if any, is the attention's.
            const std::int64_t next = c.next_position();
            if (next > std::numeric_limits<std::int64_t>::max() / 2 - 1) return;
        }
        const std::int64_t i = c.next_position() - (with_append ? 0 : 1);
        const chunk q = make_chunk(in, src, i, 1, 0, qh, qd);
        std::vector<float> o(std::size_t(qh) * std::size_t(qd), 7.0f);
        const head_view<float> ov = head_view<float>::packed(o.data(), 1, qh, qd);
        if (i < 0) must_reject = true;  // empty cache
        try {
            if (with_append) {
                const chunk k = make_chunk(in, src, i, 1, 1, opt.n_kv_heads, D);
                const chunk v = make_chunk(in, src, i, 1, 2, opt.n_kv_heads, D);
                ropekit::sink_decode_step(c, q.view, k.view, v.view, ov, p, *ws, *part);
            } else {
                ropekit::sink_attention(c, q.view, ov, p, *ws, *part);
            }
        } catch (const ropekit::error&) {
            if (with_append && c.next_position() == i + 1) note_appends(1);  // the append ran
            if (!must_reject) finding("sink_attention rejected a valid call");
            check_slots();
            return;
        }
        if (with_append) note_appends(1);
        if (must_reject) finding("sink_attention accepted a bad call");
        if (fuzz_sink::assert_fired) finding("sink_attention asserted after validating");
        check_slots();
        const bool tame = !src.wild && freqs.attention_factor < 1e3f;
        if (tame) {
            for (float x : o)
                if (std::isnan(x)) finding("NaN in an accepted decode output");
            check_reference(p, o, p.lse);
        }

        // The same step split over parts (one workspace, run one after the other).
        const int parts = in.ConsumeIntegralInRange<int>(1, 4);
        std::vector<ropekit::sink_partial> partials(std::size_t(parts),
                                                    ropekit::sink_partial(H, D));
        attention_params pp = p;
        pp.lse = nullptr;
        for (int k = 0; k < parts; ++k)
            ropekit::sink_attention_part(ropekit::default_arch{}, c, q.view, pp, k, parts, *ws,
                                         partials[std::size_t(k)]);
        std::vector<float> o2(o.size(), 7.0f), lse2(std::size_t(H), 7.0f);
        ropekit::sink_attention_merge(ropekit::default_arch{}, partials.data(), parts,
                                      head_view<float>::packed(o2.data(), 1, H, D), lse2.data());
        if (fuzz_sink::assert_fired) finding("a decode part asserted on an accepted call");
        if (tame) {
            for (std::size_t e = 0; e < o.size(); ++e)
                if (!(std::fabs(o[e] - o2[e]) <= 1e-5f * (1.0f + std::fabs(o[e]))))
                    finding("the split decode differs from the whole one");
            if (p.lse)
                for (int h = 0; h < H; ++h)
                    if (!(std::fabs(lse[std::size_t(h)] - lse2[std::size_t(h)]) <=
                          1e-5f * (1.0f + std::fabs(lse[std::size_t(h)]))))
                        finding("the split decode's LSE differs from the whole one");
        }
        // A part index outside [0, parts): asserts and writes an empty partial.
        ropekit::sink_partial bad(H, D);
        std::fill(bad.o.begin(), bad.o.end(), 7.0f);
        ropekit::sink_attention_part(ropekit::default_arch{}, c, q.view, pp, parts, parts, *ws,
                                     bad);
        if (!fuzz_sink::assert_fired) finding("sink_attention_part accepted part == parts");
        fuzz_sink::reset();
        for (float x : bad.o)
            if (x != 0.0f) finding("a part that asserted left a non-empty partial");
        for (float x : bad.lse)
            if (x != -std::numeric_limits<float>::infinity())
                finding("a part that asserted left a finite LSE");
    }

    void go() {
        if (!build()) return;
        for (int ops = 0; ops < 12 && in.remaining_bytes() > 0 && budget > 0; ++ops) {
            switch (in.ConsumeIntegralInRange<int>(0, 9)) {
                case 0:
                case 1:
                    op_append(0);
                    break;
                case 2:
                    op_append(1);
                    break;
                case 3:
                    op_append(2);
                    break;
                case 4:
                    op_restore();
                    break;
                case 5:
                    cache->clear();
                    roundings = 2;
                    check_slots();
                    break;
                case 6:
                    op_decode(true);
                    break;
                default:
                    op_decode(false);
                    break;
            }
        }
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    fuzz_sink::reset();
    switch (in.ConsumeIntegralInRange<int>(0, 2)) {
        case 0:
            run<float>(in).go();
            break;
        case 1:
            run<ropekit::bfloat16>(in).go();
            break;
        default:
            run<ropekit::half>(in).go();
            break;
    }
    return 0;
}
