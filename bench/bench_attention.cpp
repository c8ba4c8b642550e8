// SPDX-License-Identifier: Apache-2.0
// Blocked attention: prefill (causal), decode (split keys + LSE merge), StreamingLLM sinks +
// window at two cache lengths, ReRoPE / Leaky ReRoPE prefill, Gemma 2's soft-capped prefill
// and absorbed-MLA decode (q / k 576, v 512 aliasing k).
//
// Counters (measured in the same run):
//   GFLOP/s      4 * visible (i, j) pairs * head_dim * heads per second (masked pairs not counted)
//   of_fma_peak  FLOP/s / (threads * one core's fp32 FMA peak from bench_common.hpp)
//   over_read_bw (decode) K/V bytes per second / bandwidth of a read-only sweep of the same
//                K and V bytes by the same threads (each its key range), timed in every
//                iteration right after the decode call (bench_common.hpp read_sweep);
//                read_GB/s is that sweep
//   over_naive   speed-up per visible pair over a naive fp32 kernel (one score row per query,
//                softmax, weighted sum); the naive kernel runs on one head and at most 512
//                queries of the same shape, and its time is scaled per visible pair.
//   over_roofline (decode) K/V bytes per second / min(read sweep, the bytes per second at which
//                the FMA peak of the threads becomes the limit)
//   us_per_query (sinks + window) wall time per query row (all heads); the n32768_vs_n4096
//                case alternates both cache lengths per iteration: long_over_short
//   speedup_1t   (2-thread prefill) time of the whole problem on one thread / time on two,
//                both measured in each iteration, back to back
//   over_plain   (soft-capped prefill) its time / the plain prefill's on the same data, both
//                timed in every iteration back to back
// GCC 12 -Wmaybe-uninitialized false positives inside AVX-512 intrinsics (GCC PR 105593),
// inlined here from Eigen's packet math.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <benchmark/benchmark.h>
#include <Eigen/Dense>

#include <ropekit/attention.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bench_common.hpp"

namespace {

using ropekit::attention_params;
using ropekit::head_range;
using ropekit::key_range;
using ropekit::query_range;

template <class KV>
struct data {
    std::int64_t n_q, n_kv, H, KVH;
    int D;
    std::vector<float> q, o, lse;
    std::vector<KV> k, v;
    data(std::int64_t nq, std::int64_t nkv, std::int64_t h, std::int64_t kvh, int d)
        : n_q(nq), n_kv(nkv), H(h), KVH(kvh), D(d) {
        std::mt19937 rng(1);
        std::normal_distribution<float> nd;
        q.resize(std::size_t(nq * h * d));
        for (auto& x : q) x = nd(rng);
        const std::size_t values = std::size_t(nkv * kvh * d);
        if constexpr (std::is_same_v<KV, ropekit::block_q8_0>) {
            std::vector<float> f(values);
            k.resize(values / ropekit::q8_0_block_values);
            v.resize(k.size());
            for (auto& x : f) x = nd(rng);
            ropekit::quantize_q8_0(f.data(), k.data(), std::int64_t(values));
            for (auto& x : f) x = nd(rng);
            ropekit::quantize_q8_0(f.data(), v.data(), std::int64_t(values));
        } else {
            k.resize(values);
            v.resize(k.size());
            for (auto& x : k) x = ropekit::from_float<KV>(nd(rng));
            for (auto& x : v) x = ropekit::from_float<KV>(nd(rng));
        }
        o.resize(q.size());
        lse.resize(std::size_t(nq * h));
    }
    ropekit::head_view<const float> qv() const { return ropekit::packed_view(q.data(), n_q, H, D); }
    ropekit::head_view<const KV> kv(const std::vector<KV>& x) const {
        return ropekit::packed_view(x.data(), n_kv, KVH, D);
    }
    ropekit::head_view<float> ov() { return ropekit::packed_view(o.data(), n_q, H, D); }
};

/// The parameters every benchmark uses: softmax scale 1/sqrt(head_dim), default positions.
attention_params default_params(int head_dim) {
    attention_params p = attention_params::with_softmax_scale(1.0 / std::sqrt(double(head_dim)));
    return p;
}

/// One attention_workspace per thread (about 1 MB each, so on the heap).
std::vector<std::unique_ptr<ropekit::attention_workspace>> workspaces(int threads) {
    std::vector<std::unique_ptr<ropekit::attention_workspace>> ws;
    for (int i = 0; i < threads; ++i)
        ws.push_back(std::make_unique<ropekit::attention_workspace>());
    return ws;
}

/// Visible pairs per head for the default positions (queries are the last n_q keys).
template <class Mask>
double visible_pairs(const Mask& m, std::int64_t n_q, std::int64_t n_kv) {
    double pairs = 0;
    for (std::int64_t t = 0; t < n_q; ++t) {
        const std::int64_t qp = n_kv - n_q + t;
        for (std::int64_t j = 0; j < n_kv; ++j) pairs += m.visible(qp, qp, j, j) ? 1 : 0;
    }
    return pairs;
}

/// Naive fp32 attention of one head, one score row per query: seconds per visible pair.
template <class KV, class Mask>
double naive_seconds_per_pair(const Mask& m, std::int64_t n_q, std::int64_t n_kv, int D) {
    static std::mutex mu;
    static std::map<std::tuple<std::string, std::int64_t, std::int64_t>, double> cache;
    const auto key =
        std::make_tuple(std::string(typeid(Mask).name()) + ropekit::storage_name<KV>(), n_q, n_kv);
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    const std::int64_t nq = std::min<std::int64_t>(n_q, 512);  // the last nq queries
    data<KV> d(nq, n_kv, 1, 1, D);
    std::vector<float> s(static_cast<std::size_t>(n_kv));
    const float scale = 1.0f / std::sqrt(float(D));
    double pairs = 0;
    const double t = ropekit_bench::median_seconds(
        [&] {
            pairs = 0;
            for (std::int64_t i = 0; i < nq; ++i) {
                const std::int64_t qp = n_kv - nq + i;
                const float* qi = d.q.data() + i * D;
                float mx = -INFINITY;
                for (std::int64_t j = 0; j < n_kv; ++j) {
                    if (!m.visible(qp, qp, j, j)) {
                        s[j] = -INFINITY;
                        continue;
                    }
                    pairs += 1;
                    float acc = 0;
                    for (int c = 0; c < D; ++c)
                        acc += qi[c] * ropekit::stored_value(d.k.data(), j * D + c);
                    s[j] = acc * scale;
                    mx = std::max(mx, s[j]);
                }
                float den = 0;
                for (std::int64_t j = 0; j < n_kv; ++j) den += s[j] = std::exp(s[j] - mx);
                float* oi = d.o.data() + i * D;
                for (int c = 0; c < D; ++c) oi[c] = 0;
                for (std::int64_t j = 0; j < n_kv; ++j)
                    if (s[j] != 0)
                        for (int c = 0; c < D; ++c)
                            oi[c] += s[j] / den * ropekit::stored_value(d.v.data(), j * D + c);
            }
            benchmark::DoNotOptimize(d.o.data());
        },
        3);
    const double r = t / pairs;
    cache[key] = r;
    return r;
}

/// Wall-clock seconds per iteration of the timed loop (measured by the loop itself, so ratio
/// counters are plain numbers).
struct loop_timer {
    ropekit_bench::clock::time_point t0 = ropekit_bench::clock::now();
    double per_iteration(const benchmark::State& st) const {
        const double s = std::chrono::duration<double>(ropekit_bench::clock::now() - t0).count();
        return s / double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    }
};

/// Runs `share(ti, T)` (thread ti's part of a T-thread split) on `threads` threads per
/// iteration and returns the wall seconds per iteration. With threads > 1 each iteration also
/// runs the whole problem on one thread, untimed by the benchmark, and `speedup_1t` reports the
/// ratio of the two: measured back to back, so both see the same machine (the boost clock of
/// this shared host drifts by 20% between runs).
template <class F>
double timed_split(benchmark::State& st, int threads, F&& share) {
    ropekit_bench::thread_team team(threads);
    const std::function<void(int)> job = [&](int ti) { share(ti, threads); };
    double t_par = 0, t_one = 0;
    for (auto _ : st) {
        const auto a = ropekit_bench::clock::now();
        team.run(job);
        benchmark::ClobberMemory();
        const double t = std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
        st.SetIterationTime(t);
        t_par += t;
        if (threads > 1) {
            const auto b = ropekit_bench::clock::now();
            share(0, 1);
            benchmark::ClobberMemory();
            t_one += std::chrono::duration<double>(ropekit_bench::clock::now() - b).count();
        }
    }
    if (threads > 1) st.counters["speedup_1t"] = t_one / t_par;
    return t_par / double(std::max<benchmark::IterationCount>(st.iterations(), 1));
}

template <class KV, class Mask>
void set_counters(benchmark::State& st, double secs, const Mask& mask, std::int64_t n_q,
                  std::int64_t n_kv, std::int64_t H, int D, int threads, double pairs_per_head) {
    const double flops = 4.0 * pairs_per_head * D * double(H);
    st.counters["GFLOP/s"] = flops / secs * 1e-9;
    st.counters["of_fma_peak"] = flops / secs / (threads * ropekit_bench::fma_peak_flops());
    const double naive = naive_seconds_per_pair<KV>(mask, n_q, n_kv, D);
    st.counters["over_naive"] = naive * pairs_per_head * double(H) / secs;
}

/// Whole-problem run split over threads by heads (prefill) on (heads x query blocks).
template <class KV, class Mask>
void prefill(benchmark::State& st, Mask mask, std::int64_t n, std::int64_t H, std::int64_t KVH,
             int threads, std::int64_t n_q) {
    const int D = 128;
    data<KV> d(n_q, n, H, KVH, D);
    const attention_params p = default_params(D);
    const auto ws = workspaces(threads);
    const double secs = timed_split(st, threads, [&](int ti, int nt) {
        // Thread ti takes query heads [ti H / T, (ti + 1) H / T) (whole K/V groups), all
        // queries in one call: causal work is the same for every head.
        ropekit::attention_blocked(ropekit::default_arch{}, d.qv(), d.kv(d.k), d.kv(d.v), d.ov(),
                                   mask, p, head_range{H * ti / nt, H * (ti + 1) / nt},
                                   query_range{0, n_q}, key_range{0, n}, *ws[ti]);
    });
    set_counters<KV>(st, secs, mask, n_q, n, H, D, threads, visible_pairs(mask, n_q, n));
    if (n_q < n) st.counters["us_per_query"] = secs / double(n_q) * 1e6;
}

/// Sinks + window: the same n_q query rows (the last n_q positions) against caches of n_short
/// and n_long keys (the first n_short keys of the long one), alternating in every iteration so
/// both see the same machine state. Reports the long case's time and us_per_query, the short
/// one's us_per_query_short, and long_over_short, the ratio the cost-per-query goal is about.
template <class Mask>
void suffix_scaling(benchmark::State& st, Mask mask, std::int64_t n_short, std::int64_t n_long,
                    std::int64_t H, int threads, std::int64_t n_q) {
    const int D = 128;
    data<float> d(n_q, n_long, H, H, D);
    const attention_params p = default_params(D);
    const auto ws = workspaces(threads);
    ropekit_bench::thread_team team(threads);
    auto run = [&](std::int64_t n) {
        const auto a = ropekit_bench::clock::now();
        team.run([&](int ti) {
            ropekit::attention_blocked(
                ropekit::default_arch{}, d.qv(),
                ropekit::packed_view(static_cast<const float*>(d.k.data()), n, int(H), D),
                ropekit::packed_view(static_cast<const float*>(d.v.data()), n, int(H), D), d.ov(),
                mask, p, head_range{H * ti / threads, H * (ti + 1) / threads}, query_range{0, n_q},
                key_range{0, n}, *ws[ti]);
        });
        benchmark::ClobberMemory();
        return std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
    };
    double t_long = 0, t_short = 0;
    for (auto _ : st) {
        const double t = run(n_long);
        st.SetIterationTime(t);
        t_long += t;
        t_short += run(n_short);
    }
    const double iters = double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    st.counters["us_per_query"] = t_long / iters / double(n_q) * 1e6;
    st.counters["us_per_query_short"] = t_short / iters / double(n_q) * 1e6;
    st.counters["long_over_short"] = t_long / t_short;
}

template <class KV>
void decode(benchmark::State& st, std::int64_t n_kv, std::int64_t H, std::int64_t KVH,
            int threads) {
    const int D = 128;
    data<KV> d(1, n_kv, H, KVH, D);
    const attention_params p = default_params(D);
    const auto ws = workspaces(threads);
    std::vector<std::vector<float>> po(threads, std::vector<float>(d.o.size())),
        pl(threads, std::vector<float>(d.lse.size()));
    const ropekit::causal_mask mask;
    ropekit_bench::thread_team team(threads);
    const std::size_t row_bytes =
        std::size_t(KVH) * std::size_t(ropekit::head_view<const KV>::row_elements(D)) * sizeof(KV);
    // q8_0: the same decode on bf16 K/V, timed in every iteration (over_bf16).
    constexpr bool quantised = std::is_same_v<KV, ropekit::block_q8_0>;
    std::unique_ptr<data<ropekit::bfloat16>> d16;
    if (quantised) d16 = std::make_unique<data<ropekit::bfloat16>>(1, n_kv, H, KVH, D);
    auto run_decode = [&](const auto& dd) {
        team.run([&](int ti) {
            attention_params pp = p;
            pp.lse = pl[ti].data();
            ropekit::attention_blocked(ropekit::default_arch{}, dd.qv(), dd.kv(dd.k), dd.kv(dd.v),
                                       ropekit::packed_view(po[ti].data(), 1, H, D), mask, pp,
                                       head_range{0, H}, query_range{0, 1},
                                       ropekit::split_keys(n_kv, threads, ti), *ws[ti]);
        });
        for (int ti = 1; ti < threads; ++ti)
            ropekit::merge_attention(ropekit::packed_view(po[0].data(), 1, H, D), pl[0].data(),
                                     ropekit::packed_view(po[ti].data(), 1, H, D), pl[ti].data(),
                                     head_range{0, H}, query_range{0, 1});
        benchmark::ClobberMemory();
    };
    double t_decode = 0, t_sweep = 0, t_bf16 = 0;
    for (auto _ : st) {
        auto a = ropekit_bench::clock::now();
        run_decode(d);
        const double t = std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
        st.SetIterationTime(t);
        t_decode += t;
        if (quantised) {
            a = ropekit_bench::clock::now();
            run_decode(*d16);
            t_bf16 += std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
        }
        // The limit, back to back on the same machine state: the same threads read the same
        // K and V bytes (each its own key range) once, doing nothing else.
        a = ropekit_bench::clock::now();
        team.run([&](int ti) {
            const ropekit::key_range r = ropekit::split_keys(n_kv, threads, ti);
            const std::size_t off = std::size_t(r.begin) * row_bytes;
            const std::size_t len = std::size_t(r.size()) * row_bytes;
            ropekit_bench::read_sweep(reinterpret_cast<const char*>(d.k.data()) + off, len);
            ropekit_bench::read_sweep(reinterpret_cast<const char*>(d.v.data()) + off, len);
        });
        t_sweep += std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
    }
    const double iters = double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    const double secs = t_decode / iters;
    const double bytes = 2.0 * double(n_kv) * double(row_bytes);
    const double read_bw = bytes / (t_sweep / iters);
    if (quantised) st.counters["over_bf16"] = t_bf16 / t_decode;
    st.counters["GB/s"] = bytes / secs * 1e-9;
    st.counters["read_GB/s"] = read_bw * 1e-9;
    st.counters["over_read_bw"] = bytes / secs / read_bw;
    // The roofline: decode does 4 * head_dim FLOP per (key, query head) on 2 * head_dim stored
    // K/V values; with GQA the bytes per FLOP shrink, and a cache that fits in L3 can be read
    // faster than the FMA units consume it (bf16, 4 query heads per K/V head: 4 FLOP per byte).
    const double flops = 4.0 * double(n_kv) * D * double(H);
    const double fma_bw = bytes * threads * ropekit_bench::fma_peak_flops() / flops;
    st.counters["over_roofline"] = bytes / secs / std::min(read_bw, fma_bw);
    set_counters<KV>(st, secs, mask, 1, n_kv, H, D, threads, double(n_kv));
}

/// The same K/V as `d`, in a shuffled pool of token-major pages of `page_size` tokens (what a
/// serving engine's cache looks like), with its block table.
template <class KV>
struct paged_copy {
    std::vector<KV> k, v;
    std::vector<std::int32_t> table;
    std::int64_t pages = 0;
    int page_size;
    paged_copy(const data<KV>& d, int page) : page_size(page) {
        pages = (d.n_kv + page - 1) / page;
        const std::size_t row = std::size_t(ropekit::head_view<const KV>::row_elements(d.D));
        const std::size_t token = std::size_t(d.KVH) * row;
        k.resize(std::size_t(pages) * std::size_t(page) * token);
        v.resize(k.size());
        table.resize(std::size_t(pages));
        std::iota(table.begin(), table.end(), 0);
        std::shuffle(table.begin(), table.end(), std::mt19937(7));
        for (std::int64_t t = 0; t < d.n_kv; ++t) {
            const std::size_t dst = (std::size_t(table[std::size_t(t / page)]) * std::size_t(page) +
                                     std::size_t(t % page)) *
                                    token;
            std::copy_n(d.k.data() + std::size_t(t) * token, token, k.data() + dst);
            std::copy_n(d.v.data() + std::size_t(t) * token, token, v.data() + dst);
        }
    }
    ropekit::paged_view<const KV> view(const std::vector<KV>& x, const data<KV>& d) const {
        return ropekit::paged_view<const KV>::token_major(x.data(), pages, page_size, int(d.KVH),
                                                          d.D, table.data(), d.n_kv);
    }
};

/// Attention of n_q queries (the last n_q positions: decode with 1, a chunked prefill over a
/// cached prefix with more) over paged K/V, and over the same K/V contiguous, back to back in
/// every iteration: over_contiguous is the paged time over the contiguous one (the cost of
/// pages). Threads split heads for prefill and keys for decode.
template <class KV>
void paged(benchmark::State& st, std::int64_t n_kv, std::int64_t n_q, std::int64_t H,
           std::int64_t KVH, int page_size, int threads) {
    const int D = 128;
    data<KV> d(n_q, n_kv, H, KVH, D);
    const paged_copy<KV> pc(d, page_size);
    const attention_params p = default_params(D);
    const auto ws = workspaces(threads);
    std::vector<std::vector<float>> po(threads, std::vector<float>(d.o.size())),
        pl(threads, std::vector<float>(d.lse.size()));
    const ropekit::causal_mask mask;
    ropekit_bench::thread_team team(threads);
    auto run = [&](const auto& k, const auto& v) {
        team.run([&](int ti) {
            attention_params pp = p;
            pp.lse = pl[ti].data();
            if (n_q == 1)
                ropekit::attention_blocked(ropekit::default_arch{}, d.qv(), k, v,
                                           ropekit::packed_view(po[ti].data(), 1, H, D), mask, pp,
                                           head_range{0, H}, query_range{0, 1},
                                           ropekit::split_keys(n_kv, threads, ti), *ws[ti]);
            else
                ropekit::attention_blocked(ropekit::default_arch{}, d.qv(), k, v, d.ov(), mask, p,
                                           head_range{H * ti / threads, H * (ti + 1) / threads},
                                           query_range{0, n_q}, key_range{0, n_kv}, *ws[ti]);
        });
        if (n_q == 1)
            for (int ti = 1; ti < threads; ++ti)
                ropekit::merge_attention(ropekit::packed_view(po[0].data(), 1, H, D), pl[0].data(),
                                         ropekit::packed_view(po[ti].data(), 1, H, D),
                                         pl[ti].data(), head_range{0, H}, query_range{0, 1});
        benchmark::ClobberMemory();
    };
    double t_paged = 0, t_contig = 0;
    for (auto _ : st) {
        auto a = ropekit_bench::clock::now();
        run(pc.view(pc.k, d), pc.view(pc.v, d));
        const double t = std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
        st.SetIterationTime(t);
        t_paged += t;
        a = ropekit_bench::clock::now();
        run(d.kv(d.k), d.kv(d.v));
        t_contig += std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
    }
    const double iters = double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    st.counters["over_contiguous"] = t_paged / t_contig;
    const double pairs = n_q == 1 ? double(n_kv) : visible_pairs(mask, n_q, n_kv);
    set_counters<KV>(st, t_paged / iters, mask, n_q, n_kv, H, D, threads, pairs);
}

/// Runs `candidate` then `plain` once per benchmark iteration on the team; the iteration time is
/// the candidate's. Returns the two summed times (seconds), so a same-run ratio can be reported.
template <class Team>
std::pair<double, double> time_against_plain(benchmark::State& st, Team& team,
                                             const std::function<void(int)>& candidate,
                                             const std::function<void(int)>& plain) {
    double t_candidate = 0, t_plain = 0;
    for (auto _ : st) {
        const auto a = ropekit_bench::clock::now();
        team.run(candidate);
        benchmark::ClobberMemory();
        const double t = std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
        st.SetIterationTime(t);
        t_candidate += t;
        const auto b = ropekit_bench::clock::now();
        team.run(plain);
        benchmark::ClobberMemory();
        t_plain += std::chrono::duration<double>(ropekit_bench::clock::now() - b).count();
    }
    return {t_candidate, t_plain};
}

/// Soft-capped causal prefill (Gemma 2: attn_logit_softcapping 50) against the plain one on the
/// same data and threads, both timed in every iteration back to back: over_plain = capped time
/// / plain time (issue 11 goal: <= 1.3).
template <class KV>
void softcap_prefill(benchmark::State& st, std::int64_t n, std::int64_t H, std::int64_t KVH,
                     int threads) {
    const int D = 128;
    data<KV> d(n, n, H, KVH, D);
    const attention_params plain = default_params(D);
    attention_params capped = plain;
    capped.logit_softcap = 50.0f;
    const ropekit::causal_mask mask;
    const auto ws = workspaces(threads);
    ropekit_bench::thread_team team(threads);
    auto job = [&](const attention_params& p) {
        return std::function<void(int)>([&, p](int ti) {
            ropekit::attention_blocked(ropekit::default_arch{}, d.qv(), d.kv(d.k), d.kv(d.v),
                                       d.ov(), mask, p,
                                       head_range{H * ti / threads, H * (ti + 1) / threads},
                                       query_range{0, n}, key_range{0, n}, *ws[ti]);
        });
    };
    const std::function<void(int)> capped_job = job(capped), plain_job = job(plain);
    const auto [t_cap, t_plain] = time_against_plain(st, team, capped_job, plain_job);
    st.counters["over_plain"] = t_cap / t_plain;
    const double secs = t_cap / double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    set_counters<KV>(st, secs, mask, n, n, H, D, threads, visible_pairs(mask, n, n));
}

/// Absorbed MLA decode (DeepSeek V2 / V3): one latent K/V head of 576 channels (the 512-channel
/// latent c_kv then the 64 rotary channels) shared by H query heads, 1 query token, and V a
/// view of the first 512 channels of the same rows, as the latent cache stores it. Threads
/// split the keys (split_keys) and the partials are merged by LSE. The bytes counted are the
/// bytes actually read: the K rows (n_kv x 576 bf16); V's reads hit the same lines. The read
/// sweep reads exactly those bytes with the same threads, back to back in every iteration.
/// Decode does 2 * (576 + 512) FLOP per (key, q head) on 1152 bytes, so beyond a couple of
/// heads it is bound by the FMA peak, not by memory: over_roofline says how close it is to
/// min(read sweep, FMA peak).
void mla_decode(benchmark::State& st, std::int64_t n_kv, int H, int threads) {
    using KV = ropekit::bfloat16;
    const int DK = 576, DV = 512;
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    std::vector<float> q(std::size_t(H) * DK);
    for (auto& x : q) x = nd(rng);
    std::vector<KV> kc(std::size_t(n_kv) * DK);
    for (auto& x : kc) x = ropekit::from_float<KV>(nd(rng));
    const auto qv = ropekit::packed_view(static_cast<const float*>(q.data()), 1, H, DK);
    const auto kv = ropekit::packed_view(static_cast<const KV*>(kc.data()), n_kv, 1, DK);
    const auto vv = ropekit::head_view<const KV>::padded(kc.data(), n_kv, 1, DV, DK);
    const attention_params p = default_params(DK);
    const auto ws = workspaces(threads);
    std::vector<std::vector<float>> po(threads, std::vector<float>(std::size_t(H) * DV)),
        pl(threads, std::vector<float>(std::size_t(H)));
    const ropekit::causal_mask mask;
    ropekit_bench::thread_team team(threads);
    const std::size_t row_bytes = std::size_t(DK) * sizeof(KV);
    double t_decode = 0, t_sweep = 0;
    for (auto _ : st) {
        auto a = ropekit_bench::clock::now();
        team.run([&](int ti) {
            attention_params pp = p;
            pp.lse = pl[ti].data();
            ropekit::attention_blocked(ropekit::default_arch{}, qv, kv, vv,
                                       ropekit::packed_view(po[ti].data(), 1, H, DV), mask, pp,
                                       head_range{0, H}, query_range{0, 1},
                                       ropekit::split_keys(n_kv, threads, ti), *ws[ti]);
        });
        for (int ti = 1; ti < threads; ++ti)
            ropekit::merge_attention(
                ropekit::packed_view(po[0].data(), 1, H, DV), pl[0].data(),
                ropekit::packed_view(static_cast<const float*>(po[ti].data()), 1, H, DV),
                pl[ti].data(), head_range{0, H}, query_range{0, 1});
        benchmark::ClobberMemory();
        const double t = std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
        st.SetIterationTime(t);
        t_decode += t;
        a = ropekit_bench::clock::now();
        team.run([&](int ti) {
            const ropekit::key_range r = ropekit::split_keys(n_kv, threads, ti);
            ropekit_bench::read_sweep(
                reinterpret_cast<const char*>(kc.data()) + std::size_t(r.begin) * row_bytes,
                std::size_t(r.size()) * row_bytes);
        });
        t_sweep += std::chrono::duration<double>(ropekit_bench::clock::now() - a).count();
    }
    const double iters = double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    const double secs = t_decode / iters;
    const double bytes = double(n_kv) * double(row_bytes);
    const double read_bw = bytes / (t_sweep / iters);
    st.counters["q_heads"] = H;
    st.counters["GB/s"] = bytes / secs * 1e-9;
    st.counters["read_GB/s"] = read_bw * 1e-9;
    st.counters["over_read_bw"] = bytes / secs / read_bw;
    const double flops = 2.0 * double(n_kv) * (DK + DV) * double(H);
    st.counters["GFLOP/s"] = flops / secs * 1e-9;
    st.counters["of_fma_peak"] = flops / secs / (threads * ropekit_bench::fma_peak_flops());
    const double fma_bw = bytes * threads * ropekit_bench::fma_peak_flops() / flops;
    st.counters["over_roofline"] = bytes / secs / std::min(read_bw, fma_bw);
}

/// The alternative tile arithmetic: the same blocked online softmax with each tile product an
/// Eigen GEMM (S = Q_b K_t^T, O = diag(alpha) O + P V_t), fp32, causal, 64 x 64 tiles.
void eigen_prefill(benchmark::State& st, std::int64_t n, std::int64_t H) {
    using mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using cmap = Eigen::Map<const mat, 0, Eigen::OuterStride<>>;
    const int D = 128, B = 64;
    data<float> d(n, n, H, H, D);
    const float scale = 1.0f / std::sqrt(float(D));
    mat S(B, B), O(B, D);
    Eigen::VectorXf m(B), l(B), alpha(B);
    loop_timer timer;
    for (auto _ : st) {
        for (std::int64_t h = 0; h < H; ++h)
            for (std::int64_t t0 = 0; t0 < n; t0 += B) {
                const int nr = int(std::min<std::int64_t>(B, n - t0));
                const cmap Q(d.q.data() + (t0 * H + h) * D, nr, D, Eigen::OuterStride<>(H * D));
                O.setZero();
                m.setConstant(-INFINITY);
                l.setZero();
                for (std::int64_t c0 = 0; c0 <= t0 + nr - 1; c0 += B) {
                    const int nc = int(std::min<std::int64_t>(B, t0 + nr - c0));
                    const cmap K(d.k.data() + (c0 * H + h) * D, nc, D, Eigen::OuterStride<>(H * D));
                    const cmap V(d.v.data() + (c0 * H + h) * D, nc, D, Eigen::OuterStride<>(H * D));
                    auto s = S.topLeftCorner(nr, nc);
                    s.noalias() = (Q * K.transpose()) * scale;
                    for (int r = 0; r < nr; ++r) {
                        for (int c = 0; c < nc; ++c)
                            if (c0 + c > t0 + r) s(r, c) = -INFINITY;
                        const float mn = std::max(m[r], s.row(r).maxCoeff());
                        alpha[r] = std::exp(m[r] - mn);
                        s.row(r) = (s.row(r).array() - mn).exp().matrix();
                        l[r] = l[r] * alpha[r] + s.row(r).sum();
                        m[r] = mn;
                    }
                    O.topRows(nr) = alpha.head(nr).asDiagonal() * O.topRows(nr);
                    O.topRows(nr).noalias() += s * V;
                }
                for (int r = 0; r < nr; ++r)
                    for (int c = 0; c < D; ++c)
                        d.o[std::size_t(((t0 + r) * H + h) * D + c)] = O(r, c) / l[r];
            }
        benchmark::ClobberMemory();
    }
    set_counters<float>(st, timer.per_iteration(st), ropekit::causal_mask{}, n, n, H, D, 1,
                        visible_pairs(ropekit::causal_mask{}, n, n));
}

/// Frequencies base 10000 over the whole head (the rules' benchmarks rotate with these).
ropekit::rope_frequencies base_freqs(int D) {
    ropekit::rope_frequencies f;
    f.head_dim = D;
    f.rotary_dim = D;
    for (int i = 0; i < D / 2; ++i) f.inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / D)));
    return f;
}

template <class KV, class Rule>
void rerope_prefill(benchmark::State& st, Rule rule, std::int64_t n, std::int64_t H, int threads) {
    const int D = 128;
    data<KV> d(n, n, H, H, D);
    const ropekit::rope_frequencies f = base_freqs(D);
    const auto table = ropekit::cos_sin_table::for_range(f, 0, n);
    const attention_params p = attention_params::for_model(f);
    const ropekit::causal_mask mask;
    const auto ws = workspaces(threads);
    const double secs = timed_split(st, threads, [&](int ti, int nt) {
        ropekit::rerope_attention_blocked(ropekit::default_arch{}, d.qv(), d.kv(d.k), d.kv(d.v),
                                          d.ov(), mask, p, rule, f, table,
                                          head_range{H * ti / nt, H * (ti + 1) / nt},
                                          query_range{0, n}, key_range{0, n}, *ws[ti]);
    });
    set_counters<KV>(st, secs, mask, n, n, H, D, threads, visible_pairs(mask, n, n));
}

/// A position rule's prefill (n queries, causal suffix positions) against the plain kernel on
/// the same shape and the mask it is compared with, both timed in every iteration back to back
/// (the host's clock drifts between runs): counter `ratio_name` = rule time / plain time.
/// StreamingLLM gets q/k as an engine stores them (rotated; random data here either way), like
/// the plain sinks + window prefill; Self-Extend rotates inside the kernel.
template <class KV, class Rule, class Mask, class PlainMask>
void rule_prefill(benchmark::State& st, Rule rule, Mask mask, PlainMask plain_mask, std::int64_t n,
                  std::int64_t H, int threads, const char* ratio_name) {
    const int D = 128;
    data<KV> d(n, n, H, H, D);
    const ropekit::rope_frequencies f = base_freqs(D);
    const auto table = ropekit::cos_sin_table::for_range(f, 0, n);
    const attention_params p = attention_params::for_model(f);
    const auto ws = workspaces(threads);
    ropekit_bench::thread_team team(threads);
    const std::function<void(int)> rule_job = [&](int ti) {
        ropekit::position_rule_attention_blocked(
            ropekit::default_arch{}, d.qv(), d.kv(d.k), d.kv(d.v), d.ov(), mask, p, rule, f, table,
            head_range{H * ti / threads, H * (ti + 1) / threads}, query_range{0, n},
            key_range{0, n}, *ws[ti]);
    };
    const std::function<void(int)> plain_job = [&](int ti) {
        ropekit::attention_blocked(ropekit::default_arch{}, d.qv(), d.kv(d.k), d.kv(d.v), d.ov(),
                                   plain_mask, p,
                                   head_range{H * ti / threads, H * (ti + 1) / threads},
                                   query_range{0, n}, key_range{0, n}, *ws[ti]);
    };
    const auto [t_rule, t_plain] = time_against_plain(st, team, rule_job, plain_job);
    st.counters[ratio_name] = t_rule / t_plain;
    const double secs = t_rule / double(std::max<benchmark::IterationCount>(st.iterations(), 1));
    set_counters<KV>(st, secs, mask, n, n, H, D, threads, visible_pairs(mask, n, n));
}

/// q heads per latent K/V head in the MLA decode benchmark attention/decode/mla/...: 2, the
/// largest count at which this decode is still bound by memory on Zen 5 (2 x 2176 FLOP per
/// 1152-byte key, 3.8 FLOP/byte, against a machine balance of about 4 FLOP/byte at the
/// kernel's FMA efficiency). DeepSeek-V2-Lite (16 heads) and V3 (128) are compute-bound:
/// attention/decode/mla_h16 and mla_h128, whose figure of merit is of_fma_peak.
constexpr int mla_heads = 2;

template <class KV>
std::string name(const char* kind, const std::string& mask, const std::string& sizes, int threads) {
    return std::string("attention/") + kind + "/" + mask + "/" + ropekit::storage_name<KV>() + "/" +
           sizes + "/t" + std::to_string(threads);
}

template <class KV>
void register_all() {
    using ropekit::bfloat16;
    for (int th : {1, 2}) {
        struct shape {
            std::int64_t n, H, KVH;
        };
        for (shape s : {shape{1024, 32, 32}, shape{1024, 8, 8}, shape{1024, 32, 8},
                        shape{4096, 32, 32}, shape{4096, 32, 8}}) {
            const std::string sz = "n" + std::to_string(s.n) + "/h" + std::to_string(s.H) +
                                   (s.KVH != s.H ? "kv" + std::to_string(s.KVH) : "");
            auto* b = benchmark::RegisterBenchmark(
                name<KV>("prefill", "causal", sz, th).c_str(), [=](benchmark::State& st) {
                    prefill<KV>(st, ropekit::causal_mask{}, s.n, s.H, s.KVH, th, s.n);
                });
            b->UseManualTime()->Unit(benchmark::kMillisecond);
            // n = 4096 with 32 heads is 137 GFLOP (4 * pairs * head_dim * heads): one iteration
            // per run keeps the whole binary near 2 minutes.
            if (s.n >= 4096) b->Iterations(1);
        }
        // Gemma 2's soft-cap on the plain prefill's n = 1024 shapes and n4096/h8 (goal: <= 1.3x
        // the plain prefill, over_plain).
        for (shape s :
             {shape{1024, 32, 32}, shape{1024, 8, 8}, shape{1024, 32, 8}, shape{4096, 8, 8}}) {
            const std::string sz = "n" + std::to_string(s.n) + "/h" + std::to_string(s.H) +
                                   (s.KVH != s.H ? "kv" + std::to_string(s.KVH) : "");
            benchmark::RegisterBenchmark(
                name<KV>("prefill", "softcap50", sz, th).c_str(),
                [=](benchmark::State& st) { softcap_prefill<KV>(st, s.n, s.H, s.KVH, th); })
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
        }
        for (std::int64_t n : {4096, 32768}) {
            benchmark::RegisterBenchmark(
                name<KV>("decode", "causal", "q1/n" + std::to_string(n) + "/h32kv8", th).c_str(),
                [=](benchmark::State& st) { decode<KV>(st, n, 32, 8, th); })
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond);
            if (std::is_same_v<KV, bfloat16>) {
                // 8-bit K/V (ggml's q8_0 blocks) beside bf16: over_bf16 is tokens/s over bf16's
                // on the same shape, both timed in every iteration.
                using q8 = ropekit::block_q8_0;
                benchmark::RegisterBenchmark(
                    name<q8>("decode", "causal", "q1/n" + std::to_string(n) + "/h32kv8", th)
                        .c_str(),
                    [=](benchmark::State& st) { decode<q8>(st, n, 32, 8, th); })
                    ->UseManualTime()
                    ->Unit(benchmark::kMicrosecond);
            }
        }
        // Paged K/V (paged_view): decode and a chunked prefill over a cached prefix, pages of
        // 16 tokens in shuffled order, against the same K/V contiguous (over_contiguous).
        benchmark::RegisterBenchmark(
            name<KV>("decode", "paged_p16", "q1/n32768/h32kv8", th).c_str(),
            [=](benchmark::State& st) { paged<KV>(st, 32768, 1, 32, 8, 16, th); })
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(
            name<KV>("prefill", "paged_p16_chunked", "new512/prefix4096/h32kv8", th).c_str(),
            [=](benchmark::State& st) { paged<KV>(st, 4608, 512, 32, 8, 16, th); })
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
        if (std::is_same_v<KV, bfloat16>) {
            // Absorbed MLA decode: MLA_HEADS q heads on the one latent head (see mla_decode);
            // mla_h16 / mla_h128 are DeepSeek-V2-Lite's and V3's full head counts, h1..h4 where
            // decode is still bound by memory rather than by the FMA peak.
            benchmark::RegisterBenchmark(
                name<KV>("decode", "mla", "q1/n32768", th).c_str(),
                [=](benchmark::State& st) { mla_decode(st, 32768, mla_heads, th); })
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond);
            for (int h : {1, 2, 4, 16, 128})
                benchmark::RegisterBenchmark(
                    name<KV>("decode", "mla_h" + std::to_string(h), "q1/n32768", th).c_str(),
                    [=](benchmark::State& st) { mla_decode(st, 32768, h, th); })
                    ->UseManualTime()
                    ->Unit(benchmark::kMicrosecond);
        }
        if (std::is_same_v<KV, float>) {
            for (std::int64_t n : {4096, 32768}) {
                benchmark::RegisterBenchmark(
                    name<KV>("suffix512", "sinks4_window1020", "n" + std::to_string(n) + "/h8", th)
                        .c_str(),
                    [=](benchmark::State& st) {
                        prefill<KV>(st, ropekit::sink_window_mask{4, 1020}, n, 8, 8, th, 512);
                    })
                    ->UseManualTime()
                    ->Unit(benchmark::kMillisecond);
            }
            benchmark::RegisterBenchmark(
                name<KV>("suffix512", "sinks4_window1020", "n32768_vs_n4096/h8", th).c_str(),
                [=](benchmark::State& st) {
                    suffix_scaling(st, ropekit::sink_window_mask{4, 1020}, 4096, 32768, 8, th, 512);
                })
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark(name<KV>("prefill", "causal", "n4096/h8", th).c_str(),
                                         [=](benchmark::State& st) {
                                             prefill<KV>(st, ropekit::causal_mask{}, 4096, 8, 8, th,
                                                         4096);
                                         })
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark(name<KV>("prefill", "rerope_w512", "n4096/h8", th).c_str(),
                                         [=](benchmark::State& st) {
                                             rerope_prefill<KV>(st, ropekit::rerope{512}, 4096, 8,
                                                                th);
                                         })
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
            // Goals (issue 10): StreamingLLM <= 1.1x the plain sinks + window prefill,
            // Self-Extend (w 1024, G 8) <= 1.3x plain causal.
            benchmark::RegisterBenchmark(name<KV>("prefill", "streaming", "n4096/h8", th).c_str(),
                                         [=](benchmark::State& st) {
                                             const ropekit::streaming_llm rule{4, 1020};
                                             rule_prefill<KV>(st, rule, rule.mask(),
                                                              ropekit::sink_window_mask{4, 1020},
                                                              4096, 8, th, "over_mask");
                                         })
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark(
                name<KV>("prefill", "self_extend", "n4096/h8", th).c_str(),
                [=](benchmark::State& st) {
                    rule_prefill<KV>(st, ropekit::self_extend{1024, 8}, ropekit::causal_mask{},
                                     ropekit::causal_mask{}, 4096, 8, th, "over_causal");
                })
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
            benchmark::RegisterBenchmark(
                name<KV>("prefill", "leaky_rerope_w512_k16", "n4096/h8", th).c_str(),
                [=](benchmark::State& st) {
                    rerope_prefill<KV>(st, ropekit::leaky_rerope{512, 16.0}, 4096, 8, th);
                })
                ->UseManualTime()
                ->Unit(benchmark::kMillisecond);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::RegisterBenchmark("attention/prefill_eigen_tiles/causal/f32/n1024/h8/t1",
                                 [](benchmark::State& st) { eigen_prefill(st, 1024, 8); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    register_all<float>();
    register_all<ropekit::bfloat16>();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::AddCustomContext("fma_peak_GFLOPs_per_core",
                                std::to_string(ropekit_bench::fma_peak_flops() * 1e-9));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
