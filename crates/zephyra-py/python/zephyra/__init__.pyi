"""Type stubs of the zephyra package (the native module's signatures)."""

import os
import pathlib
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import errors as errors
from .errors import (
    AnalysisError as AnalysisError,
    DataError as DataError,
    ModelError as ModelError,
    SaeError as SaeError,
    ZephyraError as ZephyraError,
    ZephyraOSError as ZephyraOSError,
    ZephyraValueError as ZephyraValueError,
)

__version__: str

F32 = npt.NDArray[np.float32]
PathLike = Union[str, "os.PathLike[str]"]
HookFn = Callable[[F32, str], Optional[F32]]

class Activations(np.ndarray):
    hook: Optional[str]
    model_name: Optional[str]
    context_size: Optional[int]

class Model:
    @staticmethod
    def load(spec: PathLike) -> "Model": ...
    @property
    def path(self) -> pathlib.Path: ...
    @property
    def cfg(self) -> Dict[str, Any]: ...
    @property
    def hook_names(self) -> List[str]: ...
    def to_tokens(self, text: str) -> npt.NDArray[np.int64]: ...
    def to_string(self, tokens: Sequence[int]) -> str: ...
    def run_with_cache(
        self,
        input: Union[str, Sequence[int]],
        names: Optional[Sequence[str]] = None,
        logits: Optional[Literal["last", "all"]] = "last",
    ) -> Tuple[Optional[F32], Dict[str, F32]]: ...
    def run_with_hooks(
        self,
        input: Union[str, Sequence[int]],
        fwd_hooks: Optional[Sequence[Tuple[str, HookFn]]] = None,
        add: Optional[Mapping[str, Union[F32, Sequence[float]]]] = None,
        names: Optional[Sequence[str]] = None,
        logits: Optional[Literal["last", "all"]] = "last",
    ) -> Tuple[Optional[F32], Dict[str, F32]]: ...
    def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 0.9,
        seed: int = 0,
        fwd_hooks: Optional[Sequence[Tuple[str, HookFn]]] = None,
        add: Optional[Mapping[str, Union[F32, Sequence[float]]]] = None,
        steer: Optional[Mapping[str, Any]] = None,
    ) -> str: ...

class SAE:
    @staticmethod
    def load(path: PathLike) -> "SAE": ...
    def save(self, path: PathLike) -> None: ...
    def encode(self, x: F32) -> F32: ...
    def decode(self, codes: F32) -> F32: ...
    def state_dict(self) -> Dict[str, F32]: ...
    @property
    def d_in(self) -> int: ...
    @property
    def d_sae(self) -> int: ...
    @property
    def architecture(self) -> str: ...
    @property
    def k(self) -> Optional[int]: ...
    @property
    def hook_name(self) -> Optional[str]: ...
    @property
    def cfg(self) -> Dict[str, Any]: ...
    @property
    def training_summary(self) -> Optional[Dict[str, Any]]: ...

Arch = Literal["topk", "batchtopk", "relu", "relu-unit", "jumprelu", "gated"]

def train(
    acts: Union[F32, PathLike],
    *,
    out: Optional[PathLike] = None, resume: Optional[PathLike] = None,
    # the dictionary and the budget
    arch: Optional[Arch] = None, k: Optional[int] = None, expansion: Optional[int] = None,
    batch_rows: Optional[int] = None, tokens: Optional[int] = None,
    # the optimisation
    lr: Optional[float] = None, l1: Optional[float] = None, l0_coeff: Optional[float] = None,
    l1_warmup: Optional[int] = None, lr_warmup: Optional[int] = None,
    lr_decay: Optional[Literal["constant", "linear", "cosine"]] = None,
    max_grad_norm: Optional[float] = None, normalize: Optional[bool] = None,
    b_dec_init: Optional[Literal["geometric-median", "mean", "zeros"]] = None,
    dead_after: Optional[int] = None, decoder_init_norm: Optional[float] = None,
    non_finite: Optional[Literal["skip", "error"]] = None,
    seed: Optional[int] = None, threads: Optional[int] = None,
    checkpoint_every: Optional[int] = None, metrics_every: Optional[int] = None,
    # how the rows are read (arrays and .npy: holdout, shuffle; stores: shuffle_buffer)
    holdout: Optional[float] = None, shuffle: bool = True, shuffle_buffer: int = 262144,
    # recorded in the SAE's cfg.json
    hook: Optional[str] = None, model_name: Optional[str] = None, context_size: Optional[int] = None,
    progress: bool = False,
) -> SAE: ...
def harvest(
    model: Model,
    hook: Union[str, Sequence[str]],
    tokens: int = 2_000_000,
    out: Optional[PathLike] = None,
    *,
    # the corpus and its contexts
    data: Optional[Sequence[str]] = None, text_field: str = "text", ctx: int = 128, seed: int = 0,
    batch_contexts: int = 8,
    # which rows are kept
    keep_sinks: bool = False, max_norm_multiple: float = 10.0,
    # how they are kept
    shard_contexts: int = 256, dtype: Literal["float32", "bfloat16"] = "float32", shuffle_buffer: int = 262144,
    progress: bool = False,
) -> Union[Activations, Dict[str, Any]]: ...
def evaluate(
    sae: SAE,
    model: Model,
    *,
    tokens: int = 200_000, ce_tokens: int = 16_384,
    # the corpus and its contexts (without data: the held-out tail of harvest seed train_seed's order)
    data: Optional[Sequence[str]] = None, text_field: str = "text", ctx: Optional[int] = None, seed: int = 1,
    train_seed: int = 0, batch_contexts: int = 8,
    hook: Optional[str] = None, out: Optional[PathLike] = None, progress: bool = False,
) -> Dict[str, Any]: ...
def features(
    sae: SAE,
    model: Model,
    out: PathLike,
    *,
    tokens: int = 1_000_000, top: int = 20,
    # the corpus and its contexts
    data: Optional[Sequence[str]] = None, text_field: str = "text", ctx: int = 128, seed: int = 0,
    batch_contexts: int = 8, keep_sinks: bool = False,
    restart: bool = False, hook: Optional[str] = None, progress: bool = False,
) -> Dict[str, Any]: ...
def steer(
    model: Model,
    sae: SAE,
    prompt: str,
    feature: int,
    strength: float,
    *,
    mode: Literal["add", "clamp"] = "add",
    max_tokens: int = 32,
    seed: int = 0,
    temperature: float = 0.7,
    hook: Optional[str] = None,
) -> Dict[str, Any]: ...
