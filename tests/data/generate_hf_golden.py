#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes tests/data/hf_golden.inc: inv_freq and attention factors computed by PyTorch float32
tensor operations written exactly the way Hugging Face transformers' modeling_rope_utils.py
writes them (the `_compute_*_parameters` functions; the formulas are restated in
shared/FORMULAS.md). It is a transcription of the formulas, not a copy of HF's code, and it takes
each method's parameters directly (the config.json mapping is tested separately).

Run with Debian's torch:  apt-get install python3-torch && /usr/bin/python3 generate_hf_golden.py
The committed output was produced with torch 1.13 (Debian 12, CPU). Values are written as hex
floats so the C++ test compares bit patterns, not decimal approximations.
"""
import math
import os

import torch


def arange_exponents(dim):
    # HF: torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return torch.arange(0, dim, 2, dtype=torch.int64).float() / dim


def default_inv(base, dim):
    return 1.0 / (base ** arange_exponents(dim))


def linear(base, dim, factor):
    inv = default_inv(base, dim)
    inv /= factor
    return inv, 1.0


def ntk(base, dim, alpha):
    base = base * alpha ** (dim / (dim - 2))
    return default_inv(base, dim), 1.0


def dynamic(base, dim, factor, l0, seq_len):
    # the int seq_len path (Python float64 base')
    s = seq_len if seq_len is not None and seq_len > l0 else l0
    base = base * ((factor * s / l0) - (factor - 1)) ** (dim / (dim - 2))
    return default_inv(base, dim), 1.0


def yarn(base, dim, factor, l, beta_fast, beta_slow, attention_factor, mscale, mscale_all_dim,
         truncate):
    def get_mscale(scale, m=1):
        if scale <= 1:
            return 1.0
        return 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = beta_fast or 32
    beta_slow = beta_slow or 1

    def correction_dim(rot):
        return (dim * math.log(l / (rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (factor * pos_freqs)
    extrapolation_factor = 1 - ramp
    inv = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor
    return inv, attention_factor


def llama3(base, dim, factor, low_freq_factor, high_freq_factor, l):
    inv = default_inv(base, dim)
    low_freq_wavelen = l / low_freq_factor
    high_freq_wavelen = l / high_freq_factor
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_freq_wavelen, inv / factor, inv)
    smooth = (l / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(medium, smoothed, inv_l), 1.0


def longrope(base, dim, short_factor, long_factor, l, factor, attention_factor, seq_len):
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(l))
    ext = long_factor if (seq_len and seq_len > l) else short_factor
    ext = torch.tensor(ext, dtype=torch.float32)
    shape = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    return 1.0 / (ext * base ** shape), attention_factor


def proportional(base, head_dim, partial_rotary_factor, factor):
    # HF _compute_proportional_rope_parameters: rope_angles pairs over the full head_dim, zeros
    # for the rest, every entry divided by factor (also when it is 1).
    rope_angles = int(partial_rotary_factor * head_dim // 2)
    rotated = 1.0 / (base ** (torch.arange(0, 2 * rope_angles, 2, dtype=torch.int64).float()
                              / head_dim))
    nope = head_dim // 2 - rope_angles
    inv = torch.cat((rotated, torch.zeros(nope, dtype=torch.float32))) if nope > 0 else rotated
    inv /= factor
    return inv, 1.0


def deepseek_softmax_scale(qk_head_dim, rope_scaling):
    # HF DeepseekV3Attention / DeepseekV2Attention.__init__: scaling = qk_head_dim ** -0.5, times
    # yarn_get_mscale(factor, mscale_all_dim) ** 2 when mscale_all_dim is set (Python floats).
    def yarn_get_mscale(scale=1, mscale=1):
        if scale <= 1:
            return 1.0
        return 0.1 * mscale * math.log(scale) + 1.0

    scaling = qk_head_dim ** (-0.5)
    mscale_all_dim = rope_scaling.get("mscale_all_dim", 0)
    if mscale_all_dim:
        mscale = yarn_get_mscale(rope_scaling["factor"], mscale_all_dim)
        scaling = scaling * mscale * mscale
    return scaling


def family_cases():
    """Whole configs read through model_config_from_json: per layer type, HF's inv_freq (with
    proportional RoPE's zero tail, as HF returns it), attention factor and softmax `scaling`."""
    import json
    cases = []

    def add(name, config, layer_type, result, scaling):
        inv, att = result
        assert inv.dtype == torch.float32
        cases.append((name, json.dumps(config, sort_keys=True), layer_type,
                      [float(x) for x in inv.tolist()], float(att), float(scaling)))

    # Gemma-4-like: sliding layers default RoPE over head_dim, full layers proportional over
    # global_head_dim (HF passes head_dim_key="global_head_dim"); scaling 1 (q/k norms).
    for head_dim, global_head_dim in ((256, 512), (256, 256), (128, 512)):
        for prf in (0.25, 1.0):
            for factor in (1.0, 8.0):
                full = {"rope_type": "proportional", "partial_rotary_factor": prf,
                        "rope_theta": 1000000.0}
                if factor != 1.0:
                    full["factor"] = factor
                cfg = {"model_type": "gemma4_text", "num_hidden_layers": 12,
                       "num_attention_heads": 8, "hidden_size": 2048, "head_dim": head_dim,
                       "global_head_dim": global_head_dim, "sliding_window": 512,
                       "max_position_embeddings": 131072,
                       "rope_parameters": {"sliding_attention": {"rope_type": "default",
                                                                 "rope_theta": 10000.0},
                                           "full_attention": full}}
                tag = f"gemma4_hd{head_dim}_g{global_head_dim}_p{prf}_f{factor}"
                add(tag + "_full", cfg, "full_attention",
                    proportional(1000000.0, global_head_dim, prf, factor), 1.0)
                add(tag + "_sliding", cfg, "sliding_attention",
                    (default_inv(10000.0, head_dim), 1.0), 1.0)
    # Gemma-3-like, v4 keys: sliding layers default RoPE at rope_local_base_freq, global layers
    # rope_theta with the rope_scaling dict (linear 8 on the 4B/12B/27B); scaling from
    # query_pre_attn_scalar.
    for head_dim, qpas in ((256, 256), (128, 168)):
        cfg = {"model_type": "gemma3_text", "num_hidden_layers": 34, "head_dim": head_dim,
               "num_attention_heads": 8, "hidden_size": 2560, "query_pre_attn_scalar": qpas,
               "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
               "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024,
               "sliding_window_pattern": 6, "max_position_embeddings": 131072}
        tag = f"gemma3_hd{head_dim}"
        add(tag + "_full", cfg, "full_attention", linear(1000000.0, head_dim, 8.0),
            qpas ** -0.5)
        add(tag + "_sliding", cfg, "sliding_attention", (default_inv(10000.0, head_dim), 1.0),
            qpas ** -0.5)
    # Gemma-3-like, v5 nested rope_parameters.
    cfg = {"model_type": "gemma3_text", "num_hidden_layers": 26, "head_dim": 256,
           "num_attention_heads": 4, "hidden_size": 1152, "query_pre_attn_scalar": 256,
           "sliding_window": 512, "max_position_embeddings": 32768,
           "layer_types": ["sliding_attention" if (i + 1) % 6 else "full_attention"
                           for i in range(26)],
           "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                               "full_attention": {"rope_type": "linear", "factor": 8.0,
                                                  "rope_theta": 1000000.0}}}
    add("gemma3_v5_full", cfg, "full_attention", linear(1000000.0, 256, 8.0), 256 ** -0.5)
    add("gemma3_v5_sliding", cfg, "sliding_attention", (default_inv(10000.0, 256), 1.0),
        256 ** -0.5)
    # DeepSeek-V3-like MLA: YaRN over qk_rope_head_dim, q/k head qk_nope + qk_rope, softmax
    # scaling with mscale_all_dim (V3 / Kimi-K2: 1.0; V2-Lite: 0.707).
    for model_type, factor, ms, msa, nope, rope_d in (("deepseek_v3", 40.0, 1.0, 1.0, 128, 64),
                                                      ("deepseek_v2", 40.0, 0.707, 0.707, 128, 64),
                                                      ("kimi_k2", 32.0, 1.0, 1.0, 128, 64),
                                                      ("deepseek_v3", 40.0, 1.0, 0.0, 128, 64)):
        rs = {"type": "yarn", "factor": factor, "original_max_position_embeddings": 4096,
              "beta_fast": 32, "beta_slow": 1, "mscale": ms, "mscale_all_dim": msa}
        cfg = {"model_type": model_type, "num_hidden_layers": 61, "hidden_size": 7168,
               "num_attention_heads": 128, "qk_nope_head_dim": nope, "qk_rope_head_dim": rope_d,
               "v_head_dim": 128, "max_position_embeddings": 163840, "rope_theta": 10000,
               "rope_scaling": rs}
        res = yarn(10000.0, rope_d, factor, 4096, 32, 1, None, ms, msa, True)
        add(f"{model_type}_f{factor}_m{ms}-{msa}", cfg, "full_attention", res,
            deepseek_softmax_scale(nope + rope_d, rs))
    return cases


def cxx_opt(v):
    return "std::nullopt" if v is None else repr(float(v))


def main():
    cases = []

    def add(name, head_dim, rotary_dim, base, seq_len, scaling_cxx, result):
        inv, att = result
        assert inv.dtype == torch.float32 and inv.numel() == rotary_dim // 2
        cases.append((name, head_dim, rotary_dim, base, seq_len, scaling_cxx,
                      [float(x) for x in inv.tolist()], float(att)))

    geometries = [(128, 128, 10000.0), (128, 128, 500000.0), (64, 64, 10000.0),
                  (80, 32, 10000.0), (96, 96, 1000000.0), (128, 32, 10000.0),
                  (64, 64, 150000.0)]
    for hd, rd, base in geometries:
        tag = f"hd{hd}_rd{rd}_b{int(base)}"
        add(f"default_{tag}", hd, rd, base, None, "ropekit::default_rope{}",
            (default_inv(base, rd), 1.0))
        for f in (2.0, 2.5, 10.0):
            add(f"linear_f{f}_{tag}", hd, rd, base, None, f"ropekit::linear_scaling{{{f!r}}}",
                linear(base, rd, f))
        for a in (1.0, 2.0, 8.0):
            add(f"ntk_a{a}_{tag}", hd, rd, base, None, f"ropekit::ntk_scaling{{{a!r}}}",
                ntk(base, rd, a))
        for f, l0, seqs in ((10.0, 2048, (None, 1, 2048, 2049, 16384)),
                            (2.0, 4096, (32768,)), (2.5, 4096, (5000, 131072))):
            for s in seqs:
                add(f"dynamic_f{f}_l{l0}_s{s}_{tag}", hd, rd, base, s,
                    f"ropekit::dynamic_ntk_scaling{{{f!r}, {l0}}}", dynamic(base, rd, f, l0, s))
        yarn_sets = [
            (10.0, 2048, 32.0, 1.0, None, None, None, True),
            (16.0, 4096, 32.0, 1.0, None, None, None, True),
            (16.0, 4096, 32.0, 1.0, None, None, None, False),
            (32.0, 4096, 32.0, 1.0, None, None, None, False),
            (4.0, 32768, 32.0, 1.0, None, None, None, True),
            (40.0, 4096, 32.0, 1.0, None, 0.707, 0.707, True),
            (16.0, 4096, 32.0, 1.0, None, 1.0, 0.5, True),
            (16.0, 4096, 32.0, 1.0, None, 1.0, None, True),
            (10.0, 2048, 32.0, 1.0, 0.5, None, None, True),
            (10.0, 2048, 1000.0, 1.0, None, None, None, True),
            (8.0, 4096, 64.0, 2.0, None, None, None, False),
            (1.0, 4096, 32.0, 1.0, None, None, None, True),
        ]
        for (f, l, bf, bs, af, ms, msa, tr) in yarn_sets:
            cxx = (f"ropekit::yarn_scaling{{{f!r}, {l}, {bf!r}, {bs!r}, {cxx_opt(af)}, "
                   f"{cxx_opt(ms)}, {cxx_opt(msa)}, {'true' if tr else 'false'}}}")
            add(f"yarn_f{f}_l{l}_b{bf}-{bs}_af{af}_m{ms}-{msa}_t{int(tr)}_{tag}", hd, rd, base,
                None, cxx, yarn(base, rd, f, l, bf, bs, af, ms, msa, tr))
        for (f, lf, hf, l) in ((8.0, 1.0, 4.0, 8192), (10.0, 1.0, 4.0, 2048),
                               (10.0, 1.0, 1000.0, 2048), (32.0, 1.0, 4.0, 8192),
                               (8.0, 2.0, 3.0, 4096)):
            add(f"llama3_f{f}_lf{lf}_hf{hf}_l{l}_{tag}", hd, rd, base, None,
                f"ropekit::llama3_scaling{{{f!r}, {lf!r}, {hf!r}, {l}}}",
                llama3(base, rd, f, lf, hf, l))
        pairs = rd // 2
        short = [1.0 + 0.01 * i for i in range(pairs)]
        long_ = [1.0 + 0.75 * i for i in range(pairs)]
        for (l, f, af, s) in ((4096, 32.0, None, None), (4096, 32.0, None, 4096),
                              (4096, 32.0, None, 4097), (2048, 8.0, 0.5, 100000),
                              (4096, 1.0, None, 8192)):
            cxx = (f"ropekit::longrope_scaling{{{{{', '.join(repr(x) for x in short)}}}, "
                   f"{{{', '.join(repr(x) for x in long_)}}}, {l}, {f!r}, {cxx_opt(af)}}}")
            add(f"longrope_l{l}_f{f}_af{af}_s{s}_{tag}", hd, rd, base, s, cxx,
                longrope(base, rd, short, long_, l, f, af, s))
    # YaRN's `low == high` guard: dim 8, L 3e9 puts both ends at pair index 7 = dim - 1.
    add("yarn_guard_low_equals_high_hd8", 8, 8, 10000.0, None,
        "ropekit::yarn_scaling{4.0, 3000000000, 32.0, 1.0, std::nullopt, std::nullopt, "
        "std::nullopt, true}", yarn(10000.0, 8, 4.0, 3000000000, 32.0, 1.0, None, None, None, True))

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_golden.inc")
    with open(out, "w") as fh:
        fh.write("// SPDX-License-Identifier: Apache-2.0\n")
        fh.write(f"// Generated by tests/data/generate_hf_golden.py with torch {torch.__version__}"
                 "; do not edit.\n")
        fh.write("// Each entry: name, head_dim, rotary_dim, base, seq_len (-1 = none), method,\n")
        fh.write("// inv_freq as torch computed it (float32, hex), attention factor (double).\n")
        for (name, hd, rd, base, s, cxx, inv, att) in cases:
            seq = -1 if s is None else s
            vals = ", ".join(x.hex() for x in inv)
            fh.write(f'{{"{name}", {hd}, {rd}, {base!r}, {seq}, {cxx},\n {{{vals}}},\n'
                     f' {att.hex()}}},\n')
    print(f"wrote {len(cases)} cases to {out}")

    fam = family_cases()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_golden_families.inc")
    with open(out, "w") as fh:
        fh.write("// SPDX-License-Identifier: Apache-2.0\n")
        fh.write(f"// Generated by tests/data/generate_hf_golden.py with torch {torch.__version__}"
                 "; do not edit.\n")
        fh.write("// Each entry: name, config.json text, layer type, inv_freq as HF returns it\n")
        fh.write("// (float32, hex; proportional RoPE's zero tail included), attention factor,\n")
        fh.write("// the attention module's softmax `scaling` (double, hex).\n")
        for (name, cfg, lt, inv, att, scaling) in fam:
            vals = ", ".join(x.hex() for x in inv)
            cfg_c = cfg.replace("\\", "\\\\").replace('"', '\\"')
            fh.write(f'{{"{name}",\n "{cfg_c}",\n "{lt}",\n {{{vals}}},\n'
                     f' {att.hex()}, {scaling.hex()}}},\n')
    print(f"wrote {len(fam)} family cases to {out}")


if __name__ == "__main__":
    main()
