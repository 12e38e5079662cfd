#!/usr/bin/env bash
# Zephyra vs SAELens 6.54 on the same activations, same SAE (d_in 576, expansion 16, batch 4096), same
# token budget, same threads: prints one JSON line per tool and the speed / quality ratios.
#
# Usage: bench/train_side_by_side.sh [ACTS.npy] [ARCH=topk|relu] [STEPS=30] [THREADS=2]
#   VENV=/work/venv-bench (torch + sae-lens + numpy + transformers), ZEPHYRA=target/release/zephyra.
# Without ACTS.npy, real activations are made first (data/smollm2_l12.npy, gitignored): SmolLM2-135M-Instruct
# (the cached Q4_1 GGUF, dequantised by HF transformers) at blocks.12.hook_resid_pre over Markdown files
# from the local cargo registry, 128-token contexts, excluding position 0 and rows with norm > 10× median
# (attention sinks). Both tools hold out the last 8192 rows and report held-out FVE (centred) and L0.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/work/venv-bench}
ZEPHYRA=${ZEPHYRA:-target/release/zephyra}
ACTS=${1:-data/smollm2_l12.npy}
ARCH=${2:-topk}
STEPS=${3:-30}
THREADS=${4:-2}
BATCH=4096
SIDE=${SIDE:-../shared/bench/saelens_side_by_side.py}

if [ ! -f "$ACTS" ]; then
  mkdir -p "$(dirname "$ACTS")"
  N_TOKENS=${N_TOKENS:-45000} OUT="$ACTS" OMP_NUM_THREADS=$THREADS "$VENV/bin/python" - <<'PY'
import glob, os, numpy as np, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf = os.path.expanduser(os.environ.get("ZEPHYRA_HOME", "~/.cache/zephyra") + "/models/SmolLM2-135M-Instruct.Q4_1.gguf")
d, f = os.path.dirname(gguf), os.path.basename(gguf)
tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32, num_hidden_layers=12).eval()
files = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/*/README.md")))
ids = []
for p in files:
    ids += tok(open(p, errors="ignore").read())["input_ids"]
    if len(ids) > int(os.environ["N_TOKENS"]) * 1.1: break
ctx = 128
seqs = torch.tensor(ids[: len(ids) // ctx * ctx]).view(-1, ctx)
rows = []
with torch.no_grad():
    for i in range(0, len(seqs), 16):
        hs = model(seqs[i:i + 16], output_hidden_states=True).hidden_states[12]  # = blocks.12.hook_resid_pre
        rows.append(hs[:, 1:].reshape(-1, hs.shape[-1]))                     # drop position 0 (sinks)
x = torch.cat(rows).numpy().astype(np.float32)
n = np.linalg.norm(x, axis=1); x = x[n <= 10 * np.median(n)]
x = x[: int(os.environ["N_TOKENS"])]
np.save(os.environ["OUT"], np.ascontiguousarray(x))
print(f"wrote {os.environ['OUT']}: {x.shape}, mean norm {np.linalg.norm(x, axis=1).mean():.1f}")
PY
fi

TOKENS=$((STEPS * BATCH))
if [ "$ARCH" = topk ]; then SL_ARCH=topk; Z_FLAGS="--arch topk --k 32"; else SL_ARCH=standard; Z_FLAGS="--arch relu --l1 5"; fi
SL=$(OMP_NUM_THREADS=$THREADS "$VENV/bin/python" "$SIDE" --acts "$ACTS" --arch $SL_ARCH --k 32 --l1 5 \
      --expansion 16 --batch $BATCH --steps "$STEPS" --threads "$THREADS" 2>/dev/null | tail -1)
OUT=$(mktemp -d)/run
ZE=$("$ZEPHYRA" --quiet train --acts "$ACTS" $Z_FLAGS --expansion 16 --batch-rows $BATCH --tokens $TOKENS \
      --threads "$THREADS" --holdout 8192 --checkpoint-every $TOKENS --out "$OUT" --json ${ZEPHYRA_FLAGS:-})
echo "$SL"
echo "$ZE"
python3 - "$SL" "$ZE" <<'PY'
import json, sys
s, z = json.loads(sys.argv[1]), json.loads(sys.argv[2])
h = z["holdout"]
print(json.dumps({"arch": z["arch"], "tokens": z["tokens"], "speed_ratio": z["tokens_per_s"] / s["tokens_per_s"],
                  "zephyra_tok_s": z["tokens_per_s"], "saelens_tok_s": s["tokens_per_s"],
                  "zephyra_fve": h["fve"], "saelens_fve": s["FVE"], "zephyra_l0": h["l0"], "saelens_l0": s["L0"]}))
PY
