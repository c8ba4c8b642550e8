// SPDX-License-Identifier: Apache-2.0
// The same self-check with the kernels built for this machine (-march=native): on CPUs with
// AVX512-BF16 this runs the bfloat16 path that uses vcvtne2ps2bf16, which the per-ISA unit tests
// (built for skylake-avx512) cannot reach.
#include <cstdio>

#include "rope_check.hpp"

int main() {
    int cases = 0;
    const int failures = rope_check::check_all(
        ropekit::arch_name<ropekit::default_arch>(),
        [](const auto& angles, auto q, auto k, const ropekit::positions& pos, std::int64_t n) {
            ropekit::apply_rope_qk(angles, q, k, pos, 0, n);
        },
        cases);
    std::printf("%s (native flags): %d cases, %d failures\n",
                ropekit::arch_name<ropekit::default_arch>(), cases, failures);
    return failures == 0 ? 0 : 1;
}
