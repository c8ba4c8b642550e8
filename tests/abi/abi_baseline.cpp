// SPDX-License-Identifier: Apache-2.0
// The baseline path of the mixed-flags test, built with -march=x86-64 (SSE2).
#include "abi_paths.hpp"
#define ABI_TEST_PATH run_baseline
#include "abi_calls.inc"
