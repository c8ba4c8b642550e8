#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Train the small LLaMA-style byte model of examples/long_context (issue 12) and export it.

The model is a normal Hugging Face LlamaForCausalLM in miniature (RMSNorm, SwiGLU, NeoX RoPE,
GQA 4 query / 2 key-value heads, head_dim 64, hidden 256, 4 layers, FFN 704, no biases,
untied lm_head), over bytes: token = byte 0..255, BOS = 256, vocab 257. Every training window
is [BOS] + 127 bytes at positions 0..127 with the next byte as target at every position, so the
model is trained at exactly L0 = 128 and can learn an attention sink on BOS.

Why rope_theta = 250 (not Llama's 10000): the long-context methods evaluated later are about
the RoPE pairs whose period does not fit in the training window (those see angles they never
saw in training once the context grows). Pair i (of head_dim / 2) has period 2 pi base^(2i/d);
it completes a period inside a context C when that is < C. With head_dim 64 at C = 128 and base
250 that holds for i < 17.5, i.e. 18 of 32 pairs (56%), about the fraction Llama 3 has (base
500000, head_dim 128, C 8192: 35 of 64, 55%). Base 10000 at C = 128 would leave 66% of the pairs
incomplete, a much more "untrained" spectrum than any real model. The script prints these
fractions (see base_justification()).

Runs on CPU with plain PyTorch (Debian 12 python3-torch 1.13): the default settings (1500 steps
of 16 windows, 3.07M tokens, bf16 autocast matmuls) train in under an hour on 2 cores (2188 s =
36.5 minutes measured for the shipped model on a 2-core Zen 5 shared with compile jobs; held-out
NLL at 128 1.51 nats/byte on the first 16384 held-out bytes, 1.63 on the whole held-out split). Speed needs a real BLAS: Debian's
libtorch recommends libopenblas0 (installed by default); with only the netlib reference
libblas3 (a --no-install-recommends install) fp32 matmuls run ~10x slower. To use OpenBLAS
without making it the system default:
  LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread ./train.py

Outputs:
  model/config.json        HF LlamaForCausalLM config
  model/model.safetensors  bf16 weights, HF tensor names, written by hand (no safetensors pkg)
  model/train_log.json     settings, timing, held-out NLL, sink masses
Checkpoints (fp32 state + optimizer) go to --ckpt-dir so a long run can be stopped and the
latest checkpoint exported with --export-only.
"""

import argparse
import json
import math
import os
import struct
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
BOS = 256
VOCAB = 257
L0 = 128

CONFIG = dict(
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    rope_theta=250.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=L0,
    vocab_size=VOCAB,
)


def base_justification():
    """Fraction of RoPE pairs completing a period (2 pi base^(2i/d) < C) inside context C."""

    def complete(base, head_dim, ctx):
        n = head_dim // 2
        k = sum(1 for i in range(n) if 2 * math.pi * base ** (2 * i / head_dim) < ctx)
        bound = (head_dim / 2) * math.log(ctx / (2 * math.pi)) / math.log(base)
        return k, n, bound

    rows = []
    for name, base, hd, ctx in [
        ("this model (base 250, head_dim 64, C 128)", 250.0, 64, 128),
        ("Llama 3 (base 500000, head_dim 128, C 8192)", 500000.0, 128, 8192),
        ("base 10000, head_dim 64, C 128", 10000.0, 64, 128),
    ]:
        k, n, bound = complete(base, hd, ctx)
        rows.append((name, k, n, bound))
        print(f"  {name}: pairs i < {bound:.2f} complete a period: {k}/{n} = {100 * k / n:.1f}% "
              f"complete, {100 * (n - k) / n:.1f}% incomplete")
    return rows


# ----------------------------------------------------------------------------- model


class RMSNorm(torch.nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_cos_sin(positions, head_dim, base):
    """NeoX / rotate_half tables: inv_freq_i = base^(-2i/d), emb = cat(freqs, freqs)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv, self.hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        h = c["hidden_size"]
        self.q_proj = torch.nn.Linear(h, self.nh * self.hd, bias=False)
        self.k_proj = torch.nn.Linear(h, self.nkv * self.hd, bias=False)
        self.v_proj = torch.nn.Linear(h, self.nkv * self.hd, bias=False)
        self.o_proj = torch.nn.Linear(self.nh * self.hd, h, bias=False)

    def forward(self, x, cos, sin, mask, want_probs=False):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv  # q head h uses kv head h // rep
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        s = s.masked_fill(~mask, float("-inf"))
        p = torch.softmax(s, dim=-1)
        o = (p @ v).transpose(1, 2).reshape(b, t, self.nh * self.hd)
        return self.o_proj(o), (p if want_probs else None)


class MLP(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        h, f = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = torch.nn.Linear(h, f, bias=False)
        self.up_proj = torch.nn.Linear(h, f, bias=False)
        self.down_proj = torch.nn.Linear(f, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask, want_probs=False):
        a, p = self.self_attn(self.input_layernorm(x), cos, sin, mask, want_probs)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), p


class Inner(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = torch.nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class ByteLlama(torch.nn.Module):
    """Attribute names mirror HF (model.layers.{i}...., lm_head) so state_dict keys are HF's."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Inner(c)
        self.lm_head = torch.nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        std = 0.02
        for name, p in self.named_parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, 0.0, std)
                if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                    p.data.mul_(1.0 / math.sqrt(2 * c["num_hidden_layers"]))

    def forward(self, ids, want_probs=False):
        t = ids.shape[1]
        pos = torch.arange(t)
        cos, sin = rope_cos_sin(pos, self.c["head_dim"], self.c["rope_theta"])
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        x = self.model.embed_tokens(ids)
        probs = []
        for layer in self.model.layers:
            x, p = layer(x, cos, sin, mask, want_probs)
            probs.append(p)
        return self.lm_head(self.model.norm(x)), probs


# ----------------------------------------------------------------------------- data


def load_splits():
    with open(os.path.join(HERE, "data", "tinyshakespeare.txt"), "rb") as f:
        data = f.read()
    n = len(data)
    cut = n * 9 // 10
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    return t[:cut], t[cut:], cut


def train_batch(train, batch, gen):
    off = torch.randint(0, len(train) - L0 + 1, (batch,), generator=gen)
    idx = off[:, None] + torch.arange(L0)[None, :]
    tgt = train[idx]
    inp = torch.cat([torch.full((batch, 1), BOS, dtype=torch.long), tgt[:, :-1]], dim=1)
    return inp, tgt


def heldout_windows(held, length, tokens):
    """The evaluation protocol's windows: targets held[k L:(k+1) L], input [BOS] + targets[:-1]."""
    nwin = tokens // length
    tgt = held[: nwin * length].view(nwin, length)
    inp = torch.cat([torch.full((nwin, 1), BOS, dtype=torch.long), tgt[:, :-1]], dim=1)
    return inp, tgt


@torch.no_grad()
def heldout_nll(model, held, tokens, bs=64):
    inp, tgt = heldout_windows(held, L0, tokens)
    tot, n = 0.0, 0
    for i in range(0, len(inp), bs):
        logits, _ = model(inp[i : i + bs])
        tot += F.cross_entropy(logits.reshape(-1, VOCAB), tgt[i : i + bs].reshape(-1),
                               reduction="sum").item()
        n += tgt[i : i + bs].numel()
    return tot / n


@torch.no_grad()
def sink_mass(model, held, tokens=16384, min_query=16):
    """Attention probability on key 0 (BOS) per layer, mean over heads and queries >= min_query."""
    inp, _ = heldout_windows(held, L0, tokens)
    sums = [0.0] * model.c["num_hidden_layers"]
    cnt = 0
    for i in range(0, len(inp), 32):
        _, probs = model(inp[i : i + 32], want_probs=True)
        for l, p in enumerate(probs):
            sums[l] += p[:, :, min_query:, 0].sum().item()
        cnt += probs[0][:, :, min_query:, 0].numel()
    return {f"layer{l}": s / cnt for l, s in enumerate(sums)}


# ----------------------------------------------------------------------------- export


def bf16_bytes(t):
    """Round-to-nearest-even fp32 -> bf16 (torch's conversion), raw little-endian bytes."""
    return t.detach().float().contiguous().to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def write_safetensors(path, tensors, metadata):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = bf16_bytes(t)
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)  # keep the data 8-byte aligned (spaces are allowed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def hf_config(c):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c["hidden_size"],
        "intermediate_size": c["intermediate_size"],
        "num_hidden_layers": c["num_hidden_layers"],
        "num_attention_heads": c["num_attention_heads"],
        "num_key_value_heads": c["num_key_value_heads"],
        "head_dim": c["head_dim"],
        "max_position_embeddings": c["max_position_embeddings"],
        "rope_theta": c["rope_theta"],
        "rope_scaling": None,
        "rms_norm_eps": c["rms_norm_eps"],
        "vocab_size": c["vocab_size"],
        "bos_token_id": BOS,
        "eos_token_id": None,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
    }


def export(model, outdir, log):
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(hf_config(model.c), f, indent=2)
        f.write("\n")
    tensors = {k: v for k, v in model.state_dict().items()}
    write_safetensors(os.path.join(outdir, "model.safetensors"), tensors,
                      {"format": "pt", "source": "ropekit examples/long_context/train.py",
                       "step": log.get("step", 0)})
    with open(os.path.join(outdir, "train_log.json"), "w") as f:
        json.dump(log, f, indent=2)
        f.write("\n")
    size = os.path.getsize(os.path.join(outdir, "model.safetensors"))
    print(f"exported to {outdir}: model.safetensors {size} bytes")


def bf16_roundtrip(model):
    """A copy of the model with every weight rounded to bf16 and back (what the evaluators load)."""
    m = ByteLlama(model.c)
    m.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    m.eval()
    return m


# ----------------------------------------------------------------------------- training


def lr_at(step, steps, lr, warmup, min_ratio=0.1):
    if step < warmup:
        return lr * (step + 1) / warmup
    prog = (step - warmup) / max(1, steps - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16, help="windows of 128 tokens per step")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", choices=["bf16", "off"], default="bf16",
                    help="bf16 autocast for the training matmuls (fp32 master weights, fp32 "
                         "norms/softmax/loss); evaluation is always fp32")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-tokens", type=int, default=16384)
    ap.add_argument("--ckpt-every", type=int, default=100)
    ap.add_argument("--ckpt-dir", default=os.path.join(HERE, "checkpoints"))
    ap.add_argument("--out", default=os.path.join(HERE, "model"))
    ap.add_argument("--time-steps", type=int, default=0,
                    help="only time this many steps (no export) and exit")
    ap.add_argument("--resume", action="store_true", help="resume from ckpt-dir/latest.pt")
    ap.add_argument("--export-only", action="store_true",
                    help="export ckpt-dir/latest.pt (no training)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print("rope_theta 250 justification (fraction of pairs with a full period in the window):")
    just = base_justification()

    train, held, cut = load_splits()
    print(f"train {len(train)} bytes, held-out {len(held)} bytes (offset {cut})")
    model = ByteLlama(CONFIG)
    nparam = sum(p.numel() for p in model.parameters())
    print(f"parameters: {nparam} ({2 * nparam / 1e6:.2f} MB in bf16)")

    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed)
    step0, history, elapsed0 = 0, [], 0.0
    ckpt = os.path.join(args.ckpt_dir, "latest.pt")
    if args.resume or args.export_only:
        st = torch.load(ckpt)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step0, history, elapsed0 = st["step"], st["history"], st["elapsed"]
        print(f"loaded {ckpt} at step {step0}")

    def make_log(step, elapsed, final):
        m = bf16_roundtrip(model)
        log = {
            "step": step, "steps_planned": args.steps, "batch": args.batch, "window": L0,
            "tokens_seen": step * args.batch * L0, "lr": args.lr, "warmup": args.warmup,
            "weight_decay": args.weight_decay, "seed": args.seed, "threads": args.threads,
            "train_seconds": round(elapsed, 1), "parameters": nparam, "history": history,
            "final": final,
            "heldout_nll_128_bf16_all": heldout_nll(m, held, (len(held) // L0) * L0),
            "heldout_nll_128_bf16_16384": heldout_nll(m, held, 16384),
            "sink_mass_bf16": sink_mass(m, held),
            "base_justification": [{"case": r[0], "complete": r[1], "pairs": r[2],
                                    "bound": r[3]} for r in just],
        }
        print(f"held-out NLL at 128 (bf16 weights): all {log['heldout_nll_128_bf16_all']:.4f}, "
              f"first 16384 {log['heldout_nll_128_bf16_16384']:.4f} nats/byte")
        print("sink mass on BOS (queries >= 16): "
              + ", ".join(f"{k} {v:.3f}" for k, v in log["sink_mass_bf16"].items()))
        return log

    if args.export_only:
        export(model, args.out, make_log(step0, elapsed0, step0 >= args.steps))
        return

    os.makedirs(args.ckpt_dir, exist_ok=True)
    model.train()
    t_start = time.time() - elapsed0
    run_loss, run_n = 0.0, 0
    for step in range(step0, args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        inp, tgt = train_batch(train, args.batch, gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp == "bf16"):
            logits, _ = model(inp)
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += loss.item()
        run_n += 1
        done = step + 1
        if args.time_steps and done - step0 >= args.time_steps:
            dt = time.time() - t_start - elapsed0
            print(f"timing: {args.time_steps} steps of batch {args.batch} in {dt:.2f} s "
                  f"({dt / args.time_steps:.3f} s/step, {args.time_steps * args.batch * L0 / dt:.0f} "
                  f"tokens/s)")
            return
        if done % 10 == 0:
            el = time.time() - t_start
            print(f"step {done}/{args.steps} loss {run_loss / run_n:.4f} lr "
                  f"{opt.param_groups[0]['lr']:.2e} {el:.0f}s", flush=True)
            run_loss, run_n = 0.0, 0
        if done % args.eval_every == 0 or done == args.steps:
            model.eval()
            nll = heldout_nll(model, held, args.eval_tokens)
            model.train()
            history.append({"step": done, "heldout_nll_128": nll,
                            "seconds": round(time.time() - t_start, 1)})
            print(f"  eval step {done}: held-out NLL at 128 (fp32, {args.eval_tokens} tokens) "
                  f"{nll:.4f}", flush=True)
        if done % args.ckpt_every == 0 or done == args.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "gen": gen.get_state(), "step": done, "history": history,
                        "elapsed": time.time() - t_start}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
    elapsed = time.time() - t_start
    print(f"training done: {args.steps} steps, {args.steps * args.batch * L0} tokens, "
          f"{elapsed:.0f} s")
    model.eval()
    export(model, args.out, make_log(args.steps, elapsed, True))


if __name__ == "__main__":
    main()
