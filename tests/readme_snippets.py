#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks that every ```cpp block of README.md is, line for line, the text between
`// README snippet N` and `// end README snippet N` in examples/readme_snippets.cpp (which ctest
compiles and runs). `#include` lines of a block are the file's own includes and are skipped;
leading indentation is ignored.

usage: readme_snippets.py README.md examples/readme_snippets.cpp
"""
import re
import sys


def readme_blocks(text):
    blocks, current = [], None
    for line in text.splitlines():
        if current is None and line.strip() == "```cpp":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def normalise(lines):
    return [l.strip() for l in lines if l.strip() and not l.strip().startswith("#include")]


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    readme = open(sys.argv[1], encoding="utf-8").read()
    source = open(sys.argv[2], encoding="utf-8").read()
    failed = 0
    blocks = readme_blocks(readme)
    for n, block in enumerate(blocks, 1):
        m = re.search(r"// README snippet %d\n(.*?)\n\s*// end README snippet %d" % (n, n), source,
                      re.S)
        if not m:
            print(f"README block {n}: no '// README snippet {n}' in {sys.argv[2]}")
            failed += 1
            continue
        want, got = normalise(block), normalise(m.group(1).splitlines())
        if want != got:
            failed += 1
            print(f"README block {n} differs from {sys.argv[2]}:")
            for a, b in zip(want + [""] * len(got), got + [""] * len(want)):
                if a != b:
                    print(f"  README: {a}\n  source: {b}")
                    break
    if re.search(r"// README snippet %d\n" % (len(blocks) + 1), source):
        print(f"{sys.argv[2]} has a snippet {len(blocks) + 1} that README.md no longer shows")
        failed += 1
    print(f"{len(blocks) - failed if failed <= len(blocks) else 0} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
