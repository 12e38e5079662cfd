"""evaluate, features and steer on an SAE trained from Python."""

import numpy as np
import pytest

import zephyra as z
from conftest import HOOK, interrupt_when


@pytest.fixture(scope="module")
def sae(model, small_corpus):
    acts = z.harvest(model, HOOK, tokens=64 * 48, data=small_corpus, ctx=64)
    return z.train(acts, arch="topk", k=16, expansion=2, tokens=30_000, batch_rows=256)


def test_evaluate_returns_the_eval_report(model, sae, small_corpus, tmp_path):
    report = z.evaluate(sae, model, tokens=64 * 8, ce_tokens=128, data=small_corpus, out=tmp_path / "eval.json")
    assert report["hook"] == HOOK and report["d_sae"] == 1152 and report["architecture"] == "topk"
    figures = report["figures"]
    assert figures["sparsity"]["l0"] <= 16 + 1e-9  # topk with k = 16
    assert 0.0 < figures["reconstruction"]["fve"] <= 1.0
    assert figures["downstream"] is not None
    assert (tmp_path / "eval.json").is_file()


def test_evaluate_needs_a_hook(model, sae, tmp_path):
    bare = z.train(np.random.default_rng(0).normal(size=(1024, 576)).astype(np.float32), arch="topk", k=4,
                   expansion=1, tokens=1024, batch_rows=256)
    with pytest.raises(ValueError, match="hook"):
        z.evaluate(bare, model, tokens=128)


def test_features_writes_the_feature_store(model, sae, small_corpus, tmp_path):
    out = z.features(sae, model, tmp_path / "features", tokens=64 * 8, ctx=64, data=small_corpus, top=5)
    assert out["d_sae"] == sae.d_sae and out["n_tokens_read"] >= 64 * 8
    assert 0 < out["n_alive"] <= sae.d_sae and len(out["features"]) == sae.d_sae
    assert any((tmp_path / "features").iterdir())


def test_ctrl_c_stops_features_with_a_checkpoint_and_the_pass_resumes(model, sae, small_corpus, tmp_path):
    opts = dict(tokens=32 * 2 * 10, ctx=32, batch_contexts=2, data=small_corpus, top=5)
    whole = z.features(sae, model, tmp_path / "whole", **opts)
    out = tmp_path / "stopped"
    watcher = interrupt_when(out.exists)  # the pass makes its folder first; ten batches take 5 s or more
    with pytest.raises(KeyboardInterrupt):
        z.features(sae, model, out, _batch_delay_ms=500, **opts)
    watcher.join()
    # Stopped before the end, with what it had done checkpointed (and no half-written store) ...
    assert (out / "checkpoint.json").is_file() and not (out / "index.json").exists()
    # ... from which the pass finishes as the uninterrupted one did.
    resumed = z.features(sae, model, out, **opts)
    assert resumed["n_tokens_read"] == whole["n_tokens_read"]
    assert resumed["features"] == whole["features"]


def test_steering_with_strength_zero_changes_nothing(model, sae):
    out = z.steer(model, sae, "I think", feature=3, strength=0.0, max_tokens=8, temperature=0.0)
    assert out["steered"] == out["unsteered"]
    assert model.generate("I think", max_tokens=8, steer={"sae": sae, "feature": 3, "strength": 0.0}) == \
        out["unsteered"]


def test_strong_steering_changes_the_text(model, sae):
    out = z.steer(model, sae, "I think", feature=3, strength=200.0, max_tokens=8, temperature=0.0)
    assert out["steered"] != out["unsteered"]
    clamp = z.steer(model, sae, "I think", feature=3, strength=200.0, mode="clamp", max_tokens=8, temperature=0.0)
    assert clamp["steered"] != clamp["unsteered"]


def test_bad_steering_requests(model, sae):
    with pytest.raises(ValueError, match="1152"):
        z.steer(model, sae, "I think", feature=5000, strength=1.0)
    with pytest.raises(ValueError, match="mode"):
        z.steer(model, sae, "I think", feature=1, strength=1.0, mode="push")
    with pytest.raises(ValueError, match="feature"):
        model.generate("I think", steer={"sae": sae, "strength": 1.0})
    with pytest.raises(ValueError, match="not both"):
        model.generate("I think", steer={"sae": sae, "feature": 1, "strength": 1.0},
                       add={HOOK: np.zeros(576, np.float32)})
