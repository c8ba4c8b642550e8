// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the config.json reader (include/ropekit/config_json.hpp) and what follows
// it: the frequencies, a bounded cos/sin table and rope-inspect's report writers
// (detail/scaling_inspect.hpp). A thrown ropekit::error is the expected outcome for bad input;
// anything else (another exception type, a crash, a sanitizer report, a leak, a hang, a huge
// allocation) escapes and is a finding, and so is a broken invariant (checked with trap()).
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined \
//       -fno-sanitize-recover=undefined -Iinclude \
//       tests/fuzz/fuzz_config_json.cpp -o /tmp/fuzz_config_json
//   /tmp/fuzz_config_json -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
//       /tmp/cj_corpus tests/fuzz/corpus/config_json
#include <ropekit/config_json.hpp>
#include <ropekit/detail/scaling_inspect.hpp>
#include <ropekit/table.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace {

/// A broken invariant: stop here so libFuzzer records the input.
[[noreturn]] void trap() {
    __builtin_trap();
}

void check_frequencies(const ropekit::rope_frequencies& f) {
    for (float v : f.inv_freq)
        if (!(std::isfinite(v) && v > 0.0f)) trap();  // every pair must rotate
    if (!(std::isfinite(f.attention_factor) && f.attention_factor > 0.0f)) trap();
}

/// rope-inspect's JSON report must be exactly one JSON object.
void check_json_report(const std::string& text) {
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) trap();
}

void exercise(const ropekit::model_rope_config& c, std::optional<std::int64_t> seq_len) {
    namespace inspect = ropekit::detail::inspect;
    const ropekit::rope_frequencies f = c.frequencies(seq_len);
    check_frequencies(f);
    const ropekit::rope_frequencies def = ropekit::default_rope{}.frequencies(c.params);
    check_frequencies(def);
    // Bounded tables: a few rows at 0 and at the end of the original context.
    const std::int64_t end =
        std::min(c.max_position_embeddings.value_or(4096), ropekit::max_seq_len);
    for (std::int64_t first : {std::int64_t(0), std::max<std::int64_t>(0, end - 4)}) {
        const auto t = ropekit::cos_sin_table::for_range(f, first, 8);
        (void)t;
    }
    check_json_report(inspect::to_json(c, f, def, seq_len, "fuzz"));
    (void)inspect::to_text(c, f, def, seq_len, "fuzz");
    (void)inspect::to_brief(c, f, def, "fuzz");
    (void)inspect::to_svg(c, f, def, seq_len);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    // The options come from the input's size, so every input is still a plain config.json.
    ropekit::config_json_options options;
    static const char* const layers[] = {"", "full_attention", "sliding_attention"};
    options.layer_type = layers[size % 3];
    if ((size / 3) % 5 == 4) options.layout = ropekit::rope_layout::gptj;
    try {
        const ropekit::model_rope_config c = ropekit::parse_config_json(text, options);
        std::optional<std::int64_t> seq_len;
        switch ((size / 15) % 4) {
            case 1:
                seq_len = 1;
                break;
            case 2:  // clamped first: the reader accepts any int64 here
                seq_len = 2 * std::clamp<std::int64_t>(c.max_position_embeddings.value_or(4096),
                                                       -ropekit::max_seq_len, ropekit::max_seq_len);
                break;
            case 3:
                seq_len =
                    1 + std::clamp<std::int64_t>(c.original_max_position_embeddings.value_or(4096),
                                                 -ropekit::max_seq_len, ropekit::max_seq_len);
                break;
            default:
                break;
        }
        exercise(c, seq_len);
    } catch (const ropekit::error&) {
        // the expected outcome for bad input
    }
    return 0;
}
