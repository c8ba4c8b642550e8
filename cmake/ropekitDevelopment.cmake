# SPDX-License-Identifier: Apache-2.0
# Flags and helpers for ropekit's own tests, benchmarks and examples (never for consumers).

add_library(ropekit_dev_flags INTERFACE)
target_compile_options(ropekit_dev_flags INTERFACE -Wall -Wextra -Wpedantic
  $<$<BOOL:${ROPEKIT_WERROR}>:-Werror>)
if(ROPEKIT_SANITIZE)
  target_compile_options(ropekit_dev_flags INTERFACE
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_link_options(ropekit_dev_flags INTERFACE -fsanitize=address,undefined)
endif()

set(ROPEKIT_X86 OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(ROPEKIT_X86 ON)
endif()

# Instruction-set variants the kernel tests are built for. Each entry: name, compile options,
# the CPU feature the host needs to run it (checked at run time; missing -> ctest SKIP).
set(ROPEKIT_ISA_VARIANTS "")
if(ROPEKIT_ISA_TESTS AND ROPEKIT_WITH_XSIMD)
  list(APPEND ROPEKIT_ISA_VARIANTS scalar)
  set(ROPEKIT_ISA_scalar_FLAGS -DROPEKIT_NO_SIMD)
  set(ROPEKIT_ISA_scalar_CPU "")
  if(ROPEKIT_X86)
    list(APPEND ROPEKIT_ISA_VARIANTS sse2 avx2 avx512)
    set(ROPEKIT_ISA_sse2_FLAGS -march=x86-64 -mtune=generic)
    set(ROPEKIT_ISA_sse2_CPU "sse2")
    set(ROPEKIT_ISA_avx2_FLAGS -march=haswell)
    set(ROPEKIT_ISA_avx2_CPU "avx2")
    set(ROPEKIT_ISA_avx512_FLAGS -march=skylake-avx512)
    set(ROPEKIT_ISA_avx512_CPU "avx512bw")
  endif()
endif()

# Native flags for benchmarks (they chase this machine's limits).
include(CheckCXXCompilerFlag)
check_cxx_compiler_flag(-march=native ROPEKIT_HAS_MARCH_NATIVE)

# find_package for tests / benchmarks: REQUIRED under ROPEKIT_REQUIRE_DEV_DEPS, else QUIET, and
# sets <out> to whether it was found.
macro(ropekit_find_dev_package out)
  if(ROPEKIT_REQUIRE_DEV_DEPS)
    find_package(${ARGN} REQUIRED)
  else()
    find_package(${ARGN} QUIET)
  endif()
  set(${out} ${${ARGV1}_FOUND})
endmacro()
