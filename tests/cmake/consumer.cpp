// SPDX-License-Identifier: Apache-2.0
// A consumer of ropekit: one include, a scaling method, a table, a rotation, an attention call;
// with the config_json target, a config.json too.
#include <ropekit/ropekit.hpp>
#if CONSUMER_WITH_JSON
#include <ropekit/config_json.hpp>
#endif

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
    const ropekit::rope_params params{10000.0, 128, 128};
    const auto freqs = ropekit::make_frequencies(params, ropekit::linear_scaling{2.0});
    const auto table = ropekit::cos_sin_table::for_range(freqs, 0, 8);
    // Linear x2: position 2 rotates pair 0 by exactly 1 radian.
    bool ok = std::fabs(table.cos_row(2)[0] - float(std::cos(1.0))) < 1e-6f;

    std::vector<float> x(128, 1.0f);
    ropekit::apply_rope(table, ropekit::head_view<float>::packed(x.data(), 1, 1, 128),
                        ropekit::positions::contiguous(2));
    ok = ok && std::fabs(x[0] - float(std::cos(1.0) - std::sin(1.0))) < 1e-6f;
#if CONSUMER_WITH_JSON
    const auto config = ropekit::parse_config_json(
        R"({"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 4096,
            "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 2.0}})");
    ok = ok && config.frequencies().inv_freq == freqs.inv_freq;
#endif
    std::printf("ropekit %d.%d.%d consumer (%s): %s\n", ROPEKIT_VERSION_MAJOR,
                ROPEKIT_VERSION_MINOR, ROPEKIT_VERSION_PATCH,
                ropekit::arch_name<ropekit::default_arch>(), ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}
