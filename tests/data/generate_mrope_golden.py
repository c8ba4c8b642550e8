#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes tests/data/mrope_golden.inc: M-RoPE position ids and cos/sin for mixed text, image and
video sequences, computed the way Hugging Face transformers computes them for Qwen2-VL,
Qwen2.5-VL and Qwen3-VL (modeling_qwen2_vl.py, modeling_qwen2_5_vl.py, modeling_qwen3_vl.py):

- `get_rope_index`: scans input_ids for <vision_start> followed by an image or video token and
  builds the (3, seq) ids (text: one more than the previous block's largest id, on all axes;
  vision: start + (temporal id, row, column) of the merged grid). Qwen2.5-VL scales a video's
  temporal index by second_per_grid_t * tokens_per_second (float product, then .long());
  Qwen3-VL first splits each video's grid_thw into t rows of temporal size 1 (one per frame,
  each introduced by its own <vision_start>, with timestamp text between frames).
- the text rotary embedding: inv_freq = 1 / base^(arange(0, dim, 2) / dim) in float32, freqs =
  inv_freq x position per axis, then Qwen2-VL's `apply_multimodal_rotary_pos_emb` (split
  cat(freqs, freqs) into mrope_section * 2 chunks, chunk i from axis i % 3) or Qwen3-VL's
  `apply_interleaved_mrope` (height at pairs 1, 4, .. < 3 * s1, width at 2, 5, .. < 3 * s2).

It is a transcription of the semantics, not a copy of HF's code. The stored cos/sin are the
float64 truth: the same selection applied to angles formed in float64 from HF's float32 inv_freq
(HF's own float32 cos/sin differ from it by up to ~1e-4 at these positions, the float32 angle
rounding, which is what ropekit's tables avoid). The position ids are exact.

Run with Debian's torch:  apt-get install python3-torch && /usr/bin/python3 generate_mrope_golden.py
"""
import os

import torch

VISION_START, IMAGE, VIDEO = 151652, 151655, 151656
HEAD_DIM, BASE = 128, 1e6


def inv_freq_f32(dim=HEAD_DIM, base=BASE):
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def build_input_ids(segments):
    """Token stream of a segment list: text segments are ordinary tokens, and the last text token
    before a vision segment is <vision_start> (HF finds vision segments by it)."""
    ids, images, videos, spgt = [], [], [], []
    for i, s in enumerate(segments):
        kind = s[0]
        if kind == "text":
            n = s[1]
            toks = [1000 + (len(ids) + j) % 100 for j in range(n)]
            if i + 1 < len(segments) and segments[i + 1][0] != "text":
                assert n >= 1, "a vision segment needs <vision_start> in the text before it"
                toks[-1] = VISION_START
            ids += toks
        else:
            t, h, w = s[1], s[2], s[3]
            n = t * (h // 2) * (w // 2)
            ids += [IMAGE if kind == "image" else VIDEO] * n
            (images if kind == "image" else videos).append([t, h, w])
            if kind == "video":
                spgt.append(s[4] if len(s) > 4 else 1.0)
    return ids, images, videos, spgt


def get_rope_index(model, input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts,
                   merge=2, tokens_per_second=2):
    """One unpadded sequence. Returns (position_ids (3, n) int64, rope_delta)."""
    image_grid_thw = torch.tensor(image_grid_thw, dtype=torch.int64).reshape(-1, 3)
    video_grid_thw = torch.tensor(video_grid_thw, dtype=torch.int64).reshape(-1, 3)
    if model == "qwen3_vl" and len(video_grid_thw):
        # every frame its own grid of temporal size 1
        video_grid_thw = torch.repeat_interleave(video_grid_thw, video_grid_thw[:, 0], dim=0)
        video_grid_thw[:, 0] = 1
    ids = torch.tensor(input_ids, dtype=torch.int64)
    starts = torch.nonzero(ids == VISION_START).flatten()
    after = ids[starts + 1]
    n_img, n_vid = int((after == IMAGE).sum()), int((after == VIDEO).sum())
    tokens = ids.tolist()
    blocks = []
    st = 0
    img_i = vid_i = 0
    left_img, left_vid = n_img, n_vid
    for _ in range(n_img + n_vid):
        ed_img = tokens.index(IMAGE, st) if (IMAGE in tokens and left_img > 0) else len(tokens) + 1
        ed_vid = tokens.index(VIDEO, st) if (VIDEO in tokens and left_vid > 0) else len(tokens) + 1
        if ed_img < ed_vid:
            t, h, w = image_grid_thw[img_i].tolist()
            sec = 0.0
            img_i += 1
            left_img -= 1
            ed = ed_img
        else:
            t, h, w = video_grid_thw[vid_i].tolist()
            sec = float(second_per_grid_ts[vid_i]) if model == "qwen2_5_vl" else None
            vid_i += 1
            left_vid -= 1
            ed = ed_vid
        gt, gh, gw = t, h // merge, w // merge
        text_len = ed - st
        start = int(blocks[-1].max()) + 1 if blocks else 0
        blocks.append(torch.arange(text_len).view(1, -1).expand(3, -1) + start)
        frame = torch.arange(gt).view(-1, 1).expand(-1, gh * gw)
        if model == "qwen2_5_vl":
            # float32 product of the frame index, second_per_grid_t and tokens_per_second
            t_idx = (frame * torch.tensor(sec, dtype=torch.float32) * tokens_per_second).long()
        else:
            t_idx = frame
        t_idx = t_idx.flatten()
        h_idx = torch.arange(gh).view(1, -1, 1).expand(gt, -1, gw).flatten()
        w_idx = torch.arange(gw).view(1, 1, -1).expand(gt, gh, -1).flatten()
        blocks.append(torch.stack([t_idx, h_idx, w_idx]) + text_len + start)
        st = ed + gt * gh * gw
    if st < len(tokens):
        start = int(blocks[-1].max()) + 1 if blocks else 0
        blocks.append(torch.arange(len(tokens) - st).view(1, -1).expand(3, -1) + start)
    pos = torch.cat(blocks, dim=1).reshape(3, -1)
    return pos, int(pos.max()) + 1 - len(tokens)


def select_axes(freqs, section, layout):
    """freqs: (3, n, pairs) angles per axis -> (n, 2 * pairs) as HF's cat(freqs, freqs) after the
    section selection."""
    if layout == "contiguous":
        emb = torch.cat((freqs, freqs), dim=-1)  # (3, n, 2 * pairs)
        chunks = emb.split(section * 2, dim=-1)
        return torch.cat([c[i % 3] for i, c in enumerate(chunks)], dim=-1)
    out = freqs[0].clone()
    for axis, offset in ((1, 1), (2, 2)):
        idx = slice(offset, section[axis] * 3, 3)
        out[..., idx] = freqs[axis, ..., idx]
    return torch.cat((out, out), dim=-1)


def mrope_cos_sin(pos, section, layout):
    inv = inv_freq_f32()
    # HF: float32 (3, 1, pairs, 1) @ (3, 1, 1, n), transposed -> (3, n, pairs)
    f32 = (inv[None, None, :, None].expand(3, 1, -1, 1) @ pos[:, None, None, :].float())
    f32 = f32.transpose(2, 3)[:, 0]
    hf = select_axes(f32, section, layout)
    # float64 truth from the same float32 inv_freq
    f64 = pos[:, :, None].double() * inv.double()[None, None, :]
    truth = select_axes(f64, section, layout)
    pairs = HEAD_DIM // 2
    assert torch.equal(truth[:, :pairs], truth[:, pairs:])  # both halves of a NeoX pair agree
    hf_err = (hf.cos().double() - truth.cos()).abs().max().item()
    return truth[:, :pairs].cos(), truth[:, :pairs].sin(), hf_err


CASES = [
    # name, model, layout, mrope_section, segments
    ("qwen2_vl_mixed", "qwen2_vl", "contiguous", [16, 24, 24],
     [("text", 5), ("image", 1, 4, 6), ("text", 3), ("video", 3, 4, 4), ("text", 4)]),
    ("qwen2_5_vl_video", "qwen2_5_vl", "contiguous", [16, 24, 24],
     [("text", 3), ("video", 4, 4, 4, 1.0), ("text", 2), ("image", 1, 4, 4), ("text", 2),
      ("video", 3, 2, 6, 2.0), ("text", 1)]),
    # Qwen3-VL: a 2-frame video is two <vision_start> frames with timestamp text between.
    ("qwen3_vl_mixed", "qwen3_vl", "interleaved", [24, 20, 20],
     [("text", 4), ("image", 1, 6, 4), ("text", 3), ("video", 1, 4, 4), ("text", 3),
      ("video", 1, 4, 4), ("text", 2)]),
]

MODEL_ENUM = {"qwen2_vl": "ropekit::mrope_model::qwen2_vl",
              "qwen2_5_vl": "ropekit::mrope_model::qwen2_5_vl",
              "qwen3_vl": "ropekit::mrope_model::qwen3_vl"}
LAYOUT_ENUM = {"contiguous": "ropekit::mrope_layout::contiguous",
               "interleaved": "ropekit::mrope_layout::interleaved"}


def hexd(x):
    return float(x).hex()


def main():
    out = []
    out.append("// SPDX-License-Identifier: Apache-2.0")
    out.append("// Generated by tests/data/generate_mrope_golden.py with torch %s; do not edit."
               % torch.__version__)
    out.append("// HF's float32 inv_freq (head_dim 128, base 1e6), then per case: segments, the")
    out.append("// (3, n) position ids and rope delta of get_rope_index, and the float64-truth")
    out.append("// cos/sin of each token's 64 pairs (hex).")
    inv = inv_freq_f32()
    out.append("static const float golden_inv_freq[64] = {%s};"
               % ", ".join(hexd(v) for v in inv.tolist()))
    table = []
    worst_hf = 0.0
    for name, model, layout, section, segs in CASES:
        ids, images, videos, spgt = build_input_ids(segs)
        pos, delta = get_rope_index(model, ids, images, videos, spgt)
        cos, sin, hf_err = mrope_cos_sin(pos, section, layout)
        worst_hf = max(worst_hf, hf_err)
        n = pos.shape[1]
        seg_lines = []
        for s in segs:
            if s[0] == "text":
                seg_lines.append("{0, %d, 0, 0, 0, 1.0}" % s[1])
            else:
                seg_lines.append("{%d, 0, %d, %d, %d, %r}" % (1 if s[0] == "image" else 2, s[1], s[2],
                                                             s[3], float(s[4]) if len(s) > 4 else 1.0))
        out.append("static const golden_segment %s_segments[] = {%s};" % (name, ", ".join(seg_lines)))
        out.append("static const std::int64_t %s_pos[] = {%s};"
                   % (name, ", ".join(str(v) for v in pos.flatten().tolist())))
        out.append("static const double %s_cos[] = {%s};"
                   % (name, ", ".join(hexd(v) for v in cos.flatten().tolist())))
        out.append("static const double %s_sin[] = {%s};"
                   % (name, ", ".join(hexd(v) for v in sin.flatten().tolist())))
        table.append('    {"%s", %s, %s, {%d, %d, %d}, %s_segments, %d, %d, %s_pos, %d, %s_cos, %s_sin},'
                     % (name, MODEL_ENUM[model], LAYOUT_ENUM[layout], *section, name, len(segs), n,
                        name, delta, name, name))
    out.append("static const golden_case golden_cases[] = {")
    out += table
    out.append("};")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mrope_golden.inc")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote", path, "- HF float32 cos vs float64 truth: max |diff| %.3g" % worst_hf)


if __name__ == "__main__":
    main()
