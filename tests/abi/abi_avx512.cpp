// SPDX-License-Identifier: Apache-2.0
// The fast path of the mixed-flags test, built with -march=skylake-avx512.
#include "abi_paths.hpp"
#define ABI_TEST_PATH run_avx512
#include "abi_calls.inc"
