// SPDX-License-Identifier: Apache-2.0
/// \file
/// The inline namespaces that keep ropekit's symbols apart: one for the library version, one for
/// the instruction-set configuration a translation unit is compiled with.
///
/// Why: ropekit is header-only, so every inline function is compiled by every translation unit
/// (TU) that calls it, with that TU's flags, and the linker keeps *one* copy of each symbol. An
/// engine that builds a baseline TU and an AVX-512 TU would get one `apply_rope<float>` for both:
/// the baseline path could execute AVX-512 instructions (SIGILL on an older CPU), or the fast TU
/// could silently run the slow kernel. The same happens between two ropekit versions in one
/// program. The fix, as in Highway (`HWY_NAMESPACE`) and nlohmann/json (ABI-tagged inline
/// namespaces):
///
/// - `ropekit::ROPEKIT_ABI_NAMESPACE` (e.g. `ropekit::v0_3`) holds everything. Its name carries
///   the major and minor version, so two versions never share a symbol.
/// - `ropekit::ROPEKIT_ABI_NAMESPACE::ROPEKIT_ISA_NAMESPACE` (e.g.
/// `...::isa_sse41_avx_avx2_fma_f16c`)
///   holds every function whose machine code depends on the compile flags but whose name does
///   not say so: the front doors that use ropekit::default_arch, the cold-path validators and
///   builders. Its name lists the instruction-set extensions the compiler may use (the
///   predefined macros below) and whether SIMD kernels are compiled in.
/// - Types (head_view, cos_sin_table, attention_params, ...) and the kernels that take an
///   explicit `Arch` stay in the version namespace, so a baseline TU and an AVX-512 TU exchange
///   tables and views, and `apply_rope<xsimd::avx512bw>` is one symbol that
///   ROPEKIT_DECLARE_ROPE_KERNELS / ROPEKIT_INSTANTIATE_ROPE_KERNELS can name across TUs. Member
///   functions of those types are ROPEKIT_ALWAYS_INLINE where their code could depend on the
///   flags, so no out-of-line copy exists to be shared.
///
/// Both namespaces are inline: user code writes `ropekit::apply_rope`, never the versioned
/// names. tests/abi links TUs built with different `-march` flags into one program and checks
/// that no ropekit symbol with flag-dependent code is shared (and which kernel each path ran).
#pragma once

#include "version.hpp"

/// \cond INTERNAL
#define ROPEKIT_PP_CAT2_(a, b) a##b
#define ROPEKIT_PP_CAT2(a, b) ROPEKIT_PP_CAT2_(a, b)
#define ROPEKIT_PP_CAT4_(a, b, c, d) a##b##c##d
#define ROPEKIT_PP_CAT4(a, b, c, d) ROPEKIT_PP_CAT4_(a, b, c, d)
#define ROPEKIT_PP_CAT16_(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p) \
    a##b##c##d##e##f##g##h##i##j##k##l##m##n##o##p
#define ROPEKIT_PP_CAT16(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p) \
    ROPEKIT_PP_CAT16_(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p)

// One token per extension that changes what the compiler may emit (or what xsimd selects),
// empty when the extension is off. x86-64 implies SSE2; AArch64 implies NEON.
#if defined(__SSE4_1__)
#define ROPEKIT_ISA_PART_SSE41_ _sse41
#else
#define ROPEKIT_ISA_PART_SSE41_
#endif
#if defined(__AVX__)
#define ROPEKIT_ISA_PART_AVX_ _avx
#else
#define ROPEKIT_ISA_PART_AVX_
#endif
#if defined(__AVX2__)
#define ROPEKIT_ISA_PART_AVX2_ _avx2
#else
#define ROPEKIT_ISA_PART_AVX2_
#endif
#if defined(__FMA__)
#define ROPEKIT_ISA_PART_FMA_ _fma
#else
#define ROPEKIT_ISA_PART_FMA_
#endif
#if defined(__F16C__)
#define ROPEKIT_ISA_PART_F16C_ _f16c
#else
#define ROPEKIT_ISA_PART_F16C_
#endif
#if defined(__AVX512F__)
#define ROPEKIT_ISA_PART_AVX512F_ _avx512f
#else
#define ROPEKIT_ISA_PART_AVX512F_
#endif
#if defined(__AVX512BW__)
#define ROPEKIT_ISA_PART_AVX512BW_ _bw
#else
#define ROPEKIT_ISA_PART_AVX512BW_
#endif
#if defined(__AVX512DQ__)
#define ROPEKIT_ISA_PART_AVX512DQ_ _dq
#else
#define ROPEKIT_ISA_PART_AVX512DQ_
#endif
#if defined(__AVX512VL__)
#define ROPEKIT_ISA_PART_AVX512VL_ _vl
#else
#define ROPEKIT_ISA_PART_AVX512VL_
#endif
#if defined(__AVX512BF16__)
#define ROPEKIT_ISA_PART_AVX512BF16_ _bf16
#else
#define ROPEKIT_ISA_PART_AVX512BF16_
#endif
#if defined(__AVX512FP16__)
#define ROPEKIT_ISA_PART_AVX512FP16_ _fp16
#else
#define ROPEKIT_ISA_PART_AVX512FP16_
#endif
#if defined(__AVX512VNNI__)
#define ROPEKIT_ISA_PART_AVX512VNNI_ _vnni
#else
#define ROPEKIT_ISA_PART_AVX512VNNI_
#endif
#if defined(__ARM_FEATURE_SVE)
#define ROPEKIT_ISA_PART_SVE_ _sve
#else
#define ROPEKIT_ISA_PART_SVE_
#endif
#if defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)
#define ROPEKIT_ISA_PART_NEONFP16_ _neonfp16
#else
#define ROPEKIT_ISA_PART_NEONFP16_
#endif

// Whether the SIMD kernels are compiled in (the same test xsimd_compat.hpp makes).
#if defined(ROPEKIT_NO_SIMD)
#define ROPEKIT_ISA_PREFIX_ isa_scalar
#elif defined(__has_include)
#if __has_include(<xsimd/xsimd.hpp>)
#define ROPEKIT_ISA_PREFIX_ isa
#else
#define ROPEKIT_ISA_PREFIX_ isa_scalar
#endif
#else
#define ROPEKIT_ISA_PREFIX_ isa
#endif
/// \endcond

#ifndef ROPEKIT_ABI_NAMESPACE
/// Name of the version namespace, `v<major>_<minor>` (ropekit::v0_3).
#define ROPEKIT_ABI_NAMESPACE ROPEKIT_PP_CAT4(v, ROPEKIT_VERSION_MAJOR, _, ROPEKIT_VERSION_MINOR)
#endif

#ifndef ROPEKIT_ISA_NAMESPACE
/// Name of the instruction-set namespace: `isa` (or `isa_scalar` with ROPEKIT_NO_SIMD / without
/// xsimd) followed by the extensions the compile flags enable, e.g. `isa` for plain x86-64,
/// `isa_sse41_avx_avx2_fma_f16c` for -march=haswell, `isa_sse41_avx_avx2_fma_f16c_avx512f_bw_dq_vl`
/// for -march=skylake-avx512. An engine may define it (before any ropekit header, identically in
/// every TU it wants to share code) when it knows better.
#define ROPEKIT_ISA_NAMESPACE                                                                   \
    ROPEKIT_PP_CAT16(                                                                           \
        ROPEKIT_ISA_PREFIX_, ROPEKIT_ISA_PART_SSE41_, ROPEKIT_ISA_PART_AVX_,                    \
        ROPEKIT_ISA_PART_AVX2_, ROPEKIT_ISA_PART_FMA_, ROPEKIT_ISA_PART_F16C_,                  \
        ROPEKIT_ISA_PART_AVX512F_, ROPEKIT_ISA_PART_AVX512BW_, ROPEKIT_ISA_PART_AVX512DQ_,      \
        ROPEKIT_ISA_PART_AVX512VL_, ROPEKIT_ISA_PART_AVX512BF16_, ROPEKIT_ISA_PART_AVX512FP16_, \
        ROPEKIT_ISA_PART_AVX512VNNI_, ROPEKIT_ISA_PART_SVE_, ROPEKIT_ISA_PART_NEONFP16_, )
#endif

/// Opens `namespace ropekit { inline namespace v<major>_<minor> {`: every ropekit header's
/// content sits between this and ROPEKIT_END_NAMESPACE.
#define ROPEKIT_BEGIN_NAMESPACE \
    namespace ropekit {         \
    inline namespace ROPEKIT_ABI_NAMESPACE {
/// Closes ROPEKIT_BEGIN_NAMESPACE.
#define ROPEKIT_END_NAMESPACE \
    }                         \
    }
/// Opens the instruction-set namespace (inside ROPEKIT_BEGIN_NAMESPACE, at namespace ropekit
/// level): for functions whose code depends on the compile flags and whose name does not.
#define ROPEKIT_BEGIN_ISA_NAMESPACE inline namespace ROPEKIT_ISA_NAMESPACE {
/// Closes ROPEKIT_BEGIN_ISA_NAMESPACE.
#define ROPEKIT_END_ISA_NAMESPACE }

/// \cond INTERNAL
// The string form of a token (after expansion), for abi_namespace() and isa_namespace().
#define ROPEKIT_PP_STR_(x) #x
#define ROPEKIT_PP_STR(x) ROPEKIT_PP_STR_(x)
/// \endcond

// The ISA namespace is opened inside each namespace that needs one (ropekit, ropekit::detail,
// ropekit::detail::attn, ...), never around a nested namespace: C++ reopens `namespace detail`
// into whichever inline namespace already declares one, so `isa::detail` and `detail` would
// silently become one namespace or clash, depending on include order.
ROPEKIT_BEGIN_NAMESPACE
ROPEKIT_BEGIN_ISA_NAMESPACE
/// Name of the version namespace this translation unit uses (e.g. "v0_3").
constexpr const char* abi_namespace() noexcept {
    return ROPEKIT_PP_STR(ROPEKIT_ABI_NAMESPACE);
}
/// Name of the instruction-set namespace this translation unit uses (e.g.
/// "isa_sse41_avx_avx2_fma_f16c").
constexpr const char* isa_namespace() noexcept {
    return ROPEKIT_PP_STR(ROPEKIT_ISA_NAMESPACE);
}
ROPEKIT_END_ISA_NAMESPACE
namespace detail {
ROPEKIT_BEGIN_ISA_NAMESPACE
/// A type unique to this TU's instruction-set namespace: the default template argument of
/// helpers that must not be shared between TUs built with different flags.
struct isa_tag {};
ROPEKIT_END_ISA_NAMESPACE
}  // namespace detail
ROPEKIT_END_NAMESPACE
