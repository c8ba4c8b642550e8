// SPDX-License-Identifier: Apache-2.0
// The rope-inspect command line (rope_inspect.cpp runs it): argv parsing, usage text, the
// text / brief / JSON / per-layer reports and the SVG writer. A header of the example, not of
// the library, so the tests (tests/test_config_json.cpp, tests/test_config_families.cpp,
// tests/fuzz/fuzz_config_json.cpp) call run() and the writers directly: exit codes, JSON and
// SVG are unit-tested. The data it prints comes from the library (config_json.hpp, and
// inspect.hpp for a method's parameters and original context); the file reading, parsing and
// error helpers are the config reader's own (ropekit::detail::json_config), so the tool reports
// bad input exactly as the library does.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <ropekit/config_json.hpp>
#include <ropekit/inspect.hpp>

namespace rope_inspect {

namespace json_config = ropekit::detail::json_config;

/// Calls `f(key)` for every config_key (not ignored_key) of every method, in variant order.
template <class F>
void for_each_config_key(F&& f) {
    ropekit::detail::for_each_method([&](auto tag) {
        using M = typename decltype(tag)::type;
        ropekit::detail::for_each_key_of<M>([&](const auto& key) { f(key); });
    });
}

/// `--beta-fast` for the key `beta_fast`.
inline std::string flag_for_key(std::string_view key) {
    std::string flag = "--" + std::string(key);
    for (char& ch : flag)
        if (ch == '_') ch = '-';
    return flag;
}

/// The method flags: one per dict key of any method (from the methods' config_keys()), with
/// the kind of value it takes.
struct key_flag {
    std::string flag;  ///< `--beta-fast`
    std::string key;   ///< `beta_fast`
    char kind;         ///< 'f' number, 'i' integer, 'b' true|false, 'l' list of numbers
};
inline const std::vector<key_flag>& key_flags() {
    static const std::vector<key_flag> flags = [] {
        std::vector<key_flag> out;
        auto add = [&](std::string_view key, char kind) {
            for (const auto& f : out)
                if (f.key == key) return;
            out.push_back({flag_for_key(key), std::string(key), kind});
        };
        for_each_config_key([&](const auto& key) {
            using T = typename json_config::stored_as<
                typename std::decay_t<decltype(key)>::value_type>::type;
            if (key.rule == ropekit::key_rule::max_position) return;  // --max-position
            if constexpr (std::is_same_v<T, double>)
                add(key.name, 'f');
            else if constexpr (std::is_same_v<T, std::int64_t>)
                add(key.name, 'i');
            else if constexpr (std::is_same_v<T, bool>)
                add(key.name, 'b');
            else
                add(key.name, 'l');
            if (!key.alias.empty()) add(key.alias, 'f');
        });
        return out;
    }();
    return flags;
}

/// Usage text, also printed by --help.
inline std::string usage() {
    std::string methods = ropekit::known_rope_types();
    for (char& ch : methods)
        if (ch == ',') ch = '|';
    methods.erase(std::remove(methods.begin(), methods.end(), ' '), methods.end());
    std::string keys = " ";
    std::size_t col = 2;
    for (const auto& f : key_flags()) {
        const char* arg = f.kind == 'f'   ? " F"
                          : f.kind == 'i' ? " N"
                          : f.kind == 'b' ? " true|false"
                                          : " a,b,...";
        const std::string item = f.flag + arg;
        if (col + item.size() + 2 > 90) {
            keys += "\n ";
            col = 2;
        }
        keys += " " + item;
        col += item.size() + 1;
    }
    return "usage: rope-inspect [--config config.json] [--seq-len N] [--json] [--svg FILE]\n"
           "                    [--layer-type NAME] [--layout neox|gptj] [method flags]\n"
           "  --layer-type  full_attention|sliding_attention (v5 per-layer dicts, Gemma-3)\n"
           "  --layout      pair layout; default: rope_interleave, else by model_type\n"
           "method flags (override the file's values, or describe a model without a file):\n"
           "  --rope-type " +
           methods +
           "\n"
           "  --head-dim N  --rotary-dim N  --partial-rotary-factor F  --base THETA\n"
           "  --max-position N  --original-max-position N\n"
           "keys of the rope dict:\n" +
           keys +
           "\n"
           "  --brief  one header line and one summary line (used by scripts/demo.sh)\n"
           "  --layers every layer type (Gemma 3/4, gpt-oss, Llama 4, ...): the layer map, each\n"
           "           type's geometry, inv_freq summary and attention extras (chosen by itself\n"
           "           for a per-layer-type config read without --layer-type)\n"
           "exit status: 0 on success, 2 on bad input (the message names the field and value)\n";
}

/// What the command line asked for.
struct request {
    std::string config_path;  ///< empty: flags only
    std::optional<std::int64_t> seq_len;
    bool json = false;
    bool brief = false;
    bool layers = false;  ///< --layers: every layer type (model_config_from_json)
    bool help = false;
    std::string svg_path;
    ropekit::config_json_options options;
    nlohmann::json top_overrides = nlohmann::json::object();   ///< top-level config keys
    nlohmann::json dict_overrides = nlohmann::json::object();  ///< rope dict keys
};

[[noreturn]] inline void bad_flag(const std::string& flag, const std::string& what) {
    json_config::fail(flag, what);
}

inline double parse_double(const std::string& flag, const std::string& v) {
    std::size_t used = 0;
    double d = 0;
    try {
        d = std::stod(v, &used);
    } catch (...) {
        used = 0;
    }
    if (used == 0 || used != v.size()) bad_flag(flag, "expects a number (got \"" + v + "\")");
    return d;
}

inline std::int64_t parse_int(const std::string& flag, const std::string& v) {
    std::size_t used = 0;
    long long i = 0;
    try {
        i = std::stoll(v, &used);
    } catch (...) {
        used = 0;
    }
    if (used == 0 || used != v.size()) bad_flag(flag, "expects an integer (got \"" + v + "\")");
    return i;
}

inline nlohmann::json parse_list(const std::string& flag, const std::string& v) {
    nlohmann::json out = nlohmann::json::array();
    std::stringstream ss(v);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(parse_double(flag, item));
    if (out.empty()) bad_flag(flag, "expects a comma-separated list of numbers");
    return out;
}

/// Parses argv (without argv[0]). Throws ropekit::error for unknown flags and bad values.
inline request parse_args(const std::vector<std::string>& args) {
    request r;
    auto value = [&](std::size_t& i) -> const std::string& {
        if (i + 1 >= args.size()) bad_flag(args[i], "needs a value");
        return args[++i];
    };
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--help" || a == "-h")
            r.help = true;
        else if (a == "--json")
            r.json = true;
        else if (a == "--brief")
            r.brief = true;
        else if (a == "--layers")
            r.layers = true;
        else if (a == "--config")
            r.config_path = value(i);
        else if (a == "--svg")
            r.svg_path = value(i);
        else if (a == "--seq-len")
            r.seq_len = parse_int(a, value(i));
        else if (a == "--layer-type")
            r.options.layer_type = value(i);
        else if (a == "--layout") {
            const std::string& v = value(i);
            r.options.layout = ropekit::parse_rope_layout(v);
            if (!r.options.layout) bad_flag(a, "expects neox or gptj (got \"" + v + "\")");
        } else if (a == "--rope-type")
            r.dict_overrides["rope_type"] = value(i);
        else if (a == "--head-dim")
            r.top_overrides["head_dim"] = parse_int(a, value(i));
        else if (a == "--rotary-dim")
            r.top_overrides["rotary_dim"] = parse_int(a, value(i));
        else if (a == "--partial-rotary-factor")
            r.top_overrides["partial_rotary_factor"] = parse_double(a, value(i));
        else if (a == "--base")
            r.top_overrides["rope_theta"] = parse_double(a, value(i));
        else if (a == "--max-position")
            r.top_overrides["max_position_embeddings"] = parse_int(a, value(i));
        else if (a == "--original-max-position")
            r.dict_overrides["original_max_position_embeddings"] = parse_int(a, value(i));
        else {
            bool known = false;
            for (const auto& f : key_flags()) {
                if (a != f.flag) continue;
                known = true;
                const std::string& v = value(i);
                if (f.kind == 'f') {
                    r.dict_overrides[f.key] = parse_double(a, v);
                } else if (f.kind == 'i') {
                    r.dict_overrides[f.key] = parse_int(a, v);
                } else if (f.kind == 'l') {
                    r.dict_overrides[f.key] = parse_list(a, v);
                } else {
                    if (v != "true" && v != "false")
                        bad_flag(a, "expects true or false (got \"" + v + "\")");
                    r.dict_overrides[f.key] = v == "true";
                }
                break;
            }
            if (!known) bad_flag(a, "is not a rope-inspect option (see --help)");
        }
    }
    return r;
}

/// `cfg` (a parsed config.json, any JSON value) with the request's method flags applied to
/// the dict config_from_json will read. Values it cannot apply flags to (not an object, a
/// wrongly typed dict or layer entry) are returned as they are, for config_from_json to name.
inline nlohmann::json apply_flags(nlohmann::json cfg, const request& r) {
    if (!cfg.is_object()) return cfg;  // config_from_json reports it
    nlohmann::json* root = &cfg;
    if (!cfg.contains("num_attention_heads") && !cfg.contains("head_dim") &&
        cfg.contains("text_config") && cfg["text_config"].is_object())
        root = &cfg["text_config"];
    for (auto it = r.top_overrides.begin(); it != r.top_overrides.end(); ++it) {
        (*root)[it.key()] = it.value();
        if (it.key() == "head_dim") root->erase("qk_rope_head_dim");
        if (it.key() == "rotary_dim") {
            root->erase("partial_rotary_factor");
            root->erase("rotary_pct");
        }
    }
    if (!r.dict_overrides.empty() || r.top_overrides.contains("rope_theta") ||
        r.top_overrides.contains("partial_rotary_factor")) {
        // The dict config_from_json reads: a non-empty rope_scaling wins (HF v5's
        // `rope_scaling or rope_parameters`), so flags must land in the same one.
        const bool v4_set = root->contains("rope_scaling") && (*root)["rope_scaling"].is_object() &&
                            !(*root)["rope_scaling"].empty();
        const bool v5 =
            !v4_set && root->contains("rope_parameters") && (*root)["rope_parameters"].is_object();
        nlohmann::json& dict = v5 ? (*root)["rope_parameters"] : (*root)["rope_scaling"];
        // A wrongly typed dict stays as it is, so config_from_json names it; only an absent or
        // null one becomes the object the flags describe.
        if (dict.is_null()) dict = nlohmann::json::object();
        if (!dict.is_object()) return cfg;
        nlohmann::json* target = &dict;
        if (v5 && !dict.contains("rope_type") && !dict.contains("type") && !dict.empty() &&
            dict.begin()->is_object()) {
            const std::string lt =
                r.options.layer_type.empty() ? dict.begin().key() : r.options.layer_type;
            const auto it = dict.find(lt);
            // A missing or non-object layer entry: config_from_json reports it by name.
            if (it == dict.end() || !it->is_object()) return cfg;
            target = &*it;
        }
        if (r.dict_overrides.contains("rope_type")) target->erase("type");
        for (auto it = r.dict_overrides.begin(); it != r.dict_overrides.end(); ++it)
            (*target)[it.key()] = it.value();
        for (const char* k : {"rope_theta", "partial_rotary_factor"})
            if (r.top_overrides.contains(k) && target->contains(k))
                (*target)[k] = r.top_overrides[k];
        if (!target->contains("rope_type") && !target->contains("type"))
            (*target)["rope_type"] = "default";
    }
    return cfg;
}

/// The config.json object the request describes: the file (if any) with the flags applied.
inline nlohmann::json effective_config(const request& r) {
    nlohmann::json cfg = nlohmann::json::object();
    if (!r.config_path.empty()) {
        cfg = json_config::parse_text(json_config::read_config_file(
            r.config_path, "--config", "cannot open \"" + r.config_path + "\""));
    } else if (r.dict_overrides.empty() && r.top_overrides.empty()) {
        json_config::fail("--config", "is missing (give a config.json or method flags)");
    } else {
        cfg["rope_theta"] = 10000.0;  // flags only: HF's default base unless --base
    }
    return apply_flags(std::move(cfg), r);
}

inline std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

/// A JSON number: `null` for inf or nan, which JSON cannot express (the frequencies are
/// checked finite and > 0, so this is a last line of defence, not a code path).
inline std::string json_number(const char* f, double v) {
    return std::isfinite(v) ? fmt(f, v) : std::string("null");
}

/// wavelength = 2 pi / inv_freq (tokens per full turn of the pair), in double.
inline double wavelength(float inv_freq) {
    return 2.0 * 3.141592653589793 / double(inv_freq);
}

inline std::string json_string(const std::string& s) {
    return json_config::dump_text(nlohmann::json(s));  // a path or warning may be cut UTF-8
}

/// A member's value as JSON: null for an unset std::optional.
template <class T>
nlohmann::json to_json_value(const T& v) {
    if constexpr (std::is_same_v<T, std::optional<double>>)
        return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
    else
        return nlohmann::json(v);
}

/// The method's parameters as a JSON object (for --json and the text report), one entry per
/// config key under validate()'s member name, plus the method's derived values at seq_len
/// (ropekit::for_each_parameter).
inline nlohmann::json method_parameters(const ropekit::rope_scaling& s,
                                        std::optional<std::int64_t> seq_len = {}) {
    nlohmann::json j = nlohmann::json::object();
    ropekit::for_each_parameter(s, seq_len, [&](std::string_view name, const auto& value) {
        j[std::string(name)] = to_json_value(value);
    });
    return j;
}

/// The report as exactly one JSON object. Float32 values use 9 significant digits (enough to
/// round-trip a float32); doubles use 17.
inline std::string to_json(const ropekit::model_rope_config& c, const ropekit::rope_frequencies& f,
                           const ropekit::rope_frequencies& def,
                           std::optional<std::int64_t> seq_len, const std::string& source) {
    std::ostringstream o;
    auto floats = [&](const char* key, const std::vector<float>& v, bool wl) {
        o << "  \"" << key << "\": [";
        for (std::size_t i = 0; i < v.size(); ++i)
            o << (i ? ", " : "")
              << (wl ? json_number("%.9g", wavelength(v[i])) : json_number("%.9g", v[i]));
        o << "],\n";
    };
    const nlohmann::json params = method_parameters(c.scaling, seq_len);
    o << "{\n";
    o << "  \"rope_type\": " << json_string(std::string(ropekit::name(c.scaling))) << ",\n";
    o << "  \"rope_type_in_file\": " << json_string(c.rope_type) << ",\n";
    o << "  \"source\": " << json_string(source) << ",\n";
    o << "  \"head_dim\": " << c.params.head_dim << ",\n";
    o << "  \"rotary_dim\": " << c.params.rotary_dim << ",\n";
    o << "  \"pairs\": " << f.pairs() << ",\n";
    o << "  \"layout\": " << json_string(std::string(ropekit::to_string(c.params.layout))) << ",\n";
    o << "  \"base\": " << json_number("%.17g", c.params.base) << ",\n";
    o << "  \"seq_len\": " << (seq_len ? std::to_string(*seq_len) : std::string("null")) << ",\n";
    o << "  \"max_position_embeddings\": "
      << (c.max_position_embeddings ? std::to_string(*c.max_position_embeddings) : "null") << ",\n";
    o << "  \"attention_factor\": " << json_number("%.17g", ropekit::attention_factor(c.scaling))
      << ",\n";
    o << "  \"logit_scale\": "
      << json_number("%.17g", std::pow(ropekit::attention_factor(c.scaling), 2)) << ",\n";
    o << "  \"parameters\": " << json_config::dump_text(params) << ",\n";
    floats("inv_freq", f.inv_freq, false);
    floats("wavelength", f.inv_freq, true);
    floats("default_inv_freq", def.inv_freq, false);
    o << "  \"warnings\": " << json_config::dump_text(nlohmann::json(c.warnings)) << "\n";
    o << "}\n";
    return o.str();
}

/// A person-readable report: header lines and one row per pair.
inline std::string to_text(const ropekit::model_rope_config& c, const ropekit::rope_frequencies& f,
                           const ropekit::rope_frequencies& def,
                           std::optional<std::int64_t> seq_len, const std::string& source) {
    std::ostringstream o;
    const double af = ropekit::attention_factor(c.scaling);
    o << "source            " << source << "\n";
    o << "rope_type         " << ropekit::name(c.scaling);
    if (c.rope_type != ropekit::name(c.scaling)) o << " (written \"" << c.rope_type << "\")";
    o << "\n";
    nlohmann::json params = method_parameters(c.scaling, seq_len);
    for (auto& v : params)  // lists (LongRoPE's factor sets) are in --json; one line here
        if (v.is_array()) v = std::to_string(v.size()) + " values";
    o << "parameters        " << json_config::dump_text(params) << "\n";
    o << "head_dim          " << c.params.head_dim << "\n";
    o << "rotary_dim        " << c.params.rotary_dim << " (" << f.pairs() << " pairs, "
      << ropekit::to_string(c.params.layout) << ")\n";
    if (!f.ordinary_geometry() || c.params.exponent_dim() != c.params.rotary_dim)
        o << "geometry          span " << f.neox_pair_span() << ", offset "
          << c.params.rotary_offset << ", frequency_dim " << c.params.exponent_dim() << "\n";
    if (c.mrope)
        o << "mrope_section     [" << c.mrope->section[0] << ", " << c.mrope->section[1] << ", "
          << c.mrope->section[2] << "] "
          << (c.mrope->layout == ropekit::mrope_layout::interleaved ? "interleaved" : "contiguous")
          << "\n";
    o << "base              " << fmt("%.17g", c.params.base) << "\n";
    o << "seq_len           " << (seq_len ? std::to_string(*seq_len) : std::string("(none)"))
      << "\n";
    o << "attention_factor  " << fmt("%.17g", af) << "  (softmax logits x " << fmt("%.9g", af * af)
      << " when applied once, on the scale)\n";
    o << "\n pair        inv_freq    wavelength   default wavelength   stretch\n";
    for (int i = 0; i < f.pairs(); ++i) {
        const double w = wavelength(f.inv_freq[std::size_t(i)]);
        const double w0 = wavelength(def.inv_freq[std::size_t(i)]);
        o << fmt("%5.0f", i) << fmt("  %14.9g", f.inv_freq[std::size_t(i)]) << fmt("  %12.6g", w)
          << fmt("  %19.6g", w0) << fmt("  %8.4f", w / w0) << "\n";
    }
    return o.str();
}

/// Two lines: a header and one row (method, rotary dim, base, attention factor, the wavelength
/// of pairs 0, n/4, n/2, 3n/4 and n-1 of the n pairs, and how much the last pair's wavelength is
/// stretched compared with default RoPE).
inline std::string to_brief(const ropekit::model_rope_config& c, const ropekit::rope_frequencies& f,
                            const ropekit::rope_frequencies& def, const std::string& source) {
    std::string file = source.substr(source.find_last_of('/') + 1);
    if (file.size() > 20) file = file.substr(0, 17) + "...";
    const int n = f.pairs();
    const int picks[5] = {0, n / 4, n / 2, (3 * n) / 4, n - 1};
    std::ostringstream o;
    char buf[256];
    std::snprintf(buf, sizeof buf, "%-20s %-8s %4s %9s %8s", "config", "method", "rot", "base",
                  "attn");
    o << buf;
    for (const char* k : {"wl[0]", "wl[n/4]", "wl[n/2]", "wl[3n/4]", "wl[n-1]"}) {
        std::snprintf(buf, sizeof buf, " %9s", k);
        o << buf;
    }
    o << "  stretch\n";
    std::snprintf(buf, sizeof buf, "%-20s %-8s %4d %9.6g %8.5f", file.c_str(),
                  std::string(ropekit::name(c.scaling)).c_str(), c.params.rotary_dim, c.params.base,
                  ropekit::attention_factor(c.scaling));
    o << buf;
    for (int k : picks) o << fmt(" %9.4g", wavelength(f.inv_freq[std::size_t(k)]));
    o << fmt("  %6.2fx", double(def.inv_freq[std::size_t(n - 1)]) / f.inv_freq[std::size_t(n - 1)])
      << "\n";
    return o.str();
}

/// A self-contained SVG: wavelength per pair on a log scale, method against default RoPE, with
/// the original context length marked (the picture the PI / NTK / YaRN papers explain with).
inline std::string to_svg(const ropekit::model_rope_config& c, const ropekit::rope_frequencies& f,
                          const ropekit::rope_frequencies& def,
                          std::optional<std::int64_t> seq_len) {
    const double W = 760, H = 460, left = 80, right = 190, top = 50, bottom = 60;
    const double pw = W - left - right, ph = H - top - bottom;
    const int n = f.pairs();
    double lo = 1e300, hi = 0;
    for (int i = 0; i < n; ++i)
        for (double w :
             {wavelength(f.inv_freq[std::size_t(i)]), wavelength(def.inv_freq[std::size_t(i)])}) {
            lo = std::min(lo, w);
            hi = std::max(hi, w);
        }
    const auto ctx = ropekit::original_context(c.scaling);
    if (ctx) hi = std::max(hi, double(*ctx));
    // Wavelengths are finite and > 0 (make_frequencies checks inv_freq), so the decades span at
    // most ~700; the clamps keep the grid loop bounded whatever the input.
    if (!(std::isfinite(lo) && lo > 0.0)) lo = 1.0;
    if (!(std::isfinite(hi) && hi >= lo)) hi = lo;
    const double d0 = std::floor(std::log10(lo));
    const double d1 = std::max(d0 + 1.0, std::min(std::ceil(std::log10(hi)), d0 + 800.0));
    auto X = [&](double i) { return left + (n > 1 ? i / double(n - 1) : 0.5) * pw; };
    auto Y = [&](double w) { return top + ph - (std::log10(w) - d0) / (d1 - d0) * ph; };
    std::ostringstream o;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
      << "\" viewBox=\"0 0 " << W << " " << H
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    o << "<text x=\"" << left << "\" y=\"24\" font-size=\"15\" font-weight=\"bold\">"
      << ropekit::name(c.scaling) << ": wavelength per rotation pair</text>\n";
    o << "<text x=\"" << left << "\" y=\"40\" fill=\"#555\">rotary_dim " << c.params.rotary_dim
      << ", base " << fmt("%g", c.params.base) << ", attention factor "
      << fmt("%.6g", ropekit::attention_factor(c.scaling))
      << (seq_len ? ", seq_len " + std::to_string(*seq_len) : std::string()) << "</text>\n";
    const int decades = int(d1 - d0);
    for (int k = 0; k <= decades; ++k) {  // decade grid lines and labels
        const double d = d0 + k;
        const double y = Y(std::pow(10.0, d));
        o << "<line x1=\"" << left << "\" x2=\"" << left + pw << "\" y1=\"" << y << "\" y2=\"" << y
          << "\" stroke=\"#ddd\"/>\n";
        o << "<text x=\"" << left - 8 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">1e" << int(d)
          << "</text>\n";
    }
    for (int i = 0; i < n; i += std::max(1, n / 8)) {
        o << "<text x=\"" << X(i) << "\" y=\"" << top + ph + 18 << "\" text-anchor=\"middle\">" << i
          << "</text>\n";
    }
    o << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"#333\"/>\n";
    o << "<text x=\"" << left + pw / 2 << "\" y=\"" << H - 18
      << "\" text-anchor=\"middle\">pair index i</text>\n";
    o << "<text transform=\"translate(22," << top + ph / 2
      << ") rotate(-90)\" text-anchor=\"middle\">wavelength 2&#960;/&#952;&#7522; (tokens, log "
         "scale)</text>\n";
    if (ctx) {
        const double y = Y(double(*ctx));
        o << "<line x1=\"" << left << "\" x2=\"" << left + pw << "\" y1=\"" << y << "\" y2=\"" << y
          << "\" stroke=\"#c0392b\" stroke-dasharray=\"6,4\"/>\n";
    }
    auto poly = [&](const std::vector<float>& inv, const char* color, const char* extra) {
        o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" " << extra
          << " points=\"";
        for (int i = 0; i < n; ++i)
            o << fmt("%.2f", X(i)) << "," << fmt("%.2f", Y(wavelength(inv[std::size_t(i)]))) << " ";
        o << "\"/>\n";
    };
    poly(def.inv_freq, "#888", "stroke-dasharray=\"5,3\"");
    poly(f.inv_freq, "#1f5fbf", "");
    const double lx = left + pw + 16;
    o << "<line x1=\"" << lx << "\" x2=\"" << lx + 28 << "\" y1=\"" << top + 12 << "\" y2=\""
      << top + 12 << "\" stroke=\"#1f5fbf\" stroke-width=\"2\"/>\n";
    o << "<text x=\"" << lx + 34 << "\" y=\"" << top + 16 << "\">" << ropekit::name(c.scaling)
      << "</text>\n";
    o << "<line x1=\"" << lx << "\" x2=\"" << lx + 28 << "\" y1=\"" << top + 32 << "\" y2=\""
      << top + 32 << "\" stroke=\"#888\" stroke-width=\"2\" stroke-dasharray=\"5,3\"/>\n";
    o << "<text x=\"" << lx + 34 << "\" y=\"" << top + 36 << "\">default RoPE</text>\n";
    if (ctx) {
        o << "<line x1=\"" << lx << "\" x2=\"" << lx + 28 << "\" y1=\"" << top + 52 << "\" y2=\""
          << top + 52 << "\" stroke=\"#c0392b\" stroke-dasharray=\"6,4\"/>\n";
        o << "<text x=\"" << lx + 34 << "\" y=\"" << top + 56 << "\">original context " << *ctx
          << "</text>\n";
    }
    o << "</svg>\n";
    return o.str();
}

/// The per-layer report: the layer map, then per layer type its RoPE (method, geometry, inv_freq
/// at the first, middle and last pair, wavelength range) and what its attention needs.
inline std::string to_layers_text(const ropekit::model_layers_config& m,
                                  std::optional<std::int64_t> seq_len, const std::string& source) {
    std::ostringstream o;
    o << "source            " << source << "\n";
    if (!m.model_type.empty()) o << "model_type        " << m.model_type << "\n";
    o << "layers            " << ropekit::layer_map_summary(m) << "\n";
    for (std::size_t t = 0; t < m.types.size(); ++t) {
        const ropekit::layer_config& c = m.types[t];
        const ropekit::rope_params& p = c.rope.params;
        std::size_t count = 0;
        for (std::size_t k : m.layer_type_index) count += k == t;
        o << "\n[" << c.layer_type << (c.use_rope ? "" : ", NoPE") << "]  " << count << " layer"
          << (count == 1 ? "" : "s") << "\n";
        o << "  head_dim        q/k " << c.head_dim << ", v " << c.v_head_dim << "\n";
        if (c.num_attention_heads || c.num_key_value_heads)
            o << "  heads           q "
              << (c.num_attention_heads ? std::to_string(*c.num_attention_heads) : "?") << ", kv "
              << (c.num_key_value_heads ? std::to_string(*c.num_key_value_heads) : "?") << "\n";
        o << "  scaling         " << fmt("%.17g", c.scaling) << "  (the 1/sqrt(head_dim) part)\n";
        if (c.sliding_window) o << "  sliding_window  " << *c.sliding_window << "\n";
        if (c.attention_chunk_size) o << "  chunk_size      " << *c.attention_chunk_size << "\n";
        if (c.attn_logit_softcapping)
            o << "  softcapping     " << fmt("%.9g", *c.attn_logit_softcapping) << "\n";
        if (c.temperature)
            o << "  temperature     floor_scale " << fmt("%.9g", c.temperature->floor_scale)
              << ", attn_scale " << fmt("%.9g", c.temperature->attn_scale) << "\n";
        if (!c.use_rope) {
            o << "  rope            none (q and k are not rotated)\n";
            continue;
        }
        const ropekit::rope_frequencies f = c.frequencies(seq_len);
        nlohmann::json params = method_parameters(c.rope.scaling, seq_len);
        for (auto& v : params)
            if (v.is_array()) v = std::to_string(v.size()) + " values";
        o << "  rope_type       " << ropekit::name(c.rope.scaling);
        if (c.rope.rope_type != ropekit::name(c.rope.scaling))
            o << " (written \"" << c.rope.rope_type << "\")";
        o << " " << json_config::dump_text(params) << "\n";
        o << "  base            " << fmt("%.17g", p.base) << "\n";
        o << "  geometry        rotary_dim " << p.rotary_dim << " (" << f.pairs() << " pairs, "
          << ropekit::to_string(p.layout) << "), span " << f.neox_pair_span() << ", offset "
          << p.rotary_offset << ", frequency_dim " << p.exponent_dim() << "\n";
        if (c.rope.mrope)
            o << "  mrope_section   [" << c.rope.mrope->section[0] << ", "
              << c.rope.mrope->section[1] << ", " << c.rope.mrope->section[2] << "] "
              << (c.rope.mrope->layout == ropekit::mrope_layout::interleaved ? "interleaved"
                                                                             : "contiguous")
              << "\n";
        const int n = f.pairs();
        o << "  inv_freq        [0] " << fmt("%.9g", f.inv_freq.front()) << ", [" << n / 2 << "] "
          << fmt("%.9g", f.inv_freq[std::size_t(n / 2)]) << ", [" << n - 1 << "] "
          << fmt("%.9g", f.inv_freq.back()) << "\n";
        o << "  wavelength      " << fmt("%.6g", wavelength(f.inv_freq.front())) << " .. "
          << fmt("%.6g", wavelength(f.inv_freq.back())) << "\n";
        o << "  attention_factor " << fmt("%.17g", ropekit::attention_factor(c.rope.scaling))
          << "\n";
    }
    return o.str();
}

/// True when the config's RoPE is per layer type and no --layer-type chose one: the single
/// report cannot show it.
inline bool per_layer_config(const nlohmann::json& cfg, const request& r) {
    if (!r.options.layer_type.empty()) return false;
    const nlohmann::json& top = json_config::language_model_config(cfg);
    const nlohmann::json* rp = json_config::find(top, "rope_parameters");
    const bool nested = rp && rp->is_object() && !rp->empty() && !rp->contains("rope_type") &&
                        !rp->contains("type") && rp->begin()->is_object();
    return nested || json_config::find(top, "rope_local_base_freq") ||
           json_config::find(top, "layer_types") || json_config::find(top, "no_rope_layers");
}

/// Runs rope-inspect: writes the report to `out`, errors and warnings to `err`; returns the
/// exit status (0 success, 2 bad input).
inline int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
    try {
        const request r = parse_args(args);
        if (r.help) {
            out << usage();
            return 0;
        }
        const nlohmann::json cfg = effective_config(r);
        if (r.layers || (!r.json && !r.brief && r.svg_path.empty() && per_layer_config(cfg, r))) {
            const ropekit::model_layers_config m = ropekit::model_config_from_json(cfg, r.options);
            for (const auto& w : m.warnings) err << "rope-inspect: warning: " << w << "\n";
            out << to_layers_text(m, r.seq_len, r.config_path.empty() ? "(flags)" : r.config_path);
            return 0;
        }
        const ropekit::model_rope_config c = ropekit::config_from_json(cfg, r.options);
        const ropekit::rope_frequencies f = c.frequencies(r.seq_len);
        const ropekit::rope_frequencies def = ropekit::default_rope{}.frequencies(c.params);
        const std::string source = r.config_path.empty() ? "(flags)" : r.config_path;
        if (!r.svg_path.empty()) {  // before the report: a failure leaves stdout empty
            std::ofstream svg(r.svg_path, std::ios::binary);
            if (!svg) json_config::fail("--svg", "cannot write \"" + r.svg_path + "\"");
            svg << to_svg(c, f, def, r.seq_len);
            if (!svg) json_config::fail("--svg", "cannot write \"" + r.svg_path + "\"");
        }
        for (const auto& w : c.warnings) err << "rope-inspect: warning: " << w << "\n";
        if (r.json)
            out << to_json(c, f, def, r.seq_len, source);
        else if (r.brief)
            out << to_brief(c, f, def, source);
        else
            out << to_text(c, f, def, r.seq_len, source);
        return 0;
    } catch (const ropekit::error& e) {
        err << "rope-inspect: " << e.what() << "\n";
        return 2;
    }
}

}  // namespace rope_inspect
