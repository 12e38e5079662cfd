#!/usr/bin/env bash
# Issue 15's figure run: 30 skip transcoders (576 -> 4608, TopK k=32) on SmolLM2-135M, one per MLP
# (blocks.{l}.ln2.hook_normalized -> blocks.{l}.hook_mlp_out), trained together from one forward pass per
# batch on 4M tokens of the default corpus, then the replacement model evaluated (`eval --transcoders`:
# per-layer FVE, CE with one MLP replaced, every MLP replaced: CE, KL, CE loss recovered).
#
# Resumable: run it again after a kill (or a reboot) and training continues from the last checkpoints
# (every 400k tokens, `train --resume`); a finished run (every layer's summary.json says `"finished": true`)
# goes straight to the evaluation. The default corpus holds ≈ 2.3M tokens: the run reads it again.
#
# Usage: [ZEPHYRA=target/release/zephyra] [OUT=runs/tc30] [TOKENS=4000000] [THREADS=2]
#        [CHECKPOINT_EVERY=TOKENS/10] [LR=6e-3] [DEAD_AFTER=409600]
#        [EVAL_TOKENS=100000] [CE_TOKENS=8192] bench/transcoders_30.sh
#
# The learning rate: at the trainer's default (5e-4, tuned for SAEs' unit decoder rows) the layer-10
# transcoder reached training FVE 0.37 after 532k tokens and 0.57 after 1.84M; at 6e-3 it reached 0.70
# after 328k (2e-3: 0.35 after 287k). AuxK starts on latents silent for DEAD_AFTER rows (the trainer's
# default, 2M, would leave it off for half of the run).
# Writes OUT/layer-{0..29}/ (SAELens format + checkpoint + metrics + summary.json), OUT/multi.json,
# OUT/eval.json, and the logs OUT.train.jsonl / OUT.train.log / OUT.eval.log beside OUT.
#
# Memory (README, "Transcoders for every MLP"): about 30 × 90 MB of weights, gradients and Adam moments,
# 30 × 2 shuffle windows of 16,384 rows × 1,152 floats (75 MB each), the per-step workspaces and one
# shard of 60 hooks in flight: measure with `/usr/bin/time -v` on your machine before the long run.
set -euo pipefail
cd "$(dirname "$0")/.."
Z=${ZEPHYRA:-target/release/zephyra}
O=${OUT:-runs/tc30}
TOKENS=${TOKENS:-4000000}
THREADS=${THREADS:-2}
done_layers() { { grep -l '"finished": true' "$O"/layer-*/summary.json 2>/dev/null || true; } | wc -l; }
checkpoints() { ls "$O"/layer-*/training_state.safetensors 2>/dev/null | wc -l; }

if [ "$(done_layers)" -ge 30 ]; then
  echo "training done ($O/layer-*/summary.json): evaluating" >&2
elif [ "$(checkpoints)" -gt 0 ]; then
  echo "resuming $O from its checkpoints" >&2
  "$Z" train --resume "$O" --json > "$O.train.jsonl" 2> >(tee -a "$O.train.log" >&2)
else
  mkdir -p "$(dirname "$O")"
  # 4096 rows per step; shards of 32 contexts (4,096 tokens) and windows of 4 shards: 30 windows of
  # 16,384 rows stay in memory (the default 262,144-row buffer would need 30 × 1.2 GB).
  "$Z" train --model smollm2 --transcoder --layers all --skip --arch topk --k 32 --expansion 8 \
    --tokens "$TOKENS" --batch-rows 4096 --shard-contexts 32 --shuffle-buffer 16384 \
    --checkpoint-every "${CHECKPOINT_EVERY:-$((TOKENS / 10))}" --threads "$THREADS" --seed 0 \
    --lr "${LR:-6e-3}" --dead-after "${DEAD_AFTER:-409600}" \
    --out "$O" --json > "$O.train.jsonl" 2> >(tee -a "$O.train.log" >&2)
fi
"$Z" eval --transcoders "$O" --model smollm2 --tokens "${EVAL_TOKENS:-100000}" --ce-tokens "${CE_TOKENS:-8192}" \
  --out "$O/eval.json" --json > /dev/null 2> >(tee -a "$O.eval.log" >&2)
python3 - "$O" <<'PY'
import json, statistics, sys
o = sys.argv[1]
runs = [json.loads(l) for l in open(o + ".train.jsonl") if l.strip()]
if runs:
    r = runs[0]
    print("trained %d transcoders, %d tokens each, %.0f tok/s (all 30 together), peak RSS %s MB"
          % (len(runs), r["tokens"], r["tokens_per_s"], r.get("peak_rss_mb")))
f = json.load(open(o + "/eval.json"))["figures"]
fve = [l["reconstruction"]["fve"] for l in f["layers"]]
print("per-layer FVE of hook_mlp_out:", " ".join("%d:%.3f" % (l["layer"], v) for l, v in zip(f["layers"], fve)))
print("median FVE %.4f (goal >= 0.75)" % statistics.median(fve))
a = f.get("all")
if a:
    print("every MLP replaced: CE %.4f (clean %.4f, mean-ablated %.4f), KL %.4f, CE loss recovered %s (goal >= 0.75), delta LM loss %.4f"
          % (a["ce_replaced"], a["ce_clean"], a["ce_mean_ablated"], a["kl_replaced"],
             "%.4f" % a["ce_recovered"] if a["ce_recovered"] is not None else "n/a", a["delta_lm_loss"]))
PY
