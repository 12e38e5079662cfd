"""The cost of `model.run_with_cache` for one short prompt, to compare with the Rust call it makes
(`cargo run --release -p zephyra-py --example short_prompt`).

    python bench/run_with_cache_overhead.py [REPEATS]
"""

import sys
import time

import zephyra as z

PROMPT = "The capital of France is"
HOOK = "blocks.15.hook_resid_pre"

model = z.Model.load("smollm2")
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 50
for _ in range(3):
    model.run_with_cache(PROMPT, names=[HOOK])
times = []
for _ in range(repeats):
    start = time.perf_counter()
    model.run_with_cache(PROMPT, names=[HOOK])
    times.append(time.perf_counter() - start)
times.sort()
print(f"run_with_cache({PROMPT!r}, names=[{HOOK!r}]): median {1e3 * times[len(times) // 2]:.2f} ms, "
      f"min {1e3 * times[0]:.2f} ms over {repeats}")
