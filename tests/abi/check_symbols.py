#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks that two object files built from the same ropekit code with different -march flags share
no ropekit function whose code depends on the flags.

A weak (COMDAT) function defined in both objects is one the linker keeps a single copy of, for
both translation units. That is a hazard when
  - the fast object's copy uses an instruction beyond baseline x86-64 (AVX, AVX-512, BMI, SSE3+,
    ...): kept, it raises SIGILL on the baseline path of an older CPU; or
  - the two copies call different functions (relocation targets differ): kept, one TU silently
    runs the other's callees (the fast path the slow kernels, or the reverse).
Copies that differ only in instruction scheduling (-mtune) are harmless and pass.

usage: check_symbols.py BASELINE.o FAST.o
Exits 1 listing the offending symbols, 0 otherwise; prints a summary either way.
"""
import re
import subprocess
import sys


def defined_ropekit_functions(obj):
    """Mangled names of the functions `obj` defines in namespace ropekit."""
    out = subprocess.run(["nm", "--defined-only", obj], check=True, capture_output=True,
                         text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        _, kind, name = parts
        # T/t: text, W/w: weak, i: indirect. (Objects: inline functions are W.)
        if kind in "TtWwi" and name.startswith("_ZN7ropekit"):
            names.add(name)
    return names


# Instructions a baseline x86-64 (SSE2) CPU does not have, beyond every VEX / EVEX / mask
# instruction (mnemonics starting with v or k): SSE3, SSSE3, SSE4.1/4.2, POPCNT, LZCNT, BMI1/2,
# MOVBE, ADX, F16C's are all v-prefixed.
NON_BASELINE = set("""
addsubpd addsubps haddpd haddps hsubpd hsubps lddqu movddup movshdup movsldup fisttp
pabsb pabsd pabsw palignr phaddd phaddsw phaddw phsubd phsubsw phsubw pmaddubsw pmulhrsw
pshufb psignb psignd psignw
blendpd blendps blendvpd blendvps dppd dpps extractps insertps movntdqa mpsadbw packusdw
pblendvb pblendw pcmpeqq pextrb pextrd pextrq phminposuw pinsrb pinsrd pinsrq pmaxsb pmaxsd
pmaxud pmaxuw pminsb pminsd pminud pminuw pmovsxbd pmovsxbq pmovsxbw pmovsxdq pmovsxwd
pmovsxwq pmovzxbd pmovzxbq pmovzxbw pmovzxdq pmovzxwd pmovzxwq pmuldq pmulld ptest roundpd
roundps roundsd roundss crc32 pcmpestri pcmpestrm pcmpistri pcmpistrm pcmpgtq
popcnt lzcnt tzcnt andn bextr blsi blsmsk blsr bzhi mulx pdep pext rorx sarx shlx shrx
movbe adcx adox
""".split())


def disassembly(obj):
    """symbol -> (list of mnemonics, sorted relocation targets)."""
    out = subprocess.run(["objdump", "-d", "-r", "--no-show-raw-insn", "--no-addresses", obj],
                         check=True, capture_output=True, text=True).stdout
    bodies, current = {}, None
    for line in out.splitlines():
        text = line.strip()
        m = re.match(r"^<(\S+)>:$", text)
        if m:
            current = m.group(1)
            bodies[current] = ([], [])
            continue
        if current is None or not text or line.startswith("Disassembly"):
            continue
        if text.startswith("R_"):  # relocation: R_X86_64_PLT32 symbol-0x4
            parts = text.split()
            target = re.sub(r"[-+]0x[0-9a-f]+$", "", parts[1]) if len(parts) > 1 else ""
            # Local labels (.LC12, .text...) name constants, not functions.
            if not target.startswith("."):
                bodies[current][1].append(target)
            continue
        mnemonic = text.split()[0]
        if mnemonic in ("rex", "data16", "lock", "rep", "repz", "repnz", "notrack", "bnd"):
            mnemonic = text.split()[1] if len(text.split()) > 1 else mnemonic
        bodies[current][0].append(mnemonic)
    return {k: (v[0], sorted(set(v[1]))) for k, v in bodies.items()}


def non_baseline(mnemonics):
    return sorted({m for m in mnemonics if m[0] in "vk" or m in NON_BASELINE})


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), check=True, capture_output=True,
                         text=True).stdout
    return out.splitlines()


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    base, fast = sys.argv[1], sys.argv[2]
    names_base, names_fast = defined_ropekit_functions(base), defined_ropekit_functions(fast)
    shared = sorted(names_base & names_fast)
    dis_base, dis_fast = disassembly(base), disassembly(fast)
    problems = []
    for s in shared:
        (_, calls_b), (insns_f, calls_f) = dis_base.get(s, ([], [])), dis_fast.get(s, ([], []))
        why = []
        extra = non_baseline(insns_f)
        if extra:
            why.append("fast copy uses " + " ".join(extra[:8]))
        if calls_b != calls_f:
            why.append("copies call different functions: " +
                       " ".join(sorted(set(calls_b) ^ set(calls_f))[:4]))
        if why:
            problems.append((s, "; ".join(why)))
    print(f"{len(names_base | names_fast)} ropekit functions defined, {len(shared)} defined in "
          f"both objects, {len(problems)} of those flag-dependent")
    for (name, why), pretty in zip(problems, demangle([p[0] for p in problems])):
        print(f"  shared, flag-dependent: {pretty}\n      {why}\n      ({name})")
    for pretty in demangle([s for s in shared if s not in {p[0] for p in problems}]):
        print(f"  shared, baseline code and the same callees: {pretty}")
    print(f"{0 if problems else 1} passed, {1 if problems else 0} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
