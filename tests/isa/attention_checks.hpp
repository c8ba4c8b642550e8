// SPDX-License-Identifier: Apache-2.0
// Error metrics of the attention kernels' results against the double references, shared by the
// attention tests (include after test_support.hpp: it uses Catch2's REQUIRE).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

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

}  // namespace ropekit_test
