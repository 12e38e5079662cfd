#!/usr/bin/env bash
# Issue 17: do the dictionaries learn the TRUE features? Zephyra vs SAELens 6.54 on the same synthetic rows,
# four architectures, every run scored by the same code (`zephyra eval --synth`).
#
# Usage: bench/synth_side_by_side.sh [DIR=data/synth-h] [STEPS=200] [THREADS=2] [K=32]
#   VENV=/work/venvs/torch (torch + sae-lens 6.54), ZEPHYRA=target/release/zephyra, SEEDS="0 1 2",
#   ARCHS="topk batchtopk matryoshka jumprelu", TOOLS="zephyra saelens", RUNS=DIR/../synth-runs,
#   ZEPHYRA_FLAGS (extra flags for every Zephyra run, e.g. to compare a recipe with the defaults).
# Makes DIR once (4,096 features in 256 d, hierarchy, Zipfian; STEPS × 4096 rows, with acts.npy), then per
# seed and architecture trains Zephyra with its defaults and SAELens (bench/synth_saelens.py, lr 3e-3
# constant, its defaults otherwise) with 4,096 latents, batch 4096, L0 32 (k, or the quadratic-L0 target of
# jumprelu), Matryoshka prefixes 64,256,1024,4096 for both. Prints `eval --synth` per tool and
# architecture over the seeds (mean ± 95 % t interval with several seeds) and the training times
# (tokens/s = STEPS·4096 / seconds; on a busy machine compare the two tools' ratio only).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-data/synth-h}
STEPS=${2:-200}
THREADS=${3:-2}
K=${4:-32}
VENV=${VENV:-/work/venvs/torch}
ZEPHYRA=${ZEPHYRA:-target/release/zephyra}
SEEDS=${SEEDS:-0}
ARCHS=${ARCHS:-topk batchtopk matryoshka jumprelu}
TOOLS=${TOOLS:-zephyra saelens}
GROUPS_=64,256,1024,4096
BATCH=4096
ROWS=$((STEPS * BATCH))
RUNS=${RUNS:-$(dirname "$DIR")/synth-runs}

if [ ! -f "$DIR/manifest.json" ] || ! grep -q '"complete": true' "$DIR/manifest.json"; then
  "$ZEPHYRA" --quiet synth --features 4096 --d 256 --hierarchy --seed 0 --rows "$ROWS" --npy --out "$DIR"
fi
mkdir -p "$RUNS"
arch_flags() { # zephyra flags for an architecture
  case $1 in
    matryoshka) echo "--arch matryoshka --k $K --groups $GROUPS_" ;;
    jumprelu) echo "--arch jumprelu --jumprelu-sparsity quadratic-l0 --target-l0 $K" ;;
    *) echo "--arch $1 --k $K" ;;
  esac
}
train() { # tool arch seed
  local out="$RUNS/$1-$2-s$3" t0 t1
  [ -f "$out/cfg.json" ] && return
  t0=$(date +%s.%N)
  if [ "$1" = zephyra ]; then
    # shellcheck disable=SC2046,SC2086
    "$ZEPHYRA" --quiet train --acts "$DIR" $(arch_flags "$2") --expansion 16 --batch-rows $BATCH \
      --tokens $ROWS --threads "$THREADS" --seed "$3" --out "$out" ${ZEPHYRA_FLAGS:-} >/dev/null
  else
    OMP_NUM_THREADS=$THREADS "$VENV/bin/python" bench/synth_saelens.py --synth "$DIR" --out "$out" --arch "$2" \
      --d-sae 4096 --k "$K" --target-l0 "$K" --groups $GROUPS_ --steps "$STEPS" --batch $BATCH \
      --threads "$THREADS" --seed "$3" >/dev/null
  fi
  t1=$(date +%s.%N)
  echo "$1 $2 seed $3: $(echo "$t1 - $t0" | bc) s, $(echo "$ROWS / ($t1 - $t0)" | bc) tokens/s" | tee -a "$RUNS/times.txt"
}
for s in $SEEDS; do
  for a in $ARCHS; do
    for t in $TOOLS; do train "$t" "$a" "$s"; done
  done
done
for a in $ARCHS; do
  for t in $TOOLS; do
    set -- $SEEDS
    first=$1; shift
    more=(); for s in "$@"; do more+=("$RUNS/$t-$a-s$s"); done
    echo "== $t $a"
    "$ZEPHYRA" --quiet eval --sae "$RUNS/$t-$a-s$first" --synth "$DIR" \
      ${more:+--seed-runs "${more[@]}"} --out "$RUNS/$t-$a.eval_synth.json"
  done
done
