#!/usr/bin/env bash
# Issue 17: Matryoshka vs TopK absorption on the synthetic set over several seeds, at today's defaults (no
# recipe flags), a long budget over the same rows (README "Ground truth", "Nine times the budget").
#
# Usage: bench/synth_seeds.sh DIR OUT [STEPS=1800]
#   DIR: a `zephyra synth --features 4096 --d 256 --hierarchy --npy` set (819,200 rows: STEPS/200 passes).
#   Z=path/to/zephyra (default target/release/zephyra), SEEDS="0 1 2", ARCHS="topk matryoshka", THREADS=1.
# Trains ARCH-sS for every seed (16x, k 32, batch 4,096; Matryoshka --groups 128,512,2048,4096), skipping
# finished runs, then scores each architecture's seeds in one `eval --synth --seed-runs`: OUT/ARCH.synth.json
# holds every run's figures and the mean ± 95 % interval (Student's t).
set -euo pipefail
DIR=$1; OUT=$2; STEPS=${3:-1800}
Z=${Z:-target/release/zephyra}
SEEDS=${SEEDS:-0 1 2}
ARCHS=${ARCHS:-topk matryoshka}
THREADS=${THREADS:-1}
mkdir -p "$OUT"
for arch in $ARCHS; do
    flags=(--arch "$arch" --k 32)
    [ "$arch" = matryoshka ] && flags+=(--groups 128,512,2048,4096)
    for s in $SEEDS; do
        run="$OUT/$arch-s$s"
        [ -f "$run/summary.json" ] && grep -q '"finished": true' "$run/summary.json" && continue
        t0=$(date +%s)
        "$Z" --quiet train --acts "$DIR" "${flags[@]}" --expansion 16 --batch-rows 4096 \
            --tokens $((STEPS * 4096)) --threads "$THREADS" --seed "$s" --out "$run" > /dev/null
        echo "$arch seed $s: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/times.txt"
    done
    set -- $SEEDS
    first=$1; shift
    rest=(); for s in "$@"; do rest+=("$OUT/$arch-s$s"); done
    "$Z" --quiet eval --sae "$OUT/$arch-s$first" ${rest:+--seed-runs "${rest[@]}"} --synth "$DIR" \
        --json --out "$OUT/$arch.synth.json" > /dev/null
    echo "wrote $OUT/$arch.synth.json"
done
