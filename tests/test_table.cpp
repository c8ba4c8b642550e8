// SPDX-License-Identifier: Apache-2.0
#include "test_support.hpp"

#include <ropekit/table.hpp>

#include <cmath>

namespace {
ropekit::rope_frequencies default_freqs(int head_dim, int rotary_dim, double base) {
    ropekit::rope_frequencies f;
    f.head_dim = head_dim;
    f.rotary_dim = rotary_dim;
    for (int i = 0; i < rotary_dim / 2; ++i)
        f.inv_freq.push_back(float(std::pow(base, -2.0 * i / rotary_dim)));
    return f;
}
}  // namespace

TEST_CASE("range table rows are cos/sin of position * inv_freq in long double") {
    const auto freqs = default_freqs(128, 128, 10000.0);
    const auto table = ropekit::cos_sin_table::for_range(freqs, -3, 40);
    REQUIRE(table.rows() == 40);
    REQUIRE(table.pairs() == 64);
    for (std::int64_t p = -3; p < 37; ++p) {
        const auto r = table.row_of(p);
        for (int i = 0; i < 64; ++i) {
            const long double a = (long double)p * (long double)freqs.inv_freq[i];
            CHECK(std::fabs(table.cos_row(r)[i] - (double)std::cos(a)) < 1e-6);
            CHECK(std::fabs(table.sin_row(r)[i] - (double)std::sin(a)) < 1e-6);
        }
    }
    CHECK_THROWS_AS(table.row_of(37), ropekit::error);
    CHECK_THROWS_AS(table.row_of(-4), ropekit::error);
}
