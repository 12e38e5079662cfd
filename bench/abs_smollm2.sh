#!/bin/bash
# Issue 17 on SmolLM2: Matryoshka vs TopK first-letter absorption at matched L0, and dead vs rare latents of
# the TopK recipes (bench/README.md, "First-letter absorption on SmolLM2").
#
# Usage: bench/abs_smollm2.sh STORE OUT [ROWS=524288]
#   STORE: an activation store of `blocks.15.hook_resid_pre` (`zephyra harvest --model smollm2 --hook
#          blocks.15.hook_resid_pre --contexts 1024 --out STORE`); OUT: the run directory.
#   Z=path/to/zephyra overrides the binary (default target/release/zephyra).
# Runs one thing at a time (2 threads), 16x, k 32, seed 0, the same rows and budget for every SAE; then
# `python3 bench/abs_summary.py OUT/* --groups 128,512,2048,9216 --letters` prints the tables.
set -eu
STORE=$1; OUT=$2; ROWS=${3:-524288}
Z=${Z:-target/release/zephyra}
RESCALED="--decoder-init-norm 0.1 --lr 3e-3 --lr-decay constant --lr-warmup 0"
GROUPS="--groups 128,512,2048,9216"
mkdir -p "$OUT"
train() {
    local name=$1; shift
    "$Z" train --acts "$STORE" --k 32 --expansion 16 --tokens "$ROWS" --seed 0 --threads 2 --quiet \
        --out "$OUT/$name" "$@"
}
absorption() {
    "$Z" eval --sae "$OUT/$1" --model smollm2 --absorption --absorption-words 3000 --json --quiet > "$OUT/$1.abs.json"
}
evaluate() {   # evaluate RUN TOKENS: FVE, L0, dead, density histogram, CE recovered
    "$Z" eval --sae "$OUT/$1" --model smollm2 --tokens "$2" --ce-tokens 2048 --json --quiet \
        --out "$OUT/$1/eval-$2.json" > /dev/null
}
train topk-r --arch topk $RESCALED
train mat-r --arch matryoshka $GROUPS $RESCALED
train topk-d --arch topk
train topk-ra --arch topk $RESCALED --dead-after 40960
train mat-d --arch matryoshka $GROUPS
for run in topk-r mat-r topk-d mat-d; do absorption $run; done
for run in topk-r mat-r topk-d topk-ra mat-d; do evaluate $run 200000; done
for run in topk-r topk-ra topk-d; do evaluate $run 8192; done
