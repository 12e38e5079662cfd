"""train: every architecture and option through TrainConfig, planted dictionaries, resume, Ctrl-C."""

import numpy as np
import pytest

import zephyra as z
from conftest import interrupt_when, planted

ARCHS = ["topk", "batchtopk", "relu", "relu-unit", "jumprelu", "gated"]


@pytest.fixture(scope="module")
def acts():
    rows, dirs = planted(8192, d_in=16, n_dirs=32, active=3)
    return rows, dirs


# Small-budget settings (the CLI's default learning rates are tuned for millions of rows).
SETTINGS = {
    "topk": {"k": 4},
    "batchtopk": {"k": 4},
    "relu": {"lr": 2e-3, "l1": 0.3},
    "relu-unit": {"lr": 2e-3},
    "jumprelu": {"lr": 2e-3},
    "gated": {"lr": 2e-3, "l1": 0.3},
}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_trains_and_reports_its_held_out_figures(acts, arch):
    rows, _ = acts
    sae = z.train(rows, arch=arch, expansion=4, tokens=256 * 400, batch_rows=256, threads=1, **SETTINGS[arch])
    assert sae.architecture == arch and (sae.d_in, sae.d_sae) == (16, 64)
    summary = sae.training_summary
    assert summary["arch"] == arch and summary["finished"] and summary["tokens"] == 256 * 400
    # The last min(8192, n/5) rows were held out; their FVE and L0, recomputed here in float64, are the
    # summary's.
    held = rows[-1638:].astype(np.float64)
    codes = sae.encode(rows[-1638:])
    recon = sae.decode(codes).astype(np.float64)
    fve = 1 - ((recon - held) ** 2).sum() / ((held - held.mean(0)) ** 2).sum()
    assert summary["holdout"]["n_rows"] == 1638
    assert abs(summary["holdout"]["fve"] - fve) < 1e-4
    assert abs(summary["holdout"]["l0"] - (codes > 0).sum(axis=1).mean()) < 1e-6
    assert fve > 0.5, (arch, fve)
    if arch == "topk":
        assert (codes > 0).sum(axis=1).max() <= 4


def test_topk_recovers_a_planted_dictionary(acts):
    rows, dirs = acts
    sae = z.train(rows, arch="topk", k=3, expansion=4, tokens=400_000, batch_rows=256, threads=1, seed=1)
    w_dec = sae.state_dict()["W_dec"].astype(np.float64)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    best = np.abs(dirs @ w_dec.T).max(axis=1)  # each planted direction's closest latent
    assert np.median(best) > 0.9, np.sort(best)
    held = sae.training_summary["holdout"]
    assert held["fve"] > 0.8 and held["l0"] <= 3.0 + 1e-6


def test_options_reach_the_config_and_wrong_ones_are_refused(acts, tmp_path):
    rows, _ = acts
    sae = z.train(rows[:2048], arch="relu", expansion=2, tokens=4096, batch_rows=128, lr=1e-3, l1=2.0,
                  lr_decay="cosine", max_grad_norm=0, normalize=False, b_dec_init="mean", dead_after=1000,
                  non_finite="error", seed=7, threads=1, metrics_every=1, holdout=256, out=tmp_path / "run")
    assert sae.d_sae == 32
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4096 // 128  # one line per step with metrics_every=1
    with pytest.raises(ValueError, match="k sets its sparsity"):
        z.train(rows, arch="topk", l1=1.0, tokens=1024)
    with pytest.raises(ValueError, match="l0_coeff"):
        z.train(rows, arch="jumprelu", l1=1.0, tokens=1024)
    with pytest.raises(ValueError, match="arch"):
        z.train(rows, arch="dense", tokens=1024)
    with pytest.raises(ValueError, match="lr_decay"):
        z.train(rows, lr_decay="exp", tokens=1024)
    with pytest.raises(ValueError, match="lr"):
        z.train(rows, lr=-1.0, tokens=1024)
    with pytest.raises(TypeError, match="float32"):
        z.train(rows.astype(np.float64), tokens=1024)
    with pytest.raises(FileNotFoundError):
        z.train(str(tmp_path / "nothing.npy"), tokens=1024)


def test_non_finite_rows_are_an_error_when_asked(acts):
    rows, _ = acts
    bad = rows[:1024].copy()
    bad[5, 3] = np.nan
    with pytest.raises(z.ZephyraError, match="(?i)nan|non-finite"):
        z.train(bad, arch="relu", tokens=2048, batch_rows=128, non_finite="error", holdout=0, threads=1)


def test_a_npy_file_trains_like_the_same_array_shuffled_or_in_order(acts, tmp_path):
    rows, _ = acts
    np.save(tmp_path / "acts.npy", rows)
    # 48 steps of 256 over 6554 training rows: two passes, each in its own order when shuffled.
    opts = dict(arch="topk", k=4, expansion=2, tokens=256 * 48, batch_rows=256, threads=1, seed=3)
    w = {}
    for shuffle in (True, False):
        a = z.train(rows, shuffle=shuffle, **opts).state_dict()["W_dec"]
        b = z.train(str(tmp_path / "acts.npy"), shuffle=shuffle, **opts).state_dict()["W_dec"]
        np.testing.assert_array_equal(a, b, err_msg=f"shuffle={shuffle}")
        w[shuffle] = a
    # The default reads the array shuffled (as the CLI reads a .npy), not in its given order.
    np.testing.assert_array_equal(z.train(rows, **opts).state_dict()["W_dec"], w[True])
    assert not np.array_equal(w[True], w[False])


RUN = dict(arch="topk", k=4, expansion=4, tokens=256 * 400, batch_rows=256, threads=1, seed=5,
           checkpoint_every=256 * 40)


def test_ctrl_c_stops_training_and_resume_finishes_it_bit_for_bit(acts, tmp_path):
    rows, _ = acts
    run = tmp_path / "run"
    state = run / "training_state.safetensors"
    watcher = interrupt_when(state.exists)
    with pytest.raises(KeyboardInterrupt):
        z.train(rows, out=run, _step_delay_ms=20, **RUN)
    watcher.join()
    # A complete checkpoint is left, and nothing else half-written: resuming finishes the run ...
    assert state.is_file()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    resumed = z.train(rows, resume=run)
    # ... exactly as an uninterrupted run does.
    whole = z.train(rows, out=tmp_path / "whole", **RUN)
    for name, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(acts, tmp_path):
    rows, _ = acts
    run = tmp_path / "fresh"
    metrics = run / "metrics.jsonl"
    watcher = interrupt_when(lambda: metrics.exists() and metrics.stat().st_size > 0)
    with pytest.raises(KeyboardInterrupt):
        z.train(rows, out=run, _step_delay_ms=20, metrics_every=1, **{**RUN, "checkpoint_every": 10**9})
    watcher.join()
    assert not run.exists()


def test_resume_refuses_changed_options(acts, tmp_path):
    rows, _ = acts
    z.train(rows, out=tmp_path / "r", arch="topk", k=4, expansion=2, tokens=2048, batch_rows=256, threads=1)
    with pytest.raises(ValueError) as err:
        z.train(rows, resume=tmp_path / "r", k=8)
    assert "k" in str(err.value)
    with pytest.raises(ValueError, match="not both"):
        z.train(rows, out=tmp_path / "x", resume=tmp_path / "r")


def _training_state_config(run):
    """The TrainConfig saved in a run's training_state.safetensors (its JSON header, read by hand)."""
    import json
    import struct

    raw = (run / "training_state.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    state = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["zephyra_training_state"])
    return state["config"]


def test_decoder_init_norm_selects_saelens_parametrisation(acts, tmp_path):
    rows, _ = acts
    opts = dict(arch="topk", k=4, expansion=2, tokens=256 * 20, batch_rows=256, threads=1, seed=2)
    free = z.train(rows, decoder_init_norm=0.1, out=tmp_path / "free", **opts)
    unit = z.train(rows, decoder_init_norm=0, out=tmp_path / "unit", **opts)
    assert _training_state_config(tmp_path / "free")["decoder_init_norm"] == pytest.approx(0.1)
    assert _training_state_config(tmp_path / "unit").get("decoder_init_norm") is None
    # The free rows train differently; the saved SAE has their norms folded into the encoder, so its
    # decoder rows share one norm (the input scale's), the unit-rows run's.
    w_free, w_unit = free.state_dict()["W_dec"], unit.state_dict()["W_dec"]
    assert np.abs(w_free - w_unit).max() > 1e-3
    n_free, n_unit = np.linalg.norm(w_free, axis=1), np.linalg.norm(w_unit, axis=1)
    assert np.allclose(n_free, n_unit[0], rtol=1e-4) and np.allclose(n_unit, n_unit[0], rtol=1e-4)
    with pytest.raises(ValueError, match="decoder_init_norm"):
        z.train(rows, arch="topk", decoder_init_norm=-0.1, tokens=1024, batch_rows=256)
    with pytest.raises(ValueError, match="topk"):
        z.train(rows, arch="relu", decoder_init_norm=0.1, tokens=1024, batch_rows=256)
