"""The errors typedlm raises for user mistakes; every one is a `TypedLMError`.

Each keeps a built-in base too (``TypeError``, ``ValueError``, ``RuntimeError``), so code that catches
those goes on working; ``except typedlm.errors.TypedLMError`` catches everything typedlm refuses.
"""


class TypedLMError(Exception):
    """The root of typedlm's own errors: its message names the file, flag, field or dimension at fault."""


class ShapeError(TypedLMError, TypeError):
    """A tensor's shape or dtype disagrees with what a layer, loss or composition declares.

    The message names the layer or function, the argument, the dimension, the expected size and where
    that size comes from (e.g. ``cfg.d_model=64``), and the actual shape.
    """


class ConfigError(TypedLMError, ValueError):
    """A configuration value breaks a rule; the message names the field, the value and the rule."""


class DataFileError(TypedLMError, ValueError):
    """A data file (vocab.json, merges.txt, a training log) cannot be used; the message starts with its
    path, and the line where one is known (``path:line: ...``)."""


class NonFiniteError(TypedLMError, FloatingPointError):
    """A tensor that must be finite holds NaN or infinity (e.g. the logits a token is sampled from);
    the message names the tensor and where the first bad value is."""


def error_reason(error: BaseException) -> str:
    """``error``'s message on one line (white space runs folded to one space), or its type's name if empty."""
    return " ".join(str(error).split()) or type(error).__name__
