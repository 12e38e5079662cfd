"""Trims the Hugging Face reference for Gemma 3 270M (shared/reference/gemma3) to what the Rust tests
read, so it can be committed (<= 4 MB).

- tokens.json is copied unchanged (texts, prompts with ids and mean_ce, greedy continuation).
- activations.safetensors keeps, for every stored hook of every prompt, the rows at the positions in
  `prompt{p}.positions` (int64): every 6th position and the last one for prompts 0-2; for prompt 3
  (700 tokens) positions 0-3, every 25th, and every 3rd from 500 on (past the 512-token sliding window).
  `prompt{p}.logits_last` keeps the entries at the ids in `prompt{p}.logits_last_ids` (int64: every 64th
  id plus the top 16); `next_token_logprob` and `top5_ids` are kept whole. Everything stays float32.

Usage: python trim_reference.py [SRC_DIR]   (default /work/shared/reference/gemma3; needs numpy, safetensors)
"""

import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

SRC = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/reference/gemma3"
DST = os.path.dirname(os.path.abspath(__file__))


def positions(n, p):
    if p < 3:
        keep = set(range(0, n, 6)) | {n - 1}
    else:
        keep = set(range(4)) | set(range(0, n, 25)) | set(range(500, n, 3)) | {n - 1}
    return np.array(sorted(keep), dtype=np.int64)


def main():
    shutil.copyfile(os.path.join(SRC, "tokens.json"), os.path.join(DST, "tokens.json"))
    tokens = json.load(open(os.path.join(SRC, "tokens.json")))
    src = load_file(os.path.join(SRC, "activations.safetensors"))
    out = {}
    for p, prompt in enumerate(tokens["prompts"]):
        n = len(prompt["ids"])
        pos = positions(n, p)
        out[f"prompt{p}.positions"] = pos
        for name, value in src.items():
            if not name.startswith(f"prompt{p}."):
                continue
            key = name[len(f"prompt{p}.") :]
            if key.startswith("blocks."):
                assert value.shape == (n, 640), (name, value.shape)
                out[name] = np.ascontiguousarray(value[pos]).astype(np.float32)
            elif key == "logits_last":
                top = np.argsort(-value)[:16]
                ids = np.array(sorted(set(range(0, value.size, 64)) | set(top.tolist())), dtype=np.int64)
                out[f"prompt{p}.logits_last_ids"] = ids
                out[name] = value[ids].astype(np.float32)
            else:
                out[name] = value
    save_file(out, os.path.join(DST, "activations.safetensors"))


if __name__ == "__main__":
    main()
