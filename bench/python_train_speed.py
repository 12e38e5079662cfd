"""Training throughput: from Python on a numpy array, the CLI on the same rows, SAELens from Python.

    python bench/python_train_speed.py zephyra ACTS.npy TOKENS [OUT]  # z.train on the array (this venv)
    python bench/python_train_speed.py cli ACTS.npy TOKENS OUT        # zephyra train --acts ACTS.npy ($ZEPHYRA)
    python bench/python_train_speed.py saelens ACTS.npy TOKENS        # SAELens 6.54 TopK (the torch venv)

The settings of both Zephyra sides are the defaults of both: TopK k=32, 16x expansion, batch 4096 rows, all
cores, seed 0, rows shuffled per pass (in the same order); no hold-out; checkpoints every 10 % into OUT
(without OUT, none: as the SAELens run, which writes none).
Prints one JSON line: the trainer's tokens/s (`summary.json`'s `tokens_per_s`, the figure the CLI reports),
the wall-clock tokens/s of the whole call (with the hand-over and initialisation), and the CPU seconds per
1,000 tokens of the call (user + system, every thread: the figure a loaded machine disturbs least).
"""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def cpu_seconds(who):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(side, tokens, call, who=resource.RUSAGE_SELF):
    """Runs `call()` (which returns the trainer's tokens/s) and returns the figures of `side`."""
    cpu, start = cpu_seconds(who), time.perf_counter()
    trainer = call()
    wall, cpu = time.perf_counter() - start, cpu_seconds(who) - cpu
    return {"side": side, "tokens_per_s": trainer, "wall_tokens_per_s": tokens / wall,
            "cpu_s_per_1k_tokens": 1000 * cpu / tokens}


def zephyra_figures(path, tokens, out):
    import zephyra as z

    acts = np.load(path)
    side = "python" if out else "python, no checkpoints"
    return timed(side, tokens,
                 lambda: z.train(acts, out=out, tokens=tokens, holdout=0).training_summary["tokens_per_s"])


def cli_figures(path, tokens, out):
    command = [os.environ.get("ZEPHYRA", "target/release/zephyra"), "--quiet", "train", "--acts", path, "--out", out,
               "--holdout", "0", "--tokens", str(tokens), "--json"]

    def run():
        lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
        return json.loads(lines[-1])["tokens_per_s"]

    return timed("cli", tokens, run, resource.RUSAGE_CHILDREN)


def saelens_figures(path, tokens):
    import torch
    import sae_lens
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    acts = torch.from_numpy(np.load(path))
    n, d_in = acts.shape
    batch = 4096
    generator = torch.Generator().manual_seed(0)

    def rows():  # shuffled per pass, as ours
        while True:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n - batch + 1, batch):
                yield acts[order[start : start + batch]]

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=16 * d_in, k=32))
    cfg = SAETrainerConfig(total_training_samples=tokens, train_batch_size_samples=batch, lr=5e-4, lr_end=5e-4,
                           n_batches_for_norm_estimate=4)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=rows())
    side = f"saelens {sae_lens.__version__} (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    return timed(side, tokens, lambda: (trainer.fit(), None)[1])


if __name__ == "__main__":
    which, path, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if which == "saelens":
        print(json.dumps(saelens_figures(path, tokens)))
    else:
        out = sys.argv[4] if len(sys.argv) > 4 else None
        print(json.dumps({"zephyra": zephyra_figures, "cli": cli_figures}[which](path, tokens, out)))
