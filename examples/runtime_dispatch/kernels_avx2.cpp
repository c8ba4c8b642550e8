// SPDX-License-Identifier: Apache-2.0
// The kernels for xsimd::fma3<xsimd::avx2>, built with -mavx2 -mfma -mf16c.
// Only explicit instantiations live here, so nothing else in the program is compiled with
// these flags; dispatch.hpp declares the same sets for everyone else.
#include "dispatch.hpp"

ROPEKIT_INSTANTIATE_ROPE_KERNELS(xsimd::fma3<xsimd::avx2>)
ROPEKIT_INSTANTIATE_ATTENTION_LIST(xsimd::fma3<xsimd::avx2>, DISPATCH_ATTENTION_SET)
