// SPDX-License-Identifier: Apache-2.0
// Rotating q and k of a packed bf16 QKV buffer (GQA: 32 q heads, 8 kv heads), then shifting the
// cached keys back by 100 positions (a StreamingLLM-style eviction) without a table.
#include <cmath>
#include <cstdio>
#include <vector>

#include <ropekit/rope.hpp>

int main() {
    // Llama-style frequencies: base 10000, head_dim 128, all channels rotated, NeoX pairs.
    ropekit::rope_frequencies freqs;
    freqs.head_dim = 128;
    freqs.rotary_dim = 128;
    freqs.layout = ropekit::rope_layout::neox;
    for (int i = 0; i < 64; ++i) freqs.inv_freq.push_back(float(std::pow(10000.0, -i / 64.0)));
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 4096);

    // Per token: [q: 32 x 128][k: 8 x 128][v: 8 x 128], bfloat16. qkv_layout names the strides,
    // so they are never passed (or swapped) by hand.
    const ropekit::qkv_layout layout{/*q_heads*/ 32, /*kv_heads*/ 8, /*head_dim*/ 128};
    const std::int64_t tokens = 16;
    std::vector<ropekit::bfloat16> qkv(std::size_t(layout.elements(tokens)),
                                       ropekit::bfloat16(1.0f));
    const auto q = layout.q(qkv.data(), tokens);
    const auto k = layout.k(qkv.data(), tokens);
    // Cold-path checks, each a ropekit::error naming the bad field: the views fit the buffer,
    // and everything the kernel call needs (view, rotary_dim, token range, positions inside the
    // table). The kernels themselves only ROPEKIT_ASSERT (in release builds a broken
    // precondition skips the call).
    layout.validate(tokens, qkv.size());
    ropekit::validate_rope_call(table, q, k, ropekit::positions::contiguous(200), 0, tokens);

    // Prefill of tokens at positions 200..215: one fused call, cos/sin of a token read once.
    ropekit::apply_rope_qk(table, q, k, ropekit::positions::contiguous(200), 0, tokens);
    std::printf("k[0][0][0..1] at position 200: %g %g\n", float(k.data[0]), float(k.data[1]));

    // Evict 100 tokens before them: the cached keys move to positions 100..115. Table-free, so
    // no table is needed for the delta; the keys are rotated, never rescaled.
    ropekit::validate_rope_call(freqs, k, ropekit::positions::constant(-100), 0, tokens);
    ropekit::rerotate_keys(freqs, k, ropekit::positions::constant(-100), 0, tokens);
    std::printf("k[0][0][0..1] moved to 100:     %g %g\n", float(k.data[0]), float(k.data[1]));

    // The same key rotated directly to position 100, for comparison.
    std::vector<ropekit::bfloat16> fresh(128, ropekit::bfloat16(1.0f));
    ropekit::apply_rope(table, ropekit::packed_view(fresh.data(), 1, 1, 128),
                        ropekit::positions::contiguous(100));
    std::printf("fresh key at position 100:      %g %g\n", float(fresh[0]), float(fresh[1]));
    std::printf("kernels: %s\n", ropekit::arch_name<ropekit::default_arch>());
    return 0;
}
