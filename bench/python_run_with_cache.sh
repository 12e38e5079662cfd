#!/usr/bin/env bash
# `run_with_cache` of one short prompt from Python vs the same Rust calls timed alone, alternating, for the
# embedding-only pass (the binding's overhead in microseconds) and the full forward. Same thread count both
# sides (RAYON_NUM_THREADS, default 2).
#
#   PYTHON=VENV/bin/python bench/python_run_with_cache.sh [ROUNDS=3] [REPEATS_EMBED=2000] [REPEATS_FULL=30]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
ROUNDS=${1:-3}
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2}
# The example links libpython (pyo3 without `extension-module`).
LD_LIBRARY_PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
cargo build --release -q -p zephyra-py --example short_prompt
for i in $(seq "$ROUNDS"); do
  for mode in "embed ${2:-2000}" "full ${3:-30}"; do
    # shellcheck disable=SC2086
    "$PYTHON" bench/python_run_with_cache.py $mode
    # shellcheck disable=SC2086
    target/release/examples/short_prompt $mode
  done
done
