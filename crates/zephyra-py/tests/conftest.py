"""Shared fixtures: the real SmolLM2 model, the Hugging Face oracle in testdata/, planted activations."""

import json
import os
import signal
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import zephyra as z

REPO = Path(__file__).resolve().parents[3]
TESTDATA = REPO / "testdata"
HOOK = "blocks.15.hook_resid_pre"

# The Ctrl-C tests send SIGINT as a terminal does to an interactive Python, whose handler raises
# KeyboardInterrupt. A process started in the background by a non-interactive shell inherits SIGINT ignored,
# and Python then keeps it ignored; install the interactive handler so the tests check Zephyra, not the
# launcher.
signal.signal(signal.SIGINT, signal.default_int_handler)


def read_safetensors(path):
    """Every tensor of a safetensors file as a numpy array (F32 and I64 only: what testdata holds)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def rel_err(got, want):
    """‖got − want‖ / ‖want‖ in float64 (the Rust forward tests' measure)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(scope="session")
def model():
    return z.Model.load("smollm2")


@pytest.fixture(scope="session")
def oracle():
    return read_safetensors(TESTDATA / "smollm2" / "activations.safetensors")


@pytest.fixture(scope="session")
def oracle_tokens():
    return json.loads((TESTDATA / "smollm2" / "tokens.json").read_text())


@pytest.fixture(scope="session")
def small_corpus():
    """A few thousand tokens of English prose committed in the repository."""
    return [str(REPO / "README.md"), str(TESTDATA / "README.md")]


def planted(n_rows, d_in=16, n_dirs=32, active=3, seed=0):
    """Rows that are sums of `active` of `n_dirs` fixed unit directions with positive weights: a dictionary
    a sparse autoencoder can recover (float32, C-contiguous), and the directions."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n_dirs, d_in))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rows = np.zeros((n_rows, d_in))
    for i in range(n_rows):
        pick = rng.choice(n_dirs, size=active, replace=False)
        rows[i] = rng.uniform(0.5, 2.0, size=active) @ dirs[pick]
    return rows.astype(np.float32), dirs


def interrupt_when(condition, timeout=120):
    """Sends SIGINT to this process once `condition()` holds (polled from a thread)."""

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def assert_missing_is_an_os_error(load, path):
    """`load(path)` of a path that does not exist raises an `OSError` that is a `ZephyraError` naming it."""
    with pytest.raises(OSError) as err:
        load(path)
    assert isinstance(err.value, z.ZephyraError)
    assert path.name in str(err.value)
