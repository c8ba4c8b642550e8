// SPDX-License-Identifier: Apache-2.0
// The kernels for xsimd::sse2, built with the default flags (SSE2 is part of x86-64).
// Only explicit instantiations live here, so nothing else in the program is compiled with
// these flags; dispatch.hpp declares the same sets for everyone else.
#include "dispatch.hpp"

ROPEKIT_INSTANTIATE_ROPE_KERNELS(xsimd::sse2)
ROPEKIT_INSTANTIATE_ATTENTION_LIST(xsimd::sse2, DISPATCH_ATTENTION_SET)
