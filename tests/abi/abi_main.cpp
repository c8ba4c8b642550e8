// SPDX-License-Identifier: Apache-2.0
// Mixed-flags link test: run_baseline() (built for x86-64) and run_avx512() (built for
// skylake-avx512) call the same ropekit front doors in one program. Without per-ISA symbols the
// linker keeps one copy of each front door for both, so one of the two paths reaches the other's
// kernels: SIGILL on a CPU without AVX-512, or a silently slow fast path. This program checks
// that the baseline path reaches only SSE2 kernels, that the AVX-512 path (where the CPU has it)
// reaches only AVX-512 kernels, and that both compute the same results. Built with baseline
// flags, and linked first, so it runs on any x86-64 CPU.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "abi_paths.hpp"

namespace {
std::vector<std::string> g_trace;
}

void abi_test::record(const char* kernel, const char* arch) {
    g_trace.push_back(std::string(kernel) + ":" + arch);
}

namespace {
int failures = 0, checks = 0;

void check(bool ok, const std::string& what) {
    ++checks;
    if (!ok) {
        ++failures;
        std::printf("FAILED: %s\n", what.c_str());
    }
}

// Every traced kernel entry ran `arch`, and every kernel the calls make was reached.
void check_trace(const char* path, const std::string& arch) {
    const char* kernels[] = {
        "apply_rope",     "apply_rope_qk", "rebase_keys",       "apply_mrope",
        "apply_mrope_qk", "rope_store",    "attention_blocked", "position_rule_attention_blocked"};
    for (const std::string& t : g_trace)
        check(t.substr(t.find(':') + 1) == arch,
              std::string(path) + " path ran " + t + ", expected arch " + arch);
    for (const char* k : kernels) {
        bool seen = false;
        for (const std::string& t : g_trace) seen = seen || t.substr(0, t.find(':')) == k;
        check(seen, std::string(path) + " path never reached " + k);
    }
    std::printf("%s path: %zu kernel entries, all %s\n", path, g_trace.size(), arch.c_str());
}

bool cpu_has_avx512() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512cd");
}
}  // namespace

int main() {
    g_trace.clear();
    const abi_test::path_result base = abi_test::run_baseline();
    std::printf("baseline TU: namespace %s\n", base.isa_namespace.c_str());
    check_trace("baseline", "sse2");
    if (!cpu_has_avx512()) {
        std::printf("this CPU has no AVX-512: the fast path is linked but not run\n");
    } else {
        g_trace.clear();
        const abi_test::path_result fast = abi_test::run_avx512();
        std::printf("AVX-512 TU: namespace %s\n", fast.isa_namespace.c_str());
        check_trace("avx512", "avx512bw");
        check(base.isa_namespace != fast.isa_namespace, "the two TUs share an ISA namespace");
        check(base.values.size() == fast.values.size(), "the paths computed different sizes");
        // The same computation on both paths, not an accuracy test (tests/isa does that): FMA
        // contraction differs, so a bf16 key can round the other way, one bf16 ulp (2^-8
        // relative), which the attention outputs inherit. Within 2^-7 of each value's scale.
        double worst = 0;
        for (std::size_t i = 0; i < base.values.size() && i < fast.values.size(); ++i) {
            const double a = base.values[i], b = fast.values[i];
            worst = std::fmax(worst, std::fabs(a - b) / std::fmax(1.0, std::fabs(a)));
        }
        check(worst < 0x1p-7, "the paths disagree by " + std::to_string(worst));
        std::printf("baseline vs AVX-512 results: worst relative difference %.3g\n", worst);
    }
    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}
