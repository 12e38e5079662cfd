#!/usr/bin/env bash
# Runs `zephyra bench forward` and the transformers anchor on the same tokens, batch, and thread count,
# one after the other (never concurrently), and prints tokens/s of both and the ratio for each workload.
#
# Usage: bench/forward_side_by_side.sh [THREADS] [ITERS]
#   MODEL    smollm2 (default) or gemma3-270m
#   LAYER    workload (a) runs up to blocks.LAYER.hook_resid_pre (default 15; 7 for Gemma's
#            blocks.6.hook_resid_post)
#   PYTHON   python with torch + transformers + gguf (default /work/venv-bench/bin/python)
#   ZEPHYRA  zephyra binary (default: target/release/zephyra, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
ITERS="${2:-3}"
MODEL="${MODEL:-smollm2}"
LAYER="${LAYER:-15}"
PYTHON="${PYTHON:-/work/venv-bench/bin/python}"
ZEPHYRA="${ZEPHYRA:-target/release/zephyra}"
if [ ! -x "$ZEPHYRA" ]; then
  cargo build --release -p zephyra-cli
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

GGUF="$("$ZEPHYRA" fetch-model --model "$MODEL")"
"$ZEPHYRA" bench forward --model "$MODEL" --print-tokens > "$tmp/ids.json"
echo "zephyra ($THREADS threads, $ITERS iters) ..." >&2
"$ZEPHYRA" bench forward --model "$MODEL" --hook "blocks.$LAYER.hook_resid_pre" --threads "$THREADS" \
  --iters "$ITERS" --json > "$tmp/zephyra.jsonl"
echo "transformers ($THREADS threads, $ITERS iters) ..." >&2
check=()
reference=../shared/reference
if [ "$MODEL" = gemma3-270m ]; then reference=../shared/reference/gemma3; fi
if [ -d "$reference" ]; then check=(--check-reference "$reference"); fi
"$PYTHON" bench/transformers_forward.py --gguf "$GGUF" --layer "$LAYER" --token-file "$tmp/ids.json" "${check[@]}" \
  --threads "$THREADS" --iters "$ITERS" > "$tmp/transformers.jsonl"

"$PYTHON" - "$tmp/zephyra.jsonl" "$tmp/transformers.jsonl" "$LAYER" <<'PY'
import json, sys
z = {r["workload"]: r for r in map(json.loads, open(sys.argv[1]))}
t = {r["workload"]: r for r in map(json.loads, open(sys.argv[2]))}
layer = sys.argv[3]
names = {"resid": f"(a) up to blocks.{layer}.hook_resid_pre, no logits", "logits": "(b) full forward, logits at every position"}
print(f"{'workload':<48} {'zephyra tok/s':>14} {'transformers tok/s':>19} {'ratio':>6} {'zephyra RSS':>12} {'transformers RSS':>17}")
for w in ("resid", "logits"):
    if w in z and w in t:
        zr, tr = z[w], t[w]
        print(f"{names[w]:<48} {zr['tokens_per_s']:>14.0f} {tr['tokens_per_s']:>19.0f} {zr['tokens_per_s']/tr['tokens_per_s']:>5.2f}x"
              f" {zr['peak_rss_mb']:>9.0f} MB {tr['peak_rss_mb']:>14.0f} MB")
PY
