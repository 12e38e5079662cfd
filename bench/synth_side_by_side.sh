#!/usr/bin/env bash
# Issue 17: does a TopK SAE learn the TRUE features? Zephyra vs SAELens 6.54 on the same synthetic rows,
# both scored by the same code (`zephyra eval --synth`).
#
# Usage: bench/synth_side_by_side.sh [DIR=data/synth-h] [STEPS=200] [THREADS=2] [K=32]
#   VENV=/work/venvs/torch (torch + sae-lens 6.54), ZEPHYRA=target/release/zephyra, SEEDS="0 1 2".
# Makes DIR once (4,096 features in 256 d, hierarchy, Zipfian; STEPS × 4096 rows, with acts.npy), then per
# seed trains Zephyra TopK with its defaults, Zephyra TopK with ZEPHYRA_FLAGS (default: SAELens' lr 3e-3
# constant, b_dec zeros), and SAELens TopK (bench/synth_saelens.py), 4,096 latents, batch 4096 each, and
# prints `eval --synth` for each recipe over the seeds (mean ± 95 % t interval with several seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-data/synth-h}
STEPS=${2:-200}
THREADS=${3:-2}
K=${4:-32}
VENV=${VENV:-/work/venvs/torch}
ZEPHYRA=${ZEPHYRA:-target/release/zephyra}
SEEDS=${SEEDS:-0}
BATCH=4096
ROWS=$((STEPS * BATCH))
FLAGS=${ZEPHYRA_FLAGS:---lr 3e-3 --lr-decay constant --lr-warmup 0 --b-dec-init zeros}
RUNS=${RUNS:-$(dirname "$DIR")/synth-runs}

if [ ! -f "$DIR/manifest.json" ] || ! grep -q '"complete": true' "$DIR/manifest.json"; then
  "$ZEPHYRA" --quiet synth --features 4096 --d 256 --hierarchy --seed 0 --rows "$ROWS" --npy --out "$DIR"
fi
mkdir -p "$RUNS"
train_z() { # name seed flags...
  local name=$1 seed=$2; shift 2
  [ -f "$RUNS/$name-s$seed/cfg.json" ] && return
  /usr/bin/time -f "$name seed $seed: %e s" "$ZEPHYRA" --quiet train --acts "$DIR" --arch topk --k "$K" \
    --expansion 16 --batch-rows $BATCH --tokens $ROWS --threads "$THREADS" --seed "$seed" \
    --out "$RUNS/$name-s$seed" "$@" >/dev/null
}
for s in $SEEDS; do
  train_z zephyra-default "$s"
  train_z zephyra-saelens-lr "$s" $FLAGS
  if [ ! -f "$RUNS/saelens-s$s/cfg.json" ]; then
    OMP_NUM_THREADS=$THREADS "$VENV/bin/python" bench/synth_saelens.py --synth "$DIR" --out "$RUNS/saelens-s$s" \
      --d-sae 4096 --k "$K" --steps "$STEPS" --batch $BATCH --threads "$THREADS" --seed "$s" | tail -1
  fi
done
for name in zephyra-default zephyra-saelens-lr saelens; do
  set -- $SEEDS
  first=$1; shift
  more=(); for s in "$@"; do more+=("$RUNS/$name-s$s"); done
  echo "== $name"
  "$ZEPHYRA" --quiet eval --sae "$RUNS/$name-s$first" --synth "$DIR" \
    ${more:+--seed-runs "${more[@]}"} --out "$RUNS/$name.eval_synth.json"
done
