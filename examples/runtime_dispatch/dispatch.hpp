// SPDX-License-Identifier: Apache-2.0
// The kernel sets this program carries, declared (extern template) so that main.cpp, built
// without AVX flags, never instantiates them itself; each kernels_<isa>.cpp instantiates one
// set: the rope kernels, and causal attention over bfloat16 K/V (contiguous or paged).
#pragma once

#include <ropekit/attention.hpp>
#include <ropekit/rope.hpp>

ROPEKIT_DECLARE_ROPE_KERNELS(xsimd::sse2)
ROPEKIT_DECLARE_ROPE_KERNELS(xsimd::fma3<xsimd::avx2>)
ROPEKIT_DECLARE_ROPE_KERNELS(xsimd::avx512bw)
// Causal attention over bfloat16 K/V, contiguous and paged (the list macros take parenthesised
// lists of storage types, masks and rules; ropekit::no_position_rule is plain attention).
#define DISPATCH_ATTENTION_SET \
    (::ropekit::bfloat16), (::ropekit::causal_mask), (::ropekit::no_position_rule)
ROPEKIT_DECLARE_ATTENTION_LIST(xsimd::sse2, DISPATCH_ATTENTION_SET)
ROPEKIT_DECLARE_ATTENTION_LIST(xsimd::fma3<xsimd::avx2>, DISPATCH_ATTENTION_SET)
ROPEKIT_DECLARE_ATTENTION_LIST(xsimd::avx512bw, DISPATCH_ATTENTION_SET)

namespace dispatch {

/// The instruction sets compiled into this program, best last.
enum class isa { sse2, avx2, avx512 };

inline const char* name(isa i) {
    return i == isa::sse2 ? "sse2" : i == isa::avx2 ? "avx2+fma" : "avx512bw";
}

/// True when this CPU can run the kernels compiled for `i`.
inline bool cpu_has(isa i) {
    __builtin_cpu_init();
    switch (i) {
        case isa::sse2:
            return true;
        case isa::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    }
    return false;
}

/// The best instruction set this CPU supports.
inline isa best() {
    for (isa i : {isa::avx512, isa::avx2})
        if (cpu_has(i)) return i;
    return isa::sse2;
}

/// Calls `f(arch_tag)` with the xsimd architecture of `i`; f forwards to the ropekit kernels
/// with that explicit Arch, which the extern declarations above resolve to the arch's TU.
template <class F>
void with_arch(isa i, F&& f) {
    switch (i) {
        case isa::sse2:
            f(xsimd::sse2{});
            return;
        case isa::avx2:
            f(xsimd::fma3<xsimd::avx2>{});
            return;
        case isa::avx512:
            f(xsimd::avx512bw{});
            return;
    }
}

}  // namespace dispatch
