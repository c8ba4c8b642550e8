// SPDX-License-Identifier: Apache-2.0
// The rope kernels for xsimd::avx512bw, built with -mavx512f -mavx512bw -mavx512dq -mavx512vl.
// Only explicit instantiations live here, so nothing else in the program is compiled with
// these flags.
#include <ropekit/rope.hpp>

ROPEKIT_INSTANTIATE_ROPE_KERNELS(xsimd::avx512bw)
