// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the config.json reader (include/ropekit/config_json.hpp: the single-layer
// and the per-layer entry) and what follows it: the frequencies, a bounded cos/sin table and
// rope-inspect's report writers (examples/rope_inspect/rope_inspect.hpp). A thrown
// ropekit::error is the expected outcome for bad input; anything else (another exception type,
// a crash, a sanitizer report, a leak, a hang, a huge allocation) escapes and is a finding, and
// so is a broken invariant (checked with trap()).
//
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined \
//       -fno-sanitize-recover=undefined -Iinclude \
//       tests/fuzz/fuzz_config_json.cpp -o /tmp/fuzz_config_json
//   /tmp/fuzz_config_json -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
//       /tmp/cj_corpus tests/fuzz/corpus/config_json
#if __has_include(<nlohmann/json.hpp>)  // tests/fuzz/CMakeLists.txt builds every target
#include <ropekit/config_json.hpp>
#include <ropekit/table.hpp>

// rope-inspect is an example: included by path, so the command above needs no -I for it.
#include "../../examples/rope_inspect/rope_inspect.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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
    namespace inspect = rope_inspect;
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
    namespace inspect = rope_inspect;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    // Options and rope-inspect flags come from the input's size, so every input is still a
    // plain config.json. Set 0 is the library call alone; the others go through rope-inspect's
    // flag parsing and apply_flags (which once threw type_error on odd dicts).
    static const std::vector<std::vector<std::string>> flag_sets = {
        {},
        {"--factor", "2"},
        {"--rope-type", "yarn", "--factor", "4", "--beta-fast", "16"},
        {"--layer-type", "sliding_attention", "--factor", "2"},
        {"--layer-type", "full_attention", "--head-dim", "64", "--base", "1e6"},
        {"--rotary-dim", "32", "--partial-rotary-factor", "0.5", "--alpha", "3"},
        {"--layout", "gptj", "--original-max-position", "1024", "--truncate", "false"}};
    // Every layer type (model_config_from_json) and rope-inspect's per-layer report: the
    // counts come from the file and must stay bounded.
    try {
        const ropekit::model_layers_config m = ropekit::parse_model_config(text);
        if (m.num_layers() == 0 || m.num_layers() > std::size_t(ropekit::max_model_layers)) trap();
        for (std::size_t i = 0; i < m.num_layers(); ++i)
            if (m.layer_type_index[i] >= m.types.size()) trap();
        for (const auto& t : m.types) {
            if (!(std::isfinite(t.scaling) && t.scaling > 0.0)) trap();
            if (t.use_rope) check_frequencies(t.frequencies());
        }
        (void)ropekit::layer_map_summary(m);
        (void)inspect::to_layers_text(m, std::nullopt, "fuzz");
    } catch (const ropekit::error&) {
        // the expected outcome for bad input
    }
    const auto& flags = flag_sets[size % flag_sets.size()];
    try {
        const inspect::request r = inspect::parse_args(flags);
        const ropekit::model_rope_config c =
            flags.empty()
                ? ropekit::parse_config_json(text, r.options)
                : ropekit::config_from_json(
                      inspect::apply_flags(ropekit::detail::json_config::parse_text(text), r),
                      r.options);
        std::optional<std::int64_t> seq_len;
        switch ((size / 7) % 4) {
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
#else
#include <cstddef>
#include <cstdint>

// Built without nlohmann/json: nothing to fuzz.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) {
    return 0;
}
#endif
