// SPDX-License-Identifier: Apache-2.0
// Test session entry point. Built without the variant's -march flags: it first checks that this
// CPU can run the instruction set the test program was compiled for, and exits 77 (ctest SKIP)
// when it cannot, instead of dying on an illegal instruction.
#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
    const char* cpu = ROPEKIT_TEST_REQUIRED_CPU;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    bool supported = true;
    if (std::strcmp(cpu, "avx2") == 0) supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (std::strcmp(cpu, "avx512bw") == 0)
        supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (!supported) {
        std::printf("SKIPPED: this CPU lacks %s\n", cpu);
        return 77;
    }
#else
    (void)cpu;
#endif
    return Catch::Session().run(argc, argv);
}
