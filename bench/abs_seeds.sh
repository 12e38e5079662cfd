#!/bin/bash
# Issue 17: Matryoshka vs TopK first-letter absorption on SmolLM2 over several seeds and a longer budget
# (bench/README.md, "Seeds and budget"). Every SAE: 16x, k 32, today's defaults of its architecture (TopK:
# decoder rows free from norm 0.1, lr 3e-3 constant, AuxK weight 1 after 40,960 silent rows; Matryoshka the
# same with unit-norm rows), the same store and rows. The README's first three-seed table gave both TopK's
# flags (RECIPE below), the Matryoshka default row none.
#
# Usage: bench/abs_seeds.sh OUT [LAYER=5] [ROWS=2097152] [HARVEST=1048576]
#   Z=path/to/zephyra (default target/release/zephyra), SEEDS="0 1 2", THREADS=2,
#   RECIPE="flags for both" (default none; the first table: "--decoder-init-norm 0.1 --lr 3e-3
#   --lr-decay constant --lr-warmup 0 --dead-after 40960 --aux-coeff 1").
# Harvests OUT/store once (`blocks.LAYER.hook_resid_pre`), trains topk-sS and mat-sS per seed, then scores
# each architecture's seeds in one `eval --absorption --seed-runs` (the prompts' activations are read once):
# OUT/topk.abs.json and OUT/mat.abs.json hold every run's figures and the mean ± 95 % interval.
set -eu
OUT=$1; LAYER=${2:-5}; ROWS=${3:-2097152}; HARVEST=${4:-1048576}
Z=${Z:-target/release/zephyra}
SEEDS=${SEEDS:-0 1 2}
THREADS=${THREADS:-2}
RECIPE=${RECIPE:-}
mkdir -p "$OUT"
if [ ! -f "$OUT/store/manifest.json" ]; then
    "$Z" --quiet harvest --model smollm2 --hook "blocks.$LAYER.hook_resid_pre" --tokens "$HARVEST" --out "$OUT/store"
fi
train() { # name seed flags...
    local name=$1 seed=$2; shift 2
    [ -f "$OUT/$name-s$seed/summary.json" ] && grep -q '"finished": true' "$OUT/$name-s$seed/summary.json" && return
    local t0; t0=$(date +%s)
    "$Z" --quiet train --acts "$OUT/store" --k 32 --expansion 16 --tokens "$ROWS" --seed "$seed" \
        --threads "$THREADS" --out "$OUT/$name-s$seed" $RECIPE "$@" > /dev/null
    echo "$name seed $seed: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/times.txt"
}
for s in $SEEDS; do
    train topk "$s" --arch topk
    train mat "$s" --arch matryoshka --groups 128,512,2048,9216
done
for name in topk mat; do
    set -- $SEEDS
    first=$1; shift
    rest=(); for s in "$@"; do rest+=("$OUT/$name-s$s"); done
    "$Z" --quiet eval --sae "$OUT/$name-s$first" --model smollm2 --absorption --absorption-words 3000 \
        ${rest:+--seed-runs "${rest[@]}"} --json --out "$OUT/$name.abs.json" > /dev/null
done
