// SPDX-License-Identifier: Apache-2.0
// Shared by the attention tests: error metrics against the double reference and random
// problems with K/V rounded to their storage type.
#pragma once

#include <ropekit/attention.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "catch.hpp"

namespace attention_test {

using ropekit::head_view;

/// Error metrics of a result against the double reference: normwise maximum relative error
/// max|a - b| / max|b| and NMSE sum (a - b)^2 / sum b^2.
struct errors {
    double max_rel = 0, nmse = 0;
};
inline errors compare(const std::vector<float>& got, const std::vector<double>& ref) {
    double max_abs = 0, max_ref = 0, se = 0, sr = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const double d = double(got[i]) - ref[i];
        max_abs = std::max(max_abs, std::abs(d));
        max_ref = std::max(max_ref, std::abs(ref[i]));
        se += d * d;
        sr += ref[i] * ref[i];
    }
    errors e;
    e.max_rel = max_ref > 0 ? max_abs / max_ref : max_abs;
    e.nmse = sr > 0 ? se / sr : se;
    return e;
}

inline void check_lse(const std::vector<float>& got, const std::vector<double>& ref) {
    for (std::size_t i = 0; i < ref.size(); ++i) {
        if (std::isinf(ref[i])) {
            REQUIRE(got[i] == float(ref[i]));
        } else {
            REQUIRE(std::abs(double(got[i]) - ref[i]) <= 1e-5 * std::max(1.0, std::abs(ref[i])));
        }
    }
}

/// Random Q/K/V in dense [tokens][heads][head_dim] layout, K/V rounded to storage KV.
template <class KV>
struct problem {
    std::int64_t n_q, n_kv, heads, kv_heads;
    int D;
    std::vector<float> q, kf, vf;  // float values (kf/vf before rounding to KV)
    std::vector<KV> k, v;          // stored K/V
    std::vector<float> o, lse;

    problem(std::int64_t nq, std::int64_t nkv, std::int64_t h, std::int64_t kvh, int d,
            unsigned seed, float q_scale = 1.0f)
        : n_q(nq), n_kv(nkv), heads(h), kv_heads(kvh), D(d) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        q.resize(std::size_t(nq * h * d));
        kf.resize(std::size_t(nkv * kvh * d));
        vf.resize(kf.size());
        for (auto& x : q) x = nd(rng) * q_scale;
        for (auto& x : kf) x = nd(rng);
        for (auto& x : vf) x = nd(rng);
        for (float x : kf) k.push_back(ropekit::from_float<KV>(x));
        for (float x : vf) v.push_back(ropekit::from_float<KV>(x));
        o.assign(q.size(), std::numeric_limits<float>::quiet_NaN());
        lse.assign(std::size_t(nq * h), std::numeric_limits<float>::quiet_NaN());
    }
    head_view<const float> qv() const { return ropekit::packed_view(q.data(), n_q, heads, D); }
    head_view<const KV> kv_k() const { return ropekit::packed_view(k.data(), n_kv, kv_heads, D); }
    head_view<const KV> kv_v() const { return ropekit::packed_view(v.data(), n_kv, kv_heads, D); }
    head_view<const float> kf_view() const {
        return ropekit::packed_view(kf.data(), n_kv, kv_heads, D);
    }
    head_view<const float> vf_view() const {
        return ropekit::packed_view(vf.data(), n_kv, kv_heads, D);
    }
    head_view<float> ov() { return ropekit::packed_view(o.data(), n_q, heads, D); }
};

}  // namespace attention_test
