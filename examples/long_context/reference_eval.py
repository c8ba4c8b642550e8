#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Independent PyTorch reference for the long-context evaluation (issue 12) -> reference.json.

Loads model/config.json + model/model.safetensors (own reader: bf16 -> fp32 exactly by shifting
the 16 bits into the high half of a float32), runs the LLaMA forward in fp32 and evaluates every
(method, length) cell of the protocol: windows k = 0 .. T/L - 1, targets held[kL : (k+1)L],
input [BOS] + held[kL : (k+1)L - 1] at positions 0 .. L-1, cell = mean -log p(target) in nats.

Methods (s = L / 128, base 250, rotary dim 64):
  frequency methods change inv_freq (and YaRN the attention factor on cos and sin), written from
  the formulas HF computes (shared/FORMULAS.md sections 0-4): none, linear, ntk, dynamic, yarn;
  position rules keep the base-250 frequencies and score the pair (i, j) at a relative position
  rel(i, j) as (R_rel q_i) . k_j (RoPE's relative property): rerope, leaky_rerope, self_extend,
  streaming_llm (with its sink + window mask), window (mask only).
The position rules are evaluated by splitting each score matrix into a near part (ordinary RoPE,
q at i and k at j) and a far part (q and k at the rule's far positions), as ReRoPE's reference
does; --check (on by default) verifies that split against a direct evaluation of
sum_pairs [A cos(rel theta) + B sin(rel theta)] from the per-(i, j) rel matrix written straight
from the definitions, and the identities every method must satisfy (1x equals none except for
ReRoPE, whose window 64 clamps inside the training length too; ReRoPE with a window >= L and
Self-Extend with G = 1 equal none; streaming_llm and window at L <= 128 equal none).

Speed needs a real BLAS (see train.py): LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread
if OpenBLAS is installed but not the system default.
"""

import argparse
import json
import math
import os
import struct
import time

import numpy as np
import torch

# The evaluation protocol's windows are train.py's (the held-out NLL it prints is a cell).
from train import heldout_windows

HERE = os.path.dirname(os.path.abspath(__file__))
BOS = 256
L0 = 128
BASE_WINDOW = 64  # rerope / leaky_rerope / self_extend window w
SELF_EXTEND_GROUP = {128: 1, 256: 4, 512: 8, 1024: 16, 2048: 32}
STREAM_SINKS, STREAM_WINDOW = 4, 124
DYNAMIC_FACTOR = 2.0
GRIDS = {"full": ([128, 256, 512, 1024, 2048], 16384), "reduced": ([128, 512], 1024)}
METHODS = ["none", "linear", "ntk", "dynamic", "yarn", "rerope", "leaky_rerope", "self_extend",
           "streaming_llm", "window"]
DESCRIPTIONS = {
    "none": "plain RoPE, base 250, positions 0..L-1",
    "linear": "position interpolation: inv_freq / s, s = L/128",
    "ntk": "NTK-aware: base' = 250 * s^(64/62), s = L/128",
    "dynamic": "HF dynamic NTK, factor 2: for L > 128 base' = 250 * (2L/128 - 1)^(64/62) "
               "for the whole window",
    "yarn": "HF YaRN, factor s = L/128, original_max_position_embeddings 128, beta_fast 32, "
            "beta_slow 1, truncate (low 0, high 18), attention_factor 0.1 ln s + 1 on cos and sin",
    "rerope": "ReRoPE, window 64: rel = min(i - j, 64)",
    "leaky_rerope": "Leaky ReRoPE, window 64, k = max(1, (L - 65) / 63): rel = d if d < 64 "
                    "else 64 + (d - 64) / k (largest rel 127)",
    "self_extend": "Self-Extend, neighbour window 64, group G = {128:1, 256:4, 512:8, 1024:16, "
                   "2048:32}: rel = d if d < 64 else floor(i/G) + 64 - floor(64/G) - floor(j/G)",
    "streaming_llm": "StreamingLLM, 4 sinks + window 124 (cache 128), cache positions: window "
                     "keys at i - j, sink j at min(i, 127) - j",
    "window": "sliding window 128, no sinks, rel = i - j",
}


# ----------------------------------------------------------------------------- weights


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "BF16":
            raise ValueError(f"{name}: dtype {info['dtype']}, expected BF16")
        a, b = info["data_offsets"]
        u16 = np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32)
        f32 = (u16 << 16).view(np.float32).reshape(info["shape"])
        out[name] = torch.from_numpy(f32.copy())
    return out


class Model:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = json.load(f)
        c = self.cfg
        self.w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.hidden = c["hidden_size"]
        self.n_layers = c["num_hidden_layers"]
        self.nh = c["num_attention_heads"]
        self.nkv = c["num_key_value_heads"]
        self.hd = c.get("head_dim", self.hidden // self.nh)
        self.eps = c["rms_norm_eps"]
        self.base = float(c["rope_theta"])
        self.vocab = c["vocab_size"]
        assert c["max_position_embeddings"] == L0 and c["bos_token_id"] == BOS

    def rmsnorm(self, x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w[name]

    def lin(self, x, name):
        return x @ self.w[name].t()


# ----------------------------------------------------------------------------- frequencies


def default_inv_freq(base, dim):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def method_frequencies(method, L, base, dim):
    """(inv_freq, attention_factor) of a frequency method at length L (FORMULAS.md 0-4)."""
    s = L / L0
    if method == "linear":
        return default_inv_freq(base, dim) / s, 1.0
    if method == "ntk":
        return default_inv_freq(base * s ** (dim / (dim - 2)), dim), 1.0
    if method == "dynamic":
        seq = L if L > L0 else L0
        b = base * ((DYNAMIC_FACTOR * seq / L0) - (DYNAMIC_FACTOR - 1)) ** (dim / (dim - 2))
        return default_inv_freq(b, dim), 1.0
    if method == "yarn":
        return yarn_frequencies(base, dim, s, L0, 32.0, 1.0)
    return default_inv_freq(base, dim), 1.0  # none and every position rule


def yarn_correction_range(base, dim, orig, beta_fast, beta_slow):
    def corr_dim(r):
        return dim * math.log(orig / (r * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(corr_dim(beta_fast)), 0)  # truncate: floor / ceil
    high = min(math.ceil(corr_dim(beta_slow)), dim - 1)
    return low, high


def yarn_frequencies(base, dim, s, orig, beta_fast, beta_slow):
    attention_factor = 1.0 if s <= 1 else 0.1 * math.log(s) + 1.0
    low, high = yarn_correction_range(base, dim, orig, beta_fast, beta_slow)
    if low == high:
        high += 0.001
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    inv_extra = 1.0 / pos_freqs
    inv_inter = 1.0 / (s * pos_freqs)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    # ramp 0 (fast pairs j <= low): original frequency; ramp 1 (j >= high): interpolated by s.
    return inv_inter * ramp + inv_extra * (1 - ramp), attention_factor


# ----------------------------------------------------------------------------- rotations


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def rotate(x, positions, inv_freq, attention_factor=1.0):
    """x [..., L, D] rotated at float32 positions [L] (NeoX pairs (i, i + D/2))."""
    ang = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos() * attention_factor, emb.sin() * attention_factor
    return x * cos + rotate_half(x) * sin


# ----------------------------------------------------------------------------- position rules


def rule_params(method, L):
    """Near window w and far q / k positions (float64 -> float32 tensors) and the visibility mask.

    A pair at distance d = i - j < w is scored as ordinary RoPE (q at i, k at j); a farther
    one at (q at fq(i)) . (k at fk(j)), i.e. relative position fq(i) - fk(j).
    """
    i = torch.arange(L, dtype=torch.float64)
    d = i[:, None] - i[None, :]
    causal = d >= 0
    if method == "rerope":
        w = BASE_WINDOW
        fq, fk = torch.full((L,), float(w), dtype=torch.float64), torch.zeros(L, dtype=torch.float64)
        vis = causal
    elif method == "leaky_rerope":
        w = BASE_WINDOW
        k = max(1.0, (L - 1 - w) / (L0 - 1 - w))
        fq, fk = (i + w * (k - 1)) / k, i / k
        vis = causal
    elif method == "self_extend":
        w, g = BASE_WINDOW, SELF_EXTEND_GROUP[L]
        fq, fk = torch.floor(i / g) + w - (w // g), torch.floor(i / g)
        vis = causal
    elif method == "streaming_llm":
        w = STREAM_WINDOW
        fq, fk = torch.clamp(i, max=STREAM_SINKS + STREAM_WINDOW - 1), i
        vis = causal & ((i[None, :] < STREAM_SINKS) | (d < STREAM_WINDOW))
    elif method == "window":
        w = L + 1  # every visible pair is near
        fq, fk = i, i
        vis = causal & (d < L0)
    else:
        raise ValueError(method)
    return w, fq.float(), fk.float(), vis, d < w


def rule_rel_matrix(method, L):
    """rel(i, j) written directly from the spec's definitions (for the --check comparison)."""
    ii = torch.arange(L, dtype=torch.float64)[:, None].expand(L, L)
    jj = torch.arange(L, dtype=torch.float64)[None, :].expand(L, L)
    d = ii - jj
    w = BASE_WINDOW
    if method == "none":
        rel = d
    elif method == "rerope":
        rel = torch.minimum(d, torch.tensor(float(w), dtype=torch.float64))
    elif method == "leaky_rerope":
        k = max(1.0, (L - 1 - 64) / (128 - 1 - 64))
        rel = torch.where(d < 64, d, 64 + (d - 64) / k)
    elif method == "self_extend":
        g = SELF_EXTEND_GROUP[L]
        rel = torch.where(d < 64, d, (torch.floor(ii / g) + 64 - math.floor(64 / g)) - torch.floor(jj / g))
    elif method == "streaming_llm":
        sink = (jj < 4) & (d >= 124)
        rel = torch.where(sink, torch.clamp(ii, max=127) - jj, d)
    elif method == "window":
        rel = d
    else:
        raise ValueError(method)
    return rel


def rule_visible(method, L):
    ii = torch.arange(L)[:, None]
    jj = torch.arange(L)[None, :]
    d = ii - jj
    if method == "streaming_llm":
        return (d >= 0) & ((jj < 4) | (d < 124))
    if method == "window":
        return (d >= 0) & (d < 128)
    return d >= 0


def scores_direct(q, k, rel, inv_freq):
    """sum_p [cos(rel th_p) (qa ka + qb kb) + sin(rel th_p) (qa kb - qb ka)] = (R_rel q) . k."""
    h = q.shape[-1] // 2
    qa, qb, ka, kb = q[..., :h], q[..., h:], k[..., :h], k[..., h:]
    rel32 = rel.float()
    out = torch.zeros(q.shape[:-2] + (q.shape[-2], k.shape[-2]))
    for p in range(h):
        ang = rel32 * inv_freq[p]
        a = qa[..., :, None, p] * ka[..., None, :, p] + qb[..., :, None, p] * kb[..., None, :, p]
        b = qa[..., :, None, p] * kb[..., None, :, p] - qb[..., :, None, p] * ka[..., None, :, p]
        out += ang.cos() * a + ang.sin() * b
    return out


# ----------------------------------------------------------------------------- forward


class Evaluator:
    def __init__(self, model):
        self.m = model

    def attention_scores(self, q, k, method, L, direct=False):
        """Raw scores q.k / sqrt(d) (times attention_factor^2 for YaRN) and the visible mask."""
        m = self.m
        pos = torch.arange(L, dtype=torch.float32)
        scale = 1.0 / math.sqrt(m.hd)
        if method in ("none", "linear", "ntk", "dynamic", "yarn"):
            inv, af = method_frequencies(method, L, m.base, m.hd)
            if direct:
                s = scores_direct(q, k, rule_rel_matrix("none", L), inv) * (af * af)
            else:
                s = rotate(q, pos, inv, af) @ rotate(k, pos, inv, af).transpose(-1, -2)
            return s * scale, rule_visible("none", L)
        inv = default_inv_freq(m.base, m.hd)
        if direct:
            return scores_direct(q, k, rule_rel_matrix(method, L), inv) * scale, rule_visible(method, L)
        w, fq, fk, vis, near = rule_params(method, L)
        s_near = rotate(q, pos, inv) @ rotate(k, pos, inv).transpose(-1, -2)
        if bool(near[vis].all()):
            s = s_near
        else:
            s_far = rotate(q, fq, inv) @ rotate(k, fk, inv).transpose(-1, -2)
            s = torch.where(near, s_near, s_far)
        return s * scale, vis

    def forward(self, ids, method, want_probs=False, direct=False):
        m, w = self.m, self.m.w
        B, L = ids.shape
        x = w["model.embed_tokens.weight"][ids]
        probs = []
        for l in range(m.n_layers):
            p = f"model.layers.{l}."
            h = m.rmsnorm(x, p + "input_layernorm.weight")
            q = m.lin(h, p + "self_attn.q_proj.weight").view(B, L, m.nh, m.hd).transpose(1, 2)
            k = m.lin(h, p + "self_attn.k_proj.weight").view(B, L, m.nkv, m.hd).transpose(1, 2)
            v = m.lin(h, p + "self_attn.v_proj.weight").view(B, L, m.nkv, m.hd).transpose(1, 2)
            rep = m.nh // m.nkv  # query head h reads kv head h // rep
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            s, vis = self.attention_scores(q, k, method, L, direct)
            s = s.masked_fill(~vis, float("-inf"))
            a = torch.softmax(s, dim=-1)
            if want_probs:
                probs.append(a)
            o = (a @ v).transpose(1, 2).reshape(B, L, m.nh * m.hd)
            x = x + m.lin(o, p + "self_attn.o_proj.weight")
            h = m.rmsnorm(x, p + "post_attention_layernorm.weight")
            g = m.lin(h, p + "mlp.gate_proj.weight")
            u = m.lin(h, p + "mlp.up_proj.weight")
            x = x + m.lin(torch.nn.functional.silu(g) * u, p + "mlp.down_proj.weight")
        x = m.rmsnorm(x, "model.norm.weight")
        return m.lin(x, "lm_head.weight"), probs


@torch.no_grad()
def cell_nll(ev, held, method, L, T, direct=False, batch_tokens=4096):
    inp, tgt = heldout_windows(held, L, T)
    bs = max(1, batch_tokens // L)
    tot = 0.0
    for i in range(0, len(inp), bs):
        logits, _ = ev.forward(inp[i : i + bs], method, direct=direct)
        lp = torch.log_softmax(logits, dim=-1)
        tot += -lp.gather(-1, tgt[i : i + bs, :, None]).double().sum().item()
    return tot / (len(inp) * L)


@torch.no_grad()
def sink_mass(ev, held, T=16384, min_query=16):
    inp, _ = heldout_windows(held, L0, T)
    sums = [0.0] * ev.m.n_layers
    cnt = 0
    for i in range(0, len(inp), 32):
        _, probs = ev.forward(inp[i : i + 32], "none", want_probs=True)
        for l, a in enumerate(probs):
            sums[l] += a[:, :, min_query:, 0].double().sum().item()
        cnt += probs[0][:, :, min_query:, 0].numel()
    return {f"layer{l}": s / cnt for l, s in enumerate(sums)}


def loaded_blas():
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line}
        return sorted(libs)
    except OSError:
        return []


def self_checks(ev, held, results):
    """Identities the methods must satisfy; returns a list of (name, a, b, |a - b|)."""
    out = []
    tol = 1e-5

    def add(name, a, b):
        out.append({"check": name, "a": a, "b": b, "diff": abs(a - b), "ok": abs(a - b) <= tol})
        print(f"  check {name}: {a:.7f} vs {b:.7f}, diff {abs(a - b):.2e}"
              f"{'' if abs(a - b) <= tol else '  FAILED'}")

    T = 1024
    none128 = cell_nll(ev, held, "none", 128, T)
    # At 1x (s = 1) every method is plain RoPE except ReRoPE: its window 64 < 128 clamps the
    # distances 64..127 even inside the training length (so rerope@128 is checked below against
    # the direct rel(i, j) path instead, and must differ from none).
    for mth in METHODS[1:]:
        if mth != "rerope":
            add(f"{mth}@128 == none@128 (1x)", cell_nll(ev, held, mth, 128, T), none128)
    add("rerope@128 split == direct rel(i,j)", cell_nll(ev, held, "rerope", 128, T),
        cell_nll(ev, held, "rerope", 128, T, direct=True))
    r128 = cell_nll(ev, held, "rerope", 128, T)
    out.append({"check": "rerope@128 != none@128 (w 64 < 128)", "a": r128, "b": none128,
                "diff": abs(r128 - none128), "ok": abs(r128 - none128) > tol})
    print(f"  check rerope@128 differs from none@128: diff {abs(r128 - none128):.2e}")
    # The near/far split against the direct per-(i, j) rel evaluation, every rule, at 512.
    for mth in ["none", "rerope", "leaky_rerope", "self_extend", "streaming_llm", "window"]:
        add(f"{mth}@512 split == direct rel(i,j)", cell_nll(ev, held, mth, 512, T),
            cell_nll(ev, held, mth, 512, T, direct=True))
    # YaRN through the direct path too (frequencies and attention_factor^2 on the scores).
    add("yarn@512 rotated == direct", cell_nll(ev, held, "yarn", 512, T),
        cell_nll(ev, held, "yarn", 512, T, direct=True))
    # ReRoPE with a window >= L is plain RoPE.
    global BASE_WINDOW
    saved, BASE_WINDOW = BASE_WINDOW, 512
    try:
        add("rerope(w=512)@512 == none@512", cell_nll(ev, held, "rerope", 512, T),
            cell_nll(ev, held, "none", 512, T))
    finally:
        BASE_WINDOW = saved
    # Self-Extend with G = 1 is plain RoPE.
    saved_g = SELF_EXTEND_GROUP[512]
    SELF_EXTEND_GROUP[512] = 1
    try:
        add("self_extend(G=1)@512 == none@512", cell_nll(ev, held, "self_extend", 512, T),
            cell_nll(ev, held, "none", 512, T))
    finally:
        SELF_EXTEND_GROUP[512] = saved_g
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", choices=["full", "reduced", "both"], default="both")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=os.path.join(HERE, "model"))
    ap.add_argument("--text", default=os.path.join(HERE, "data", "tinyshakespeare.txt"))
    ap.add_argument("--out", default=os.path.join(HERE, "reference.json"))
    ap.add_argument("--no-check", action="store_true", help="skip the self-checks")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = Model(args.model)
    ev = Evaluator(model)
    with open(args.text, "rb") as f:
        data = f.read()
    cut = len(data) * 9 // 10
    held = torch.frombuffer(bytearray(data[cut:]), dtype=torch.uint8).long()
    print(f"model {args.model}: {model.n_layers} layers, hidden {model.hidden}, heads "
          f"{model.nh}/{model.nkv}, head_dim {model.hd}, base {model.base}; held-out offset {cut}")
    lo, hi = yarn_correction_range(model.base, model.hd, L0, 32.0, 1.0)
    print(f"yarn correction range (truncate): low {lo}, high {hi}")

    c = model.cfg
    res = {
        "model": {k: c[k] for k in ["hidden_size", "intermediate_size", "num_hidden_layers",
                                    "num_attention_heads", "num_key_value_heads", "head_dim",
                                    "rope_theta", "rms_norm_eps", "vocab_size",
                                    "max_position_embeddings"]},
        "text": "data/tinyshakespeare.txt",
        "heldout_offset": cut,
        "train_length": L0,
        "bos": BOS,
        "methods": DESCRIPTIONS,
        "yarn_correction_range": [lo, hi],
        "grids": {},
    }
    tl = os.path.join(args.model, "train_log.json")
    if os.path.exists(tl):
        with open(tl) as f:
            log = json.load(f)
        res["model"]["train_steps"] = log.get("step")
        res["model"]["train_tokens"] = log.get("tokens_seen")

    grids = ["full", "reduced"] if args.grid == "both" else [args.grid]
    total_tokens, t0 = 0, time.time()
    for g in grids:
        lengths, T = GRIDS[g]
        tg = time.time()
        nll = {m: {} for m in METHODS}
        for L in lengths:
            for mth in METHODS:
                t1 = time.time()
                nll[mth][str(L)] = cell_nll(ev, held, mth, L, T)
                total_tokens += T
                print(f"  {g} {mth:14s} L={L:5d}: {nll[mth][str(L)]:.6f}  "
                      f"({time.time() - t1:.1f} s)", flush=True)
        res["grids"][g] = {"lengths": lengths, "tokens_per_cell": T, "nll": nll,
                           "seconds": round(time.time() - tg, 2)}
    seconds = time.time() - t0
    res["torch"] = {"threads": args.threads, "tokens_per_second": total_tokens / seconds,
                    "seconds": round(seconds, 2), "tokens": total_tokens,
                    "grids": grids, "version": torch.__version__, "blas": loaded_blas()}
    print(f"grid(s) {grids}: {total_tokens} target tokens in {seconds:.1f} s = "
          f"{total_tokens / seconds:.0f} tokens/s with {args.threads} threads")

    res["sink_mass"] = sink_mass(ev, held)
    print("sink mass on BOS (L=128, queries >= 16, 16384 held-out tokens): "
          + ", ".join(f"{k} {v:.4f}" for k, v in res["sink_mass"].items()))
    if not args.no_check:
        res["self_checks"] = self_checks(ev, held, res)
        bad = [c for c in res["self_checks"] if not c["ok"]]
        print(f"self-checks: {len(res['self_checks']) - len(bad)}/{len(res['self_checks'])} ok")

    print("\nnll (nats/byte)".ljust(16) + "".join(f"{L:>9d}" for L in GRIDS["full"][0]))
    for g in grids:
        print(f"[{g}]")
        for mth in METHODS:
            row = res["grids"][g]["nll"][mth]
            print(f"  {mth:14s}" + "".join(f"{row[str(L)]:9.4f}" if str(L) in row else " " * 9
                                          for L in GRIDS["full"][0]))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}")
    if not args.no_check and any(not c["ok"] for c in res["self_checks"]):
        raise SystemExit("self-check failed")


if __name__ == "__main__":
    main()
