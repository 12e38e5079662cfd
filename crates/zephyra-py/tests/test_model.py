"""Model: loading, tokenization, run_with_cache against the Hugging Face oracle, hooks, generation."""

import os
import signal

import numpy as np
import pytest

import zephyra as z
from conftest import HOOK, assert_missing_is_an_os_error, rel_err


def test_load_reports_the_smollm2_shape(model):
    assert model.cfg["n_layers"] == 30
    assert model.cfg["d_model"] == 576
    assert model.cfg["d_vocab"] == 49152
    assert model.path.suffix == ".gguf" and model.path.is_file()
    assert HOOK in model.hook_names and "blocks.29.hook_resid_post" in model.hook_names
    assert not any(name.startswith("blocks.30.") for name in model.hook_names)


def test_load_of_a_missing_file_is_an_os_error(tmp_path):
    assert_missing_is_an_os_error(z.Model.load, tmp_path / "nope.gguf")


def test_to_tokens_matches_hugging_face_and_round_trips(model, oracle_tokens):
    for text in oracle_tokens["texts"]:
        ids = model.to_tokens(text["text"])
        assert ids.dtype == np.int64
        assert ids.tolist() == text["ids"], text["text"]
        assert model.to_string(ids.tolist()) == text["decoded"]


def test_run_with_cache_matches_the_hugging_face_activations(model, oracle, oracle_tokens):
    for p, prompt in enumerate(oracle_tokens["prompts"]):
        names = [HOOK, "blocks.0.hook_resid_pre", "blocks.29.hook_mlp_out", "blocks.7.hook_attn_out"]
        logits, cache = model.run_with_cache(prompt["ids"], names=names)
        positions = oracle[f"prompt{p}.positions"]
        for name in names:
            acts = cache[name]
            assert acts.dtype == np.float32 and acts.shape == (len(prompt["ids"]), 576)
            assert rel_err(acts[positions], oracle[f"prompt{p}.{name}"]) < 1e-4, (p, name)
        assert logits.shape == (49152,)
        assert rel_err(logits, oracle[f"prompt{p}.logits_last"]) < 1e-4


def test_logits_all_and_none(model, oracle, oracle_tokens):
    ids = oracle_tokens["prompts"][0]["ids"][:20]
    every, cache = model.run_with_cache(ids, logits="all")
    assert every.shape == (20, 49152) and cache == {}
    last, _ = model.run_with_cache(ids)
    np.testing.assert_allclose(every[-1], last, rtol=1e-4, atol=1e-4)
    none, cache = model.run_with_cache(ids, names=[HOOK], logits=None)
    assert none is None and cache[HOOK].shape == (20, 576)
    with pytest.raises(ValueError, match="logits"):
        model.run_with_cache(ids, logits="first")


def test_bad_hook_names_and_inputs(model):
    with pytest.raises(ValueError) as err:
        model.run_with_cache("hello", names=["blocks.40.hook_resid_pre"])
    assert isinstance(err.value, z.ZephyraValueError)
    assert "blocks.40.hook_resid_pre" in str(err.value) and "30" in str(err.value)
    with pytest.raises(ValueError, match="no tokens"):
        model.run_with_cache("", names=[HOOK])
    with pytest.raises(ValueError):
        model.run_with_cache([49152 + 5], names=[HOOK])


def test_add_hook_shifts_the_residual_by_the_vector(model):
    text = "Sparse autoencoders find features."
    _, base = model.run_with_cache(text, names=["blocks.3.hook_resid_pre"])
    vector = np.linspace(-1, 1, 576).astype(np.float32)
    _, moved = model.run_with_hooks(text, add={"blocks.3.hook_resid_pre": vector}, names=["blocks.3.hook_resid_pre"])
    before = base["blocks.3.hook_resid_pre"]
    # Exact up to float32 rounding of the sum (the attention-sink row is large).
    np.testing.assert_allclose(moved["blocks.3.hook_resid_pre"] - before, np.broadcast_to(vector, before.shape),
                               rtol=0, atol=4e-7 * float(np.abs(before).max() + 1))
    with pytest.raises(ValueError, match="576"):
        model.run_with_hooks(text, add={"blocks.3.hook_resid_pre": np.ones(5, np.float32)})


def test_replace_hook_with_a_python_callable(model):
    text = "The capital of France is"
    seen = []

    def zero_last_position(act, name):
        seen.append((name, act.shape))
        out = act.copy()
        out[:, -1, :] = 0.0
        return out

    base_logits, base = model.run_with_cache(text, names=["blocks.5.hook_resid_post"])
    logits, cache = model.run_with_hooks(
        text, fwd_hooks=[("blocks.5.hook_resid_post", zero_last_position)], names=["blocks.5.hook_resid_post"]
    )
    n = len(model.to_tokens(text))
    assert seen == [("blocks.5.hook_resid_post", (1, n, 576))]
    got = cache["blocks.5.hook_resid_post"]
    assert np.all(got[-1] == 0.0)
    np.testing.assert_array_equal(got[:-1], base["blocks.5.hook_resid_post"][:-1])
    assert rel_err(logits, base_logits) > 1e-2

    # Returning None keeps the activation: the logits are the unhooked ones exactly.
    same, _ = model.run_with_hooks(text, fwd_hooks=[("blocks.5.hook_resid_post", lambda a, n: None)])
    np.testing.assert_array_equal(same, base_logits)


def test_errors_raised_by_a_hook_reach_the_caller(model):
    class Boom(Exception):
        pass

    def boom(act, name):
        raise Boom("from the hook")

    with pytest.raises(Boom, match="from the hook"):
        model.run_with_hooks("hello there", fwd_hooks=[("blocks.2.hook_mlp_out", boom)])
    with pytest.raises(ValueError, match="shape"):
        model.run_with_hooks("hello there", fwd_hooks=[("blocks.2.hook_mlp_out", lambda a, n: a[:, :1])])
    with pytest.raises(TypeError, match="callable"):
        model.run_with_hooks("hello there", fwd_hooks=[("blocks.2.hook_mlp_out", 3)])


def test_greedy_generation_is_the_argmax_of_repeated_forward_passes(model):
    prompt = "The capital of France is"
    text = model.generate(prompt, max_tokens=6)
    ids = model.to_tokens(prompt).tolist()
    expected = []
    for _ in range(6):
        logits, _ = model.run_with_cache(ids)
        nxt = int(np.argmax(logits))
        expected.append(nxt)
        ids.append(nxt)
    assert text == model.to_string(expected)


def test_generation_with_a_hook_and_sampling(model):
    prompt = "I think"
    plain = model.generate(prompt, max_tokens=8)
    pushed = model.generate(prompt, max_tokens=8, add={"blocks.10.hook_resid_post": np.full(576, 40.0, np.float32)})
    assert pushed != plain
    a = model.generate(prompt, max_tokens=8, temperature=0.8, seed=3)
    b = model.generate(prompt, max_tokens=8, temperature=0.8, seed=3)
    assert a == b
    with pytest.raises(ValueError, match="top_p"):
        model.generate(prompt, temperature=0.5, top_p=1.5)


def test_ctrl_c_stops_generation_before_its_next_token(model):
    # A prompt greedy decoding keeps counting from: without the stop the hook would run ~300 times.
    prompt = "1, 2, 3, 4, 5, 6, 7, 8,"
    calls = []

    def hook(x, name):
        calls.append(x.shape[1])
        if len(calls) == 3:  # the prompt's pass and two new tokens
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        model.generate(prompt, max_tokens=300, fwd_hooks=[("blocks.0.hook_resid_pre", hook)])
    # The call returned only once the generation had stopped: a few more tokens at most, no more calls.
    stopped_at = len(calls)
    assert 3 <= stopped_at < 40, stopped_at
    assert model.generate(prompt, max_tokens=2)  # the model is still usable
    assert len(calls) == stopped_at
