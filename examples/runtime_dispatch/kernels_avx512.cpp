// SPDX-License-Identifier: Apache-2.0
// The kernels for xsimd::avx512bw, built with -mavx512f -mavx512bw -mavx512dq -mavx512vl.
// Only explicit instantiations live here, so nothing else in the program is compiled with
// these flags; dispatch.hpp declares the same sets for everyone else.
#include "dispatch.hpp"

ROPEKIT_INSTANTIATE_ROPE_KERNELS(xsimd::avx512bw)
ROPEKIT_INSTANTIATE_ATTENTION_LIST(xsimd::avx512bw, DISPATCH_ATTENTION_SET)
