// SPDX-License-Identifier: Apache-2.0
/// \file
/// The explicit-instantiation macros of attention.hpp, for engines that build one translation
/// unit per instruction set and pick one at run time (docs/simd.md, examples/runtime_dispatch):
/// ROPEKIT_DECLARE_ATTENTION / ROPEKIT_INSTANTIATE_ATTENTION name one attention_problem type,
/// the _LIST forms a product of storage types, masks and rules, and the 0.2 families expand to
/// them. Included by attention.hpp; not meant to be included alone.
#pragma once

/// \cond INTERNAL
// Every attention instantiation is attention_run<ARCH, PROBLEM>: the problem type carries the
// K/V view, mask and rule, so one macro names them all (PROBLEM may contain commas).
#define ROPEKIT_ATTENTION_RUN_(PREFIX, ARCH, ...)                   \
    PREFIX template void ropekit::attention_run<ARCH, __VA_ARGS__>( \
        ARCH, const __VA_ARGS__&, const ::ropekit::attention_work&, \
        ::ropekit::attention_workspace&);
#define ROPEKIT_ATTENTION_KERNELS_(PREFIX, ARCH, KV, MASK) \
    ROPEKIT_ATTENTION_RUN_(PREFIX, ARCH,                   \
                           ::ropekit::attention_problem<::ropekit::head_view<const KV>, MASK>)
#define ROPEKIT_POSITION_RULE_ATTENTION_KERNELS_(PREFIX, ARCH, KV, MASK, RULE) \
    ROPEKIT_ATTENTION_RUN_(                                                    \
        PREFIX, ARCH, ::ropekit::attention_problem<::ropekit::head_view<const KV>, MASK, RULE>)
// rerope_attention_blocked is an always-inline forwarder: instantiating the kernel it calls
// is what the 0.2 macros need to do.
#define ROPEKIT_REROPE_ATTENTION_KERNELS_(PREFIX, ARCH, KV, MASK, RULE) \
    ROPEKIT_POSITION_RULE_ATTENTION_KERNELS_(PREFIX, ARCH, KV, MASK, RULE)
// The list helper: a fixed-arity FOR_EACH (up to 8 items per list), in three independent copies
// because a macro cannot expand itself (the KV, mask and rule loops nest).
// CALL expands the argument list before the FOR_n macro splits it (UNPAREN yields commas);
// one per nesting level, like the loops.
#define ROPEKIT_PP_CALL_A(M, args) M args
#define ROPEKIT_PP_CALL_B(M, args) M args
#define ROPEKIT_PP_CALL_C(M, args) M args
#define ROPEKIT_PP_CALL_L(M, args) M args  // the lists may come from one macro
#define ROPEKIT_PP_UNPAREN_(...) __VA_ARGS__
#define ROPEKIT_PP_UNPAREN(x) ROPEKIT_PP_UNPAREN_ x
#define ROPEKIT_PP_NARGS_(_1, _2, _3, _4, _5, _6, _7, _8, N, ...) N
#define ROPEKIT_PP_NARGS(...) ROPEKIT_PP_NARGS_(__VA_ARGS__, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define ROPEKIT_PP_FOR_A_1(M, c, x) M(c, x)
#define ROPEKIT_PP_FOR_A_2(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_A_1(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_A_3(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_A_2(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_A_4(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_A_3(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_A_5(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_A_4(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_A_6(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_A_5(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_A_7(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_A_6(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_A_8(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_A_7(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_B_1(M, c, x) M(c, x)
#define ROPEKIT_PP_FOR_B_2(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_B_1(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_B_3(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_B_2(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_B_4(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_B_3(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_B_5(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_B_4(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_B_6(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_B_5(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_B_7(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_B_6(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_B_8(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_B_7(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_C_1(M, c, x) M(c, x)
#define ROPEKIT_PP_FOR_C_2(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_C_1(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_C_3(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_C_2(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_C_4(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_C_3(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_C_5(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_C_4(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_C_6(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_C_5(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_C_7(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_C_6(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_C_8(M, c, x, ...) M(c, x) ROPEKIT_PP_FOR_C_7(M, c, __VA_ARGS__)
#define ROPEKIT_PP_FOR_A(M, c, list)                                             \
    ROPEKIT_PP_CALL_A(ROPEKIT_PP_CAT2(ROPEKIT_PP_FOR_A_, ROPEKIT_PP_NARGS list), \
                      (M, c, ROPEKIT_PP_UNPAREN(list)))
#define ROPEKIT_PP_FOR_B(M, c, list)                                             \
    ROPEKIT_PP_CALL_B(ROPEKIT_PP_CAT2(ROPEKIT_PP_FOR_B_, ROPEKIT_PP_NARGS list), \
                      (M, c, ROPEKIT_PP_UNPAREN(list)))
#define ROPEKIT_PP_FOR_C(M, c, list)                                             \
    ROPEKIT_PP_CALL_C(ROPEKIT_PP_CAT2(ROPEKIT_PP_FOR_C_, ROPEKIT_PP_NARGS list), \
                      (M, c, ROPEKIT_PP_UNPAREN(list)))
// Context tuples: (PREFIX, ARCH, MASKS, RULES) per KV, then (PREFIX, ARCH, KV, RULES) per mask,
// then (PREFIX, ARCH, KV, MASK) per rule, which emits the head_view and paged_view problems.
#define ROPEKIT_PP_GET0_(a, b, c, d) a
#define ROPEKIT_PP_GET1_(a, b, c, d) b
#define ROPEKIT_PP_GET2_(a, b, c, d) c
#define ROPEKIT_PP_GET3_(a, b, c, d) d
#define ROPEKIT_PP_GET0(t) ROPEKIT_PP_GET0_ t
#define ROPEKIT_PP_GET1(t) ROPEKIT_PP_GET1_ t
#define ROPEKIT_PP_GET2(t) ROPEKIT_PP_GET2_ t
#define ROPEKIT_PP_GET3(t) ROPEKIT_PP_GET3_ t
#define ROPEKIT_ATTENTION_LIST_RULE_(c, RULE)                                         \
    ROPEKIT_ATTENTION_RUN_(                                                           \
        ROPEKIT_PP_GET0(c), ROPEKIT_PP_GET1(c),                                       \
        ::ropekit::attention_problem<::ropekit::head_view<const ROPEKIT_PP_GET2(c)>,  \
                                     ROPEKIT_PP_GET3(c), RULE>)                       \
    ROPEKIT_ATTENTION_RUN_(                                                           \
        ROPEKIT_PP_GET0(c), ROPEKIT_PP_GET1(c),                                       \
        ::ropekit::attention_problem<::ropekit::paged_view<const ROPEKIT_PP_GET2(c)>, \
                                     ROPEKIT_PP_GET3(c), RULE>)
#define ROPEKIT_ATTENTION_LIST_MASK_(c, MASK)                                            \
    ROPEKIT_PP_FOR_C(ROPEKIT_ATTENTION_LIST_RULE_,                                       \
                     (ROPEKIT_PP_GET0(c), ROPEKIT_PP_GET1(c), ROPEKIT_PP_GET2(c), MASK), \
                     ROPEKIT_PP_GET3(c))
#define ROPEKIT_ATTENTION_LIST_KV_(c, KV)                                              \
    ROPEKIT_PP_FOR_B(ROPEKIT_ATTENTION_LIST_MASK_,                                     \
                     (ROPEKIT_PP_GET0(c), ROPEKIT_PP_GET1(c), KV, ROPEKIT_PP_GET3(c)), \
                     ROPEKIT_PP_GET2(c))
#define ROPEKIT_ATTENTION_LIST_(PREFIX, ARCH, KVS, MASKS, RULES) \
    ROPEKIT_PP_FOR_A(ROPEKIT_ATTENTION_LIST_KV_, (PREFIX, ARCH, MASKS, RULES), KVS)
#define ROPEKIT_ATTENTION_TEMPERATURE_KERNELS_(PREFIX, ARCH)            \
    PREFIX template void ropekit::attention_temperature_blocked<ARCH>(  \
        ARCH, ::ropekit::head_view<float>, const ::ropekit::positions&, \
        const ::ropekit::attention_temperature&, ::ropekit::query_range);
/// \endcond

/// Declares (extern template) attention_run of architecture ARCH for one problem type (the rest
/// of the arguments: `attention_problem<KVView, Mask, Rule>`, commas allowed), so a translation
/// unit built without ARCH's flags can call `attention_run(ARCH{}, problem, work, ws)` (or
/// attention_blocked / position_rule_attention_blocked, which forward to it) while the code
/// lives in a TU built with those flags, which uses ROPEKIT_INSTANTIATE_ATTENTION.
#define ROPEKIT_DECLARE_ATTENTION(ARCH, ...) ROPEKIT_ATTENTION_RUN_(extern, ARCH, __VA_ARGS__)

/// Explicitly instantiates attention_run of ARCH for one problem type (see
/// ROPEKIT_DECLARE_ATTENTION). Put it in a translation unit compiled with ARCH's flags.
#define ROPEKIT_INSTANTIATE_ATTENTION(ARCH, ...) ROPEKIT_ATTENTION_RUN_(, ARCH, __VA_ARGS__)

/// Declares (extern template) attention_run of ARCH for every combination of the three
/// parenthesised lists (up to 8 items each), with contiguous and paged K/V:
/// `ROPEKIT_DECLARE_ATTENTION_LIST(xsimd::avx512bw, (float, ::ropekit::bfloat16),
/// (::ropekit::causal_mask, ::ropekit::sliding_window_mask), (::ropekit::no_position_rule,
/// ::ropekit::streaming_llm))` is 2 x 2 x 2 x 2 problem types (the three lists may also come
/// from one macro of your own). Each costs compile time: list what the engine runs.
#define ROPEKIT_DECLARE_ATTENTION_LIST(ARCH, ...) \
    ROPEKIT_PP_CALL_L(ROPEKIT_ATTENTION_LIST_, (extern, ARCH, __VA_ARGS__))

/// Explicitly instantiates what ROPEKIT_DECLARE_ATTENTION_LIST declares, in one line (in a
/// translation unit compiled with ARCH's flags).
#define ROPEKIT_INSTANTIATE_ATTENTION_LIST(ARCH, ...) \
    ROPEKIT_PP_CALL_L(ROPEKIT_ATTENTION_LIST_, (, ARCH, __VA_ARGS__))

/// Declares (extern template) attention_temperature_blocked of ARCH (see
/// ROPEKIT_DECLARE_ATTENTION_KERNELS).
#define ROPEKIT_DECLARE_ATTENTION_TEMPERATURE_KERNELS(ARCH) \
    ROPEKIT_ATTENTION_TEMPERATURE_KERNELS_(extern, ARCH)

/// Explicitly instantiates attention_temperature_blocked of ARCH (in a translation unit compiled
/// with ARCH's flags).
#define ROPEKIT_INSTANTIATE_ATTENTION_TEMPERATURE_KERNELS(ARCH) \
    ROPEKIT_ATTENTION_TEMPERATURE_KERNELS_(, ARCH)

/// Declares (extern template) attention_blocked of architecture ARCH for K/V storage KV and mask
/// type MASK, so a translation unit built without ARCH's flags can call
/// `ropekit::attention_blocked(ARCH{}, ...)` while the code lives in a TU built with those flags,
/// which uses ROPEKIT_INSTANTIATE_ATTENTION_KERNELS(ARCH, KV, MASK). One (KV, MASK) pair per
/// line: instantiate only what the engine uses (each costs tens of seconds of compile time).
/// See examples/runtime_dispatch.
#define ROPEKIT_DECLARE_ATTENTION_KERNELS(ARCH, KV, MASK) \
    ROPEKIT_ATTENTION_KERNELS_(extern, ARCH, KV, MASK)

/// Explicitly instantiates attention_blocked of ARCH for KV and MASK (see
/// ROPEKIT_DECLARE_ATTENTION_KERNELS). Put it in a translation unit compiled with ARCH's flags.
#define ROPEKIT_INSTANTIATE_ATTENTION_KERNELS(ARCH, KV, MASK) \
    ROPEKIT_ATTENTION_KERNELS_(, ARCH, KV, MASK)

/// Declares (extern template) position_rule_attention_blocked of ARCH for KV, MASK and RULE
/// (ropekit::rerope, leaky_rerope, self_extend or streaming_llm); see
/// ROPEKIT_DECLARE_ATTENTION_KERNELS.
#define ROPEKIT_DECLARE_POSITION_RULE_ATTENTION_KERNELS(ARCH, KV, MASK, RULE) \
    ROPEKIT_POSITION_RULE_ATTENTION_KERNELS_(extern, ARCH, KV, MASK, RULE)

/// Explicitly instantiates position_rule_attention_blocked of ARCH for KV, MASK and RULE (in a
/// translation unit compiled with ARCH's flags).
#define ROPEKIT_INSTANTIATE_POSITION_RULE_ATTENTION_KERNELS(ARCH, KV, MASK, RULE) \
    ROPEKIT_POSITION_RULE_ATTENTION_KERNELS_(, ARCH, KV, MASK, RULE)

/// Kept for 0.2 code: ROPEKIT_DECLARE_POSITION_RULE_ATTENTION_KERNELS for RULE ropekit::rerope
/// or ropekit::leaky_rerope (rerope_attention_blocked forwards to that kernel inline). Use one
/// of the two macros per (ARCH, KV, MASK, RULE), not both.
#define ROPEKIT_DECLARE_REROPE_ATTENTION_KERNELS(ARCH, KV, MASK, RULE) \
    ROPEKIT_REROPE_ATTENTION_KERNELS_(extern, ARCH, KV, MASK, RULE)

/// Kept for 0.2 code: ROPEKIT_INSTANTIATE_POSITION_RULE_ATTENTION_KERNELS for RULE
/// ropekit::rerope or ropekit::leaky_rerope.
#define ROPEKIT_INSTANTIATE_REROPE_ATTENTION_KERNELS(ARCH, KV, MASK, RULE) \
    ROPEKIT_REROPE_ATTENTION_KERNELS_(, ARCH, KV, MASK, RULE)
