// SPDX-License-Identifier: Apache-2.0
// Scaling methods: torch-made golden values, an independent long-double transcription of HF's
// formulas, the analytic properties of each method, worked numbers from the papers/configs, and
// one test per validation error. Also ReRoPE / Leaky ReRoPE (include/ropekit/position_rules.hpp).
#include "test_support.hpp"

#include <ropekit/position_rules.hpp>
#include <ropekit/scaling.hpp>
#include <ropekit/table.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

using namespace ropekit;

namespace {

/// Distance in float32 ulps between two finite floats of the same sign.
std::int64_t ulp_distance(float a, float b) {
    std::int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    if ((ia < 0) != (ib < 0)) return a == b ? 0 : std::numeric_limits<std::int64_t>::max();
    return std::llabs(std::int64_t(ia) - std::int64_t(ib));
}

std::int64_t max_ulp(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    std::int64_t m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, ulp_distance(a[i], b[i]));
    return m;
}

rope_params geometry(int head_dim, int rotary_dim, double base) {
    rope_params p;
    p.base = base;
    p.head_dim = head_dim;
    p.rotary_dim = rotary_dim;
    return p;
}

/// Runs `f`, requires a ropekit::error naming `field` whose message contains `value_text`.
void expect_error(const std::function<void()>& f, const std::string& field,
                  const std::string& value_text) {
    ropekit_test::expect_error<ropekit::error>(f, field, value_text);
    ropekit_test::expect_error<ropekit::error>(f, field, field);  // the message names the field
}

// ---------------------------------------------------------------------------------------------
// Independent reference: HF's formulas in long double, rounding to float32 exactly where HF's
// tensors are float32 (r32) and nowhere else. Written from shared/FORMULAS.md, separately from
// include/ropekit/scaling.hpp (different arithmetic type, no shared helpers).
using ld = long double;
float r32(ld x) {
    return float(x);
}

std::vector<float> ref_pos_freqs(ld base, int dim) {
    std::vector<float> out;
    const float b = r32(base);
    for (int i = 0; i < dim / 2; ++i) {
        const float e = r32(ld(2 * i) / ld(dim));
        out.push_back(r32(std::pow(ld(b), ld(e))));
    }
    return out;
}
std::vector<float> ref_default(ld base, int dim) {
    auto p = ref_pos_freqs(base, dim);
    for (float& v : p) v = r32(1.0L / v);
    return p;
}
std::vector<float> ref_linear(ld base, int dim, ld factor) {
    auto inv = ref_default(base, dim);
    for (float& v : inv) v = r32(ld(v) / ld(r32(factor)));
    return inv;
}
ld ntk_base(ld base, int dim, ld alpha) {
    return base * std::pow(alpha, ld(dim) / ld(dim - 2));
}
std::vector<float> ref_yarn(ld base, int dim, ld s, ld ctx, ld bf, ld bs, bool truncate) {
    const ld pi = 3.14159265358979323846264338327950288L;
    auto cdim = [&](ld r) { return ld(dim) * std::log(ctx / (r * 2 * pi)) / (2 * std::log(base)); };
    ld low = cdim(bf), high = cdim(bs);
    if (truncate) {
        low = std::floor(low);
        high = std::ceil(high);
    }
    low = std::max(low, 0.0L);
    high = std::min(high, ld(dim - 1));
    if (low == high) high += 0.001L;
    const auto pos = ref_pos_freqs(base, dim);
    std::vector<float> inv;
    for (int j = 0; j < dim / 2; ++j) {
        float ramp = r32((ld(r32(ld(j) - ld(r32(low))))) / ld(r32(high - low)));
        ramp = std::min(1.0f, std::max(0.0f, ramp));
        const float w = r32(1.0L - ramp);
        const float extra = r32(1.0L / pos[j]);
        const float inter = r32(1.0L / ld(r32(ld(r32(s)) * pos[j])));
        inv.push_back(r32(ld(r32(ld(inter) * r32(1.0L - w))) + ld(r32(ld(extra) * w))));
    }
    return inv;
}
std::vector<float> ref_llama3(ld base, int dim, ld f, ld lf, ld hf, ld ctx) {
    const ld two_pi = 2 * 3.14159265358979323846264338327950288L;
    auto inv = ref_default(base, dim);
    for (float& v : inv) {
        const float wl = r32(ld(r32(1.0L / v)) * ld(r32(two_pi)));  // torch: reciprocal * 2pi
        const float scaled = wl > r32(ctx / lf) ? r32(ld(v) / r32(f)) : v;
        if (!(wl < r32(ctx / hf)) && !(wl > r32(ctx / lf))) {
            const float ratio = r32(ld(r32(1.0L / wl)) * ld(r32(ctx)));
            const float smooth = r32(ld(r32(ld(ratio) - r32(lf))) / ld(r32(hf - lf)));
            const float a = r32(ld(r32(ld(r32(1.0L - smooth)) * scaled)) / ld(r32(f)));
            v = r32(ld(a) + ld(r32(ld(smooth) * scaled)));
        } else {
            v = scaled;
        }
    }
    return inv;
}

struct golden_case {
    const char* name;
    int head_dim;
    int rotary_dim;
    double base;
    long long seq_len;
    rope_scaling scaling;
    std::vector<double> inv_freq;
    double attention_factor;
};

const std::vector<golden_case>& golden_cases() {
    static const std::vector<golden_case> cases = {
#include "data/hf_golden.inc"
    };
    return cases;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST_CASE("every method matches torch-computed HF formulas within 2 ulps, attention 1e-6") {
    // tests/data/hf_golden.inc: 260 cases over 7 geometries (partial rotary included) made by
    // tests/data/generate_hf_golden.py with torch 1.13 float32 tensors.
    std::size_t exact = 0, total = 0;
    std::int64_t worst = 0;
    for (const auto& c : golden_cases()) {
        INFO(c.name);
        const auto p = geometry(c.head_dim, c.rotary_dim, c.base);
        const auto seq = c.seq_len < 0 ? std::optional<std::int64_t>{} : c.seq_len;
        const rope_frequencies f = make_frequencies(p, c.scaling, seq);
        REQUIRE(f.inv_freq.size() == c.inv_freq.size());
        for (std::size_t i = 0; i < f.inv_freq.size(); ++i) {
            const auto d = ulp_distance(f.inv_freq[i], float(c.inv_freq[i]));
            INFO("pair " << i << ": " << f.inv_freq[i] << " vs torch " << c.inv_freq[i]);
            CHECK(d <= 2);
            worst = std::max(worst, d);
            exact += d == 0;
            ++total;
        }
        CHECK(std::fabs(double(f.attention_factor) - c.attention_factor) <=
              1e-6 * c.attention_factor);
        CHECK(f.head_dim == c.head_dim);
        CHECK(f.rotary_dim == c.rotary_dim);
    }
    WARN("HF golden: " << exact << " of " << total << " inv_freq values bit-identical to torch, "
                       << "worst " << worst << " ulp");
    CHECK(golden_cases().size() >= 200);
}

TEST_CASE("ropekit equals an independent long-double transcription of HF's formulas") {
    const std::vector<rope_params> geoms = {geometry(128, 128, 10000.0), geometry(128, 128, 5e5),
                                            geometry(80, 32, 10000.0),   geometry(96, 96, 1e6),
                                            geometry(64, 64, 150000.0),  geometry(256, 64, 1e7)};
    for (const auto& p : geoms) {
        INFO("head_dim " << p.head_dim << " rotary_dim " << p.rotary_dim << " base " << p.base);
        const int d = p.rotary_dim;
        CHECK(max_ulp(default_rope{}.frequencies(p).inv_freq, ref_default(p.base, d)) <= 2);
        for (double f : {1.0, 1.5, 3.0, 32.0})
            CHECK(max_ulp(linear_scaling{f}.frequencies(p).inv_freq, ref_linear(p.base, d, f)) <=
                  2);
        for (double a : {1.0, 3.0, 8.0})
            CHECK(max_ulp(ntk_scaling{a}.frequencies(p).inv_freq,
                          ref_default(ntk_base(p.base, d, a), d)) <= 2);
        for (std::int64_t s : {4097, 8192, 100000, 1 << 20}) {
            const ld mult = 3.0L * ld(s) / 4096.0L - 2.0L;
            CHECK(max_ulp(dynamic_ntk_scaling{3.0, 4096}.frequencies(p, s).inv_freq,
                          ref_default(ntk_base(p.base, d, mult), d)) <= 2);
        }
        for (bool tr : {true, false})
            for (double s : {2.0, 16.0, 40.0}) {
                yarn_scaling y;
                y.factor = s;
                y.original_max_position = 4096;
                y.truncate = tr;
                CHECK(max_ulp(y.frequencies(p).inv_freq, ref_yarn(p.base, d, s, 4096, 32, 1, tr)) <=
                      2);
                y.beta_fast = 24;
                y.beta_slow = 0.5;
                CHECK(max_ulp(y.frequencies(p).inv_freq,
                              ref_yarn(p.base, d, s, 4096, 24, 0.5, tr)) <= 2);
            }
        for (double f : {2.0, 8.0})
            CHECK(max_ulp(llama3_scaling{f, 1.0, 4.0, 8192}.frequencies(p).inv_freq,
                          ref_llama3(p.base, d, f, 1, 4, 8192)) <= 2);
        CHECK(max_ulp(llama3_scaling{8.0, 2.0, 5.0, 2048}.frequencies(p).inv_freq,
                      ref_llama3(p.base, d, 8, 2, 5, 2048)) <= 2);
    }
}

TEST_CASE("HF's formula stays within (2 + ln base) ulps of exact real-number frequencies") {
    // Why not closer: HF rounds the exponent 2i/dim to float32 before the pow, an error the pow
    // multiplies by ln(base) * exponent. This bounds how far any HF-compatible table is from the
    // mathematically exact one (the long-double value of base^(-2i/dim)).
    for (double base : {10000.0, 5e5, 1e6, 1e7}) {
        const auto p = geometry(128, 128, base);
        const auto f = default_rope{}.frequencies(p);
        for (int i = 0; i < 64; ++i) {
            const ld exact = std::pow(ld(base), -ld(2 * i) / 128.0L);
            const ld rel = std::fabs((ld(f.inv_freq[i]) - exact) / exact);
            CHECK(double(rel) <= (2.0 + std::log(base)) * 0x1p-24);
        }
    }
}

TEST_CASE("HF's own snapshot arrays (tests/utils/test_modeling_rope_utils.py) are reproduced") {
    // LlamaConfig defaults: head_dim 128, rope_theta 1e4, max_position_embeddings 2048. The
    // snapshots have 5 significant digits; HF compares them with assert_close (rtol 1.3e-6,
    // atol 1e-5), and so do we.
    const auto p = geometry(128, 128, 10000.0);
    auto close = [](const std::vector<float>& got, const std::vector<double>& want) {
        REQUIRE(got.size() == want.size());
        for (std::size_t i = 0; i < got.size(); ++i) {
            INFO("pair " << i);
            CHECK(std::fabs(got[i] - want[i]) <= 1e-5 + 1.3e-6 * std::fabs(want[i]));
        }
    };
    const std::vector<double> hf_default = {
        1.0000e+00, 8.6596e-01, 7.4989e-01, 6.4938e-01, 5.6234e-01, 4.8697e-01, 4.2170e-01,
        3.6517e-01, 3.1623e-01, 2.7384e-01, 2.3714e-01, 2.0535e-01, 1.7783e-01, 1.5399e-01,
        1.3335e-01, 1.1548e-01, 1.0000e-01, 8.6596e-02, 7.4989e-02, 6.4938e-02, 5.6234e-02,
        4.8697e-02, 4.2170e-02, 3.6517e-02, 3.1623e-02, 2.7384e-02, 2.3714e-02, 2.0535e-02,
        1.7783e-02, 1.5399e-02, 1.3335e-02, 1.1548e-02, 1.0000e-02, 8.6596e-03, 7.4989e-03,
        6.4938e-03, 5.6234e-03, 4.8697e-03, 4.2170e-03, 3.6517e-03, 3.1623e-03, 2.7384e-03,
        2.3714e-03, 2.0535e-03, 1.7783e-03, 1.5399e-03, 1.3335e-03, 1.1548e-03, 1.0000e-03,
        8.6596e-04, 7.4989e-04, 6.4938e-04, 5.6234e-04, 4.8697e-04, 4.2170e-04, 3.6517e-04,
        3.1623e-04, 2.7384e-04, 2.3714e-04, 2.0535e-04, 1.7783e-04, 1.5399e-04, 1.3335e-04,
        1.1548e-04};
    close(default_rope{}.frequencies(p).inv_freq, hf_default);
    const std::vector<double> hf_dynamic = {
        1.0000e+00, 8.0931e-01, 6.5498e-01, 5.3008e-01, 4.2900e-01, 3.4720e-01, 2.8099e-01,
        2.2741e-01, 1.8404e-01, 1.4895e-01, 1.2055e-01, 9.7558e-02, 7.8955e-02, 6.3899e-02,
        5.1714e-02, 4.1853e-02, 3.3872e-02, 2.7413e-02, 2.2185e-02, 1.7955e-02, 1.4531e-02,
        1.1760e-02, 9.5176e-03, 7.7027e-03, 6.2339e-03, 5.0451e-03, 4.0831e-03, 3.3045e-03,
        2.6744e-03, 2.1644e-03, 1.7517e-03, 1.4176e-03, 1.1473e-03, 9.2852e-04, 7.5146e-04,
        6.0817e-04, 4.9220e-04, 3.9834e-04, 3.2238e-04, 2.6091e-04, 2.1115e-04, 1.7089e-04,
        1.3830e-04, 1.1193e-04, 9.0585e-05, 7.3312e-05, 5.9332e-05, 4.8018e-05, 3.8861e-05,
        3.1451e-05, 2.5453e-05, 2.0600e-05, 1.6672e-05, 1.3492e-05, 1.0920e-05, 8.8374e-06,
        7.1522e-06, 5.7883e-06, 4.6845e-06, 3.7912e-06, 3.0683e-06, 2.4832e-06, 2.0097e-06,
        1.6265e-06};
    close(dynamic_ntk_scaling{10.0, 2048}.frequencies(p, 16384).inv_freq, hf_dynamic);
    const std::vector<double> hf_yarn = {
        1.0000e+00, 8.6596e-01, 7.4989e-01, 6.4938e-01, 5.6234e-01, 4.8697e-01, 4.2170e-01,
        3.6517e-01, 3.1623e-01, 2.7384e-01, 2.3714e-01, 2.0535e-01, 1.7783e-01, 1.5399e-01,
        1.3335e-01, 1.1548e-01, 1.0000e-01, 8.3479e-02, 6.9590e-02, 5.7925e-02, 4.8136e-02,
        3.9931e-02, 3.3061e-02, 2.7315e-02, 2.2515e-02, 1.8512e-02, 1.5177e-02, 1.2403e-02,
        1.0101e-02, 8.1924e-03, 6.6143e-03, 5.3120e-03, 4.2400e-03, 3.3599e-03, 2.6396e-03,
        2.0520e-03, 1.5746e-03, 1.1882e-03, 8.7713e-04, 6.2810e-04, 4.3007e-04, 2.7384e-04,
        2.3714e-04, 2.0535e-04, 1.7783e-04, 1.5399e-04, 1.3335e-04, 1.1548e-04, 1.0000e-04,
        8.6596e-05, 7.4989e-05, 6.4938e-05, 5.6234e-05, 4.8697e-05, 4.2170e-05, 3.6517e-05,
        3.1623e-05, 2.7384e-05, 2.3714e-05, 2.0535e-05, 1.7783e-05, 1.5399e-05, 1.3335e-05,
        1.1548e-05};
    yarn_scaling y;
    y.factor = 10.0;
    y.original_max_position = 2048;
    close(y.frequencies(p).inv_freq, hf_yarn);
    const std::vector<double> hf_llama3 = {
        1.0000e+00, 8.6596e-01, 7.4989e-01, 6.4938e-01, 5.6234e-01, 4.8697e-01, 4.2170e-01,
        3.6517e-01, 3.1623e-01, 2.7384e-01, 2.3714e-01, 2.0535e-01, 1.7783e-01, 1.5399e-01,
        1.3335e-01, 1.1548e-01, 1.0000e-01, 8.6596e-02, 7.4989e-02, 6.4938e-02, 5.6234e-02,
        4.8697e-02, 4.2170e-02, 3.6517e-02, 3.1623e-02, 2.7384e-02, 2.3714e-02, 2.0535e-02,
        1.7783e-02, 1.5399e-02, 1.3335e-02, 1.0730e-02, 7.7785e-03, 5.6009e-03, 3.9991e-03,
        2.8248e-03, 1.9675e-03, 1.3449e-03, 8.9549e-04, 5.7363e-04, 3.4539e-04, 2.7384e-04,
        2.3714e-04, 2.0535e-04, 1.7783e-04, 1.5399e-04, 1.3335e-04, 1.1548e-04, 1.0000e-04,
        8.6596e-05, 7.4989e-05, 6.4938e-05, 5.6234e-05, 4.8697e-05, 4.2170e-05, 3.6517e-05,
        3.1623e-05, 2.7384e-05, 2.3714e-05, 2.0535e-05, 1.7783e-05, 1.5399e-05, 1.3335e-05,
        1.1548e-05};
    close(llama3_scaling{10.0, 1.0, 4.0, 2048}.frequencies(p).inv_freq, hf_llama3);
    // HF's yarn attention checks: 0.1 ln(f) + 1 for f in {2, 10, 20}; explicit 0.5 wins.
    for (double f : {2.0, 10.0, 20.0}) {
        y.factor = f;
        CHECK(y.resolved_attention_factor() == 0.1 * std::log(f) + 1.0);
        y.attention_factor = 0.5;
        CHECK(y.frequencies(p).attention_factor == 0.5f);
        y.attention_factor.reset();
    }
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("factor 1 (alpha 1) equals default RoPE") {
    for (const auto& p : {geometry(128, 128, 10000.0), geometry(80, 32, 1e6)}) {
        const auto def = default_rope{}.frequencies(p).inv_freq;
        CHECK(linear_scaling{1.0}.frequencies(p).inv_freq == def);
        CHECK(ntk_scaling{1.0}.frequencies(p).inv_freq == def);
        CHECK(dynamic_ntk_scaling{1.0, 4096}.frequencies(p, 4096).inv_freq == def);
        // The blends round twice in float32 (HF does too), so they agree to 1 ulp, not bitwise.
        yarn_scaling y;
        y.factor = 1.0;
        y.original_max_position = 4096;
        const auto yf = y.frequencies(p);
        CHECK(max_ulp(yf.inv_freq, def) <= 1);
        CHECK(yf.attention_factor == 1.0f);
        CHECK(max_ulp(llama3_scaling{1.0, 1.0, 4.0, 8192}.frequencies(p).inv_freq, def) <= 1);
        longrope_scaling lr;
        lr.short_factor.assign(std::size_t(p.rotary_dim / 2), 1.0);
        lr.long_factor = lr.short_factor;
        lr.original_max_position = 4096;
        lr.factor = 1.0;
        CHECK(lr.frequencies(p, 100000).inv_freq == def);
        CHECK(lr.frequencies(p).attention_factor == 1.0f);
    }
}

TEST_CASE("linear: position p rotates like default position p / factor") {
    const auto p = geometry(128, 128, 10000.0);
    const auto def = default_rope{}.frequencies(p);
    // Power-of-two factor: dividing by it is exact, so the angles agree bit for bit.
    const auto lin4 = linear_scaling{4.0}.frequencies(p);
    for (int i = 0; i < 64; ++i) CHECK(lin4.inv_freq[i] * 4.0f == def.inv_freq[i]);
    const auto t_lin = cos_sin_table::for_range(lin4, 0, 4096);
    const auto t_def = cos_sin_table::for_range(def, 0, 1024);
    for (std::int64_t q = 0; q < 1024; q += 7)
        for (int i = 0; i < 64; ++i) {
            CHECK(t_lin.cos_row(4 * q)[i] == t_def.cos_row(q)[i]);
            CHECK(t_lin.sin_row(4 * q)[i] == t_def.sin_row(q)[i]);
        }
    // Other factors: one float32 division, within half an ulp of default / factor.
    const auto lin = linear_scaling{2.5}.frequencies(p);
    for (int i = 0; i < 64; ++i) {
        const double want = double(def.inv_freq[i]) / 2.5;
        CHECK(std::fabs(lin.inv_freq[i] - want) <=
              0.5 * (std::nextafter(lin.inv_freq[i], 2.0f) - lin.inv_freq[i]));
    }
    CHECK(lin.attention_factor == 1.0f);
}

TEST_CASE("dynamic NTK: bit-identical to default at or below the original length, pure") {
    const auto p = geometry(128, 128, 10000.0);
    const auto def = default_rope{}.frequencies(p).inv_freq;
    const dynamic_ntk_scaling dyn{2.5, 4096};
    for (std::optional<std::int64_t> s :
         {std::optional<std::int64_t>{}, std::optional<std::int64_t>{0},
          std::optional<std::int64_t>{1}, std::optional<std::int64_t>{4095},
          std::optional<std::int64_t>{4096}})
        CHECK(dyn.frequencies(p, s).inv_freq == def);
    // Above L0 every pair but the first slows down, more for longer sequences; no hidden state:
    // asking for a long length and then a short one gives the default table again.
    const auto a = dyn.frequencies(p, 4097).inv_freq;
    const auto b = dyn.frequencies(p, 32768).inv_freq;
    CHECK(dyn.frequencies(p, 4096).inv_freq == def);
    CHECK(a[0] == 1.0f);
    for (int i = 1; i < 64; ++i) {
        CHECK(a[i] <= def[i]);
        CHECK(b[i] < a[i]);
    }
    CHECK(dyn.frequencies(p, 32768).inv_freq == b);
    // FORMULAS.md: factor 2, L0 4096, seq 32768, dim 128 -> base' = 156588.32345714502 (int path).
    CHECK(dynamic_ntk_scaling{2.0, 4096}.scaled_base(p, 32768) ==
          Approx(156588.32345714502).epsilon(1e-15));
}

TEST_CASE("NTK-aware alpha: base' = base * alpha^(dim/(dim-2)), ends of the spectrum") {
    const auto p = geometry(128, 128, 10000.0);
    // FORMULAS.md section 3: alpha 8, dim 128, base 1e4 -> 82684.62264056221.
    CHECK(ntk_scaling{8.0}.scaled_base(p) == Approx(82684.62264056221).epsilon(1e-15));
    const auto def = default_rope{}.frequencies(p).inv_freq;
    const auto ntk = ntk_scaling{8.0}.frequencies(p).inv_freq;
    CHECK(ntk[0] == 1.0f);
    // The last pair is divided by exactly alpha in exact arithmetic; float32 steps: 2 ulps.
    CHECK(ulp_distance(ntk[63], def[63] / 8.0f) <= 2);
    for (int i = 1; i < 64; ++i) CHECK(ntk[i] < def[i]);
}

TEST_CASE("YaRN: correction range, kept and interpolated pairs, attention factors") {
    auto make = [](double s, std::int64_t ctx) {
        yarn_scaling y;
        y.factor = s;
        y.original_max_position = ctx;
        return y;
    };
    // FORMULAS.md section 4a worked numbers (L 4096, betas 32/1).
    const auto r1 = make(16, 4096).correction_range(geometry(128, 128, 1e4));
    CHECK(r1.low == 20.0);
    CHECK(r1.high == 46.0);
    const auto r2 = make(16, 4096).correction_range(geometry(64, 64, 1e4));
    CHECK(r2.low == 10.0);
    CHECK(r2.high == 23.0);
    const auto r3 = make(16, 4096).correction_range(geometry(128, 128, 5e5));
    CHECK(r3.low == 14.0);
    CHECK(r3.high == 32.0);
    // gpt-oss (head_dim 64, base 150000, factor 32, L 4096, truncate false): 8.0928 / 17.398,
    // the numbers quoted in vllm-project/vllm#27722.
    auto gptoss = make(32, 4096);
    gptoss.truncate = false;
    const auto r4 = gptoss.correction_range(geometry(64, 64, 150000.0));
    CHECK(r4.low == Approx(8.092779115512402).epsilon(1e-14));
    CHECK(r4.high == Approx(17.39802450158856).epsilon(1e-14));

    const auto p = geometry(128, 128, 1e4);
    const auto def = default_rope{}.frequencies(p).inv_freq;
    const auto lin = linear_scaling{16.0}.frequencies(p).inv_freq;
    const auto y = make(16, 4096).frequencies(p);
    // Pairs at or below low rotate fast enough: untouched, bit for bit.
    for (int j = 0; j <= 20; ++j) CHECK(y.inv_freq[j] == def[j]);
    // Pairs at or above high are plain PI: 1/(s*b^e) vs (1/b^e)/s, equal for s = 16.
    for (int j = 46; j < 64; ++j) CHECK(y.inv_freq[j] == lin[j]);
    // In between: strictly between the two.
    for (int j = 21; j < 46; ++j) {
        CHECK(y.inv_freq[j] < def[j]);
        CHECK(y.inv_freq[j] > lin[j]);
    }
    // Attention factors (FORMULAS.md section 4b, PITFALLS.md item 8).
    CHECK(y.attention_factor == float(1.2772588722239782));
    CHECK(make(16, 4096).resolved_attention_factor() == Approx(1.2772588722239782).epsilon(1e-15));
    CHECK(make(128, 4096).resolved_attention_factor() == Approx(1.4852).margin(5e-5));
    auto ds = make(40, 4096);  // DeepSeek-V2: mscale = mscale_all_dim = 0.707 -> exactly 1
    ds.mscale = 0.707;
    ds.mscale_all_dim = 0.707;
    CHECK(ds.resolved_attention_factor() == 1.0);
    // ... while DeepSeek's own attention multiplies the softmax scale by mscale(40, 0.707)^2.
    const double ds_m = 0.1 * 0.707 * std::log(40.0) + 1.0;
    CHECK(ds.deepseek_softmax_factor() == Approx(ds_m * ds_m).epsilon(1e-15));
    CHECK(make(40, 4096).deepseek_softmax_factor() == 1.0);
    auto ratio = make(16, 4096);
    ratio.mscale = 1.0;
    ratio.mscale_all_dim = 0.5;
    CHECK(ratio.resolved_attention_factor() == Approx(1.121751143713058).epsilon(1e-14));
    auto alone = make(16, 4096);  // mscale alone is ignored
    alone.mscale = 1.0;
    CHECK(alone.resolved_attention_factor() == Approx(1.2772588722239782).epsilon(1e-15));
    alone.mscale_all_dim = 0.0;  // zero counts as absent (Python truthiness)
    CHECK(alone.resolved_attention_factor() == Approx(1.2772588722239782).epsilon(1e-15));
    auto expl = ratio;
    expl.attention_factor = 0.75;  // explicit wins over everything
    CHECK(expl.resolved_attention_factor() == 0.75);
    CHECK(yarn_scaling::get_mscale(1.0, 5.0) == 1.0);
    CHECK(yarn_scaling::get_mscale(0.5) == 1.0);

    // truncate changes the frequencies near the ramp's ends (FORMULAS.md: 35.5% at s = 16).
    auto untrunc = make(16, 4096);
    untrunc.truncate = false;
    const auto u = untrunc.frequencies(p).inv_freq;
    double worst = 0;
    for (int j = 0; j < 64; ++j) worst = std::max(worst, std::fabs(u[j] / y.inv_freq[j] - 1.0));
    CHECK(worst == Approx(0.355).margin(0.001));

    // beta_fast 1000 (HF's test): everything but pair 0 interpolates; the last 20 equal PI.
    auto wide = make(10, 2048);
    wide.beta_fast = 1000;
    const auto p2 = geometry(128, 128, 1e4);
    const auto w = wide.frequencies(p2).inv_freq;
    const auto d2 = default_rope{}.frequencies(p2).inv_freq;
    const auto l2 = linear_scaling{10.0}.frequencies(p2).inv_freq;
    CHECK(w[0] == d2[0]);
    for (int j = 1; j < 64; ++j) CHECK(w[j] < d2[j]);
    for (int j = 44; j < 64; ++j) CHECK(ulp_distance(w[j], l2[j]) <= 1);
}

TEST_CASE("YaRN: HF's low == high guard and partial rotary use the rotary dim") {
    // dim 8 and L 3e9 put floor(dim(beta_fast)) and the clamped high both at index 7.
    yarn_scaling y;
    y.factor = 4;
    y.original_max_position = 3000000000LL;
    const auto p = geometry(8, 8, 1e4);
    const auto r = y.correction_range(p);
    CHECK(r.low == 7.0);
    CHECK(r.high == 7.0);
    const auto f = y.frequencies(p);  // no division by zero, all finite
    for (float v : f.inv_freq) CHECK(std::isfinite(v));
    // Partial rotary (Phi-2 like: head_dim 80, factor 0.4): every exponent uses rotary_dim 32.
    const auto pr = rope_params::from_partial_rotary_factor(80, 0.4);
    CHECK(pr.rotary_dim == 32);
    y.original_max_position = 4096;
    const auto full32 = y.frequencies(geometry(32, 32, 1e4));
    CHECK(y.frequencies(pr).inv_freq == full32.inv_freq);
    CHECK(y.correction_range(pr).high <= 31.0);
}

TEST_CASE("Llama 3.1: band counts, bounds and inclusive band edges") {
    auto bands = [](const rope_params& p, const llama3_scaling& l) {
        const auto def = default_rope{}.frequencies(p).inv_freq;
        const auto got = l.frequencies(p).inv_freq;
        int kept = 0, smoothed = 0, divided = 0;
        for (std::size_t i = 0; i < def.size(); ++i) {
            CHECK(got[i] <= def[i]);
            CHECK(got[i] >= def[i] / float(l.factor) * (1 - 1e-6f));
            if (got[i] == def[i])
                ++kept;
            else if (got[i] == detail::f32::div(def[i], float(l.factor)))
                ++divided;
            else
                ++smoothed;
        }
        return std::vector<int>{kept, smoothed, divided};
    };
    // FORMULAS.md section 6: f 8, lf 1, hf 4, L 8192, dim 128.
    CHECK(bands(geometry(128, 128, 5e5), llama3_scaling{8, 1, 4, 8192}) ==
          std::vector<int>{29, 6, 29});
    CHECK(bands(geometry(128, 128, 1e4), llama3_scaling{8, 1, 4, 8192}) ==
          std::vector<int>{41, 9, 14});
    CHECK(llama3_scaling{}.frequencies(geometry(128, 128, 5e5)).attention_factor == 1.0f);
    // high_freq_factor 1000: nothing is high-frequency, every pair is scaled (HF's test).
    const auto all = llama3_scaling{10, 1, 1000, 2048}.frequencies(geometry(128, 128, 1e4));
    const auto def = default_rope{}.frequencies(geometry(128, 128, 1e4)).inv_freq;
    for (int i = 0; i < 64; ++i) CHECK(all.inv_freq[i] < def[i]);

    // Inclusive edges: put a pair's float32 wavelength exactly on each edge. On the high edge
    // smooth = 1 (the pair keeps its frequency); on the low edge smooth = 0 (divided by factor).
    const auto p = geometry(128, 128, 5e5);
    const auto inv = default_rope{}.frequencies(p).inv_freq;
    const int k = 20;
    const float wl = detail::f32::rdiv(2.0 * 3.141592653589793, inv[k]);
    const double ctx = 8192;
    llama3_scaling at_high{8.0, 0.5, ctx / double(wl), 8192};
    REQUIRE(float(ctx / at_high.high_freq_factor) == wl);
    CHECK(ulp_distance(at_high.frequencies(p).inv_freq[k], inv[k]) <= 2);
    llama3_scaling at_low{8.0, ctx / double(wl), 0, 8192};
    at_low.high_freq_factor = at_low.low_freq_factor * 4;
    REQUIRE(float(ctx / at_low.low_freq_factor) == wl);
    const float low_edge = at_low.frequencies(p).inv_freq[k];
    CHECK(ulp_distance(low_edge, inv[k] / 8.0f) <= 2);
    // one ulp beyond the edge the pair leaves the band and takes the plain rule
    at_low.low_freq_factor = ctx / double(std::nextafter(wl, 0.0f));
    at_low.high_freq_factor = at_low.low_freq_factor * 4;
    CHECK(at_low.frequencies(p).inv_freq[k] == detail::f32::div(inv[k], 8.0f));
}

TEST_CASE("LongRoPE: strict switch above the original length, attention factor") {
    const auto p = geometry(96, 96, 10000.0);  // Phi-3.5-mini geometry
    longrope_scaling lr;
    for (int i = 0; i < 48; ++i) {
        lr.short_factor.push_back(1.0 + 0.02 * i);
        lr.long_factor.push_back(1.0 + 0.9 * i);
    }
    lr.original_max_position = 4096;
    lr.factor = 32.0;  // max_position_embeddings 131072 / 4096
    const auto def = default_rope{}.frequencies(p).inv_freq;
    const auto s0 = lr.frequencies(p).inv_freq;
    CHECK(lr.frequencies(p, 4096).inv_freq == s0);    // seq_len == L: short
    const auto l = lr.frequencies(p, 4097).inv_freq;  // strictly above: long
    CHECK(l != s0);
    CHECK(!lr.uses_long_factor(std::nullopt));
    CHECK(lr.uses_long_factor(4097));
    for (int i = 0; i < 48; ++i) {
        CHECK(ulp_distance(s0[i], float(def[i] / lr.short_factor[i])) <= 2);
        CHECK(ulp_distance(l[i], float(def[i] / lr.long_factor[i])) <= 2);
    }
    // FORMULAS.md section 5: L 4096, factor 32 -> 1.1902380714238083; factor 8 -> 1.1180339887.
    CHECK(lr.resolved_attention_factor() == Approx(1.1902380714238083).epsilon(1e-15));
    lr.factor = 8.0;
    CHECK(lr.resolved_attention_factor() == Approx(1.118033988749895).epsilon(1e-15));
    lr.factor = 1.0;
    CHECK(lr.resolved_attention_factor() == 1.0);
    lr.attention_factor = 0.5;
    CHECK(lr.frequencies(p).attention_factor == 0.5f);
}

TEST_CASE("LongRoPE: factor is optional, so 'not given' is visible") {
    const auto p = geometry(96, 96, 10000.0);
    longrope_scaling lr;
    lr.short_factor.assign(48, 1.0);
    lr.long_factor.assign(48, 4.0);
    lr.original_max_position = 4096;
    CHECK(!lr.factor.has_value());  // no silent default of 1
    // Neither factor nor attention_factor: an error naming factor, not attention factor 1.
    expect_error([&] { lr.validate(p); }, "factor", "unset");
    expect_error([&] { lr.frequencies(p); }, "factor", "unset");
    lr.attention_factor = 1.25;  // an explicit attention factor needs no factor
    CHECK_NOTHROW(lr.validate(p));
    CHECK(lr.frequencies(p).attention_factor == 1.25f);
    lr.attention_factor.reset();
    lr.factor = 32.0;  // Phi-3 built by hand: 131072 / 4096
    CHECK(lr.resolved_attention_factor() == Approx(1.1902380714238083).epsilon(1e-15));
    CHECK(attention_factor(rope_scaling{lr}) == lr.resolved_attention_factor());
    // Aggregate initialisation (as tests/data/hf_golden.inc does) still takes a plain double.
    const longrope_scaling agg{lr.short_factor, lr.long_factor, 4096, 8.0, std::nullopt};
    CHECK(agg.factor == 8.0);
    lr.factor = 0.5;  // explicit factor below 1 is an error
    expect_error([&] { lr.validate(p); }, "factor", "0.5");
}

TEST_CASE("every rope_scaling alternative describes itself: rope_type, keys, attention factor") {
    std::vector<std::string> types;
    detail::for_each_method([&](auto tag) {
        using M = typename decltype(tag)::type;
        INFO("rope_type " << M::rope_type);
        types.emplace_back(M::rope_type);
        // The lookup goes by the type's own rope_type, not by its position in the variant.
        const auto looked_up = scaling_for_rope_type(M::rope_type);
        REQUIRE(looked_up.has_value());
        CHECK(std::holds_alternative<M>(*looked_up));
        CHECK(name(*looked_up) == M::rope_type);
        CHECK(attention_factor(rope_scaling{M{}}) == M{}.resolved_attention_factor());
        // Member names are what validate() reports and what the error paths map back to a key:
        // two keys of one method must not share one.
        std::vector<std::string> members;
        std::apply(
            [&](const auto&... k) {
                auto one = [&](const auto& key) {
                    if constexpr (!std::is_same_v<std::decay_t<decltype(key)>, ignored_key>) {
                        CHECK(!key.name.empty());
                        // The reader applies each rule to one member type only; any other
                        // pairing would be silently ignored.
                        using T = typename std::decay_t<decltype(key)>::value_type;
                        if (key.rule == key_rule::original_context ||
                            key.rule == key_rule::original_context_required ||
                            key.rule == key_rule::max_position)
                            CHECK(std::is_same_v<T, std::int64_t>);
                        if (key.rule == key_rule::context_ratio) CHECK(std::is_same_v<T, double>);
                        if (key.rule == key_rule::extension_ratio)
                            CHECK(std::is_same_v<T, std::optional<double>>);
                        for (const auto& seen : members) CHECK(seen != key.member_name());
                        members.emplace_back(key.member_name());
                    }
                };
                (one(k), ...);
            },
            M::config_keys());
    });
    CHECK(types.size() == std::variant_size_v<rope_scaling>);
    CHECK(known_rope_types() ==
          "default, linear, ntk, dynamic, yarn, llama3, longrope, su, proportional");
    CHECK(std::holds_alternative<longrope_scaling>(*scaling_for_rope_type("su")));
}

TEST_CASE("rope_scaling variant: names, lookup by rope_type, make_frequencies") {
    const std::vector<std::pair<rope_scaling, std::string>> all = {
        {default_rope{}, "default"},     {linear_scaling{2}, "linear"},
        {ntk_scaling{2}, "ntk"},         {dynamic_ntk_scaling{2, 4096}, "dynamic"},
        {yarn_scaling{2, 4096}, "yarn"}, {llama3_scaling{}, "llama3"},
        {longrope_scaling{}, "longrope"}};
    for (const auto& [s, n] : all) {
        CHECK(std::string(name(s)) == n);
        const auto looked_up = scaling_for_rope_type(n);
        REQUIRE(looked_up.has_value());
        CHECK(looked_up->index() == s.index());
    }
    CHECK(scaling_for_rope_type("su")->index() == rope_scaling{longrope_scaling{}}.index());
    CHECK(!scaling_for_rope_type("YaRN").has_value());
    CHECK(!scaling_for_rope_type("").has_value());
    const auto p = geometry(64, 64, 1e4);
    CHECK(make_frequencies(p, linear_scaling{2}).inv_freq ==
          linear_scaling{2}.frequencies(p).inv_freq);
    const auto f = make_frequencies(p, yarn_scaling{4, 4096}, 10);
    CHECK(f.rotary_dim == 64);
    CHECK(f.pairs() == 32);
    CHECK(f.logit_scale() == Approx(double(f.attention_factor) * f.attention_factor));
    // layout is carried through to the frequencies (and the tables built from them)
    auto g = p;
    g.layout = rope_layout::gptj;
    CHECK(make_frequencies(g, default_rope{}).layout == rope_layout::gptj);
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("bad parameters throw ropekit::error naming the field and the value") {
    const auto ok = geometry(128, 128, 1e4);
    auto with = [&](auto mutate) {
        auto p = ok;
        mutate(p);
        return p;
    };
    expect_error(
        [&] { default_rope{}.frequencies(with([](rope_params& p) { p.rotary_dim = 63; })); },
        "rotary_dim", "63");
    expect_error(
        [&] { default_rope{}.frequencies(with([](rope_params& p) { p.rotary_dim = 0; })); },
        "rotary_dim", "0");
    expect_error(
        [&] { default_rope{}.frequencies(with([](rope_params& p) { p.rotary_dim = -4; })); },
        "rotary_dim", "-4");
    expect_error(
        [&] { default_rope{}.frequencies(with([](rope_params& p) { p.rotary_dim = 130; })); },
        "rotary_dim", "130");
    expect_error([&] { default_rope{}.frequencies(with([](rope_params& p) { p.head_dim = 0; })); },
                 "head_dim", "0");
    expect_error([&] { default_rope{}.frequencies(with([](rope_params& p) { p.base = -1; })); },
                 "base", "-1");
    expect_error([&] { default_rope{}.frequencies(with([](rope_params& p) { p.base = 1.0; })); },
                 "base", "1");
    expect_error(
        [&] { default_rope{}.frequencies(with([](rope_params& p) { p.base = std::nan(""); })); },
        "base", "nan");
    expect_error(
        [&] {
            default_rope{}.frequencies(
                with([](rope_params& p) { p.base = std::numeric_limits<double>::infinity(); }));
        },
        "base", "inf");
    expect_error([&] { rope_params::from_partial_rotary_factor(128, 1.5); },
                 "partial_rotary_factor", "1.5");
    expect_error([&] { rope_params::from_partial_rotary_factor(128, 0.0); },
                 "partial_rotary_factor", "0");
    // int(10 * 0.1) = 1 is odd: the factor is at fault, not a rotary_dim nobody wrote (was
    // reported as rotary_dim).
    expect_error([&] { rope_params::from_partial_rotary_factor(10, 0.1); }, "partial_rotary_factor",
                 "= 1 for head_dim 10");
    expect_error([&] { rope_params::from_partial_rotary_factor(128, 0.001); },
                 "partial_rotary_factor", "= 0 for head_dim 128");
    // A full rotary head with an odd head_dim is still rotary_dim's error.
    expect_error([&] { rope_params::from_partial_rotary_factor(63, 1.0); }, "rotary_dim", "63");
    expect_error([&] { default_rope{}.frequencies(ok, -1); }, "seq_len", "-1");

    expect_error([&] { linear_scaling{0.5}.frequencies(ok); }, "factor", "0.5");
    expect_error([&] { linear_scaling{-2}.frequencies(ok); }, "factor", "-2");
    expect_error([&] { linear_scaling{std::nan("")}.frequencies(ok); }, "factor", "nan");
    expect_error([&] { ntk_scaling{0.9}.frequencies(ok); }, "alpha", "0.9");
    expect_error([&] { ntk_scaling{2}.frequencies(geometry(2, 2, 1e4)); }, "rotary_dim", "2");
    expect_error([&] { dynamic_ntk_scaling{0.5, 4096}.frequencies(ok); }, "factor", "0.5");
    expect_error([&] { dynamic_ntk_scaling{2, 0}.frequencies(ok); }, "original_max_position", "0");

    yarn_scaling y{4, 4096};
    expect_error(
        [&] {
            auto b = y;
            b.factor = 0.25;
            b.frequencies(ok);
        },
        "factor", "0.25");
    expect_error(
        [&] {
            auto b = y;
            b.original_max_position = -5;
            b.frequencies(ok);
        },
        "original_max_position", "-5");
    expect_error(
        [&] {
            auto b = y;
            b.beta_fast = 1;
            b.beta_slow = 1;
            b.frequencies(ok);
        },
        "beta_fast", "1");
    expect_error(
        [&] {
            auto b = y;
            b.beta_fast = 1;
            b.beta_slow = 32;
            b.frequencies(ok);
        },
        "beta_fast", "1");
    expect_error(
        [&] {
            auto b = y;
            b.beta_slow = 0;
            b.frequencies(ok);
        },
        "beta_slow", "0");
    expect_error(
        [&] {
            auto b = y;
            b.attention_factor = 0.0;
            b.frequencies(ok);
        },
        "attention_factor", "0");
    expect_error(
        [&] {
            auto b = y;
            b.mscale = -1.0;
            b.frequencies(ok);
        },
        "mscale", "-1");
    expect_error(
        [&] {
            auto b = y;
            b.mscale_all_dim = std::nan("");
            b.frequencies(ok);
        },
        "mscale_all_dim", "nan");

    {
        // low == high (Llama 4 Scout's 1 / 1) is a step: no pair is blended (HF's band is empty).
        const auto step = llama3_scaling{8, 4, 4, 8192}.frequencies(ok);
        const auto base = default_rope{}.frequencies(ok);
        for (std::size_t i = 0; i < step.inv_freq.size(); ++i) {
            const float wavelen = float(2 * 3.141592653589793 / double(base.inv_freq[i]));
            CHECK(step.inv_freq[i] ==
                  (wavelen > 2048.0f ? base.inv_freq[i] / 8.0f : base.inv_freq[i]));
        }
    }
    expect_error([&] { llama3_scaling{8, 5, 4, 8192}.frequencies(ok); }, "low_freq_factor", "5");
    expect_error([&] { llama3_scaling{8, 0, 4, 8192}.frequencies(ok); }, "low_freq_factor", "0");
    expect_error([&] { llama3_scaling{0.5, 1, 4, 8192}.frequencies(ok); }, "factor", "0.5");
    expect_error([&] { llama3_scaling{8, 1, 4, 0}.frequencies(ok); }, "original_max_position", "0");

    longrope_scaling lr;
    lr.short_factor.assign(64, 1.0);
    lr.long_factor.assign(64, 2.0);
    lr.original_max_position = 4096;
    lr.factor = 2.0;
    CHECK_NOTHROW(lr.frequencies(ok));
    expect_error(
        [&] {
            auto b = lr;
            b.short_factor.pop_back();
            b.frequencies(ok);
        },
        "short_factor", "63");
    expect_error(
        [&] {
            auto b = lr;
            b.long_factor.push_back(1);
            b.frequencies(ok);
        },
        "long_factor", "65");
    expect_error(
        [&] {
            auto b = lr;
            b.long_factor[3] = -1;
            b.frequencies(ok);
        },
        "long_factor", "-1");
    expect_error(
        [&] {
            auto b = lr;
            b.original_max_position = 0;
            b.frequencies(ok);
        },
        "original_max_position", "0");
    expect_error(
        [&] {
            auto b = lr;
            b.factor = 0.5;
            b.frequencies(ok);
        },
        "factor", "0.5");
    // the variant front door validates too
    expect_error([&] { make_frequencies(ok, rope_scaling{linear_scaling{0.1}}); }, "factor", "0.1");
    expect_error([&] { validate(ok, rope_scaling{ntk_scaling{0.1}}); }, "alpha", "0.1");
    // and the error type is a std::invalid_argument
    CHECK_THROWS_AS(linear_scaling{0.1}.frequencies(ok), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
TEST_CASE("ReRoPE and Leaky ReRoPE relative positions") {
    const rerope r{512};
    CHECK(r.relative_position(0) == 0.0);
    CHECK(r.relative_position(511) == 511.0);
    CHECK(r.relative_position(512) == 512.0);
    CHECK(r.relative_position(100000) == 512.0);
    const leaky_rerope lk{512, 16.0};
    CHECK(lk.relative_position(511) == 511.0);
    CHECK(lk.relative_position(512) == 512.0);  // continuous at the window edge
    CHECK(lk.relative_position(512 + 160) == Approx(522.0));
    // k -> infinity approaches ReRoPE; large k stays below the plain distance
    const leaky_rerope huge{512, 1e12};
    CHECK(huge.relative_position(1 << 20) == Approx(512.0).margin(1e-5));
    for (std::int64_t d = 0; d < 4096; d += 37) {
        CHECK(lk.relative_position(d) <= double(d));
        CHECK(lk.relative_position(d) >= r.relative_position(d));
    }
    CHECK_NOTHROW(r.validate());
    CHECK_NOTHROW(lk.validate());
    expect_error([] { rerope{0}.validate(); }, "window", "0");
    expect_error([] { rerope{-3}.validate(); }, "window", "-3");
    expect_error([] { leaky_rerope{0, 16}.validate(); }, "window", "0");
    // k = 1 is plain RoPE (an engine need not special-case the training length); below 1 the
    // relative position would grow faster than the distance.
    CHECK_NOTHROW(leaky_rerope{512, 1.0}.validate());
    CHECK(leaky_rerope{512, 1.0}.relative_position(100000) == 100000.0);
    expect_error([] { leaky_rerope{512, 0.5}.validate(); }, "k", "0.5");
    expect_error([] { leaky_rerope{512, std::nan("")}.validate(); }, "k", "nan");
}

TEST_CASE("Self-Extend and StreamingLLM far positions; floor_div of negatives") {
    using ropekit::detail::floor_div;
    // C++ division truncates toward zero; the rules need floor (positions may be negative).
    CHECK(floor_div(7, 2) == 3);
    CHECK(floor_div(-7, 2) == -4);
    CHECK(floor_div(-8, 2) == -4);
    CHECK(floor_div(-1, 8) == -1);
    CHECK(floor_div(0, 8) == 0);
    CHECK(floor_div(-9, 1) == -9);
    const ropekit::self_extend se{1024, 8};
    // q at floor(i/G) + w - floor(w/G), k at floor(j/G).
    CHECK(se.far_q_index(4095) == 511 + 1024 - 128);
    CHECK(se.far_k_index(4095) == 511);
    CHECK(se.far_k_index(-1) == -1);
    CHECK(se.far_q_position(1024) == 1024.0);  // continuous at the window edge: i = w, j = 0
    CHECK(se.far_k_position(7) == 0.0);
    CHECK(rule_relative_position(se, 3000, 1000) == double(375 - 125 + 896));  // far
    CHECK(rule_relative_position(se, 2000, 977) == 1023.0);  // near: the distance itself
    // G = 1 is plain RoPE.
    const ropekit::self_extend one{64, 1};
    for (std::int64_t d = 0; d < 300; d += 7) CHECK(rule_relative_position(one, 300, 300 - d) == d);
    // The relative position never exceeds the distance (for i - j >= w, 0 <= j).
    for (std::int64_t i = 1024; i < 9000; i += 331)
        for (std::int64_t j = 0; j + 1024 <= i; j += 97)
            CHECK(rule_relative_position(se, i, j) <= double(i - j));
    CHECK_NOTHROW(se.validate());
    expect_error([] { ropekit::self_extend{0, 8}.validate(); }, "window", "0");
    expect_error([] { ropekit::self_extend{1024, 0}.validate(); }, "group", "0");
    expect_error([] { ropekit::self_extend{1024, -4}.validate(); }, "group", "-4");

    const ropekit::streaming_llm sl{4, 1020};
    CHECK(sl.cache_size() == 1024);
    CHECK(sl.far_q_position(100) == 100.0);                 // inside the cache: the stream position
    CHECK(sl.far_q_position(5000) == 1023.0);               // the query sits at the last cache slot
    CHECK(sl.far_k_position(3) == 3.0);                     // sinks keep their slots
    CHECK(rule_relative_position(sl, 5000, 2) == 1021.0);   // sink 2 from slot 1023
    CHECK(rule_relative_position(sl, 5000, 4990) == 10.0);  // window keys: the distance
    CHECK(sl.mask().n_sink == 4);
    CHECK(sl.mask().window == 1020);
    CHECK_NOTHROW(sl.validate());
    CHECK_NOTHROW(ropekit::streaming_llm{0, 1}.validate());
    expect_error([] { ropekit::streaming_llm{-1, 16}.validate(); }, "n_sink", "-1");
    expect_error([] { ropekit::streaming_llm{4, 0}.validate(); }, "window", "0");
    expect_error(
        [] {
            ropekit::streaming_llm{4, ropekit::attention_position_limit}.validate();
        },
        "window", "");
}

TEST_CASE("parameters that overflow float32 are named errors, never inv_freq 0 or inf") {
    const auto p = geometry(64, 64, 1e4);
    // Each of these passed validation in double and gave pairs with inv_freq 0 (never rotating).
    expect_error([&] { default_rope{}.frequencies(geometry(64, 64, 3.5e38)); }, "base", "3.5e+38");
    expect_error([&] { linear_scaling{1e39}.frequencies(p); }, "factor", "float32");
    expect_error([&] { ntk_scaling{1e277}.frequencies(p); }, "alpha", "1e+277");
    expect_error([&] { ntk_scaling{1e300}.frequencies(p); }, "alpha", "1e+300");
    longrope_scaling lr;
    lr.short_factor.assign(32, 1.0);
    lr.long_factor.assign(32, 1.0);
    lr.original_max_position = 4096;
    lr.factor = 8.0;
    lr.long_factor[5] = 1e39;
    expect_error([&] { lr.frequencies(p, 8192); }, "long_factor", "float32");
    lr.long_factor[5] = 1.0;
    lr.short_factor[3] = 1e-300;  // rounds to float32 0: 1 / (0 * pos) was inf
    expect_error([&] { lr.frequencies(p); }, "short_factor", "1e-300");
    yarn_scaling y{4.0, 4096};
    y.mscale_all_dim = 1e198;  // deepseek_softmax_factor() was inf
    expect_error([&] { y.validate(p); }, "mscale_all_dim", "1e+198");
    y.mscale_all_dim.reset();
    y.attention_factor = 1e39;  // was stored as float inf, failing later in rope_frequencies
    expect_error([&] { y.validate(p); }, "attention_factor", "float32");
    y.attention_factor = 1e-50;  // would be stored as float 0
    expect_error([&] { y.validate(p); }, "attention_factor", "1e-50");
    y.attention_factor.reset();
    y.mscale = 1e300;  // the mscale ratio is the attention factor
    y.mscale_all_dim = 1.0;
    expect_error([&] { y.validate(p); }, "mscale", "1e+300");
    llama3_scaling l3;
    l3.high_freq_factor = 0.0;  // was "low_freq_factor must be < high_freq_factor"
    expect_error([&] { l3.validate(p); }, "high_freq_factor", "0");
    l3.low_freq_factor = 1e-40;  // band width 1e-47 rounds to float32 0: a 0/0 blend
    l3.high_freq_factor = 1.0000001e-40;
    expect_error([&] { l3.validate(p); }, "high_freq_factor", "float32");
    l3.high_freq_factor = 4.0;
    l3.low_freq_factor = 1e-35;  // L / low_freq_factor beyond float32
    expect_error([&] { l3.validate(p); }, "low_freq_factor", "1e-35");
    // Parameters each inside float32 whose combination underflows: a named error, not 0.
    expect_error([&] { linear_scaling{1e38}.frequencies(geometry(64, 64, 1e30)); }, "inv_freq",
                 "pair");
    // Dynamic NTK's base grows with seq_len.
    const dynamic_ntk_scaling dyn{1e30, 1};
    expect_error([&] { dyn.frequencies(geometry(64, 64, 1e30), max_seq_len); }, "seq_len",
                 "4294967296");
}

TEST_CASE("upper bounds: head_dim, seq_len and original context") {
    // head_dim 2^30 through the API took 2 GB and 10 s.
    expect_error([] { default_rope{}.frequencies(geometry(1 << 30, 1 << 30, 1e4)); }, "head_dim",
                 "1073741824");
    CHECK_NOTHROW(default_rope{}.frequencies(geometry(rope_params::max_head_dim, 64, 1e4)));
    expect_error(
        [] { default_rope{}.frequencies(geometry(rope_params::max_head_dim + 2, 64, 1e4)); },
        "head_dim", "65538");
    const auto p = geometry(64, 64, 1e4);
    CHECK_NOTHROW(dynamic_ntk_scaling{2, 4096}.frequencies(p, max_seq_len));
    expect_error(
        [&] {
            dynamic_ntk_scaling{2, 4096}.frequencies(p, max_seq_len + 1);
        },
        "seq_len", "4294967297");
    expect_error(
        [&] {
            yarn_scaling{2, max_seq_len + 1}.validate(p);
        },
        "original_max_position", "4294967297");
}

TEST_CASE("every generated inv_freq is finite and > 0, or the call throws ropekit::error") {
    // A grid over the extremes each parameter allows on its own.
    for (double base : {1.0000001, 1e4, 1e30, 3.4e38})
        for (double factor : {1.0, 1e10, 1e30, 3.4e38})
            for (int dim : {4, 64, 256}) {
                const auto p = geometry(dim, dim, base);
                INFO("base " << base << " factor " << factor << " dim " << dim);
                llama3_scaling l3;
                l3.factor = factor;
                const std::vector<rope_scaling> methods = {default_rope{},
                                                           linear_scaling{factor},
                                                           ntk_scaling{factor},
                                                           dynamic_ntk_scaling{factor, 4096},
                                                           yarn_scaling{factor, 4096},
                                                           l3};
                for (const auto& m : methods)
                    for (std::optional<std::int64_t> seq :
                         {std::optional<std::int64_t>{}, std::optional<std::int64_t>{1 << 20}}) {
                        try {
                            const auto f = make_frequencies(p, m, seq);
                            for (float v : f.inv_freq) CHECK((std::isfinite(v) && v > 0.0f));
                            CHECK((std::isfinite(f.attention_factor) && f.attention_factor > 0));
                        } catch (const ropekit::error&) {
                            SUCCEED();
                        }
                    }
            }
}
