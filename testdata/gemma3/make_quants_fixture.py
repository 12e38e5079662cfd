"""Writes quants.json: a few blocks of one real tensor of each quantisation type in
gemma-3-270m-q4_k_m.gguf, dequantized by the `gguf` Python package (llama.cpp's reference formulas,
an implementation independent of zephyra's). The Rust test `tests/quants.rs` dequantizes the same
blocks of the same file and compares.

Usage: python make_quants_fixture.py [PATH/gemma-3-270m-q4_k_m.gguf]   (needs `pip install gguf numpy`)
"""

import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from gguf.constants import GGML_QUANT_SIZES

DEFAULT = os.path.expanduser("~/.cache/zephyra/models/gemma-3-270m-q4_k_m.gguf")
TYPES = ["Q4_K", "Q5_0", "Q6_K", "Q8_0"]


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    reader = GGUFReader(path)
    out = {"file": os.path.basename(path), "tensors": []}
    for type_name in TYPES:
        # The first tensor of this type, skipping the 262k-row token embedding.
        tensor = next(
            t
            for t in reader.tensors
            if t.tensor_type.name == type_name and t.name != "token_embd.weight"
        )
        block_size, type_size = GGML_QUANT_SIZES[tensor.tensor_type]
        raw = np.asarray(tensor.data, dtype=np.uint8).reshape(-1)
        n_blocks = raw.size // type_size
        picks = sorted({0, 1, n_blocks // 3, n_blocks // 2 + 1, n_blocks - 1})
        blocks = []
        for b in picks:
            block = raw[b * type_size : (b + 1) * type_size].reshape(1, type_size)
            values = dequantize(block, tensor.tensor_type).reshape(-1).astype(np.float32)
            assert values.size == block_size
            blocks.append({"index": int(b), "values": [float(v) for v in values]})
        out["tensors"].append(
            {
                "name": tensor.name,
                "type": type_name,
                "block_size": int(block_size),
                "n_blocks": int(n_blocks),
                "blocks": blocks,
            }
        )
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "quants.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
