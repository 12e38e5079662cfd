"""SAE: SAELens folders in and out, encode/decode against numpy math, array checks, sae_lens interop."""

import numpy as np
import pytest

import zephyra as z
from conftest import TESTDATA, assert_missing_is_an_os_error, planted, read_safetensors

SAELENS = TESTDATA / "saelens"


@pytest.fixture(scope="module")
def relu_sae():
    acts, _ = planted(4096, d_in=16)
    return z.train(acts, arch="relu", expansion=4, tokens=20_000, batch_rows=256, threads=1, holdout=0)


@pytest.mark.parametrize("arch", ["topk", "standard", "jumprelu", "gated"])
def test_saelens_folders_give_the_codes_saelens_computed(arch):
    sae = z.SAE.load(SAELENS / arch)
    x = read_safetensors(SAELENS / "inputs.safetensors")["x"]
    want = read_safetensors(SAELENS / arch / "expected.safetensors")
    codes = sae.encode(np.ascontiguousarray(x))
    np.testing.assert_allclose(codes, want["codes"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sae.decode(codes), want["reconstruction"], rtol=1e-4, atol=1e-5)


def test_relu_encode_decode_is_the_textbook_formula(relu_sae):
    x, _ = planted(64, d_in=16, seed=5)
    w = relu_sae.state_dict()
    cfg = relu_sae.cfg
    x64 = x.astype(np.float64)
    if cfg.get("apply_b_dec_to_input"):
        x64 = x64 - w["b_dec"]
    pre = x64 @ w["W_enc"].astype(np.float64) + w["b_enc"]
    codes = relu_sae.encode(x)
    assert codes.dtype == np.float32 and codes.shape == (64, relu_sae.d_sae)
    np.testing.assert_allclose(codes, np.maximum(pre, 0.0), rtol=1e-4, atol=1e-4)
    recon = relu_sae.decode(codes)
    np.testing.assert_allclose(recon, codes.astype(np.float64) @ w["W_dec"] + w["b_dec"], rtol=1e-4, atol=1e-4)


def test_save_and_load_round_trip(tmp_path, relu_sae):
    relu_sae.save(tmp_path / "run")
    assert (tmp_path / "run" / "cfg.json").is_file()
    assert (tmp_path / "run" / "sae_weights.safetensors").is_file()
    back = z.SAE.load(tmp_path / "run")
    assert (back.d_in, back.d_sae, back.architecture) == (16, 64, "relu")
    for name, value in relu_sae.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value, err_msg=name)
    x, _ = planted(8, seed=9)
    np.testing.assert_array_equal(back.encode(x), relu_sae.encode(x))


def test_wrong_arrays_say_what_was_expected(relu_sae):
    x, _ = planted(8)
    with pytest.raises(TypeError, match="float32"):
        relu_sae.encode(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"\[n, 16\]"):
        relu_sae.encode(x[:, :8].copy())
    with pytest.raises(ValueError, match=r"\[n, 16\]"):
        relu_sae.encode(x.reshape(-1))
    with pytest.raises(ValueError, match="C-contiguous"):
        relu_sae.encode(np.asfortranarray(x))
    with pytest.raises(TypeError, match="numpy"):
        relu_sae.encode(x.tolist())
    with pytest.raises(ValueError, match=r"\[n, 64\]"):
        relu_sae.decode(x)


def test_inputs_are_read_in_place_and_left_unchanged(relu_sae):
    x, _ = planted(32, seed=2)
    x.flags.writeable = False  # a read-only buffer is enough: nothing is copied or written
    before = x.copy()
    codes = relu_sae.encode(x)
    np.testing.assert_array_equal(x, before)
    assert codes.flags.c_contiguous and codes.flags.writeable  # an owned result the caller may change


def test_loading_a_missing_folder_is_an_os_error(tmp_path):
    assert_missing_is_an_os_error(z.SAE.load, tmp_path / "missing")


def test_a_zephyra_sae_loads_in_sae_lens_with_the_same_codes(tmp_path, relu_sae):
    sae_lens = pytest.importorskip("sae_lens", reason="sae_lens is not installed: the interop check needs it")
    torch = pytest.importorskip("torch", reason="torch is not installed: sae_lens needs it")
    relu_sae.save(tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    x, _ = planted(64, seed=11)
    with torch.no_grad():
        codes = theirs.encode(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(codes, relu_sae.encode(x), rtol=1e-4, atol=1e-5)
