// SPDX-License-Identifier: Apache-2.0
// sink_cache (StreamingLLM sinks + window): every key storage strategy against the literal
// definition recomputed from scratch in double, after many evictions and re-bases; chunk vs
// token appends; the cache before it is full; no sinks; scaling methods; GQA; no allocation
// after construction; validation; the two-thread key split.
#include "test_support.hpp"

#include <ropekit/attention_reference.hpp>
#include <ropekit/scaling.hpp>
#include <ropekit/sink_cache.hpp>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <string>
#include <thread>
#include <vector>

// Counts global operator new calls, so a test can assert that streaming allocates nothing.
// GCC 12 flags the malloc/free pair of a replaced operator new/delete once it inlines them into
// std::allocator (-Wmismatched-new-delete): a false positive for a replacement, which is what
// the standard allows.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<long> g_news{0};
void* counted_alloc(std::size_t n, std::size_t align) {
    g_news.fetch_add(1, std::memory_order_relaxed);
    if (align <= alignof(std::max_align_t)) return std::malloc(n ? n : 1);
    // aligned_alloc wants a size that is a multiple of the alignment.
    return std::aligned_alloc(align, (n + align - 1) / align * align);
}
void* counted_or_throw(std::size_t n, std::size_t align) {
    if (void* p = counted_alloc(n, align)) return p;
    throw std::bad_alloc();
}
}  // namespace
// Every replaceable form, so that all of them pair malloc with free (ASan checks the pairing)
// and every allocation is counted, aligned ones (the attention workspace) included.
void* operator new(std::size_t n) {
    return counted_or_throw(n, 0);
}
void* operator new[](std::size_t n) {
    return counted_or_throw(n, 0);
}
void* operator new(std::size_t n, std::align_val_t a) {
    return counted_or_throw(n, std::size_t(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
    return counted_or_throw(n, std::size_t(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return counted_alloc(n, 0);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    return counted_alloc(n, 0);
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete[](void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    std::free(p);
}

using ropekit::bfloat16;
using ropekit::half;
using ropekit::head_view;
using ropekit::key_storage;
using ropekit::rope_frequencies;
using ropekit::sink_cache;
using ropekit::sink_cache_options;

namespace {

constexpr key_storage all_storages[] = {key_storage::unrotated, key_storage::rotated_at_slot,
                                        key_storage::rotated_once};

const char* name_of(key_storage s) {
    switch (s) {
        case key_storage::unrotated:
            return "unrotated";
        case key_storage::rotated_at_slot:
            return "rotated_at_slot";
        case key_storage::rotated_once:
            return "rotated_once";
    }
    return "?";
}

/// splitmix64: the deterministic source of every token's raw q/k/v, regenerated from the
/// stream position (no history is stored).
std::uint64_t mix(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
/// Value in [-1, 1) of channel d of head h of tensor `what` (0 q, 1 k, 2 v) of stream token j.
float gen(std::int64_t j, int what, int h, int d) {
    const std::uint64_t u = mix(std::uint64_t(j) * 0x100000001b3ull ^ (std::uint64_t(what) << 56) ^
                                (std::uint64_t(h) << 40) ^ std::uint64_t(d));
    return float(double(u >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

/// One token's raw tensor, `heads x head_dim`.
std::vector<float> token(std::int64_t j, int what, int heads, int D) {
    std::vector<float> r(std::size_t(heads) * std::size_t(D));
    for (int h = 0; h < heads; ++h)
        for (int d = 0; d < D; ++d) r[std::size_t(h * D + d)] = gen(j, what, h, d);
    return r;
}

/// Tokens [j0, j0 + n) of tensor `what`, `n x heads x head_dim`.
std::vector<float> chunk(std::int64_t j0, std::int64_t n, int what, int heads, int D) {
    std::vector<float> r;
    for (std::int64_t t = 0; t < n; ++t) {
        const auto x = token(j0 + t, what, heads, D);
        r.insert(r.end(), x.begin(), x.end());
    }
    return r;
}

head_view<const float> view_of(const std::vector<float>& x, int heads, int D) {
    return head_view<const float>::packed(x.data(), std::int64_t(x.size()) / (heads * D), heads, D);
}

struct shape {
    std::int64_t n_sink = 4, window = 60;
    int kvh = 2, H = 4, D = 64;
};

/// The literal StreamingLLM definition in double for the query at stream position i (the last
/// appended token): the tokens the cache should hold, from their raw k/v, each key rotated at
/// its cache position, the query at min(i, c). Output `H x D`.
std::vector<double> reference(const shape& s, const rope_frequencies& f, double scale,
                              std::int64_t i, double* qk_norms = nullptr) {
    const std::int64_t c = s.n_sink + s.window - 1;
    const std::int64_t shift = std::max<std::int64_t>(0, i - c);
    std::vector<std::int64_t> held;
    for (std::int64_t j = 0; j < std::min(s.n_sink, i + 1); ++j) held.push_back(j);
    for (std::int64_t j = std::max(s.n_sink, i - s.window + 1); j <= i; ++j) held.push_back(j);
    std::vector<double> out(std::size_t(s.H) * std::size_t(s.D), 0.0);
    const int group = s.H / s.kvh;
    if (qk_norms) *qk_norms = 0.0;
    for (int h = 0; h < s.H; ++h) {
        std::vector<double> q(std::size_t(s.D));
        for (int d = 0; d < s.D; ++d) q[std::size_t(d)] = gen(i, 0, h, d);
        if (qk_norms) {
            // Largest |q| |k| over the row's keys (rotations preserve norms).
            double kmax = 0.0;
            for (std::int64_t j : held) {
                double n2 = 0.0;
                for (int d = 0; d < s.D; ++d)
                    n2 += double(gen(j, 1, h / group, d)) * double(gen(j, 1, h / group, d));
                kmax = std::max(kmax, std::sqrt(n2));
            }
            *qk_norms = std::max(*qk_norms, std::sqrt(ropekit::detail::attn_ref::dot(q, q)) * kmax);
        }
        q = ropekit::detail::attn_ref::rotate(q, double(i - shift), f);
        std::vector<double> sc;
        for (std::int64_t j : held) {
            std::vector<double> k(std::size_t(s.D));
            for (int d = 0; d < s.D; ++d) k[std::size_t(d)] = gen(j, 1, h / group, d);
            const double cache_pos = double(j < s.n_sink ? j : j - shift);
            k = ropekit::detail::attn_ref::rotate(k, cache_pos, f);
            sc.push_back(scale * ropekit::detail::attn_ref::dot(q, k));
        }
        double mx = -std::numeric_limits<double>::infinity();
        for (double x : sc) mx = std::max(mx, x);
        double den = 0.0;
        for (std::size_t n = 0; n < held.size(); ++n) {
            const double p = std::exp(sc[n] - mx);
            den += p;
            for (int d = 0; d < s.D; ++d)
                out[std::size_t(h * s.D + d)] += p * double(gen(held[n], 2, h / group, d));
        }
        for (int d = 0; d < s.D; ++d) out[std::size_t(h * s.D + d)] /= den;
    }
    return out;
}

/// Unit roundoff of the storage type: a rounding changes a value x by at most u |x|.
template <class KV>
double unit_roundoff() {
    if constexpr (std::is_same_v<KV, float>)
        return std::ldexp(1.0, -24);
    else if constexpr (std::is_same_v<KV, bfloat16>)
        return std::ldexp(1.0, -8);
    else
        return std::ldexp(1.0, -11);
}

/// How many times a stored key has been rounded to KV at most, for a strategy: stored once;
/// rotated_at_slot re-rounds it at every eviction it lives through (up to window); unrotated
/// rounds it once more in the per-step rotated copy; rotated_once once per re-base it lives
/// through (window / rebase_interval + 1).
std::int64_t key_roundings(key_storage st, std::int64_t window, std::int64_t rebase_interval) {
    switch (st) {
        case key_storage::unrotated:
            return 2;
        case key_storage::rotated_at_slot:
            return 1 + window;
        case key_storage::rotated_once:
            return 2 + window / rebase_interval;
    }
    return 0;
}

/// Per-(query head) check of `o` against the definition. Float storage: relative error norm
/// <= 1e-5 per head. 16-bit storage: each key element is within n u |k| of exact after n
/// roundings, so every score moves by at most dS = scale |q| |k| n u, and a softmax-weighted
/// average moves by at most 2 dS max|v| (first order) plus the v rounding u max|v|: the bound
/// used, per element, with |q| |k| the largest product of norms among the row's keys and
/// max|v| <= 1 (elements in [-1, 1]). It is a worst case: for rotated_at_slot, whose keys are
/// re-rounded at every eviction, it grows with the window (pitfall 20) and is loose.
template <class KV>
void check_output(const shape& s, const std::vector<float>& o, const std::vector<double>& ref,
                  double scale, std::int64_t roundings, const std::string& what, double qk_norms) {
    INFO(what);
    for (int h = 0; h < s.H; ++h) {
        double err = 0, nrm = 0, maxerr = 0;
        for (int d = 0; d < s.D; ++d) {
            const double e = double(o[std::size_t(h * s.D + d)]) - ref[std::size_t(h * s.D + d)];
            err += e * e;
            nrm += ref[std::size_t(h * s.D + d)] * ref[std::size_t(h * s.D + d)];
            maxerr = std::max(maxerr, std::fabs(e));
        }
        INFO("head " << h);
        if constexpr (std::is_same_v<KV, float>) {
            CHECK(std::sqrt(err) <= 1e-5 * std::sqrt(nrm));
        } else {
            const double u = unit_roundoff<KV>();
            const double dS = scale * qk_norms * double(roundings) * u;
            CHECK(maxerr <= 2.0 * dS + u);
        }
    }
}

/// Checks every filled slot's stored key norm against its raw key's (a rotation preserves it).
template <class KV>
void check_norms(const shape& s, const sink_cache<KV>& cache, std::int64_t roundings) {
    const auto k = cache.keys();
    const double u = std::is_same_v<KV, float> ? 1e-6 / double(roundings) : unit_roundoff<KV>();
    for (std::int64_t slot = 0; slot < cache.slots(); ++slot) {
        const std::int64_t j = cache.stream_position(slot);
        if (j < 0) continue;
        for (int h = 0; h < s.kvh; ++h) {
            double a = 0, b = 0;
            for (int d = 0; d < s.D; ++d) {
                const double x = double(ropekit::to_float(k.at(slot, h)[d]));
                const double y = double(gen(j, 1, h, d));
                a += x * x;
                b += y * y;
            }
            INFO("slot " << slot << " token " << j << " head " << h);
            // Float: rotations preserve norms to ~1e-7 each; 16-bit: n roundings of u each.
            CHECK(std::fabs(std::sqrt(a) / std::sqrt(b) - 1.0) <= double(roundings) * u + 1e-6);
        }
    }
}

rope_frequencies freqs_for(int D, int rotary = 0) {
    return ropekit::make_frequencies(ropekit::rope_params{10000.0, D, rotary ? rotary : D},
                                     ropekit::default_rope{});
}

/// Streams tokens 0 .. n_tokens - 1 through a cache (token by token), running the decode front
/// door at the given checkpoints and comparing with the definition.
template <class KV>
void stream_and_check(const shape& s, const rope_frequencies& f, key_storage st,
                      std::int64_t rebase, std::int64_t n_tokens,
                      const std::vector<std::int64_t>& checkpoints) {
    sink_cache_options opt;
    opt.n_kv_heads = s.kvh;
    opt.head_dim = s.D;
    opt.n_sink = s.n_sink;
    opt.window = s.window;
    opt.keys = st;
    opt.rebase_interval = rebase;
    sink_cache<KV> cache(f, opt);
    ropekit::sink_workspace<KV> ws(cache, s.H);
    ropekit::sink_partial part(s.H, s.D);
    const auto params = ropekit::attention_params::for_model(f);
    std::vector<float> o(std::size_t(s.H) * std::size_t(s.D));
    std::size_t next_check = 0;
    for (std::int64_t i = 0; i < n_tokens; ++i) {
        const auto k = token(i, 1, s.kvh, s.D), v = token(i, 2, s.kvh, s.D);
        cache.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));
        if (next_check < checkpoints.size() && checkpoints[next_check] == i) {
            ++next_check;
            const auto q = token(i, 0, s.H, s.D);
            ropekit::sink_attention(cache, view_of(q, s.H, s.D),
                                    head_view<float>::packed(o.data(), 1, s.H, s.D), params, ws,
                                    part);
            double qk = 0.0;
            const auto ref = reference(s, f, double(params.softmax_scale()), i, &qk);
            const std::int64_t n = key_roundings(st, s.window, rebase);
            check_output<KV>(s, o, ref, double(params.softmax_scale()), n,
                             std::string(name_of(st)) + " " + ropekit::storage_name<KV>() + " at " +
                                 std::to_string(i) + " D " + std::to_string(s.D),
                             qk);
            check_norms(s, cache, n);
        }
    }
}

}  // namespace

TEST_CASE("sink_cache: all strategies equal the StreamingLLM definition after 1e5 evictions",
          "[sink_cache]") {
    for (int D : {64, 80}) {
        shape s;
        s.D = D;
        const auto f = freqs_for(D);
        const std::int64_t n = 100000 + s.n_sink + s.window;
        const std::vector<std::int64_t> checks = {0, 3, 62, 63, 64, 500, 50021, n - 2, n - 1};
        for (key_storage st : all_storages) stream_and_check<float>(s, f, st, 7, n, checks);
    }
}

TEST_CASE("sink_cache: re-bases are exact (rotated_once, several intervals)", "[sink_cache]") {
    shape s;
    const auto f = freqs_for(64);
    // 1: a re-base on every eviction; 59, 60, 61: around the window; 1000: rare.
    for (std::int64_t rebase : {1, 59, 60, 61, 1000})
        stream_and_check<float>(s, f, key_storage::rotated_once, rebase, 3000,
                                {63, 64, 123, 124, 1063, 1064, 2999});
}

TEST_CASE("sink_cache: 16-bit storage within the storage-rounding bound", "[sink_cache]") {
    shape s;
    const auto f = freqs_for(64);
    const std::vector<std::int64_t> checks = {10, 63, 64, 1000, 20063};
    for (key_storage st : all_storages) {
        stream_and_check<bfloat16>(s, f, st, 25, 20064, checks);
        stream_and_check<half>(s, f, st, 25, 20064, checks);
    }
}

TEST_CASE("sink_cache: before the cache is full, and without sinks", "[sink_cache]") {
    const auto f = freqs_for(64);
    std::vector<std::int64_t> every;
    for (std::int64_t i = 0; i < 70; ++i) every.push_back(i);
    shape s;
    for (key_storage st : all_storages) stream_and_check<float>(s, f, st, 5, 70, every);
    shape no_sinks;
    no_sinks.n_sink = 0;
    for (key_storage st : all_storages)
        stream_and_check<float>(no_sinks, f, st, 5, 400, {0, 1, 58, 59, 60, 61, 200, 399});
}

TEST_CASE("sink_cache: scaling methods, partial rotary, gptj, GQA 1 and 4", "[sink_cache]") {
    const int D = 64;
    std::vector<std::pair<std::string, rope_frequencies>> fs;
    fs.emplace_back("default", freqs_for(D));
    ropekit::yarn_scaling yarn{4.0, 16};
    fs.emplace_back("yarn", ropekit::make_frequencies(ropekit::rope_params{10000.0, D, D}, yarn));
    REQUIRE(fs.back().second.attention_factor > 1.0f);  // the factor reaches the scale
    fs.emplace_back("partial", freqs_for(D, 32));
    fs.emplace_back("gptj", ropekit::make_frequencies(
                                ropekit::rope_params{10000.0, D, D, ropekit::rope_layout::gptj},
                                ropekit::default_rope{}));
    for (const auto& [name, f] : fs) {
        INFO(name);
        for (int group : {1, 4}) {
            shape s;
            s.kvh = 2;
            s.H = 2 * group;
            for (key_storage st : all_storages)
                stream_and_check<float>(s, f, st, 13, 700, {30, 63, 64, 699});
        }
    }
}

TEST_CASE("sink_cache: chunk append equals token-by-token append", "[sink_cache]") {
    shape s;
    const auto f = freqs_for(64);
    const auto params = ropekit::attention_params::for_model(f);
    for (key_storage st : all_storages) {
        INFO(name_of(st));
        sink_cache_options opt{s.kvh, s.D, s.n_sink, s.window, st, 17};
        sink_cache<float> a(f, opt), b(f, opt);
        std::int64_t pos = 0;
        // Chunks of every kind: inside the sinks, across the sinks, short, longer than the
        // window and than the whole cache, across re-bases.
        for (std::int64_t m : {2, 5, 1, 30, 61, 200, 3, 64, 1000, 7}) {
            const auto k = chunk(pos, m, 1, s.kvh, s.D), v = chunk(pos, m, 2, s.kvh, s.D);
            a.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));
            for (std::int64_t t = 0; t < m; ++t) {
                const auto kt = token(pos + t, 1, s.kvh, s.D), vt = token(pos + t, 2, s.kvh, s.D);
                b.append(view_of(kt, s.kvh, s.D), view_of(vt, s.kvh, s.D));
            }
            pos += m;
            REQUIRE(a.next_position() == b.next_position());
            for (std::int64_t slot = 0; slot < a.slots(); ++slot) {
                REQUIRE(a.stream_position(slot) == b.stream_position(slot));
                if (a.stream_position(slot) < 0) continue;
                for (int h = 0; h < s.kvh; ++h)
                    for (int d = 0; d < s.D; ++d) {
                        const float x = a.keys().at(slot, h)[d], y = b.keys().at(slot, h)[d];
                        // Raw keys are copied: identical. Rotated keys: one rotation by the
                        // total delta vs up to `window` rotations by -1 (rotated_at_slot) or a
                        // few re-bases (rotated_once). Each float rotation of elements of
                        // magnitude <= sqrt(2) errs by at most ~4 ulp(1) = 4 * 2^-23 * sqrt(2)
                        // (cos/sin rounding, two products and a sum), so after n of them:
                        const double n_rot = st == key_storage::rotated_at_slot
                                                 ? double(s.window + 1)
                                                 : double(s.window / 17 + 2);
                        if (st == key_storage::unrotated)
                            REQUIRE(x == y);
                        else
                            REQUIRE(std::fabs(x - y) <= n_rot * 4.0 * std::ldexp(1.0, -23) * 1.5);
                        REQUIRE(a.values().at(slot, h)[d] == b.values().at(slot, h)[d]);
                    }
            }
            ropekit::sink_workspace<float> ws(a, s.H);
            ropekit::sink_partial part(s.H, s.D);
            std::vector<float> oa(std::size_t(s.H * s.D)), ob(oa.size());
            const auto q = token(pos - 1, 0, s.H, s.D);
            ropekit::sink_attention(a, view_of(q, s.H, s.D),
                                    head_view<float>::packed(oa.data(), 1, s.H, s.D), params, ws,
                                    part);
            ropekit::sink_attention(b, view_of(q, s.H, s.D),
                                    head_view<float>::packed(ob.data(), 1, s.H, s.D), params, ws,
                                    part);
            for (std::size_t e = 0; e < oa.size(); ++e) REQUIRE(std::fabs(oa[e] - ob[e]) <= 1e-6f);
        }
    }
}

TEST_CASE("sink_cache: restore gives the streamed state", "[sink_cache]") {
    shape s;
    const auto f = freqs_for(64);
    for (key_storage st : all_storages) {
        INFO(name_of(st));
        sink_cache_options opt{s.kvh, s.D, s.n_sink, s.window, st, 50};
        for (std::int64_t next : {0, 2, 4, 30, 64, 65, 1000, 1234}) {
            sink_cache<float> a(f, opt), b(f, opt);
            const auto k = chunk(0, next, 1, s.kvh, s.D), v = chunk(0, next, 2, s.kvh, s.D);
            if (next > 0) a.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));
            const std::int64_t ns = std::min(next, s.n_sink);
            const std::int64_t nw = std::min(s.window, std::max<std::int64_t>(0, next - s.n_sink));
            const auto sk = chunk(0, ns, 1, s.kvh, s.D), sv = chunk(0, ns, 2, s.kvh, s.D);
            const auto wk = chunk(next - nw, nw, 1, s.kvh, s.D),
                       wv = chunk(next - nw, nw, 2, s.kvh, s.D);
            b.restore(head_view<const float>::packed(sk.data(), ns, s.kvh, s.D),
                      head_view<const float>::packed(sv.data(), ns, s.kvh, s.D),
                      head_view<const float>::packed(wk.data(), nw, s.kvh, s.D),
                      head_view<const float>::packed(wv.data(), nw, s.kvh, s.D), next);
            REQUIRE(a.next_position() == b.next_position());
            REQUIRE(a.rotation_offset() == b.rotation_offset());
            for (std::int64_t slot = 0; slot < a.slots(); ++slot) {
                REQUIRE(a.stream_position(slot) == b.stream_position(slot));
                if (a.stream_position(slot) < 0) continue;
                REQUIRE(a.key_position(slot) == b.key_position(slot));
                for (int h = 0; h < s.kvh; ++h)
                    for (int d = 0; d < s.D; ++d)
                        REQUIRE(a.keys().at(slot, h)[d] == b.keys().at(slot, h)[d]);
            }
        }
    }
}

TEST_CASE("sink_cache: no allocation after construction", "[sink_cache]") {
    shape s;
    const auto f = freqs_for(64);
    const auto params = ropekit::attention_params::for_model(f);
    for (key_storage st : all_storages) {
        INFO(name_of(st));
        sink_cache<float> cache(f, {s.kvh, s.D, s.n_sink, s.window, st, 9});
        ropekit::sink_workspace<float> ws(cache, s.H);
        ropekit::sink_partial p0(s.H, s.D), p1(s.H, s.D);
        std::vector<float> o(std::size_t(s.H * s.D));
        const auto q = token(1, 0, s.H, s.D);
        const auto k = chunk(0, 300, 1, s.kvh, s.D), v = chunk(0, 300, 2, s.kvh, s.D);
        const long before = g_news.load();
        for (std::int64_t t = 0; t < 300; ++t) {
            ropekit::sink_decode_step(
                cache, view_of(q, s.H, s.D), view_of(k, s.kvh, s.D).tokens_slice(t, t + 1),
                view_of(v, s.kvh, s.D).tokens_slice(t, t + 1),
                head_view<float>::packed(o.data(), 1, s.H, s.D), params, ws, p0);
            ropekit::sink_attention_part(ropekit::default_arch{}, cache, view_of(q, s.H, s.D),
                                         params, 1, 2, ws, p1);
        }
        cache.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));  // a long chunk
        CHECK(g_news.load() == before);
        // The counter does count: building a partial allocates.
        { const ropekit::sink_partial probe(s.H, s.D); }
        CHECK(g_news.load() > before);
    }
}

TEST_CASE("sink_cache: bad input names the field", "[sink_cache]") {
    using ropekit::error;
    using ropekit_test::thrown_field;
    const auto f = freqs_for(64);
    auto make = [&](sink_cache_options o) { sink_cache<float> c(f, o); };
    CHECK(thrown_field<error>([&] { make({0, 64, 4, 60}); }) == "n_kv_heads");
    CHECK(thrown_field<error>([&] { make({2, 0, 4, 60}); }) == "head_dim");
    CHECK(thrown_field<error>([&] { make({2, 512, 4, 60}); }) == "head_dim");
    CHECK(thrown_field<error>([&] { make({2, 80, 4, 60}); }) == "head_dim");  // freqs' head_dim
    CHECK(thrown_field<error>([&] { make({2, 64, -1, 60}); }) == "n_sink");
    CHECK(thrown_field<error>([&] { make({2, 64, 4, 0}); }) == "window");
    CHECK(thrown_field<error>([&] {
              make({2, 64, 4, 60, key_storage::rotated_once, 0});
          }) == "rebase_interval");
    CHECK(thrown_field<error>([&] {
              make({2, 64, 4, 60, key_storage::rotated_once, std::int64_t(1) << 29});
          }) == "rebase_interval");
    rope_frequencies bad = f;
    bad.inv_freq.pop_back();
    CHECK(thrown_field<error>([&] { sink_cache<float> c(bad, {2, 64, 4, 60}); }) == "inv_freq");
    CHECK(thrown_field<error>([&] { make({2, 64, 4, 60}); }) == "no error");

    sink_cache<float> cache(f, {2, 64, 4, 60});
    ropekit::sink_workspace<float> ws(cache, 4);
    ropekit::sink_partial part(4, 64);
    const auto params = ropekit::attention_params::for_model(f);
    std::vector<float> o(4 * 64);
    const auto ov = head_view<float>::packed(o.data(), 1, 4, 64);
    const auto q = token(0, 0, 4, 64);
    // Empty cache, then wrong shapes.
    CHECK(thrown_field<error>([&] {
              ropekit::sink_attention(cache, view_of(q, 4, 64), ov, params, ws, part);
          }) == "cache");
    const auto k3 = token(0, 1, 3, 64), k2 = token(0, 1, 2, 64), v2 = token(0, 2, 2, 64);
    CHECK(thrown_field<error>([&] { cache.append(view_of(k3, 3, 64), view_of(v2, 2, 64)); }) ==
          "k.heads");
    CHECK(cache.next_position() == 0);  // nothing changed
    cache.append(view_of(k2, 2, 64), view_of(v2, 2, 64));
    const auto q3 = token(0, 0, 3, 64);
    CHECK(thrown_field<error>([&] {
              ropekit::sink_attention(cache, view_of(q3, 3, 64),
                                      head_view<float>::packed(o.data(), 1, 3, 64), params, ws,
                                      part);
          }) == "n_heads");
    const auto p2 = ropekit::attention_params::with_softmax_scale(0.125);
    const auto yf = ropekit::make_frequencies(ropekit::rope_params{10000.0, 64, 64},
                                              ropekit::yarn_scaling{4.0, 16});
    CHECK(thrown_field<error>([&] {
              ropekit::sink_attention(cache, view_of(q, 4, 64), ov,
                                      ropekit::attention_params::for_model(yf), ws, part);
          }) == "logit_scale");
    CHECK(thrown_field<error>([&] {
              ropekit::sink_attention(cache, view_of(q, 4, 64), ov, p2, ws, part);
          }) == "no error");  // no attention factor: the plain scale is the model's
    // Hot path: preconditions are ROPEKIT_ASSERTs (exceptions in the tests).
    CHECK_THROWS_AS(ropekit::sink_attention_part(ropekit::default_arch{}, cache, view_of(q, 4, 64),
                                                 params, 2, 2, ws, part),
                    ropekit_test::assert_failure);
}

TEST_CASE("sink_cache: the two-thread key split equals the single-thread result", "[sink_cache]") {
    for (key_storage st : all_storages) {
        INFO(name_of(st));
        shape s;
        s.window = 300;  // several 64-key tiles, so both parts have keys
        const auto f = freqs_for(64);
        const auto params = ropekit::attention_params::for_model(f);
        sink_cache<float> cache(f, {s.kvh, s.D, s.n_sink, s.window, st, 11});
        ropekit::sink_workspace<float> ws0(cache, s.H), ws1(cache, s.H);
        std::vector<ropekit::sink_partial> parts(2, ropekit::sink_partial(s.H, s.D));
        ropekit::sink_partial single(s.H, s.D);
        std::vector<float> o1(std::size_t(s.H * s.D)), o2(o1.size());
        for (std::int64_t n : {3, 100, 304, 1000}) {
            const auto k = chunk(cache.next_position(), n, 1, s.kvh, s.D),
                       v = chunk(cache.next_position(), n, 2, s.kvh, s.D);
            cache.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));
            const auto q = token(cache.last_position(), 0, s.H, s.D);
            ropekit::sink_attention(cache, view_of(q, s.H, s.D),
                                    head_view<float>::packed(o1.data(), 1, s.H, s.D), params, ws0,
                                    single);
            std::thread t1([&] {
                ropekit::sink_attention_part(ropekit::default_arch{}, cache, view_of(q, s.H, s.D),
                                             params, 1, 2, ws1, parts[1]);
            });
            ropekit::sink_attention_part(ropekit::default_arch{}, cache, view_of(q, s.H, s.D),
                                         params, 0, 2, ws0, parts[0]);
            t1.join();
            ropekit::sink_attention_merge(ropekit::default_arch{}, parts.data(), 2,
                                          head_view<float>::packed(o2.data(), 1, s.H, s.D));
            // Both parts hold keys once the window spans more than one tile.
            if (cache.window_count() > 64) CHECK(parts[1].lse[0] > -1e30f);
            for (std::size_t e = 0; e < o1.size(); ++e)
                CHECK(std::fabs(o1[e] - o2[e]) <= 1e-6f * (1.0f + std::fabs(o1[e])));
            const auto ref = reference(s, f, double(params.softmax_scale()), cache.last_position());
            check_output<float>(s, o2, ref, double(params.softmax_scale()), 1, "split", 0.0);
        }
    }
}

// Issue 24, item 4: sizes from the caller were multiplied and allocated unchecked. Each call
// below threw std::bad_alloc (64 GiB to 1 TiB requested) instead of ropekit::error; the wrapped
// one allocated 0 values for K and V (2^30 x 256 x 2^26 = 2^64) and only failed later, on the
// scratch row, after filling 512 MiB of slot positions.
TEST_CASE("sink_cache: a cache above sink_cache_max_values is rejected before allocating",
          "[sink_cache]") {
    using ropekit::error;
    using ropekit_test::expect_error;
    const auto f128 = freqs_for(128), f256 = freqs_for(256);
    for (key_storage st : all_storages) {
        INFO(name_of(st));
        // 65536 KV heads x 256 x (4 + 1020): 2^34 values per store.
        const sink_cache_options heads{65536, 256, 4, 1020, st};
        // 8 KV heads x 128 x 2^27 slots: 2^37 values per store.
        const sink_cache_options window{8, 128, 4, (std::int64_t(1) << 27) - 4, st};
        // 2^30 KV heads x 256 x 2^26 slots: 2^64 values, 0 once wrapped to 64 bits.
        const sink_cache_options wraps{1 << 30, 256, 0, std::int64_t(1) << 26, st};
        REQUIRE_THROWS_AS(sink_cache<float>(f256, heads), error);
        REQUIRE_THROWS_AS(sink_cache<bfloat16>(f256, heads), error);
        REQUIRE_THROWS_AS(sink_cache<half>(f128, window), error);
        REQUIRE_THROWS_AS(sink_cache<float>(f256, wraps), error);
        expect_error<error>([&] { sink_cache<float>(f256, heads); }, "n_kv_heads", "(got 65536)");
        expect_error<error>([&] { sink_cache<half>(f128, window); }, "window", "(got 134217724)");
        expect_error<error>([&] { sink_cache<float>(f256, wraps); }, "window", "(got 67108864)");
    }
}

// The decode scratch was sized from n_heads x head_dim unchecked: std::bad_alloc (1 TiB, 256
// GiB) or std::length_error instead of ropekit::error.
TEST_CASE("sink_partial and sink_workspace: n_heads x head_dim is bounded before allocating",
          "[sink_cache]") {
    using ropekit::error;
    using ropekit_test::expect_error;
    constexpr int int_max = std::numeric_limits<int>::max();
    REQUIRE_THROWS_AS(ropekit::sink_partial(1 << 30, 256), error);
    REQUIRE_THROWS_AS(ropekit::sink_partial(int_max, int_max), error);
    expect_error<error>([&] { ropekit::sink_partial(1 << 30, 256); }, "n_heads",
                        "(got 1073741824)");
    expect_error<error>([&] { ropekit::sink_partial(int_max, int_max); }, "head_dim",
                        "(got 2147483647)");
    const auto f = freqs_for(64);
    for (key_storage st : all_storages) {
        INFO(name_of(st));
        const sink_cache<float> cache(f, {2, 64, 4, 60, st});
        REQUIRE_THROWS_AS(ropekit::sink_workspace<float>(cache, 1 << 30), error);
        expect_error<error>([&] { ropekit::sink_workspace<float>(cache, 1 << 30); }, "n_heads",
                            "(got 1073741824)");
    }
}

// Just above the bound, where the unbounded code allocated (and zero-filled) 4 GiB or more per
// buffer and succeeded: which field is named, and the factors in the message.
TEST_CASE("sink_cache: the size bound's edges name the field", "[sink_cache]") {
    using ropekit::error;
    using ropekit_test::expect_error;
    static_assert(ropekit::sink_cache_max_values == std::int64_t(1) << 30);
    const auto f = freqs_for(256);
    // 4097 x 256 x 1024 = 2^30 + 2^18 (4096 heads would be exactly the bound).
    expect_error<error>(
        [&] {
            sink_cache<float>(f, {4097, 256, 4, 1020});
        },
        "n_kv_heads", "here 4097 x 256 x 1024 (got 4097)");
    // One KV head already exceeds it: the window is at fault, or the sinks alone.
    expect_error<error>(
        [&] {
            sink_cache<float>(f, {1, 256, 4, (std::int64_t(1) << 22) - 3});
        },
        "window", "here 1 x 256 x 4194305 (got 4194301)");
    expect_error<error>(
        [&] {
            sink_cache<float>(f, {1, 256, (std::int64_t(1) << 22) + 1, 1});
        },
        "n_sink", "(got 4194305)");
    expect_error<error>([] { ropekit::sink_partial((1 << 22) + 1, 256); }, "n_heads",
                        "(got 4194305)");
    expect_error<error>([] { ropekit::sink_partial(1, (1 << 30) + 1); }, "head_dim",
                        "(got 1073741825)");
    // A workspace checks its head count before anything else is allocated.
    const sink_cache<float> cache(f, {2, 256, 4, 60});
    expect_error<error>([&] { ropekit::sink_workspace<float>(cache, (1 << 22) + 2); }, "n_heads",
                        "(got 4194306)");
    expect_error<error>([&] { ropekit::sink_workspace<float>(cache, 3); }, "n_heads",
                        "positive multiple of n_kv_heads");
}
