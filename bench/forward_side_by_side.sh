#!/usr/bin/env bash
# Runs `zephyra bench forward` and the transformers anchor on the same tokens, batch, and thread count,
# one after the other (never concurrently), and prints tokens/s of both and the ratio for each workload
# and precision: zephyra `--precision f32` against transformers `--dtype float32`, and `--precision
# bf16` against `--dtype bfloat16`.
#
# Usage: bench/forward_side_by_side.sh [THREADS] [ITERS]
#   MODEL       smollm2 (default) or gemma3-270m
#   LAYER       workload (a) runs up to blocks.LAYER.hook_resid_pre (default 15; 7 for Gemma's
#               blocks.6.hook_resid_post)
#   PRECISIONS  space-separated list of f32 and/or bf16 (default "f32")
#   ROUNDS      rounds of interleaved runs (default 1): each round runs, per precision, zephyra then
#               transformers (A B A B …), so a machine whose speed drifts slows both sides alike;
#               the table shows the median over rounds of each side's tokens/s
#   PYTHON      python with torch + transformers + gguf (default /work/venv-bench/bin/python)
#   ZEPHYRA     zephyra binary (default: target/release/zephyra, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${1:-2}"
ITERS="${2:-3}"
MODEL="${MODEL:-smollm2}"
LAYER="${LAYER:-15}"
PRECISIONS="${PRECISIONS:-f32}"
ROUNDS="${ROUNDS:-1}"
PYTHON="${PYTHON:-/work/venv-bench/bin/python}"
ZEPHYRA="${ZEPHYRA:-target/release/zephyra}"
if [ ! -x "$ZEPHYRA" ]; then
  cargo build --release -p zephyra-cli
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

GGUF="$("$ZEPHYRA" fetch-model --model "$MODEL")"
"$ZEPHYRA" bench forward --model "$MODEL" --print-tokens > "$tmp/ids.json"
check=()
reference=../shared/reference
if [ "$MODEL" = gemma3-270m ]; then reference=../shared/reference/gemma3; fi
if [ -d "$reference" ]; then check=(--check-reference "$reference"); fi

for round in $(seq 1 "$ROUNDS"); do
  for precision in $PRECISIONS; do
    case "$precision" in
      f32) dtype=float32 ;;
      bf16) dtype=bfloat16 ;;
      *) echo "PRECISIONS: unknown precision '$precision' (use f32 and/or bf16)" >&2; exit 2 ;;
    esac
    echo "round $round/$ROUNDS, $precision: zephyra ($THREADS threads, $ITERS iters) ..." >&2
    "$ZEPHYRA" bench forward --model "$MODEL" --hook "blocks.$LAYER.hook_resid_pre" --threads "$THREADS" \
      --iters "$ITERS" --precision "$precision" --json >> "$tmp/zephyra.jsonl"
    echo "round $round/$ROUNDS, $dtype: transformers ($THREADS threads, $ITERS iters) ..." >&2
    "$PYTHON" bench/transformers_forward.py --gguf "$GGUF" --layer "$LAYER" --token-file "$tmp/ids.json" \
      "${check[@]}" --threads "$THREADS" --iters "$ITERS" --dtype "$dtype" >> "$tmp/transformers.jsonl"
  done
done

"$PYTHON" - "$tmp/zephyra.jsonl" "$tmp/transformers.jsonl" "$LAYER" <<'PY'
import json, statistics, sys
from collections import defaultdict
dtype_of = {"f32": "float32", "bf16": "bfloat16"}
def runs(path, key):
    out = defaultdict(list)
    for r in map(json.loads, open(path)):
        out[(r["workload"], r[key])].append(r)
    return out
z, t = runs(sys.argv[1], "precision"), runs(sys.argv[2], "dtype")
layer = sys.argv[3]
names = {"resid": f"(a) up to blocks.{layer}.hook_resid_pre", "logits": "(b) full forward, all logits"}
med = lambda rs, f: statistics.median(r[f] for r in rs)
print(f"{'workload':<38} {'precision':>9} {'runs':>4} {'zephyra tok/s':>14} {'transformers tok/s':>19} {'ratio':>6}"
      f" {'zephyra RSS':>12} {'transformers RSS':>17}")
for w in ("resid", "logits"):
    for p in ("f32", "bf16"):
        zr, tr = z.get((w, p)), t.get((w, dtype_of[p]))
        if zr and tr:
            zt, tt = med(zr, "tokens_per_s"), med(tr, "tokens_per_s")
            print(f"{names[w]:<38} {p:>9} {len(zr):>4} {zt:>14.0f} {tt:>19.0f} {zt / tt:>5.2f}x"
                  f" {med(zr, 'peak_rss_mb'):>9.0f} MB {med(tr, 'peak_rss_mb'):>14.0f} MB")
PY
