// SPDX-License-Identifier: Apache-2.0
// A consumer of ropekit: builds a table with one include and checks a known value.
#include <ropekit/ropekit.hpp>

#include <cmath>
#include <cstdio>

int main() {
    ropekit::rope_frequencies freqs;
    freqs.head_dim = 128;
    freqs.rotary_dim = 128;
    for (int i = 0; i < 64; ++i) freqs.inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / 128)));
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 4);
    const bool ok = std::fabs(table.cos_row(1)[0] - float(std::cos(1.0))) < 1e-6f;
    std::printf("ropekit %d.%d.%d consumer: %s\n", ROPEKIT_VERSION_MAJOR, ROPEKIT_VERSION_MINOR,
                ROPEKIT_VERSION_PATCH, ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}
