// SPDX-License-Identifier: Apache-2.0
// The mixed-flags link test (tests/abi): two translation units call the same ropekit front doors,
// one built for baseline x86-64, one for AVX-512, linked into one program. Each kernel entry
// reports its architecture through ROPEKIT_TRACE_KERNEL, defined here identically for every TU
// of the program, so main() can check which kernel each path really ran.
#pragma once

#include <string>
#include <vector>

namespace abi_test {

/// Appends "kernel:arch" to the program's trace (abi_main.cpp).
void record(const char* kernel, const char* arch);

/// What one path computed: rotated q and k, attention outputs, and its namespace's name.
struct path_result {
    std::vector<float> values;  ///< every output of every call, concatenated
    std::string isa_namespace;  ///< ropekit::isa_namespace() in that TU
};

path_result run_baseline();  // abi_baseline.cpp, -march=x86-64
path_result run_avx512();    // abi_avx512.cpp, -march=skylake-avx512

}  // namespace abi_test

#define ROPEKIT_TRACE_KERNEL(kernel_name, arch_name) ::abi_test::record(kernel_name, arch_name)
