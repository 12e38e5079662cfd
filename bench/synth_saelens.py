#!/usr/bin/env python3
"""SAELens 6.54 anchor for `zephyra eval --synth`: trains SAELens' TopK (or BatchTopK) SAE on the SAME rows
`zephyra synth --npy` wrote (DIR/acts.npy, float32 [n, d], read in file order, shuffled per epoch) and saves
it in SAELens' inference layout (cfg.json + sae_weights.safetensors), so that Zephyra scores it with the
same metric code (`zephyra eval --sae OUT --synth DIR`). Prints one JSON line: tokens/s, steps, settings.

Settings follow the issue 17 measurement: lr 3e-3 constant, Adam (0.9, 0.999), b_dec from zeros (SAELens'
default without a data-dependent init), no input scaling, batch 4096. No other code is copied here.

Architectures: topk, batchtopk, matryoshka (MatryoshkaBatchTopK, --groups as `matryoshka_widths`) and
jumprelu (Gemma Scope 2's quadratic L0 loss towards --target-l0, SAELens' defaults otherwise).
`--decoder-init-norm` overrides SAELens' 0.1 (the issue 17 investigation: 1.0 = unit-norm rows, as Zephyra).

Usage: /work/venvs/torch/bin/python bench/synth_saelens.py --synth DIR --out OUT
         [--arch topk|batchtopk|matryoshka|jumprelu] [--d-sae 4096] [--k 32] [--groups 128,512,4096]
         [--target-l0 32] [--steps 200] [--batch 4096] [--lr 3e-3] [--threads 2] [--seed 0]
         [--decoder-init-norm 0.1]
"""
import argparse, json, os, time
import numpy as np, torch
from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens import MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig
from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
from sae_lens.config import SAETrainerConfig

p = argparse.ArgumentParser()
p.add_argument('--synth', required=True); p.add_argument('--out', required=True)
p.add_argument('--arch', choices=['topk', 'batchtopk', 'matryoshka', 'jumprelu'], default='topk')
p.add_argument('--groups', default='128,512,4096'); p.add_argument('--target-l0', type=float, default=32.0)
p.add_argument('--decoder-init-norm', type=float, default=0.1)
p.add_argument('--d-sae', type=int, default=4096); p.add_argument('--k', type=int, default=32)
p.add_argument('--steps', type=int, default=200); p.add_argument('--batch', type=int, default=4096)
p.add_argument('--lr', type=float, default=3e-3); p.add_argument('--threads', type=int, default=2)
p.add_argument('--seed', type=int, default=0)
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(a.seed)
x = torch.from_numpy(np.load(os.path.join(a.synth, 'acts.npy')).astype(np.float32))
d_in = x.shape[1]
common = dict(d_in=d_in, d_sae=a.d_sae, dtype='float32', device='cpu', decoder_init_norm=a.decoder_init_norm)
if a.arch == 'topk':
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(k=a.k, **common))
elif a.arch == 'batchtopk':
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(k=a.k, **common))
elif a.arch == 'matryoshka':
    widths = [int(w) for w in a.groups.split(',')]
    sae = MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(k=a.k, matryoshka_widths=widths,
                                                                              **common))
else:
    sae = JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(jumprelu_sparsity_loss_mode='quadratic',
                                                        target_l0=a.target_l0, **common))

def batches():
    g = torch.Generator().manual_seed(a.seed + 1)
    while True:
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, len(perm) - a.batch + 1, a.batch):
            yield x[perm[i:i + a.batch]]

cfg = SAETrainerConfig(total_training_samples=a.steps * a.batch, train_batch_size_samples=a.batch, lr=a.lr,
                       lr_end=a.lr, lr_scheduler_name='constant', adam_beta1=0.9, adam_beta2=0.999,
                       device='cpu', n_batches_for_norm_estimate=0)
trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches())
t = time.time(); trainer.fit(); dt = time.time() - t
sae.save_inference_model(a.out)
print(json.dumps({'tool': 'SAELens 6.54', 'arch': a.arch, 'd_sae': a.d_sae, 'k': a.k, 'steps': a.steps,
                  'decoder_init_norm': a.decoder_init_norm,
                  'batch': a.batch, 'lr': a.lr, 'threads': a.threads, 'tokens_per_s': a.steps * a.batch / dt,
                  'out': a.out}))
