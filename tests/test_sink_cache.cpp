// SPDX-License-Identifier: Apache-2.0
// sink_cache (StreamingLLM sinks + window): every key storage strategy against the literal
// definition recomputed from scratch in double, after many evictions and re-bases; chunk vs
// token appends; the cache before it is full; no sinks; scaling methods; GQA; no allocation
// after construction; validation; the two-thread key split and splits over up to five parts;
// block_q8_0 storage (its blocks against quantize_block_q8_0 of a float twin cache, the decode
// against the definition on the quantised data, the rejected combinations); which kernels the
// append and the decode run on.
#include "test_support.hpp"

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

// Which kernels a call reached (the library's ROPEKIT_TRACE_KERNEL hook; this program is one
// translation unit, so it is defined identically everywhere). Off unless a test turns it on,
// so the allocation counts below never see it.
namespace sink_trace {
inline std::atomic<bool> on{false};
inline std::mutex mu;
inline std::vector<std::string> kernels;
inline void record(const char* kernel) {
    if (!on.load(std::memory_order_relaxed)) return;
    const std::lock_guard<std::mutex> hold(mu);
    kernels.emplace_back(kernel);
}
}  // namespace sink_trace
#define ROPEKIT_TRACE_KERNEL(kernel_name, arch_name) ::sink_trace::record(kernel_name)

#include <ropekit/attention_reference.hpp>
#include <ropekit/scaling.hpp>
#include <ropekit/sink_cache.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <thread>

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

// ---------------------------------------------------------------------------------------------
// block_q8_0 storage, splits over parts on the rule path, and the kernels each call reaches.

using ropekit::block_q8_0;

namespace {

/// |x̂ - x| after one q8_0 rounding of a block whose largest |value| is `amax`: d / 2 from
/// rounding x / d to an integer, plus 127 |half(d) - d| from storing the scale d = amax / 127 as
/// a half (relative error <= 2^-11): (0.5 + 127 / 2048) d < 0.57 d. 0.6 d, plus 1e-6 for the
/// float rotation the value went through before it was quantised.
double q8_0_step(double amax) {
    return 0.6 * amax / 127.0 + 1e-6;
}

bool same_block(const block_q8_0& a, const block_q8_0& b) {
    return std::memcmp(&a, &b, sizeof(block_q8_0)) == 0;
}

/// The StreamingLLM definition on the data a q8_0 cache holds, in double: each filled slot's key
/// as stored in `k` (the cache's keys, or the rotated copy an unrotated decode read) and its
/// value, dequantised; q rotated at min(i, c) for the sinks and at query_position() for the
/// window keys (the test checks those positions against the definition separately). `H x D`.
std::vector<double> reference_on_stored(const shape& s, const sink_cache<block_q8_0>& cache,
                                        const head_view<const block_q8_0>& k,
                                        const rope_frequencies& f, double scale) {
    using ropekit::stored_value;
    using ropekit::detail::attn_ref::dot;
    using ropekit::detail::attn_ref::rotate;
    const std::int64_t i = cache.last_position();
    const int group = s.H / s.kvh;
    const auto v = cache.values();
    std::vector<double> out(std::size_t(s.H) * std::size_t(s.D), 0.0);
    for (int h = 0; h < s.H; ++h) {
        const int kh = h / group;
        std::vector<double> q(std::size_t(s.D));
        for (int d = 0; d < s.D; ++d) q[std::size_t(d)] = gen(i, 0, h, d);
        const auto q_window = rotate(q, double(cache.query_position()), f);
        const auto q_sinks = rotate(q, double(cache.sink_query_position()), f);
        std::vector<std::int64_t> held;
        std::vector<double> sc;
        for (std::int64_t slot = 0; slot < cache.slots(); ++slot) {
            if (cache.stream_position(slot) < 0) continue;
            std::vector<double> key(std::size_t(s.D));
            for (int d = 0; d < s.D; ++d) key[std::size_t(d)] = stored_value(k.at(slot, kh), d);
            held.push_back(slot);
            sc.push_back(scale * dot(slot < s.n_sink ? q_sinks : q_window, key));
        }
        double mx = -std::numeric_limits<double>::infinity();
        for (double x : sc) mx = std::max(mx, x);
        double den = 0.0;
        for (std::size_t n = 0; n < held.size(); ++n) {
            const double p = std::exp(sc[n] - mx);
            den += p;
            for (int d = 0; d < s.D; ++d)
                out[std::size_t(h * s.D + d)] += p * stored_value(v.at(held[n], kh), d);
        }
        for (int d = 0; d < s.D; ++d) out[std::size_t(h * s.D + d)] /= den;
    }
    return out;
}

/// Streams a block_q8_0 cache and a float twin with the same options token by token; at the
/// checkpoints:
///  - the positions are the definition's (so the reference's query positions are too);
///  - every value block is quantize_block_q8_0 of the raw value, bit for bit; every key block
///    is quantize_block_q8_0 of the twin's float key (rope_store rotates in float exactly as the
///    float cache does, then quantises), bit for bit, unless the key lived through a re-base:
///    then it was dequantised, rotated and quantised once more, and each element is within one
///    q8_0 step, rotated (a pair's rotation can move its error into either element, up to
///    sqrt(2) of it), plus a second step, of the twin's;
///  - unrotated: the copy the decode rotated is within one q8_0 step of the exact rotation of
///    the stored raw keys, dequantised;
///  - the decode output equals the definition on the quantised data (reference_on_stored) to
///    float accuracy, 1e-5 per head as for float storage: the quantisation is all in the data;
///  - the decode split over 3 parts and merged equals the single-part one (1e-6).
void stream_and_check_q8_0(const shape& s, const rope_frequencies& f, key_storage st,
                           std::int64_t rebase, std::int64_t n_tokens,
                           const std::vector<std::int64_t>& checkpoints) {
    const sink_cache_options opt{s.kvh, s.D, s.n_sink, s.window, st, rebase};
    sink_cache<block_q8_0> cache(f, opt);
    sink_cache<float> twin(f, opt);
    ropekit::sink_workspace<block_q8_0> ws(cache, s.H), ws_parts(cache, s.H);
    ropekit::sink_partial part(s.H, s.D);
    std::vector<ropekit::sink_partial> parts(3, ropekit::sink_partial(s.H, s.D));
    const auto params = ropekit::attention_params::for_model(f);
    const double scale = double(params.softmax_scale());
    const std::int64_t c = s.n_sink + s.window - 1;
    auto offset_at = [&](std::int64_t i) {
        return i <= c ? std::int64_t(0) : (i - c) / rebase * rebase;
    };
    std::vector<float> o(std::size_t(s.H) * std::size_t(s.D)), o3(o.size());
    std::size_t next_check = 0;
    for (std::int64_t i = 0; i < n_tokens; ++i) {
        const auto k = token(i, 1, s.kvh, s.D), v = token(i, 2, s.kvh, s.D);
        cache.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));
        twin.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));
        if (next_check >= checkpoints.size() || checkpoints[next_check] != i) continue;
        ++next_check;
        INFO(name_of(st) << " q8_0 D " << s.D << " rebase " << rebase << " at " << i);
        const std::int64_t shift = std::max<std::int64_t>(0, i - c);
        const std::int64_t off = st == key_storage::rotated_once ? offset_at(i) : shift;
        REQUIRE(cache.query_position() == i - off);
        REQUIRE(cache.sink_query_position() == i - shift);
        const auto k8 = cache.keys(), v8 = cache.values();
        const auto kf = twin.keys(), vf = twin.values();
        for (std::int64_t slot = 0; slot < cache.slots(); ++slot) {
            const std::int64_t j = cache.stream_position(slot);
            REQUIRE(j == twin.stream_position(slot));
            if (j < 0) continue;
            const std::int64_t kp = j < s.n_sink ? j : j - off;
            REQUIRE(cache.key_position(slot) == kp);
            REQUIRE(cache.key_positions()[slot] == kp);
            const bool rebased =
                st == key_storage::rotated_once && j >= s.n_sink && offset_at(j) != offset_at(i);
            for (int h = 0; h < s.kvh; ++h) {
                INFO("slot " << slot << " token " << j << " head " << h);
                double amax = 0.0;
                for (int d = 0; d < s.D; ++d)
                    amax = std::max(amax, double(std::fabs(kf.at(slot, h)[d])));
                for (int b = 0; b < s.D / 32; ++b) {
                    REQUIRE(same_block(v8.at(slot, h)[b],
                                       ropekit::quantize_block_q8_0(vf.at(slot, h) + 32 * b)));
                    if (!rebased)
                        REQUIRE(same_block(k8.at(slot, h)[b],
                                           ropekit::quantize_block_q8_0(kf.at(slot, h) + 32 * b)));
                }
                if (rebased) {
                    // Any block's largest |value| at any rotation is at most the largest pair
                    // norm, <= sqrt(2) max |x|.
                    const double step = q8_0_step(std::sqrt(2.0) * amax);
                    for (int d = 0; d < s.D; ++d)
                        REQUIRE(std::fabs(ropekit::stored_value(k8.at(slot, h), d) -
                                          double(kf.at(slot, h)[d])) <=
                                (1.0 + std::sqrt(2.0)) * step);
                }
            }
        }
        const auto q = token(i, 0, s.H, s.D);
        ropekit::sink_attention(cache, view_of(q, s.H, s.D),
                                head_view<float>::packed(o.data(), 1, s.H, s.D), params, ws, part);
        head_view<const block_q8_0> read = cache.keys();
        if (st == key_storage::unrotated) {
            read = head_view<const block_q8_0>::head_major(ws.k_rotated.data(), s.kvh,
                                                           cache.slots(), s.D);
            for (std::int64_t slot = 0; slot < cache.slots(); ++slot) {
                if (cache.stream_position(slot) < 0) continue;
                for (int h = 0; h < s.kvh; ++h) {
                    std::vector<double> raw(std::size_t(s.D));
                    for (int d = 0; d < s.D; ++d)
                        raw[std::size_t(d)] = ropekit::stored_value(k8.at(slot, h), d);
                    const auto exact =
                        ropekit::detail::attn_ref::rotate(raw, double(cache.key_position(slot)), f);
                    for (int b = 0; b < s.D / 32; ++b) {
                        double amax = 0.0;
                        for (int d = 32 * b; d < 32 * b + 32; ++d)
                            amax = std::max(amax, std::fabs(exact[std::size_t(d)]));
                        for (int d = 32 * b; d < 32 * b + 32; ++d)
                            REQUIRE(std::fabs(ropekit::stored_value(read.at(slot, h), d) -
                                              exact[std::size_t(d)]) <= q8_0_step(amax));
                    }
                }
            }
        }
        const auto ref = reference_on_stored(s, cache, read, f, scale);
        check_output<float>(s, o, ref, scale, 1,
                            std::string(name_of(st)) + " q8_0 at " + std::to_string(i), 0.0);
        for (int pi = 0; pi < 3; ++pi)
            ropekit::sink_attention_part(ropekit::default_arch{}, cache, view_of(q, s.H, s.D),
                                         params, pi, 3, ws_parts, parts[std::size_t(pi)]);
        ropekit::sink_attention_merge(ropekit::default_arch{}, parts.data(), 3,
                                      head_view<float>::packed(o3.data(), 1, s.H, s.D));
        for (std::size_t e = 0; e < o.size(); ++e)
            CHECK(std::fabs(o[e] - o3[e]) <= 1e-6f * (1.0f + std::fabs(o[e])));
    }
}

}  // namespace

TEST_CASE("sink_cache: q8_0 storage, rotated_once and unrotated", "[sink_cache][q8_0]") {
    for (int D : {64, 96}) {
        shape s;
        s.D = D;
        const auto f = freqs_for(D);
        // Before the cache is full, at the first evictions, across re-bases (every 60 or 61
        // tokens past c = 63, or rarely), far past them.
        const std::vector<std::int64_t> checks = {0,  3,   4,   30,  62,  63,
                                                  64, 122, 123, 124, 500, 2999};
        for (std::int64_t rebase : {60, 61, 1000})
            stream_and_check_q8_0(s, f, key_storage::rotated_once, rebase, 3000, checks);
        stream_and_check_q8_0(s, f, key_storage::unrotated, 1, 3000, checks);
    }
}

TEST_CASE("sink_cache: q8_0 with other frequencies, GQA 1 and 4, no sinks", "[sink_cache][q8_0]") {
    const int D = 64;
    std::vector<std::pair<std::string, rope_frequencies>> fs;
    fs.emplace_back("yarn", ropekit::make_frequencies(ropekit::rope_params{10000.0, D, D},
                                                      ropekit::yarn_scaling{4.0, 16}));
    fs.emplace_back("partial", freqs_for(D, 32));
    fs.emplace_back("gptj", ropekit::make_frequencies(
                                ropekit::rope_params{10000.0, D, D, ropekit::rope_layout::gptj},
                                ropekit::default_rope{}));
    for (const auto& [name, f] : fs) {
        INFO(name);
        for (int group : {1, 4}) {
            shape s;
            s.H = 2 * group;
            for (key_storage st : {key_storage::rotated_once, key_storage::unrotated})
                stream_and_check_q8_0(s, f, st, 60, 400, {30, 63, 64, 123, 399});
        }
    }
    shape no_sinks;
    no_sinks.n_sink = 0;
    for (key_storage st : {key_storage::rotated_once, key_storage::unrotated})
        stream_and_check_q8_0(no_sinks, freqs_for(D), st, 60, 400, {0, 1, 58, 59, 60, 61, 399});
}

TEST_CASE("sink_cache: q8_0 restore gives the state of one chunk append", "[sink_cache][q8_0]") {
    shape s;
    const auto f = freqs_for(64);
    for (key_storage st : {key_storage::rotated_once, key_storage::unrotated}) {
        INFO(name_of(st));
        const sink_cache_options opt{s.kvh, s.D, s.n_sink, s.window, st, 60};
        for (std::int64_t next : {0, 2, 4, 30, 64, 65, 1000, 1234}) {
            sink_cache<block_q8_0> a(f, opt), b(f, opt);
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
            REQUIRE(a.rotation_offset() == b.rotation_offset());
            for (std::int64_t slot = 0; slot < a.slots(); ++slot) {
                REQUIRE(a.stream_position(slot) == b.stream_position(slot));
                REQUIRE(a.key_positions()[slot] == b.key_positions()[slot]);
                if (a.stream_position(slot) < 0) continue;
                for (int h = 0; h < s.kvh; ++h)
                    for (int blk = 0; blk < s.D / 32; ++blk) {
                        REQUIRE(same_block(a.keys().at(slot, h)[blk], b.keys().at(slot, h)[blk]));
                        REQUIRE(
                            same_block(a.values().at(slot, h)[blk], b.values().at(slot, h)[blk]));
                    }
            }
        }
    }
}

TEST_CASE("sink_cache: q8_0 combinations that are rejected name the field", "[sink_cache][q8_0]") {
    using ropekit::error;
    using ropekit_test::expect_error;
    using ropekit_test::thrown_field;
    const auto f64 = freqs_for(64), f80 = freqs_for(80), f48 = freqs_for(48);
    // head_dim not a multiple of 32: a row would end inside a block.
    expect_error<error>(
        [&] {
            sink_cache<block_q8_0>(f80, {2, 80, 4, 60});
        },
        "head_dim", "multiple of 32 with block_q8_0");
    expect_error<error>(
        [&] {
            sink_cache<block_q8_0>(f48, {2, 48, 4, 60});
        },
        "head_dim", "(got 48)");
    // rotated_at_slot would re-quantise each key at every eviction.
    expect_error<error>(
        [&] {
            sink_cache<block_q8_0>(f64, {2, 64, 4, 60, key_storage::rotated_at_slot});
        },
        "keys", "pitfall 20");
    // rotated_once: a key may live through one re-base at most.
    expect_error<error>(
        [&] {
            sink_cache<block_q8_0>(f64, {2, 64, 4, 60, key_storage::rotated_once, 59});
        },
        "rebase_interval", "must be >= window with block_q8_0 keys");
    expect_error<error>(
        [&] {
            sink_cache<block_q8_0>(f64, {2, 64, 4, 60, key_storage::rotated_once, 1});
        },
        "rebase_interval", "(got 1)");
    // What is accepted: the defaults (window 1020, re-base every 2^20), an interval equal to
    // the window, unrotated with any interval (it never re-bases), and the same options in
    // 16-bit storage.
    CHECK(thrown_field<error>([&] { sink_cache<block_q8_0>(f64, {2, 64}); }) == "no error");
    CHECK(thrown_field<error>([&] {
              sink_cache<block_q8_0>(f64, {2, 64, 4, 60, key_storage::rotated_once, 60});
          }) == "no error");
    CHECK(thrown_field<error>([&] {
              sink_cache<block_q8_0>(f64, {2, 64, 4, 60, key_storage::unrotated, 1});
          }) == "no error");
    CHECK(thrown_field<error>([&] {
              sink_cache<bfloat16>(f64, {2, 64, 4, 60, key_storage::rotated_at_slot, 1});
          }) == "no error");
    // The checks before them still come first: a bad n_kv_heads is named as before.
    CHECK(thrown_field<error>([&] {
              sink_cache<block_q8_0>(f80, {0, 80, 4, 60, key_storage::rotated_at_slot});
          }) == "n_kv_heads");
}

TEST_CASE("sink_cache: the decode split over 1 to 5 parts equals the definition", "[sink_cache]") {
    const auto f = freqs_for(64);
    const auto params = ropekit::attention_params::for_model(f);
    const double scale = double(params.softmax_scale());
    for (std::int64_t n_sink : {4, 0}) {
        for (key_storage st : all_storages) {
            INFO(name_of(st) << " n_sink " << n_sink);
            shape s;
            s.n_sink = n_sink;
            s.window = 300;  // five 64-key tiles: every part of up to five has keys
            sink_cache<float> cache(f, {s.kvh, s.D, s.n_sink, s.window, st, 11});
            sink_cache<bfloat16> cache16(f, {s.kvh, s.D, s.n_sink, s.window, st, 11});
            ropekit::sink_workspace<float> ws(cache, s.H);
            ropekit::sink_workspace<bfloat16> ws16(cache16, s.H);
            ropekit::sink_partial single(s.H, s.D);
            std::vector<ropekit::sink_partial> parts(5, ropekit::sink_partial(s.H, s.D));
            std::vector<float> o1(std::size_t(s.H * s.D)), o2(o1.size()), lse1(std::size_t(s.H)),
                lse2(lse1.size());
            // Only sinks, sinks and a few window keys, one key short of full, full, the first
            // evictions, many evictions and re-bases (c = n_sink + 299).
            for (std::int64_t until : {2, 4, 5, 70, 302, 303, 304, 305, 1000, 1789}) {
                while (cache.next_position() <= until) {
                    const std::int64_t j = cache.next_position();
                    const auto k = token(j, 1, s.kvh, s.D), v = token(j, 2, s.kvh, s.D);
                    cache.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));
                    cache16.append(view_of(k, s.kvh, s.D), view_of(v, s.kvh, s.D));
                }
                INFO("at " << until);
                const auto q = token(until, 0, s.H, s.D);
                auto p1 = params;
                p1.lse = lse1.data();
                ropekit::sink_attention(cache, view_of(q, s.H, s.D),
                                        head_view<float>::packed(o1.data(), 1, s.H, s.D), p1, ws,
                                        single);
                const auto ref = reference(s, f, scale, until);
                check_output<float>(s, o1, ref, scale, 1, "single", 0.0);
                for (int n_parts = 1; n_parts <= 5; ++n_parts) {
                    INFO(n_parts << " parts");
                    for (int pi = 0; pi < n_parts; ++pi)
                        ropekit::sink_attention_part(ropekit::default_arch{}, cache,
                                                     view_of(q, s.H, s.D), params, pi, n_parts, ws,
                                                     parts[std::size_t(pi)]);
                    ropekit::sink_attention_merge(ropekit::default_arch{}, parts.data(), n_parts,
                                                  head_view<float>::packed(o2.data(), 1, s.H, s.D),
                                                  lse2.data());
                    check_output<float>(s, o2, ref, scale, 1, "split", 0.0);
                    for (std::size_t e = 0; e < o1.size(); ++e)
                        CHECK(std::fabs(o1[e] - o2[e]) <= 1e-6f * (1.0f + std::fabs(o1[e])));
                    for (std::size_t h = 0; h < lse1.size(); ++h)
                        CHECK(std::fabs(lse1[h] - lse2[h]) <= 1e-6f * (1.0f + std::fabs(lse1[h])));
                    // 16-bit storage: the same split, against its own single-part result.
                    ropekit::sink_attention(cache16, view_of(q, s.H, s.D),
                                            head_view<float>::packed(o1.data(), 1, s.H, s.D),
                                            params, ws16, single);
                    for (int pi = 0; pi < n_parts; ++pi)
                        ropekit::sink_attention_part(ropekit::default_arch{}, cache16,
                                                     view_of(q, s.H, s.D), params, pi, n_parts,
                                                     ws16, parts[std::size_t(pi)]);
                    ropekit::sink_attention_merge(ropekit::default_arch{}, parts.data(), n_parts,
                                                  head_view<float>::packed(o2.data(), 1, s.H, s.D));
                    for (std::size_t e = 0; e < o1.size(); ++e)
                        CHECK(std::fabs(o1[e] - o2[e]) <= 1e-6f * (1.0f + std::fabs(o1[e])));
                    // (o1 is the float result again for the next part count.)
                    ropekit::sink_attention(cache, view_of(q, s.H, s.D),
                                            head_view<float>::packed(o1.data(), 1, s.H, s.D), p1,
                                            ws, single);
                }
            }
        }
    }
}

TEST_CASE("sink_cache: no allocation after construction, 16-bit and q8_0 storage",
          "[sink_cache][q8_0]") {
    shape s;
    const auto f = freqs_for(64);
    const auto params = ropekit::attention_params::for_model(f);
    auto run = [&](auto tag, key_storage st) {
        using KV = decltype(tag);
        INFO(name_of(st) << " " << ropekit::storage_name<KV>());
        // Re-based every 60 tokens past c = 63: 300 tokens go through four re-bases.
        sink_cache<KV> cache(f, {s.kvh, s.D, s.n_sink, s.window, st, 60});
        ropekit::sink_workspace<KV> ws(cache, s.H);
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
    };
    for (key_storage st : all_storages) run(bfloat16{}, st);
    for (key_storage st : {key_storage::rotated_once, key_storage::unrotated})
        run(block_q8_0{}, st);
}

TEST_CASE("sink_cache: which kernels the append and the decode run on", "[sink_cache]") {
    shape s;
    const auto f = freqs_for(64);
    const auto params = ropekit::attention_params::for_model(f);
    auto count = [](const char* kernel) {
        return std::count(sink_trace::kernels.begin(), sink_trace::kernels.end(), kernel);
    };
    // Attention entry points by role, not by name (attention_blocked /
    // position_rule_attention_blocked, or the problem-struct entry they forward to): any traced
    // attention kernel but the cache's own, and among them the position-rule ones.
    auto attention_kernels = [](bool rule) {
        return std::count_if(
            sink_trace::kernels.begin(), sink_trace::kernels.end(), [rule](const std::string& k) {
                return k.find("attention") != std::string::npos && k.rfind("sink_", 0) != 0 &&
                       (!rule || k.find("rule") != std::string::npos);
            });
    };
    for (key_storage st : all_storages) {
        INFO(name_of(st));
        sink_cache<float> cache(f, {s.kvh, s.D, s.n_sink, s.window, st, 7});
        ropekit::sink_workspace<float> ws(cache, s.H);
        ropekit::sink_partial part(s.H, s.D);
        std::vector<float> o(std::size_t(s.H * s.D));
        const auto k = chunk(0, 100, 1, s.kvh, s.D), v = chunk(0, 100, 2, s.kvh, s.D);
        cache.append(view_of(k, s.kvh, s.D).tokens_slice(0, 99),
                     view_of(v, s.kvh, s.D).tokens_slice(0, 99));
        const auto q = token(99, 0, s.H, s.D);
        sink_trace::kernels.clear();
        sink_trace::on = true;
        cache.append(view_of(k, s.kvh, s.D).tokens_slice(99, 100),
                     view_of(v, s.kvh, s.D).tokens_slice(99, 100));
        const auto appended = sink_trace::kernels;
        sink_trace::kernels.clear();
        ropekit::sink_attention(cache, view_of(q, s.H, s.D),
                                head_view<float>::packed(o.data(), 1, s.H, s.D), params, ws, part);
        sink_trace::on = false;
        // The append: the key by rope_store (raw keys are converted like the values, no
        // kernel); rotated_at_slot re-rotates the window first (an eviction), rotated_once only
        // at a re-base (99 - 63 = 36 is not a multiple of 7).
        const std::vector<std::string> want_append =
            st == key_storage::unrotated ? std::vector<std::string>{}
            : st == key_storage::rotated_at_slot
                ? std::vector<std::string>{"apply_rope", "rope_store"}
                : std::vector<std::string>{"rope_store"};
        CHECK(appended == want_append);
        // The decode: the query by rope_store, then one attention kernel for the part: the
        // streaming_llm rule's for rotated_once, the plain one for the others (unrotated after
        // one rope_store of the keys into the workspace).
        CHECK(count("sink_attention_part") == 1);
        CHECK(count("rope_store") == (st == key_storage::unrotated ? 2 : 1));
        CHECK(attention_kernels(false) == 1);
        CHECK(attention_kernels(true) == (st == key_storage::rotated_once ? 1 : 0));
    }
}

TEST_CASE("sink_cache: q8_0 restored at stream position 10^6 (the benchmark's setting)",
          "[sink_cache][q8_0]") {
    shape s;
    s.window = 1020;  // the defaults: n_sink 4, window 1020, a re-base every 2^20 tokens
    const auto f = freqs_for(64);
    const auto params = ropekit::attention_params::for_model(f);
    for (key_storage st : {key_storage::rotated_once, key_storage::unrotated}) {
        INFO(name_of(st));
        sink_cache_options opt;
        opt.n_kv_heads = s.kvh;
        opt.head_dim = s.D;
        opt.keys = st;
        sink_cache<block_q8_0> cache(f, opt);
        const std::int64_t next = 1000000;
        const auto sk = chunk(0, s.n_sink, 1, s.kvh, s.D), sv = chunk(0, s.n_sink, 2, s.kvh, s.D);
        const auto wk = chunk(next - s.window, s.window, 1, s.kvh, s.D),
                   wv = chunk(next - s.window, s.window, 2, s.kvh, s.D);
        cache.restore(view_of(sk, s.kvh, s.D), view_of(sv, s.kvh, s.D), view_of(wk, s.kvh, s.D),
                      view_of(wv, s.kvh, s.D), next);
        REQUIRE(cache.query_position() == (st == key_storage::rotated_once ? next - 1 : 1023));
        ropekit::sink_workspace<block_q8_0> ws(cache, s.H);
        ropekit::sink_partial part(s.H, s.D);
        std::vector<float> o(std::size_t(s.H * s.D));
        const auto q = token(next - 1, 0, s.H, s.D);
        ropekit::sink_attention(cache, view_of(q, s.H, s.D),
                                head_view<float>::packed(o.data(), 1, s.H, s.D), params, ws, part);
        const auto read = st == key_storage::unrotated
                              ? head_view<const block_q8_0>::head_major(ws.k_rotated.data(), s.kvh,
                                                                        cache.slots(), s.D)
                              : cache.keys();
        const double scale = double(params.softmax_scale());
        check_output<float>(s, o, reference_on_stored(s, cache, read, f, scale), scale, 1,
                            "restored at 10^6", 0.0);
    }
}
