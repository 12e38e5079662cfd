#!/usr/bin/env bash
# Training from Python on a numpy array (`z.train(acts)`) vs `zephyra train --acts ACTS.npy` on the same rows,
# interleaved, with the same settings (the defaults of both: TopK k=32, 16x, batch 4096, seed 0, all cores,
# rows shuffled per pass in the same order; no hold-out; checkpoints every 10 %). Prints each run and the
# medians, Python vs CLI, of the trainer's tokens/s (what `summary.json` records), the wall-clock tokens/s of
# the whole call and its CPU seconds per 1,000 tokens.
#
#   cargo build --release -p zephyra-cli && pip install ./crates/zephyra-py   # into the venv of PYTHON
#   PYTHON=VENV/bin/python bench/python_train.sh [ROUNDS=5] [TOKENS=81920] [ROWS=65536]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ZEPHYRA=${ZEPHYRA:-target/release/zephyra}
ROUNDS=${1:-5}
TOKENS=${2:-81920}
ROWS=${3:-65536}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -c 'import sys, numpy as np
np.save(sys.argv[1], np.random.default_rng(0).normal(size=(int(sys.argv[2]), 576)).astype(np.float32))' \
  "$work/acts.npy" "$ROWS"
for i in $(seq "$ROUNDS"); do
  ZEPHYRA="$ZEPHYRA" "$PYTHON" bench/python_train_speed.py cli "$work/acts.npy" "$TOKENS" "$work/cli$i"
  "$PYTHON" bench/python_train_speed.py zephyra "$work/acts.npy" "$TOKENS" "$work/py$i"
done | tee "$work/runs.jsonl"
"$PYTHON" - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
for key, what in [("tokens_per_s", "trainer tokens/s"), ("wall_tokens_per_s", "wall tokens/s"),
                  ("cpu_s_per_1k_tokens", "CPU s per 1k tokens")]:
    cli, py = (statistics.median(r[key] for r in runs if r["side"] == side) for side in ("cli", "python"))
    print(f"median {what}: CLI {cli:.3g}, Python {py:.3g} ({100 * (py / cli - 1):+.1f} %)")
print(f"over {len(runs) // 2} interleaved pairs")
PY
