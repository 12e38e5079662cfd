#!/usr/bin/env bash
# The bf16 downstream check of the README: SAEs trained on bf16 and f32 harvests, each evaluated with the
# model in f32 and bf16. Usage: [ZEPHYRA=bin] [OUT=dir] bench/bf16_downstream.sh
set -euo pipefail
Z=""$Z""
O=""$O""
mkdir -p "$O"
for p in f32 bf16; do
  "$Z" harvest --model smollm2 --precision $p --hook blocks.15.hook_resid_pre --tokens 131072 --out "$O"/d-$p --quiet
  "$Z" train --acts "$O"/d-$p --arch topk --k 32 --expansion 16 --tokens 262144 --out "$O"/sae-$p --quiet --json > "$O"/train-$p.json
done
for s in f32 bf16; do for p in f32 bf16; do
  "$Z" eval --sae "$O"/sae-$s --precision $p --tokens 20000 --ce-tokens 2048 --out "$O"/eval-$s-on-$p.json --quiet --json > /dev/null
done; done
for f in "$O"/eval-*.json; do
  python3 -c "import json,sys; f=json.load(open(sys.argv[1]))['figures']; d=f['downstream']; print(sys.argv[1], 'FVE %.4f' % f['reconstruction']['fve'], 'CE recovered %.4f / %.4f' % (d['ce_recovered_zero'], d['ce_recovered_mean']), 'KL score %.4f' % d['kl_score_zero'])" "$f"
done
