"""Shape aliases: each is a jaxtyping dimension string, usable as a type parameter of `Layer[In, Out]`.

The same string annotates the forward (``Float[Tensor, "batch seq d_model"]``), types the layer for
mypy (``Layer[Embedded, Logits]``) and, resolved with a config, gives concrete sizes. Two shapes with the
same dims that mean different things carry a second literal, a tag (``Literal["batch seq vocab",
"logits"]``): mypy tells them apart, and so does ``>>`` when a model is built.
"""

import typing
from typing import Literal

TokenIds = Literal["batch seq"]
"""``(batch, seq)`` integer token ids."""
OneHot = Literal["batch seq vocab", "one-hot"]
"""``(batch, seq, vocab)`` float one-hot rows."""
Embedded = Literal["batch seq d_model"]
"""``(batch, seq, d_model)`` residual stream."""
Logits = Literal["batch seq vocab", "logits"]
"""``(batch, seq, vocab)`` unnormalised next-token scores."""

CONFIG_DIMS: tuple[str, ...] = ("vocab", "d_model", "heads", "head_dim", "ffn")
"""Dimensions bound to a `CausalConfig`: every call must use the config's size. A user's config adds its
own (its int fields, `typedlm.dims.config_dims`); a user's aliases are written like the ones above, with a
tag when their dims are another alias's (``Hidden = Literal["batch seq d_model", "hidden"]``)."""
FREE_DIMS: tuple[str, ...] = ("batch", "seq")
"""Dimensions bound per call; ``seq`` is at most the config's ``seq_len``."""


def literal_dims(shape_type: object) -> str | None:
    """The dimension string of a shape alias such as `Embedded`, or None if it is not one."""
    if typing.get_origin(shape_type) is Literal:
        args = typing.get_args(shape_type)
        if len(args) in (1, 2) and all(isinstance(arg, str) for arg in args):
            return str(args[0])
    return None


def literal_tag(shape_type: object) -> str | None:
    """The tag of a shape alias (``"logits"`` for `Logits`), or None if it has none."""
    if literal_dims(shape_type) is not None and len(args := typing.get_args(shape_type)) == 2:
        return str(args[1])
    return None
