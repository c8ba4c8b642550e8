// SPDX-License-Identifier: Apache-2.0
// The runtime-dispatch pattern's AVX-512 translation unit: explicit instantiations only, built
// with -march=skylake-avx512. abi_symbols_O0 compares it with the baseline TU at -O0, where
// every helper the kernels call is emitted out of line: none may be shared with different code.
#include <ropekit/ropekit.hpp>

ROPEKIT_INSTANTIATE_ROPE_KERNELS(xsimd::avx512bw)
ROPEKIT_INSTANTIATE_ATTENTION_KERNELS(xsimd::avx512bw, float, ::ropekit::causal_mask)
ROPEKIT_INSTANTIATE_ATTENTION_KERNELS(xsimd::avx512bw, ::ropekit::bfloat16, ::ropekit::causal_mask)
ROPEKIT_INSTANTIATE_REROPE_ATTENTION_KERNELS(xsimd::avx512bw, ::ropekit::bfloat16,
                                             ::ropekit::causal_mask, ::ropekit::leaky_rerope)
ROPEKIT_INSTANTIATE_SINK_KERNELS(xsimd::avx512bw, ::ropekit::bfloat16)
ROPEKIT_INSTANTIATE_POSITION_RULE_ATTENTION_KERNELS(xsimd::avx512bw, ::ropekit::bfloat16,
                                                    ::ropekit::causal_mask, ::ropekit::self_extend)
ROPEKIT_INSTANTIATE_POSITION_RULE_ATTENTION_KERNELS(xsimd::avx512bw, ::ropekit::bfloat16,
                                                    ::ropekit::sink_window_mask,
                                                    ::ropekit::streaming_llm)
ROPEKIT_INSTANTIATE_ATTENTION_TEMPERATURE_KERNELS(xsimd::avx512bw)
