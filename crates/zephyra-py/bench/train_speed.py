"""Training throughput from Python vs the CLI on the same rows, and SAELens on the same rows.

    python bench/train_speed.py zephyra ACTS.npy [TOKENS]     # z.train on the array and on the .npy
    python bench/train_speed.py saelens ACTS.npy [TOKENS]     # SAELens 6.54 TopK (torch venv)

Same settings everywhere: TopK k=32, 16x expansion, batch 4096 rows, all cores, no hold-out. The CLI figure
comes from `zephyra train --acts ACTS.npy --out DIR --no-shuffle --holdout 0 --tokens TOKENS --json`
(its `tokens_per_s`); both write checkpoints every 10 %.
"""

import sys
import tempfile
import time

import numpy as np


def zephyra_figures(path, tokens):
    import zephyra as z

    acts = np.load(path)
    opts = dict(arch="topk", k=32, expansion=16, tokens=tokens, batch_rows=4096, holdout=0)
    for label, source in [("array", acts), ("npy", path)]:
        extra = {"shuffle": False} if label == "npy" else {}
        with tempfile.TemporaryDirectory() as out:  # checkpoints every 10 %, as the CLI writes them
            start = time.perf_counter()
            sae = z.train(source, out=f"{out}/run", **opts, **extra)
            wall = time.perf_counter() - start
        print(f"zephyra from Python ({label}): {sae.training_summary['tokens_per_s']:.0f} tok/s "
              f"(trainer), {tokens / wall:.0f} tok/s (wall, with init)")


def saelens_figures(path, tokens):
    import torch
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    acts = torch.from_numpy(np.load(path))
    n, d_in = acts.shape
    batch = 4096

    def rows():
        while True:
            for start in range(0, n - batch + 1, batch):
                yield acts[start : start + batch]

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=16 * d_in, k=32))
    cfg = SAETrainerConfig(total_training_samples=tokens, train_batch_size_samples=batch, lr=5e-4, lr_end=5e-4,
                           n_batches_for_norm_estimate=4)
    with tempfile.TemporaryDirectory():
        trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=rows())
        start = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - start
    print(f"SAELens {__import__('sae_lens').__version__} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads): {tokens / wall:.0f} tok/s (wall)")


if __name__ == "__main__":
    which, path = sys.argv[1], sys.argv[2]
    tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 409_600
    {"zephyra": zephyra_figures, "saelens": saelens_figures}[which](path, tokens)
