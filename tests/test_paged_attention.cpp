// SPDX-License-Identifier: Apache-2.0
// Attention over paged K/V (paged_view.hpp) against the double reference over the same stored
// rows gathered into one contiguous view: every storage type, both page layouts and a shared
// K|V page, page sizes from 1 to 128 (and ones that are not a multiple of a tile), pages in
// shuffled order and shared between sequences, decode, prefill and chunked prefill, every mask,
// learned sinks, soft-cap, split keys, and the position rules. Unreferenced pool pages hold
// NaN, so a read outside the sequence's pages shows up in the outputs. What is paged-specific
// (cutting decode chunks at page ends, prefetch offsets, gathered tiles) is the same code on every
// instruction set, so this program is built once, with the default flags, like tests/test_*.cpp;
// the micro-kernels it reaches are checked per ISA by tests/isa/test_attention.cpp.
#include "test_support.hpp"

#include "isa/attention_checks.hpp"

#include <ropekit/attention.hpp>
#include <ropekit/attention_reference.hpp>
#include <ropekit/paged_view.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

using ropekit::attention_params;
using ropekit::head_range;
using ropekit::head_view;
using ropekit::key_range;
using ropekit::paged_view;
using ropekit::query_range;
using ropekit_test::check_lse;
using ropekit_test::compare;
using ropekit_test::errors;

enum class layout { token_major, head_major, kv_in_one_page };

/// One sequence's K and V in a page pool, and the same stored rows packed contiguously.
template <class KV>
struct paged_sequence {
    std::int64_t n_kv;
    int kv_heads, D, P;
    layout lay;
    std::int64_t pool_pages = 0;
    std::vector<KV> pool;                // K pages (and V pages, or K|V pages)
    std::vector<KV> vpool;               // V pages (separate pools unless kv_in_one_page)
    std::vector<std::int32_t> table;     // block table
    std::vector<KV> k_packed, v_packed;  // the same stored rows, [n_kv][kv_heads][row]

    static int row(int D) { return head_view<KV>::row_elements(D); }

    paged_sequence(std::int64_t n, int kvh, int d, int page, layout l, std::mt19937& rng,
                   const std::vector<std::int32_t>* shared_prefix = nullptr,
                   const paged_sequence* owner = nullptr)
        : n_kv(n), kv_heads(kvh), D(d), P(page), lay(l) {
        const std::int64_t blocks = (n + P - 1) / P;
        // A pool with spare pages (never referenced, NaN) around the sequence's pages.
        pool_pages = blocks + 5;
        const std::size_t page_elems = std::size_t(P) * std::size_t(kvh) * std::size_t(row(d));
        const std::size_t stride = l == layout::kv_in_one_page ? 2 * page_elems : page_elems;
        const KV poison = poison_value();
        if (owner) {  // the owner's pool, grown by this sequence's pages (a common prefix)
            pool = owner->pool;
            vpool = owner->vpool;
            pool_pages = owner->pool_pages + blocks;
            pool.resize(std::size_t(pool_pages) * stride, poison);
            if (l != layout::kv_in_one_page) vpool.resize(std::size_t(pool_pages) * stride, poison);
        } else {
            pool.assign(std::size_t(pool_pages) * stride, poison);
            if (l != layout::kv_in_one_page) vpool.assign(std::size_t(pool_pages) * stride, poison);
        }
        // Page ids: a shuffled subset of the pool (or the shared prefix's pages first).
        std::vector<std::int32_t> ids(static_cast<std::size_t>(pool_pages));
        std::iota(ids.begin(), ids.end(), 0);
        std::shuffle(ids.begin(), ids.end(), rng);
        table.assign(ids.begin(), ids.begin() + blocks);
        std::int64_t shared_blocks = 0;
        if (shared_prefix) {
            shared_blocks = std::min<std::int64_t>(blocks, std::int64_t(shared_prefix->size()));
            for (std::int64_t b = 0; b < shared_blocks; ++b)
                table[std::size_t(b)] = (*shared_prefix)[std::size_t(b)];
            // The rest must not touch any page of the owner.
            std::int64_t next = 0;
            for (std::int64_t b = shared_blocks; b < blocks; ++b) {
                while (owner && std::find(owner->table.begin(), owner->table.end(),
                                          ids[std::size_t(next)]) != owner->table.end())
                    ++next;
                table[std::size_t(b)] = ids[std::size_t(next++)];
            }
        }
        std::normal_distribution<float> nd(0.0f, 1.0f);
        const int r = row(d);
        k_packed.resize(std::size_t(n) * std::size_t(kvh) * std::size_t(r));
        v_packed.resize(k_packed.size());
        std::vector<float> tmp(static_cast<std::size_t>(d));
        for (std::int64_t t = 0; t < n; ++t) {
            for (int h = 0; h < kvh; ++h) {
                for (int pass = 0; pass < 2; ++pass) {
                    std::vector<KV>& packed = pass == 0 ? k_packed : v_packed;
                    KV* dst = packed.data() +
                              (std::size_t(t) * std::size_t(kvh) + std::size_t(h)) * std::size_t(r);
                    if (shared_blocks > 0 && t < shared_blocks * P && owner) {
                        // Shared prefix rows: what the owner stored.
                        const std::vector<KV>& src = pass == 0 ? owner->k_packed : owner->v_packed;
                        std::copy_n(
                            src.data() + (std::size_t(t) * std::size_t(kvh) + std::size_t(h)) *
                                             std::size_t(r),
                            r, dst);
                        continue;
                    }
                    for (auto& x : tmp) x = nd(rng);
                    store_row(tmp.data(), dst, d);
                }
            }
        }
        // Write every row into its page.
        for (std::int64_t t = 0; t < n; ++t)
            for (int h = 0; h < kvh; ++h) {
                const std::size_t off =
                    (std::size_t(t) * std::size_t(kvh) + std::size_t(h)) * std::size_t(r);
                std::copy_n(k_packed.data() + off, r, const_cast<KV*>(kview().at(t, h)));
                std::copy_n(v_packed.data() + off, r, const_cast<KV*>(vview().at(t, h)));
            }
    }

    static KV poison_value() {
        if constexpr (std::is_same_v<KV, ropekit::block_q8_0>) {
            ropekit::block_q8_0 b;
            ropekit::detail::set_q8_0_poisoned(b);
            return b;
        } else {
            return ropekit::from_float<KV>(std::numeric_limits<float>::quiet_NaN());
        }
    }
    static void store_row(const float* x, KV* dst, int d) {
        if constexpr (std::is_same_v<KV, ropekit::block_q8_0>)
            ropekit::quantize_q8_0(x, dst, d);
        else
            for (int i = 0; i < d; ++i) dst[i] = ropekit::from_float<KV>(x[i]);
    }

    paged_view<const KV> view(const KV* base) const {
        const int r = row(D);
        switch (lay) {
            case layout::token_major:
                return paged_view<const KV>::token_major(base, pool_pages, P, kv_heads, D,
                                                         table.data(), n_kv);
            case layout::head_major:
                return paged_view<const KV>::head_major(base, pool_pages, P, kv_heads, D,
                                                        table.data(), n_kv);
            default: {
                const std::ptrdiff_t page = std::ptrdiff_t(P) * kv_heads * r;
                return paged_view<const KV>::strided(base, pool_pages, P, kv_heads, D, table.data(),
                                                     n_kv, 2 * page, std::ptrdiff_t(kv_heads) * r,
                                                     r);
            }
        }
    }
    paged_view<const KV> kview() const { return view(pool.data()); }
    paged_view<const KV> vview() const {
        if (lay == layout::kv_in_one_page)
            return view(pool.data() + std::size_t(P) * std::size_t(kv_heads) * std::size_t(row(D)));
        return view(vpool.data());
    }
    head_view<const KV> k_contig() const {
        return ropekit::packed_view(static_cast<const KV*>(k_packed.data()), n_kv, kv_heads, D);
    }
    head_view<const KV> v_contig() const {
        return ropekit::packed_view(static_cast<const KV*>(v_packed.data()), n_kv, kv_heads, D);
    }
};

struct queries {
    std::vector<float> q, o, lse;
    std::int64_t n;
    int heads, D;
    queries(std::int64_t nq, int h, int d, std::mt19937& rng) : n(nq), heads(h), D(d) {
        std::normal_distribution<float> nd(0.0f, 1.0f);
        q.resize(std::size_t(nq) * std::size_t(h) * std::size_t(d));
        for (auto& x : q) x = nd(rng);
        o.assign(q.size(), std::numeric_limits<float>::quiet_NaN());
        lse.assign(std::size_t(nq) * std::size_t(h), std::numeric_limits<float>::quiet_NaN());
    }
    head_view<const float> qv() const { return ropekit::packed_view(q.data(), n, heads, D); }
    head_view<float> ov() { return ropekit::packed_view(o.data(), n, heads, D); }
};

template <class KV, class Mask>
void check_case(const paged_sequence<KV>& s, const Mask& mask, int ratio, std::int64_t n_q,
                bool sinks, float softcap, bool split, std::mt19937& rng) {
    const int heads = s.kv_heads * ratio;
    queries qs(n_q, heads, s.D, rng);
    std::vector<float> sink(static_cast<std::size_t>(heads));
    for (int h = 0; h < heads; ++h) sink[std::size_t(h)] = 0.3f * float(h % 4) - 0.5f;
    attention_params p = attention_params::with_softmax_scale(1.0f / std::sqrt(float(s.D)));
    p.sink_logits = sinks ? sink.data() : nullptr;
    p.logit_softcap = softcap;
    p.lse = qs.lse.data();
    if (!split) {
        ropekit::attention(qs.qv(), s.kview(), s.vview(), qs.ov(), mask, p);
    } else {
        // Two key ranges, the cut inside a page, merged by LSE; the learned sinks join once, in
        // the merge.
        const std::int64_t cut = s.n_kv / 2 + 1;
        std::vector<float> o2(qs.o.size()), l2(qs.lse.size());
        attention_params pa = p, pb = p;
        pa.sink_logits = pb.sink_logits = nullptr;
        pb.lse = l2.data();
        auto ws = std::make_unique<ropekit::attention_workspace>();
        ropekit::attention_blocked(ropekit::default_arch{}, qs.qv(), s.kview(), s.vview(), qs.ov(),
                                   mask, pa, head_range{0, heads}, query_range{0, n_q},
                                   key_range{0, cut}, *ws);
        ropekit::attention_blocked(ropekit::default_arch{}, qs.qv(), s.kview(), s.vview(),
                                   ropekit::packed_view(o2.data(), n_q, heads, s.D), mask, pb,
                                   head_range{0, heads}, query_range{0, n_q},
                                   key_range{cut, s.n_kv}, *ws);
        ropekit::merge_attention(
            qs.ov(), qs.lse.data(),
            ropekit::packed_view(static_cast<const float*>(o2.data()), n_q, heads, s.D), l2.data(),
            head_range{0, heads}, query_range{0, n_q}, p.sink_logits);
    }
    std::vector<double> ro, rl;
    ropekit::attention_reference(qs.qv(), s.k_contig(), s.v_contig(), mask, p, ro, rl);
    const errors e = compare(qs.o, ro);
    CHECK(e.max_rel <= 1e-5);
    CHECK(e.nmse <= 1e-10);
    check_lse(qs.lse, rl);
}

template <class KV>
void grid(std::mt19937& rng) {
    const int dims[] = {64, 128};
    const int pages[] = {1, 7, 16, 32, 64, 100, 128};
    const layout lays[] = {layout::token_major, layout::head_major, layout::kv_in_one_page};
    int i = 0;
    for (int P : pages) {
        for (layout l : lays) {
            ++i;
            const int D = dims[i % 2];
            const std::int64_t n_kv = 150 + 37 * (i % 5);
            INFO("page_size " << P << " layout " << int(l) << " D " << D << " n_kv " << n_kv);
            const paged_sequence<KV> s(n_kv, 2, D, P, l, rng);
            check_case<KV>(s, ropekit::causal_mask{}, 4, 1, false, 0.0f, false, rng);     // decode
            check_case<KV>(s, ropekit::causal_mask{}, 8, 2, true, 0.0f, true, rng);       // + split
            check_case<KV>(s, ropekit::causal_mask{}, 1, n_kv, false, 0.0f, false, rng);  // prefill
            check_case<KV>(s, ropekit::causal_mask{}, 4, 70, false, 30.0f, true, rng);    // chunked
            check_case<KV>(s, ropekit::sliding_window_mask{50}, 4, 70, false, 0.0f, false, rng);
            check_case<KV>(s, ropekit::sink_window_mask{4, 30}, 1, 1, true, 0.0f, false, rng);
            check_case<KV>(s, ropekit::full_mask{}, 2, 37, false, 0.0f, false, rng);
        }
    }
}

}  // namespace

TEST_CASE("paged attention equals the reference over the gathered rows: float",
          "[attention][paged]") {
    std::mt19937 rng(11);
    grid<float>(rng);
}
TEST_CASE("paged attention equals the reference over the gathered rows: bfloat16",
          "[attention][paged]") {
    std::mt19937 rng(12);
    grid<ropekit::bfloat16>(rng);
}
TEST_CASE("paged attention equals the reference over the gathered rows: half",
          "[attention][paged]") {
    std::mt19937 rng(13);
    grid<ropekit::half>(rng);
}
TEST_CASE("paged attention equals the reference over the gathered rows: q8_0",
          "[attention][paged][q8_0]") {
    std::mt19937 rng(14);
    grid<ropekit::block_q8_0>(rng);
}

TEST_CASE("paged attention: two sequences sharing their prefix pages", "[attention][paged]") {
    std::mt19937 rng(21);
    const paged_sequence<ropekit::bfloat16> a(200, 2, 128, 16, layout::token_major, rng);
    // b shares a's first 8 pages (128 tokens) and has its own pages after them.
    std::vector<std::int32_t> prefix(a.table.begin(), a.table.begin() + 8);
    const paged_sequence<ropekit::bfloat16> b(300, 2, 128, 16, layout::token_major, rng, &prefix,
                                              &a);
    CHECK(std::equal(prefix.begin(), prefix.end(), b.table.begin()));
    check_case<ropekit::bfloat16>(b, ropekit::causal_mask{}, 4, 1, false, 0.0f, false, rng);
    check_case<ropekit::bfloat16>(b, ropekit::causal_mask{}, 4, 172, false, 0.0f, false, rng);
    // a, read from the same pool as b (b's pages are new ones: a's rows are intact).
    paged_sequence<ropekit::bfloat16> a_in_b = a;
    a_in_b.pool = b.pool;
    a_in_b.vpool = b.vpool;
    a_in_b.pool_pages = b.pool_pages;
    check_case<ropekit::bfloat16>(a_in_b, ropekit::causal_mask{}, 4, 1, false, 0.0f, false, rng);
    check_case<ropekit::bfloat16>(a_in_b, ropekit::sliding_window_mask{64}, 4, 90, false, 0.0f,
                                  false, rng);
}

TEST_CASE("paged attention under the position rules equals the rule reference",
          "[attention][paged][rules]") {
    std::mt19937 rng(31);
    const int D = 64;
    const auto freqs = ropekit_test::make_freqs(D, D, ropekit::rope_layout::neox, 1.0f);
    for (int P : {1, 16, 100}) {
        const paged_sequence<float> s(181, 2, D, P, layout::head_major, rng);
        const auto table = ropekit::cos_sin_table::for_range(freqs, 0, s.n_kv + 1);
        auto run = [&](const auto& rule, const auto& mask, std::int64_t n_q) {
            queries qs(n_q, 8, D, rng);
            attention_params p = attention_params::for_model(freqs);
            p.lse = qs.lse.data();
            ropekit::position_rule_attention(qs.qv(), s.kview(), s.vview(), qs.ov(), mask, p, rule,
                                             freqs, table);
            std::vector<double> ro, rl;
            ropekit::position_rule_attention_reference(qs.qv(), s.k_contig(), s.v_contig(), mask, p,
                                                       rule, freqs, ro, rl);
            const errors e = compare(qs.o, ro);
            CHECK(e.max_rel <= 1e-5);
            CHECK(e.nmse <= 1e-10);
            check_lse(qs.lse, rl);
        };
        INFO("page_size " << P);
        run(ropekit::rerope{20}, ropekit::causal_mask{}, 70);
        run(ropekit::leaky_rerope{20, 4.0}, ropekit::causal_mask{}, 1);
        run(ropekit::self_extend{16, 4}, ropekit::causal_mask{}, 90);
        const ropekit::streaming_llm sl{4, 40};
        run(sl, sl.mask(), 70);
        run(sl, sl.mask(), 2);
    }
}

TEST_CASE("paged views: bad input is a named error before anything is read",
          "[attention][paged][errors]") {
    std::mt19937 rng(41);
    const paged_sequence<float> s(100, 2, 64, 16, layout::token_major, rng);
    queries qs(3, 4, 64, rng);
    const attention_params p = attention_params::with_softmax_scale(0.125f);
    auto field = [&](paged_view<const float> k) {
        return ropekit_test::thrown_field<ropekit::error>(
            [&] { ropekit::attention(qs.qv(), k, s.vview(), qs.ov(), ropekit::causal_mask{}, p); });
    };
    std::vector<std::int32_t> bad = s.table;
    bad[3] = std::int32_t(s.pool_pages);  // one past the pool
    auto k = s.kview();
    k.block_table = bad.data();
    CHECK(field(k) == "block_table");
    bad[3] = -1;
    CHECK(field(k) == "block_table");
    k = s.kview();
    k.page_size = 0;
    CHECK(field(k) == "paged_view");
    k = s.kview();
    k.page_stride = 1;  // pages overlap
    CHECK(field(k) == "paged_view");
    k = s.kview();
    k.block_table = nullptr;
    CHECK(field(k) == "paged_view");
    k = s.kview();
    k.tokens = 99;  // K and V disagree
    CHECK(field(k) == "v.tokens");
}
