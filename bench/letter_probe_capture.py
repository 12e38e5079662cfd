#!/usr/bin/env python3
"""Issue 17: how linearly does SmolLM2 encode a word's first letter at each layer? Reads the word-position
activation of SAEBench-style spelling prompts (built as zephyra-analysis absorption/prompts.rs builds them)
at several layers, for bench/letter_probe_scan.py. Needs the zephyra Python package (pip install ./crates/zephyra-py).

Usage: python bench/letter_probe_capture.py N_WORDS OUT_DIR 1,3,5,7,9,12,15   # writes OUT_DIR/{train,test}.npz
"""
import sys, random, numpy as np, zephyra as z
n_words = int(sys.argv[1]); out = sys.argv[2]
layers = [int(x) for x in sys.argv[3].split(',')]
m = z.Model.load('smollm2')
V = m.cfg['d_vocab']
words = []
for i in range(V):
    t = m.to_string([i])
    w = t[1:] if t.startswith(' ') else t
    if w and w.isascii() and w.isalpha():
        words.append((i, ord(w[0].lower()) - 97))
print(len(words), 'alpha words', file=sys.stderr)
rng = random.Random(42)
rng.shuffle(words)
words = words[:n_words]
n_train = int(0.8 * len(words))
train, test = words[:n_train], words[n_train:]
suffix = list(m.to_tokens(' has the first letter:'))
answers = [list(m.to_tokens(' ' + chr(65 + l))) for l in range(26)]
sep = list(m.to_tokens('\n'))
names = [f'blocks.{l}.hook_resid_pre' for l in layers]
def prompt(word, pool):
    ex = rng.sample([p for p in pool if p[0] != word], 10)
    ids = []
    for i, l in ex:
        ids += [i] + suffix + answers[l] + sep
    pos = len(ids)
    return ids + [word] + suffix, pos
for split, ws in (('train', train), ('test', test)):
    acts = {n: np.zeros((len(ws), m.cfg['d_model']), np.float32) for n in names}
    for j, (w, l) in enumerate(ws):
        ids, pos = prompt(w, train)
        _, cache = m.run_with_cache([int(x) for x in ids], names=names, logits=None)
        for n in names:
            acts[n][j] = cache[n][pos]
        if j % 500 == 0: print(split, j, file=sys.stderr)
    np.savez(f'{out}/{split}.npz', y=np.array([l for _, l in ws]), **{n: a for n, a in acts.items()})
