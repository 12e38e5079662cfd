#!/usr/bin/env bash
# Issue 15, "tokens/s for 30 at once vs one alone, show the breakdown": trains one skip transcoder alone
# (layer 15) and then the 30 together (one per MLP, from one forward pass per batch) with the same
# per-dictionary flags on the same tokens of the default corpus, and prints where the time went in each
# (the `train` log's timing fields), tokens/s and peak resident memory side by side.
#
# Usage: [BINARY=target/release/zephyra] [TOKENS=65536] [THREADS=2] [LAYERS=all]
#        [OUT=${TMPDIR:-/tmp}/transcoders_breakdown] bench/transcoders_breakdown.sh
# LAYERS: the dictionaries trained together (`all`: 30 on SmolLM2; e.g. `0-9` where memory is short).
# Writes OUT/{one,many}/ (the runs), OUT/{one,many}.{log,jsonl,time} (train's log, its --json summaries,
# /usr/bin/time -v); OUT must not exist yet.
#
# Columns: `one` = 1 transcoder alone, `many` = the LAYERS together; `many/one`: their ratio. What the
# fields mean (zephyra-sae's `StepTimes`, zephyra-data's harvest thread):
#   init_s              first rows read (scale, b_dec) and state allocated, every dictionary
#   rows_s              filling the batches: waiting for the model (harvest thread) + shuffle copies
#   forward_backward_s  forward/backward of every dictionary
#   update_s            clipping, Adam, post-step, dead latents, metrics of every dictionary
#   checkpoint_s        checkpoints (the last one, here)
#   train_step_ms/dict  (forward_backward + reduce + update) per step and dictionary
#   model_s, split_s    harvest thread: the model over the tokens (every hook captured), splitting shards
#   tokens/s            rows per second each dictionary trained on (all of them, together)
#   peak RSS            /usr/bin/time -v's maximum resident set size
set -euo pipefail
cd "$(dirname "$0")/.."
Z=${BINARY:-target/release/zephyra}
TOKENS=${TOKENS:-65536}
THREADS=${THREADS:-2}
LAYERS=${LAYERS:-all}
O=${OUT:-${TMPDIR:-/tmp}/transcoders_breakdown}
if [ -e "$O" ]; then
  echo "$O already exists: remove it or set OUT to a new directory" >&2
  exit 2
fi
mkdir -p "$O"
FLAGS=(--model smollm2 --transcoder --skip --arch topk --k 32 --expansion 8 --batch-rows 4096
  --shard-contexts 32 --shuffle-buffer 16384 --tokens "$TOKENS" --checkpoint-every 100000000
  --threads "$THREADS" --seed 0 --json)

run() { # name layers
  echo "training $1 (--layers $2, $TOKENS tokens)" >&2
  /usr/bin/time -v -o "$O/$1.time" "$Z" train "${FLAGS[@]}" --layers "$2" --out "$O/$1" \
    > "$O/$1.jsonl" 2> "$O/$1.log"
}
run one 15
run many "$LAYERS"

python3 - "$O" "$TOKENS" <<'PY'
import json, re, sys

out, tokens = sys.argv[1], int(sys.argv[2])

def fields(log, marker):
    """The key=value fields of the last log line containing `marker`."""
    lines = [l for l in open(log, encoding="utf-8", errors="replace") if marker in l]
    if not lines:
        sys.exit(f"{log}: no line with '{marker}': did the run finish?")
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-0-9.e]+)(?=\s|$)", lines[-1])}

def run(name):
    log = f"{out}/{name}.log"
    r = fields(log, "where the time went")
    r.update(fields(log, "on-the-fly harvest stopped"))
    summaries = [json.loads(l) for l in open(f"{out}/{name}.jsonl") if l.strip()]
    r["tokens_per_s"] = summaries[0]["tokens_per_s"]
    t = open(f"{out}/{name}.time").read()
    r["peak_rss_gb"] = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t)[1]) / 2**20
    r["user_cpu_s"] = float(re.search(r"User time \(seconds\): ([\d.]+)", t)[1])
    h, m, s = ([0, 0] + re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", t)[1].split(":"))[-3:]
    r["wall_s"] = 3600 * float(h) + 60 * float(m) + float(s)
    return r

one, many = run("one"), run("many")
n = int(many["dictionaries"])
rows = [
    ("dictionaries", "dictionaries", "%.0f"),
    ("steps", "steps", "%.0f"),
    ("init_s", "init_s", "%.1f"),
    ("rows_s (harvest/model)", "rows_s", "%.1f"),
    ("forward_backward_s", "forward_backward_s", "%.1f"),
    ("update_s", "update_s", "%.1f"),
    ("checkpoint_s", "checkpoint_s", "%.1f"),
    ("train_step_ms/dict", "train_step_ms_per_dictionary", "%.1f"),
    ("model_s (harvest thread)", "model_s", "%.1f"),
    ("split_s (harvest thread)", "split_s", "%.2f"),
    ("tokens/s (each dictionary)", "tokens_per_s", "%.0f"),
    ("wall_s", "wall_s", "%.1f"),
    ("user_cpu_s", "user_cpu_s", "%.1f"),
    ("peak RSS (GiB)", "peak_rss_gb", "%.2f"),
]
print(f"{tokens} tokens; one = layer 15 alone, many = {n} together")
print("| %-28s | %10s | %10s | %9s |" % ("field", "one", "many", "many/one"))
print("|%s|%s|%s|%s|" % ("-" * 30, "-" * 12, "-" * 12, "-" * 11))
for label, key, fmt in rows:
    a, b = one.get(key, float("nan")), many.get(key, float("nan"))
    ratio = "%.2f" % (b / a) if a else "-"
    print("| %-28s | %10s | %10s | %9s |" % (label, fmt % a, fmt % b, ratio))
print(f"{n} at once: {many['wall_s']:.0f} s wall; {n} separate runs of one: ~{n * one['wall_s']:.0f} s "
      f"({n * one['wall_s'] / many['wall_s']:.1f}x longer)")
PY
