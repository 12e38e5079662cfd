#!/usr/bin/env bash
# Issue 16's README figures: the attribution graph of a 32-token prompt on SmolLM2 through 30 transcoders,
# one per MLP (`zephyra train --transcoder --layers all`, e.g. bench/transcoders_30.sh's runs/tc30):
# wall time and peak RSS (`/usr/bin/time -v`), nodes and edges before and after pruning, the replacement and
# completeness scores (whole and pruned graph), and the real-model check (`--ablate N`: the N most
# influential features removed from the model itself, the target logit's change beside the graph's
# prediction).
#
# Usage: [ZEPHYRA=target/release/zephyra] [MODEL=smollm2] [PROMPT=…] [TOKENS=32] [ABLATE=10]
#        bench/graph_figure.sh TRANSCODERS_DIR [OUT_DIR]
# Writes OUT_DIR/figure.json (the pruned graph, circuit-tracer's JSON; OUT_DIR defaults to
# TRANSCODERS_DIR/graphs, where `zephyra serve --transcoders TRANSCODERS_DIR` lists it),
# OUT_DIR/figure.summary.json (`attribute --json`) and OUT_DIR/figure.time (`/usr/bin/time -v`), then
# prints the figures. The prompt must have TOKENS tokens (checked with `zephyra tokenize`).
set -euo pipefail
usage="usage: bench/graph_figure.sh TRANSCODERS_DIR [OUT_DIR]"
TC=${1:?$usage}
OUT=${2:-$TC/graphs}
Z=${ZEPHYRA:-$(dirname "$0")/../target/release/zephyra}
MODEL=${MODEL:-smollm2}
PROMPT=${PROMPT:-"The Eiffel Tower is in Paris, the capital of France. The Colosseum is in Rome, the capital of Italy. The Brandenburg Gate is in"}
TOKENS=${TOKENS:-32}
ABLATE=${ABLATE:-10}

[ -x "$Z" ] || { echo "no zephyra binary at $Z: build it (cargo build --release) or set ZEPHYRA" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is missing (peak RSS): apt-get install -y time" >&2; exit 2; }
count() { { ls "$TC"/layer-*/"$1" 2>/dev/null || true; } | wc -l; }
n_tc=$(count cfg.json)
if [ "$n_tc" -ne 30 ]; then
  echo "$TC holds $n_tc transcoders (layer-*/cfg.json), the figure wants SmolLM2's 30: train them with" \
       "bench/transcoders_30.sh" >&2
  exit 2
fi
# `zephyra train` writes summary.json when a layer's training ends (random transcoders have none).
n_done=$(count summary.json)
[ "$n_done" -eq 30 ] || echo "warning: only $n_done of 30 layers have a summary.json: is the training done?" >&2
n_tok=$("$Z" --quiet tokenize --model "$MODEL" --text "$PROMPT" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["ids"]))')
if [ "$n_tok" -ne "$TOKENS" ]; then
  echo "the prompt has $n_tok tokens, not $TOKENS: change PROMPT (or TOKENS)" >&2
  exit 2
fi

mkdir -p "$OUT"
echo "attributing a $n_tok-token prompt through $TC (this takes minutes)" >&2
/usr/bin/time -v -o "$OUT/figure.time" "$Z" --quiet attribute --model "$MODEL" --transcoders "$TC" \
  --prompt "$PROMPT" --out "$OUT/figure.json" --ablate "$ABLATE" --json > "$OUT/figure.summary.json"

python3 - "$OUT" "$TC" <<'PY'
import json, re, sys
out, tc = sys.argv[1], sys.argv[2]
s = json.load(open(out + "/figure.summary.json"))
time = open(out + "/figure.time").read()
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", time).group(1)
secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
rss_gb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time).group(1)) / 1e6
print("transcoders %s; next token: %s" % (tc, ", ".join("%r %.3f" % (t, p) for t, p in s["logits"][:3])))
print("time %.0f s wall (goal <= 300 s on 2 cores), peak RSS %.2f GB" % (secs, rss_gb))
print("local replacement model: logits within %.1e of the model's" % s["max_abs_logit_error"])
print("held fixed (the exclusion rule; no nodes there): positions %s" % s.get("held_positions", []))
print("nodes %d (%d features of %d active), edges %d; after pruning: %d nodes, %d edges"
      % (s["n_nodes"], s["n_feature_nodes"], s["n_active_features"], s["n_edges"],
         s["n_nodes_pruned"], s["n_edges_pruned"]))
a, p = s["scores"], s["scores_pruned"]
print("replacement score %.3f (pruned %.3f), completeness score %.3f (pruned %.3f)"
      % (a["replacement"], p["replacement"], a["completeness"], p["completeness"]))
c = s.get("check")
if c:
    print("check: ablating the %d most influential features moves %r (logit - mean %.3f) by %+.3f in the model;"
          " the graph predicts %+.3f (direct edges), %+.3f (along the graph)"
          % (len(c["features"]), c["target"], c["before"], c["real_change"], c["predicted_direct"], c["predicted"]))
else:
    print("check: no feature node survived pruning, nothing to ablate (errors carry the influence)")
PY
