"""Zephyra from Python: sparse autoencoders on language models, over the Zephyra Rust crates.

The names are the ones SAELens and TransformerLens users know::

    import zephyra as z
    model = z.Model.load("smollm2")
    logits, cache = model.run_with_cache("The capital of France is", names=["blocks.15.hook_resid_pre"])
    acts = z.harvest(model, hook="blocks.15.hook_resid_pre", tokens=2_000_000)   # float32 [n, 576]
    sae = z.train(acts, arch="topk", k=32, expansion=16, progress=True)
    codes = sae.encode(acts[:1000]); recon = sae.decode(codes)
    report = z.evaluate(sae, model)
    text = model.generate("I think", steer={"sae": sae, "feature": 1704, "strength": 8})
    sae.save("runs/l15"); z.SAE.load("runs/l15")     # SAELens folders

Arrays are numpy float32; C-contiguous inputs are read without a copy. Long calls release the GIL, draw a
progress bar on stderr with ``progress=True`` and stop cleanly on Ctrl-C (``KeyboardInterrupt``). Errors are
:class:`zephyra.errors.ZephyraError` subclasses carrying the Rust message.
"""

import functools
import os

import numpy as np

from . import errors
from ._zephyra import SAE, Model, __version__
from ._zephyra import evaluate, features, steer
from ._zephyra import harvest as _harvest
from ._zephyra import train as _train
from .errors import (
    AnalysisError,
    DataError,
    ModelError,
    SaeError,
    ZephyraError,
    ZephyraOSError,
    ZephyraValueError,
)


class Activations(np.ndarray):
    """Float32 activation rows ``[n, d_model]`` from :func:`harvest`, remembering where they came from.

    ``hook``, ``model_name`` and ``context_size`` are what :func:`train` records in the SAE's ``cfg.json``
    (so :func:`evaluate` and :func:`steer` find the hook by themselves). Slices keep them; the data is a
    plain numpy array underneath (no copy was made).
    """

    hook = None
    model_name = None
    context_size = None

    def __array_finalize__(self, obj):
        for name in ("hook", "model_name", "context_size"):
            setattr(self, name, getattr(obj, name, None))


@functools.wraps(_harvest)
def harvest(model, hook, tokens=2_000_000, out=None, **options):
    result = _harvest(model, hook, tokens, out, **options)
    if out is not None:
        return result
    acts = result.view(Activations)
    acts.hook = hook
    acts.model_name = os.path.basename(str(model.path))
    acts.context_size = options.get("ctx", 128)
    return acts


@functools.wraps(_train)
def train(acts, **options):
    if isinstance(acts, Activations):
        options.setdefault("hook", acts.hook)
        options.setdefault("model_name", acts.model_name)
        options.setdefault("context_size", acts.context_size)
    return _train(acts, **options)


__all__ = [
    "Activations",
    "Model",
    "SAE",
    "harvest",
    "train",
    "evaluate",
    "features",
    "steer",
    "errors",
    "__version__",
    *errors.__all__,
]
