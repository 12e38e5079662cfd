#!/usr/bin/env python3
"""Summarises `zephyra eval --absorption` and `zephyra eval` JSON for the issue 17 SmolLM2 table.

Usage: python3 bench/abs_summary.py RUN_DIR... [--groups 128,512,2048,9216] [--letters]

Per run: absorption (mean fraction, full-absorption rate, letters scored, main latents per letter) from
RUN_DIR/eval_absorption.json and FVE / L0 / dead / CE recovered from every RUN_DIR/eval*.json that holds a
reconstruction report. With --groups: in which Matryoshka prefix the main and absorbing latents lie (a latent
i belongs to the first prefix whose width exceeds i). With --letters: one line per letter.
"""
import argparse, glob, json, os


def prefix_of(latent, groups):
    return next((j for j, w in enumerate(groups) if latent < w), len(groups))


def main():
    p = argparse.ArgumentParser()
    p.add_argument('runs', nargs='+')
    p.add_argument('--groups', default=None)
    p.add_argument('--letters', action='store_true')
    a = p.parse_args()
    groups = [int(w) for w in a.groups.split(',')] if a.groups else None
    for run in a.runs:
        print(f'## {run}')
        for f in sorted(glob.glob(os.path.join(run, 'eval*.json'))):
            if f.endswith('eval_absorption.json'):
                continue
            fig = json.load(open(f))['figures']
            r, s, d = fig['reconstruction'], fig['sparsity'], fig.get('downstream') or {}
            h = s['density_histogram']
            rare = sum(c for e, c in zip(h['edges'], h['counts']) if e < -4.0)
            print(f"{os.path.basename(f)}: tokens {r['n_tokens']} FVE {r['fve']:.3f} L0 {s['l0']:.1f} "
                  f"dead {s['n_dead']} ({s['dead_fraction']:.4f}) rare(<1e-4) {rare} "
                  f"CE rec {d.get('ce_recovered_zero', float('nan')):.3f}/{d.get('ce_recovered_mean', float('nan')):.3f} "
                  f"dLM {d.get('delta_lm_loss', float('nan')):.3f}")
            print(f"  density histogram edges {h['edges']}\n  counts {h['counts']} (never fired: {h['n_dead']})")
        path = os.path.join(run, 'eval_absorption.json')
        if not os.path.exists(path):
            print('  no eval_absorption.json')
            continue
        ab = json.load(open(path))['absorption']
        print(f"absorption: words {ab['n_train_words']}+{ab['n_test_words']} letters {ab['n_letters_scored']} "
              f"fraction {ab['mean_absorption_fraction']:.4f} full {ab['mean_full_absorption_rate']:.4f} "
              f"main latents {ab['mean_num_split_features']:.2f}")
        scored = [l for l in ab['letters'] if l['scored']]
        if groups:
            mains = [prefix_of(m, groups) for l in scored for m in l['main_latents']]
            absorbers = [prefix_of(w['latent'], groups) for l in scored for w in l['absorbed']]
            count = lambda xs: [xs.count(j) for j in range(len(groups))]
            print(f"  prefix of main latents {count(mains)}, of absorbing latents {count(absorbers)} "
                  f"(prefixes {groups})")
        if a.letters:
            for l in ab['letters']:
                print(f"  {l['letter']} f1 {l['probe_f1']:.2f} tp {l['n_probe_true_positives']} "
                      f"frac {l['mean_absorption_fraction']:.3f} full {l['full_absorption_rate']:.3f} "
                      f"main {l['main_latents']} scored {l['scored']} absorbed {len(l['absorbed'])}")


if __name__ == '__main__':
    main()
