// SPDX-License-Identifier: Apache-2.0
// The rope kernels for xsimd::fma3<xsimd::avx2>, built with -mavx2 -mfma -mf16c.
// Only explicit instantiations live here, so nothing else in the program is compiled with
// these flags.
#include <ropekit/rope.hpp>

ROPEKIT_INSTANTIATE_ROPE_KERNELS(xsimd::fma3<xsimd::avx2>)
