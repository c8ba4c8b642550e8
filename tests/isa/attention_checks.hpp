// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the attention tests: error metrics against the double references and the
// synthetic frequencies the problems are rotated with (include after test_support.hpp: it uses
// Catch2's REQUIRE).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include <ropekit/table.hpp>

namespace ropekit_test {

/// Normwise maximum relative error max|a - b| / max|b| and NMSE sum (a - b)^2 / sum b^2.
struct errors {
    double max_rel = 0, nmse = 0;
};

/// errors of `got` against the reference `ref`.
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

/// Every LSE within 1e-5 (relative above 1) of the reference; -inf rows exactly -inf.
inline void check_lse(const std::vector<float>& got, const std::vector<double>& ref) {
    for (std::size_t i = 0; i < ref.size(); ++i) {
        if (std::isinf(ref[i])) {
            REQUIRE(got[i] == float(ref[i]));
        } else {
            REQUIRE(std::abs(double(got[i]) - ref[i]) <= 1e-5 * std::max(1.0, std::abs(ref[i])));
        }
    }
}

/// Frequencies base 10000 over `rotary_dim` channels (a model's shape without a scaling method).
inline ropekit::rope_frequencies make_freqs(int head_dim, int rotary_dim,
                                            ropekit::rope_layout layout,
                                            float attention_factor = 1.0f) {
    ropekit::rope_frequencies f;
    f.attention_factor = attention_factor;
    f.head_dim = head_dim;
    f.rotary_dim = rotary_dim;
    f.layout = layout;
    for (int i = 0; i < rotary_dim / 2; ++i)
        f.inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / rotary_dim)));
    return f;
}

}  // namespace ropekit_test
