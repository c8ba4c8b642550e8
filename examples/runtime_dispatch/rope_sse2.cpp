// SPDX-License-Identifier: Apache-2.0
// The rope kernels for xsimd::sse2, built with the default flags (SSE2 is part of x86-64).
// Only explicit instantiations live here, so nothing else in the program is compiled with
// these flags.
#include <ropekit/rope.hpp>

ROPEKIT_INSTANTIATE_ROPE_KERNELS(xsimd::sse2)
