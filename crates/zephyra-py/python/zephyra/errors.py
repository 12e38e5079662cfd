"""The exceptions Zephyra raises.

Every error of the Rust crates is a :class:`ZephyraError`. Its class says which crate failed
(:class:`ModelError`, :class:`SaeError`, :class:`DataError`, :class:`AnalysisError`); a path that could not
be read or written is a :class:`ZephyraOSError` (also an :class:`OSError`), a wrong argument a
:class:`ZephyraValueError` (also a :class:`ValueError`). Wrong numpy arrays raise the built-in
:class:`TypeError` (dtype) or :class:`ValueError` (shape, layout).
"""


class ZephyraError(Exception):
    """Base class of the errors raised by the Zephyra crates."""


class ModelError(ZephyraError):
    """The model runtime failed (GGUF reading, tokenizer, forward pass)."""


class SaeError(ZephyraError):
    """An SAE could not be built, trained, saved or loaded."""


class DataError(ZephyraError):
    """A corpus, an activation store or a harvest failed."""


class AnalysisError(ZephyraError):
    """Evaluation, feature statistics or steering failed."""


class ZephyraOSError(ZephyraError, OSError):
    """A file or directory could not be read or written."""


class ZephyraValueError(ZephyraError, ValueError):
    """An argument was wrong (a hook that does not exist, an option out of range, …)."""


__all__ = [
    "ZephyraError",
    "ModelError",
    "SaeError",
    "DataError",
    "AnalysisError",
    "ZephyraOSError",
    "ZephyraValueError",
]
