"""Checks a Zephyra Neuronpedia export (`batch-*.json` in argv[1]) against the reference writer and reader.

1. sae-dashboard 0.8.0's `NeuronpediaDashboardBatch` must build from each batch (it refuses unknown fields)
   and give the same JSON back from `to_dict()` (so no field is missing either).
2. Every key that Neuronpedia's `convert-saedashboard-to-neuronpedia-export.py` reads is present, and the
   operations it applies to the values work (`max(values)`, `values.index(max)`, `min(values)`).
3. The shape sae-dashboard gives them: 50 equally spaced histogram centres, values rounded to 3 decimals,
   `qualifying_token_index` inside the window, an integer `layer`, and `correlated_features_*` as
   `RollingCorrCoef.topk_pearson` leaves them (at most 3 other latents, Pearson descending, indices /
   Pearson / cosine of equal length, values in [-1, 1]).

Prints one JSON line of counts; exits non-zero (an assertion) on the first mismatch.
"""

import json
import pathlib
import sys

from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch

# The keys the converter reads (batch, feature, activation).
CONVERTER_BATCH_KEYS = ["model_id", "layer", "sae_id_suffix", "features"]
CONVERTER_FEATURE_KEYS = [
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
    "correlated_neurons_indices", "correlated_neurons_pearson", "correlated_neurons_l1",
    "correlated_features_indices", "correlated_features_pearson", "correlated_features_l1",
    "neg_str", "neg_values", "pos_str", "pos_values", "frac_nonzero", "freq_hist_data_bar_heights",
    "freq_hist_data_bar_values", "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
    "decoder_weights_dist", "activations",
]
CONVERTER_ACTIVATION_KEYS = [
    "tokens", "values", "bin_contains", "bin_max", "bin_min", "qualifying_token_index",
]


def rounded(values, digits=3):
    return all(round(v, digits) == v for v in values)


def check(path):
    raw = json.loads(path.read_text())
    batch = NeuronpediaDashboardBatch(**raw)
    assert batch.to_dict() == raw, f"{path.name}: sae-dashboard's to_dict() differs from the file"
    for key in CONVERTER_BATCH_KEYS:
        raw[key]
    assert isinstance(raw["layer"], int), raw["layer"]
    n_acts = 0
    for feat in raw["features"]:
        for key in CONVERTER_FEATURE_KEYS:
            feat[key]
        centres, heights = feat["freq_hist_data_bar_values"], feat["freq_hist_data_bar_heights"]
        assert len(centres) == len(heights)
        if feat["activations"]:
            assert len(centres) == 50, (feat["feature_index"], len(centres))
            steps = [b - a for a, b in zip(centres, centres[1:])]
            assert max(steps) - min(steps) <= 2e-3, steps
            assert all(isinstance(h, int) and h >= 0 for h in heights)
        assert rounded(feat["pos_values"]) and rounded(feat["neg_values"]) and rounded(centres)
        idx, pearson, cosine = (feat[f"correlated_features_{k}"] for k in ("indices", "pearson", "l1"))
        assert len(idx) == len(pearson) == len(cosine) <= 3, (idx, pearson, cosine)
        assert all(isinstance(i, int) and i != feat["feature_index"] for i in idx), idx
        assert all(-1 <= v <= 1 for v in pearson + cosine) and rounded(pearson) and rounded(cosine)
        assert pearson == sorted(pearson, reverse=True), pearson
        for act in feat["activations"]:
            for key in CONVERTER_ACTIVATION_KEYS:
                act[key]
            values, tokens = act["values"], act["tokens"]
            assert len(values) == len(tokens) > 0
            top = max(values)
            values.index(top)
            min(values)
            assert 0 <= act["qualifying_token_index"] < len(tokens)
            assert values[act["qualifying_token_index"]] > 0, "the qualifying token fired"
            assert rounded(values) and rounded([act["bin_min"], act["bin_max"], act["bin_contains"]])
            assert all(isinstance(t, str) for t in tokens)
            n_acts += 1
    return len(raw["features"]), n_acts


def main():
    files = sorted(p for p in pathlib.Path(sys.argv[1]).iterdir() if p.name.startswith("batch-"))
    assert files, f"no batch-*.json in {sys.argv[1]}"
    n_features = n_acts = 0
    for f in files:
        nf, na = check(f)
        n_features += nf
        n_acts += na
    print(json.dumps({"batches": len(files), "features": n_features, "activations": n_acts}))


if __name__ == "__main__":
    main()
