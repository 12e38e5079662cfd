"""The cost of `model.run_with_cache` for one short prompt from Python, to set beside the same Rust calls
timed alone (`crates/zephyra-py/examples/short_prompt.rs`; `bench/python_run_with_cache.sh` runs both).

    python bench/python_run_with_cache.py MODE REPEATS

MODE `embed`: `names=["blocks.0.hook_resid_pre"], logits=None` — the pass stops after the embedding, so the
call is almost all binding (argument checks, tokenization, the array hand-over): its overhead in microseconds.
MODE `full`: `names=["blocks.15.hook_resid_pre"]`, last-position logits — the whole 30-block forward.
Prints the median and minimum microseconds per call over REPEATS calls (after 3 warm-up calls).
"""

import sys
import time

import zephyra as z

PROMPT = "The capital of France is"
MODES = {"embed": ("blocks.0.hook_resid_pre", None), "full": ("blocks.15.hook_resid_pre", "last")}

mode, repeats = sys.argv[1], int(sys.argv[2])
hook, logits = MODES[mode]
model = z.Model.load("smollm2")
for _ in range(3):
    model.run_with_cache(PROMPT, names=[hook], logits=logits)
times = []
for _ in range(repeats):
    start = time.perf_counter()
    model.run_with_cache(PROMPT, names=[hook], logits=logits)
    times.append(time.perf_counter() - start)
times.sort()
print(f"python {mode}: median {1e6 * times[len(times) // 2]:.1f} us, min {1e6 * times[0]:.1f} us over {repeats}")
