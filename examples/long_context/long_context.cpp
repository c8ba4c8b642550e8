// SPDX-License-Identifier: Apache-2.0
// long-context: a small byte-level LLaMA model (trained by examples/long_context/train.py at
// 128 tokens) evaluated at 1x .. 16x its training length under ten long-context methods, all
// positional work done by ropekit (methods.hpp), the projections by Eigen (model.hpp).
//
//   long-context MODEL_DIR TEXT [--grid full|reduced] [--lengths 128,256,...]
//                [--methods none,yarn,...] [--tokens T] [--threads N] [--svg out.svg]
//                [--check reference.json] [--json out.json]
//
// Protocol (docs: examples/long_context, the issue 12 spec): the held-out text is the last 10%
// of TEXT's bytes; a cell (method, L) scores the first T held-out bytes in windows of L
// targets, window k's input being [BOS] + held[kL .. (k+1)L - 1) at positions 0 .. L - 1; the
// cell is the mean NLL in nats per byte. Windows are spread over --threads threads.
// --check compares every cell with reference.json (the PyTorch reference) and exits 1 naming
// each cell off by more than 0.002 nats. Bad input: a message and exit 2.
#include "methods.hpp"
#include "model.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using long_context::method_id;

/// Bad command line or input file: printed as "long-context: ..." with exit status 2.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

const char* const usage_text =
    "usage: long-context MODEL_DIR TEXT [--grid full|reduced] [--lengths L,...]\n"
    "                    [--methods M,...] [--tokens T] [--threads N] [--svg out.svg]\n"
    "                    [--check reference.json] [--json out.json]\n"
    "  methods: none linear ntk dynamic yarn rerope leaky_rerope self_extend streaming_llm "
    "window\n"
    "  grids:   full = lengths 128..2048, 16384 tokens per cell; reduced = 128,512, 1024\n";

struct options {
    std::string model_dir, text_path, grid = "full", svg, check, json;
    std::vector<std::int64_t> lengths;  // empty: the grid's
    std::vector<method_id> methods;     // empty: all
    std::int64_t tokens = 0;            // 0: the grid's
    int threads = 2;
};

std::int64_t parse_int(const std::string& s, const char* what, std::int64_t lo, std::int64_t hi) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno != 0 || v < lo || v > hi)
        throw usage_error(std::string(what) + " must be an integer in [" + std::to_string(lo) +
                          ", " + std::to_string(hi) + "] (got \"" + s + "\")");
    return v;
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::string cur;
    std::istringstream in(s);
    while (std::getline(in, cur, ','))
        if (!cur.empty()) out.push_back(cur);
    return out;
}

options parse_args(int argc, char** argv) {
    options o;
    std::vector<std::string> positional;
    for (int a = 1; a < argc; ++a) {
        const std::string arg = argv[a];
        auto value = [&]() -> std::string {
            if (a + 1 >= argc) throw usage_error(arg + " needs a value");
            return argv[++a];
        };
        if (arg == "--grid") {
            o.grid = value();
            if (o.grid != "full" && o.grid != "reduced")
                throw usage_error("--grid must be full or reduced (got \"" + o.grid + "\")");
        } else if (arg == "--lengths") {
            o.lengths.clear();
            for (const auto& s : split_commas(value()))
                o.lengths.push_back(parse_int(s, "--lengths", 1, 1 << 16));
            if (o.lengths.empty()) throw usage_error("--lengths is empty");
        } else if (arg == "--methods") {
            o.methods.clear();
            for (const auto& s : split_commas(value())) {
                const auto m = long_context::method_from_name(s);
                if (!m) throw usage_error("--methods: unknown method \"" + s + "\"");
                if (std::find(o.methods.begin(), o.methods.end(), *m) == o.methods.end())
                    o.methods.push_back(*m);
            }
            if (o.methods.empty()) throw usage_error("--methods is empty");
        } else if (arg == "--tokens") {
            o.tokens = parse_int(value(), "--tokens", 1, 1 << 24);
        } else if (arg == "--threads") {
            o.threads = int(parse_int(value(), "--threads", 1, 256));
        } else if (arg == "--svg") {
            o.svg = value();
        } else if (arg == "--check") {
            o.check = value();
        } else if (arg == "--json") {
            o.json = value();
        } else if (arg == "-h" || arg == "--help") {
            std::fputs(usage_text, stdout);
            std::exit(0);
        } else if (arg.size() > 1 && arg[0] == '-') {
            throw usage_error("unknown option " + arg);
        } else {
            positional.push_back(arg);
        }
    }
    if (positional.size() != 2) throw usage_error("expected MODEL_DIR and TEXT");
    o.model_dir = positional[0];
    o.text_path = positional[1];
    return o;
}

std::vector<unsigned char> read_file(const std::string& path, const char* what) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw usage_error(std::string(what) + " cannot be opened: \"" + path + "\"");
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(f),
                                      std::istreambuf_iterator<char>());
}

/// One evaluated cell: a method at a length, its attention step and the summed NLL.
struct cell {
    method_id method;
    std::int64_t length;
    std::unique_ptr<long_context::method_attention> attend;
    std::atomic<std::int64_t> windows_left{0};
    std::vector<double> window_nll;  // per window, summed in order at the end (deterministic)
    double nll = 0.0;
};

// --- SVG plot -------------------------------------------------------------------------------

std::string svg_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '<')
            out += "&lt;";
        else if (c == '>')
            out += "&gt;";
        else if (c == '&')
            out += "&amp;";
        else
            out += c;
    }
    return out;
}

/// NLL against context length (log2 x axis), one line per method, the training length marked.
void write_svg(const std::string& path, const std::vector<method_id>& methods,
               const std::vector<std::int64_t>& lengths,
               const std::map<std::pair<int, std::int64_t>, double>& nll, std::int64_t train_len,
               std::int64_t tokens) {
    const double W = 780, H = 480, ml = 70, mr = 170, mt = 46, mb = 62;
    const double pw = W - ml - mr, ph = H - mt - mb;
    double x0 = std::log2(double(lengths.front())), x1 = std::log2(double(lengths.back()));
    x0 -= 0.25;  // keep the end points (and the training length line) off the frame
    x1 += 0.25;
    double y0 = 1e300, y1 = -1e300;
    for (const auto& kv : nll)
        if (std::isfinite(kv.second)) {
            y0 = std::min(y0, kv.second);
            y1 = std::max(y1, kv.second);
        }
    if (!(y0 <= y1)) y0 = 0, y1 = 1;
    // A method that blows up (plain RoPE far past L0) would flatten every other line: the axis
    // stops 2 nats above the best cell and such points sit on the top edge, labelled.
    const double clip = y0 + 2.0;
    const bool clipped = y1 > clip;
    if (clipped) y1 = clip;
    const double span0 = std::max(y1 - y0, 0.05);
    double step = 0.01;
    for (double s : {0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0})
        if (span0 / s <= 8) {
            step = s;
            break;
        }
    y0 = std::floor((y0 - 0.02 * span0) / step) * step;
    y1 = std::ceil((y1 + 0.02 * span0) / step) * step;
    auto X = [&](double l2) { return ml + (l2 - x0) / (x1 - x0) * pw; };
    auto Y = [&](double v) { return mt + (y1 - std::min(v, y1)) / (y1 - y0) * ph; };
    static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    std::ofstream f(path);
    if (!f) throw usage_error("--svg cannot be written: \"" + path + "\"");
    char b[512];
    auto out = [&](const char* fmt, auto... args) {
        std::snprintf(b, sizeof b, fmt, args...);
        f << b;
    };
    out("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g "
        "%g\" font-family=\"sans-serif\" font-size=\"12\">\n",
        W, H, W, H);
    out("<rect width=\"%g\" height=\"%g\" fill=\"white\"/>\n", W, H);
    out("<text x=\"%g\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">Held-out NLL vs context "
        "length (%lld bytes per cell)</text>\n",
        ml + pw / 2, static_cast<long long>(tokens));
    // Grid and ticks.
    for (double v = y0; v <= y1 + 1e-9; v += step) {
        out("<line x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\" stroke=\"#e4e4e4\"/>\n", ml, Y(v),
            ml + pw, Y(v));
        out("<text x=\"%g\" y=\"%.2f\" text-anchor=\"end\">%.*f</text>\n", ml - 6, Y(v) + 4,
            step < 0.1   ? 2
            : step < 1.0 ? 1
                         : 0,
            v);
    }
    for (std::int64_t L : lengths) {
        const double x = X(std::log2(double(L)));
        out("<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"#e4e4e4\"/>\n", x, mt, x,
            mt + ph);
        out("<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">%lld</text>\n", x, mt + ph + 18,
            static_cast<long long>(L));
    }
    out("<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"black\"/>\n", ml,
        mt, pw, ph);
    // The training length.
    const double lt = std::log2(double(train_len));
    if (lt >= x0 - 1e-9 && lt <= x1 + 1e-9) {
        const double x = X(lt);
        out("<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"black\" "
            "stroke-dasharray=\"5,4\"/>\n",
            x, mt, x, mt + ph);
        out("<text x=\"%.2f\" y=\"%g\" font-size=\"11\">training length %lld</text>\n", x + 4,
            mt + 14, static_cast<long long>(train_len));
    }
    out("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">context length (tokens, log2 "
        "scale)</text>\n",
        ml + pw / 2, H - 18);
    out("<text transform=\"translate(18,%g) rotate(-90)\" text-anchor=\"middle\">mean NLL "
        "(nats per byte)</text>\n",
        mt + ph / 2);
    // One line per method, and the legend.
    for (std::size_t i = 0; i < methods.size(); ++i) {
        const char* c = colors[i % 10];
        std::string pts;
        for (std::int64_t L : lengths) {
            const auto it = nll.find({int(methods[i]), L});
            if (it == nll.end() || !std::isfinite(it->second)) continue;
            std::snprintf(b, sizeof b, "%.2f,%.2f ", X(std::log2(double(L))), Y(it->second));
            pts += b;
        }
        out("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%s\"/>\n", c,
            pts.c_str());
        for (std::int64_t L : lengths) {
            const auto it = nll.find({int(methods[i]), L});
            if (it == nll.end() || !std::isfinite(it->second)) continue;
            out("<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n", X(std::log2(double(L))),
                Y(it->second), c);
            if (it->second > y1)
                out("<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" fill=\"%s\" "
                    "text-anchor=\"middle\">%.2f (off scale)</text>\n",
                    X(std::log2(double(L))), Y(it->second) + 14 + 11 * double(i % 3), c,
                    it->second);
        }
        const double ly = mt + 10 + 20 * double(i), lx = ml + pw + 16;
        out("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"2\"/>\n",
            lx, ly, lx + 22, ly, c);
        out("<text x=\"%g\" y=\"%g\">%s</text>\n", lx + 28, ly + 4,
            svg_escape(long_context::method_name(methods[i])).c_str());
    }
    f << "</svg>\n";
    if (!f) throw usage_error("--svg cannot be written: \"" + path + "\"");
}

// --- main -----------------------------------------------------------------------------------

int run(int argc, char** argv) {
    const options opt = parse_args(argc, argv);
    std::vector<std::int64_t> lengths = opt.lengths;
    std::int64_t T = opt.tokens;
    if (lengths.empty())
        lengths = opt.grid == "full" ? std::vector<std::int64_t>{128, 256, 512, 1024, 2048}
                                     : std::vector<std::int64_t>{128, 512};
    if (T == 0) T = opt.grid == "full" ? 16384 : 1024;
    std::sort(lengths.begin(), lengths.end());
    lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
    std::vector<method_id> methods = opt.methods;
    if (methods.empty())
        methods.assign(long_context::all_methods.begin(), long_context::all_methods.end());
    for (std::int64_t L : lengths)
        if (T % L != 0)
            throw usage_error("the tokens per cell (" + std::to_string(T) +
                              ") must be a multiple of every length (got " + std::to_string(L) +
                              ")");

    nlohmann::json ref;
    std::string grid_name;
    if (!opt.check.empty()) {
        // --check: the reference's grid of the same size, read before the (long) evaluation.
        const std::vector<unsigned char> ref_bytes = read_file(opt.check, "--check");
        try {
            ref = nlohmann::json::parse(ref_bytes.begin(), ref_bytes.end());
        } catch (const nlohmann::json::exception& e) {
            throw usage_error("--check: " + opt.check + " is not valid JSON: " + e.what());
        }
        for (const std::string& name : {opt.grid, std::string("reduced"), std::string("full")}) {
            const auto g = ref.find("grids");
            if (g == ref.end() || !g->is_object() || !g->contains(name)) continue;
            const auto& cand = (*g)[name];
            if (cand.is_object() && cand.value("tokens_per_cell", std::int64_t(-1)) == T) {
                grid_name = name;
                break;
            }
        }
        if (grid_name.empty())
            throw usage_error("--check: " + opt.check + " has no grid with tokens_per_cell " +
                              std::to_string(T));
    }

    const long_context::model m = long_context::model::load(opt.model_dir);
    const auto& cfg = m.config;
    if (cfg.bos_token_id < 0)
        throw usage_error("config.json: bos_token_id is missing (the windows start with BOS)");
    if (cfg.vocab_size < 256)
        throw usage_error("config.json: vocab_size must be >= 256 for a byte model (got " +
                          std::to_string(cfg.vocab_size) + ")");
    const std::vector<unsigned char> text = read_file(opt.text_path, "TEXT");
    const std::size_t held_begin = text.size() * 9 / 10;
    const std::size_t held_size = text.size() - held_begin;
    if (std::uint64_t(T) > held_size)
        throw usage_error("TEXT's held-out part (last 10%: " + std::to_string(held_size) +
                          " bytes) is shorter than the tokens per cell (" + std::to_string(T) +
                          ")");
    const unsigned char* held = text.data() + held_begin;
    const std::int64_t L0 = cfg.max_position_embeddings;
    long_context::method_settings settings;
    settings.train_length = L0;

    // Cells and their attention steps (frequencies and tables built once, shared by threads).
    std::vector<std::unique_ptr<cell>> cells;
    for (method_id meth : methods)
        for (std::int64_t L : lengths) {
            auto c = std::make_unique<cell>();
            c->method = meth;
            c->length = L;
            c->attend = std::make_unique<long_context::method_attention>(
                long_context::make_method(meth, L, settings), cfg.rope);
            c->windows_left = T / L;
            c->window_nll.assign(std::size_t(T / L), 0.0);
            cells.push_back(std::move(c));
        }
    // Jobs: one window each, the longest first (they cost most), taken by the threads in turn.
    struct job {
        cell* c;
        std::int64_t window;
    };
    std::vector<job> jobs;
    for (auto& c : cells)
        for (std::int64_t k = 0; k < T / c->length; ++k) jobs.push_back({c.get(), k});
    std::stable_sort(jobs.begin(), jobs.end(),
                     [](const job& a, const job& b) { return a.c->length > b.c->length; });

    std::fprintf(stderr,
                 "long-context: %d layers, hidden %d, %d heads (%d K/V) x %d, base %g, trained "
                 "at %lld; %zu cells x %lld tokens on %d threads (kernels %s)\n",
                 cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
                 cfg.num_key_value_heads, cfg.head_dim, cfg.rope.base, static_cast<long long>(L0),
                 cells.size(), static_cast<long long>(T), opt.threads,
                 ropekit::arch_name<ropekit::default_arch>());
    std::atomic<std::size_t> next{0};
    std::atomic<std::size_t> cells_done{0};
    std::mutex print_mutex;
    std::vector<std::string> errors(std::size_t(opt.threads));
    const auto t0 = std::chrono::steady_clock::now();
    auto worker = [&](int id) {
        try {
            long_context::workspace ws;
            std::vector<std::int32_t> tokens, targets;
            for (std::size_t j; (j = next.fetch_add(1)) < jobs.size();) {
                const job& jb = jobs[j];
                const std::int64_t L = jb.c->length, off = jb.window * L;
                tokens.resize(std::size_t(L));
                targets.resize(std::size_t(L));
                tokens[0] = cfg.bos_token_id;
                for (std::int64_t t = 0; t < L; ++t) {
                    targets[std::size_t(t)] = held[off + t];
                    if (t + 1 < L) tokens[std::size_t(t + 1)] = held[off + t];
                }
                long_context::forward(m, tokens.data(), L, ws, *jb.c->attend);
                jb.c->window_nll[std::size_t(jb.window)] =
                    long_context::sum_nll(ws.logits, targets.data());
                if (jb.c->windows_left.fetch_sub(1) == 1) {
                    const std::size_t done = cells_done.fetch_add(1) + 1;
                    const double secs =
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                            .count();
                    std::lock_guard<std::mutex> lock(print_mutex);
                    std::fprintf(stderr, "  [%2zu/%zu] %-13s L=%-5lld done (%.1f s)\n", done,
                                 cells.size(), long_context::method_name(jb.c->method),
                                 static_cast<long long>(L), secs);
                }
            }
        } catch (const std::exception& e) {
            errors[std::size_t(id)] = e.what();
            next = jobs.size();  // stop the others
        }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < opt.threads; ++t) pool.emplace_back(worker, t);
    worker(0);
    for (auto& th : pool) th.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& e : errors)
        if (!e.empty()) throw std::runtime_error(e);

    std::map<std::pair<int, std::int64_t>, double> nll;
    for (auto& c : cells) {
        double s = 0.0;
        for (double w : c->window_nll) s += w;
        c->nll = s / double(T);
        nll[{int(c->method), c->length}] = c->nll;
    }
    const double tok_per_s = double(cells.size()) * double(T) / seconds;

    // The table: methods x lengths, nats per byte.
    std::printf("mean NLL (nats/byte) on the first %lld held-out bytes of %s, trained at %lld\n",
                static_cast<long long>(T), opt.text_path.c_str(), static_cast<long long>(L0));
    std::printf("%-14s", "method");
    for (std::int64_t L : lengths) {
        char head[32];
        std::snprintf(head, sizeof head, "%lld (%gx)", static_cast<long long>(L),
                      double(L) / double(L0));
        std::printf(" %12s", head);
    }
    std::printf("\n");
    for (method_id meth : methods) {
        std::printf("%-14s", long_context::method_name(meth));
        for (std::int64_t L : lengths) std::printf(" %12.4f", nll[{int(meth), L}]);
        std::printf("\n");
    }
    std::printf("%zu cells x %lld tokens in %.2f s on %d threads: %.0f tokens/s\n", cells.size(),
                static_cast<long long>(T), seconds, opt.threads, tok_per_s);

    if (!opt.svg.empty()) {
        write_svg(opt.svg, methods, lengths, nll, L0, T);
        std::printf("plot: %s\n", opt.svg.c_str());
    }
    if (!opt.json.empty()) {
        nlohmann::json j;
        j["grid"] = opt.grid;
        j["lengths"] = lengths;
        j["tokens_per_cell"] = T;
        j["train_length"] = L0;
        for (method_id meth : methods) {
            j["methods"][long_context::method_name(meth)] =
                long_context::make_method(meth, lengths.back(), settings).describe() + " (at " +
                std::to_string(lengths.back()) + ")";
            for (std::int64_t L : lengths)
                j["nll"][long_context::method_name(meth)][std::to_string(L)] = nll[{int(meth), L}];
        }
        j["cxx"] = {{"threads", opt.threads},
                    {"seconds", seconds},
                    {"tokens_per_second", tok_per_s},
                    {"kernels", ropekit::arch_name<ropekit::default_arch>()}};
        std::ofstream f(opt.json);
        f << j.dump(2) << "\n";
        if (!f) throw usage_error("--json cannot be written: \"" + opt.json + "\"");
    }

    if (opt.check.empty()) return 0;
    const nlohmann::json& grid = ref["grids"][grid_name];
    const double tolerance = 0.002;
    double max_diff = 0.0;
    int bad = 0;
    for (method_id meth : methods)
        for (std::int64_t L : lengths) {
            const std::string mk = long_context::method_name(meth), lk = std::to_string(L);
            if (!grid.contains("nll") || !grid["nll"].contains(mk) ||
                !grid["nll"][mk].contains(lk) || !grid["nll"][mk][lk].is_number()) {
                std::printf("check: cell %s L=%s missing from %s grid \"%s\"\n", mk.c_str(),
                            lk.c_str(), opt.check.c_str(), grid_name.c_str());
                ++bad;
                continue;
            }
            const double r = grid["nll"][mk][lk].get<double>(), v = nll[{int(meth), L}];
            const double d = std::abs(v - r);
            max_diff = std::max(max_diff, std::isfinite(d) ? d : 1e300);
            if (!(d <= tolerance)) {
                std::printf("check: cell %s L=%s off by %.6f nats (C++ %.6f, reference %.6f)\n",
                            mk.c_str(), lk.c_str(), d, v, r);
                ++bad;
            }
        }
    std::printf("check against %s grid \"%s\": %zu cells, max |diff| %.2e nats (tolerance %g)%s\n",
                opt.check.c_str(), grid_name.c_str(), cells.size(), max_diff, tolerance,
                bad ? "" : ": OK");
    // The reference's own timing (its run, its threads): same-run ratios need both runs on the
    // same machine at the same time, which the demo's README measures.
    if (ref.contains("torch") && ref["torch"].is_object() &&
        ref["torch"].contains("tokens_per_second") &&
        ref["torch"]["tokens_per_second"].is_number()) {
        const auto& t = ref["torch"];
        std::printf(
            "PyTorch reference run: %.0f tokens/s on %s threads (grids %s); this run: %.0f "
            "tokens/s on %d threads\n",
            t["tokens_per_second"].get<double>(),
            t.value("threads", nlohmann::json()).dump().c_str(),
            t.value("grids", nlohmann::json()).dump().c_str(), tok_per_s, opt.threads);
    }
    return bad ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const usage_error& e) {
        std::fprintf(stderr, "long-context: %s\n%s", e.what(), usage_text);
        return 2;
    } catch (const std::exception& e) {  // load_error, ropekit::error, a worker's error
        std::fprintf(stderr, "long-context: %s\n", e.what());
        return 2;
    }
}
