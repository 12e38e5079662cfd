"""harvest: activations into numpy arrays and activation stores; bad options; Ctrl-C and resume."""

import os

import numpy as np
import pytest

import zephyra as z
from conftest import HOOK, REPO, interrupt_when


def test_rows_are_the_models_activations(model, small_corpus):
    # At blocks.0.hook_resid_pre a row is the token's embedding whatever its context: every harvested row
    # must be one of the rows run_with_cache gives for the corpus's own tokens.
    acts = z.harvest(model, "blocks.0.hook_resid_pre", tokens=64 * 8, data=small_corpus[:1], ctx=64)
    assert isinstance(acts, z.Activations) and isinstance(acts, np.ndarray)
    assert acts.dtype == np.float32 and acts.flags.c_contiguous and acts.shape[1] == 576
    # Position 0 and special tokens are dropped: at most 63 rows per context are kept.
    assert 0.8 * 8 * 63 <= acts.shape[0] <= 8 * 63
    assert acts.hook == "blocks.0.hook_resid_pre" and acts.context_size == 64
    assert acts.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    ids = model.to_tokens((REPO / "README.md").read_text()).tolist()
    known = set()
    for start in range(0, len(ids), 2048):
        _, cache = model.run_with_cache(ids[start : start + 2048], names=["blocks.0.hook_resid_pre"], logits=None)
        known.update(row.tobytes() for row in cache["blocks.0.hook_resid_pre"])
    missing = sum(row.tobytes() not in known for row in acts)
    assert missing == 0, f"{missing} of {len(acts)} rows are no token's embedding"


def test_rows_at_a_deep_hook_keep_their_scale(model, small_corpus):
    acts = z.harvest(model, HOOK, tokens=64 * 4, data=small_corpus, ctx=64, seed=1)
    _, cache = model.run_with_cache((REPO / "README.md").read_text()[:2000], names=[HOOK], logits=None)
    reference = np.median(np.linalg.norm(cache[HOOK][1:], axis=1))
    harvested = np.median(np.linalg.norm(acts, axis=1))
    assert 0.5 < harvested / reference < 2.0
    assert np.isfinite(acts).all()


def test_a_store_harvest_trains_and_records_its_hook(model, small_corpus, tmp_path):
    summary = z.harvest(model, HOOK, tokens=64 * 16, out=tmp_path / "store", data=small_corpus, ctx=64,
                        shard_contexts=4)
    assert summary["hooks"] == [HOOK] and summary["n_contexts"] == 16
    assert summary["n_rows"][0] > 0.8 * 16 * 63
    assert os.path.isdir(summary["stores"][0])
    sae = z.train(summary["stores"][0], arch="topk", k=8, expansion=1, tokens=2048, batch_rows=256, threads=1)
    assert sae.hook_name == HOOK  # read from the store's manifest


def test_bad_harvest_options(model, small_corpus):
    with pytest.raises(ValueError, match="blocks.99"):
        z.harvest(model, "blocks.99.hook_resid_pre", tokens=128, data=small_corpus)
    with pytest.raises(ValueError, match="one hook"):
        z.harvest(model, [HOOK, "blocks.3.hook_resid_pre"], tokens=128, data=small_corpus)
    with pytest.raises(ValueError, match="ctx"):
        z.harvest(model, HOOK, tokens=128, ctx=100_000, data=small_corpus)
    with pytest.raises(ValueError, match="dtype"):
        z.harvest(model, HOOK, tokens=128, dtype="float16", data=small_corpus)
    with pytest.raises(OSError):
        z.harvest(model, HOOK, tokens=128, data=["/nonexistent/corpus.txt"])


def test_ctrl_c_during_a_store_harvest_keeps_whole_shards_and_resumes(model, small_corpus, tmp_path):
    out = tmp_path / "store"

    def first_shard_written():
        return any(p.suffix == ".safetensors" for p in out.rglob("*")) if out.exists() else False

    watcher = interrupt_when(first_shard_written, timeout=300)
    options = dict(tokens=64 * 4 * 40, out=out, ctx=64, shard_contexts=4, data=small_corpus)
    with pytest.raises(KeyboardInterrupt):
        z.harvest(model, HOOK, **options)
    watcher.join()
    assert first_shard_written()
    summary = z.harvest(model, HOOK, **options)
    assert summary["resumed_shards"] >= 1
    assert summary["n_contexts"] == 160 or summary["corpus_exhausted"]
