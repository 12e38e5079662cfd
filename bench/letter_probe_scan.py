#!/usr/bin/env python3
"""Letter probes per layer on bench/letter_probe_capture.py's activations (torch): one-vs-rest logistic
regression with pos_weight as SAEBench's train_multi_probe, Adam 1e-2 -> 1e-5 (exponential), at SAEBench's
defaults (100 epochs of 4,096 rows), longer (EPOCHS epochs of 256), and zephyra's letter-probe settings on raw
and on mean-norm-scaled activations (the eval's probe before 2026-12-01). Prints per layer the test F1 per letter
and how many letters reach F1 >= 0.6 with >= 10 test words (the absorption eval's bar).

Usage: python bench/letter_probe_scan.py DIR [EPOCHS=100]
"""
import sys, numpy as np, torch
torch.set_num_threads(1)
d = sys.argv[1]
tr, te = np.load(f'{d}/train.npz'), np.load(f'{d}/test.npz')
ytr, yte = tr['y'], te['y']
def fit(x, y, epochs, batch, lr=0.01, end_lr=1e-5, wd=1e-6):
    torch.manual_seed(0)
    x = torch.tensor(x); Y = torch.nn.functional.one_hot(torch.tensor(y), 26).float()
    pos = Y.sum(0); pw = (len(Y) - pos) / pos.clamp(min=1)
    lin = torch.nn.Linear(x.shape[1], 26)
    opt = torch.optim.Adam(lin.parameters(), lr=lr, weight_decay=wd)
    gamma = np.exp(np.log(end_lr / lr) / epochs)
    sch = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=pw)
    for e in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(); l = lossf(lin(x[idx]), Y[idx]); l.backward(); opt.step()
        sch.step()
    return lin
def f1s(lin, x, y):
    with torch.no_grad(): p = (lin(torch.tensor(x)) > 0).numpy()
    out = []
    for c in range(26):
        t = y == c; pr = p[:, c]
        tp = (t & pr).sum(); prec = tp / max(pr.sum(), 1); rec = tp / max(t.sum(), 1)
        out.append((2 * prec * rec / max(prec + rec, 1e-9), int(t.sum())))
    return out
keys = [k for k in tr.files if k != 'y']
keys.sort(key=lambda k: int(k.split('.')[1]))
long_epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
for k in keys:
    s = np.linalg.norm(tr[k], axis=1).mean()
    # zephyra's letter probe: 50 epochs of 64 rows, weight decay 1e-4, on raw activations ('zephyra') and, as
    # before 2026-12-01, on activations divided by their mean norm ('zephyra-old').
    for name, ep, b, wd, div in (('saebench', 100, 4096, 1e-6, 1.0), ('long', long_epochs, 256, 1e-6, 1.0),
                                 ('zephyra', 50, 64, 1e-4, 1.0), ('zephyra-old', 50, 64, 1e-4, s)):
        r = f1s(fit(tr[k] / div, ytr, ep, b, wd=wd), te[k] / div, yte)
        ok = [c for c in range(26) if r[c][0] >= 0.6 and r[c][1] >= 10]
        print(f'{k:28s} {name:11s} mean F1 {np.mean([f for f, _ in r]):.3f}  letters passing {len(ok):2d}  '
              + ' '.join(f'{chr(97+c)}{r[c][0]:.2f}' for c in range(26)), flush=True)
