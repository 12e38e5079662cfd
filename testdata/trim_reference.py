#!/usr/bin/env python3
"""Rebuilds testdata/smollm2 and testdata/saelens from the full oracle directory.

Usage: python3 testdata/trim_reference.py REFERENCE_DIR [OUT_DIR]

REFERENCE_DIR holds the full Hugging Face / SAELens outputs (tokens.json, activations.safetensors,
saelens/; see testdata/README.md for how they were made). OUT_DIR defaults to the folder of this script.

- smollm2/tokens.json is copied as it is.
- smollm2/activations.safetensors keeps, for every prompt, every hook tensor at the positions
  POSITIONS_HEAD and then every STRIDE-th position counting back from the last one (rows in that order,
  listed in `prompt{p}.positions`, int64), plus the small per-prompt tensors whole.
- saelens/ is copied whole (it is small).

Needs only the Python standard library: safetensors is an 8-byte little-endian header length, a JSON
header (dtype, shape and byte range of each tensor) and the raw little-endian data, so the script reads
and writes it directly, and the output is byte-identical wherever it runs.
"""

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

POSITIONS_HEAD = 4
STRIDE = 12
# Per-prompt tensors kept whole (they are small).
WHOLE = ("logits_last", "next_token_logprob", "top5_ids")
DTYPE_BYTES = {"F32": 4, "I64": 8}
SAELENS_FILES = ["inputs.safetensors"] + [
    f"{arch}/{name}"
    for arch in ("standard", "topk", "jumprelu", "gated")
    for name in ("cfg.json", "sae_weights.safetensors", "expected.safetensors")
]


def read_safetensors(path):
    """Returns (header dict without __metadata__, data bytes)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    return header, raw[8 + n :]


def write_safetensors(path, tensors, metadata):
    """tensors: name -> (dtype, shape, bytes), written in name order."""
    header = {"__metadata__": metadata}
    offset = 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(tensors[name][2])


def positions(n_tokens):
    """The first POSITIONS_HEAD positions, then every STRIDE-th one back from the last, ascending."""
    tail = range(n_tokens - 1, POSITIONS_HEAD - 1, -STRIDE)
    return sorted(set(range(min(POSITIONS_HEAD, n_tokens))) | set(tail))


def trim_activations(src, dst):
    header, data = read_safetensors(src)
    out = {}
    prompts = sorted({name.split(".", 1)[0] for name in header})
    for prompt in prompts:
        hooks = [n for n in header if n.startswith(prompt + ".blocks.")]
        n_tokens = header[f"{prompt}.top5_ids"]["shape"][0]
        keep = positions(n_tokens)
        out[f"{prompt}.positions"] = ("I64", [len(keep)], struct.pack(f"<{len(keep)}q", *keep))
        for name in hooks:
            info = header[name]
            rows, width = info["shape"]
            assert rows == n_tokens and info["dtype"] == "F32", name
            start = info["data_offsets"][0]
            row_bytes = width * DTYPE_BYTES["F32"]
            picked = b"".join(data[start + t * row_bytes : start + (t + 1) * row_bytes] for t in keep)
            out[name] = ("F32", [len(keep), width], picked)
        for suffix in WHOLE:
            info = header[f"{prompt}.{suffix}"]
            lo, hi = info["data_offsets"]
            out[f"{prompt}.{suffix}"] = (info["dtype"], info["shape"], data[lo:hi])
    metadata = {
        "trimmed_from": f"activations.safetensors sha256 {hashlib.sha256(src.read_bytes()).hexdigest()}",
        "rows": f"hook tensors hold the rows listed in prompt{{p}}.positions (first {POSITIONS_HEAD}, "
        f"then every {STRIDE}th back from the last)",
    }
    write_safetensors(dst, out, metadata)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.split("\n\n")[1])
    ref = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) == 3 else Path(__file__).resolve().parent
    for needed in ("tokens.json", "activations.safetensors", "saelens/inputs.safetensors"):
        if not (ref / needed).is_file():
            sys.exit(f"{ref / needed} is missing: give the full oracle directory")
    (out / "smollm2").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ref / "tokens.json", out / "smollm2" / "tokens.json")
    trim_activations(ref / "activations.safetensors", out / "smollm2" / "activations.safetensors")
    for rel in SAELENS_FILES:
        (out / "saelens" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ref / "saelens" / rel, out / "saelens" / rel)
    for path in sorted((out / "smollm2").iterdir()) + sorted((out / "saelens").rglob("*.*")):
        print(f"{path.stat().st_size:>9}  {path.relative_to(out)}")


if __name__ == "__main__":
    main()
