"""Runtime shape checks: the mode switch, call signatures, and the wrappers that enforce them.

Modes (``TYPEDLM_CHECKS`` at import — a malformed one is refused when a layer is built, see
`check_mode_variable` —, `set_mode` or ``with checks.mode(...)`` later):

- ``full`` (default): every layer's forward, every loss and public function is checked.
- ``boundary``: model entry/exit (classes declared ``boundary=True``) and losses only.
- ``off``: layer classes keep their own ``forward``; nothing is wrapped.

A check depends only on shapes, dtypes, non-tensor argument values and the config, so each layer
remembers the call signatures that passed and skips the check for them: the steady-state cost is one
tuple build and one set lookup per call. The slow path runs typedlm's dimension binding (config-scoped
dims against the config) and then beartype + jaxtyping on every annotated argument.

One concept per module: `modes` (the switch), `signature` (what a callable takes and gives, and the
checks of a call), `call_keys` (the memory of passed calls), `dynamo` (frames run outside TorchDynamo),
`compile_errors` (a ShapeError under the user's ``torch.compile``), `traced_shape_error` (the ShapeError
that leaves a compiled function of the user's; loaded with TorchDynamo), `wrapping` (the checked call, on
layer classes) and `functions` (`checked`).
"""

from typedlm.checks.compile_errors import register_owner
from typedlm.checks.functions import FunctionChecks, checked
from typedlm.checks.modes import MODES, Mode, check_mode_variable, current_mode, mode, set_mode
from typedlm.checks.signature import CallSignature, Param, check_arguments, check_result
from typedlm.checks.wrapping import CheckTarget, install_layer_checks

__all__ = [
    "MODES",
    "CallSignature",
    "CheckTarget",
    "FunctionChecks",
    "Mode",
    "Param",
    "check_arguments",
    "check_mode_variable",
    "check_result",
    "checked",
    "current_mode",
    "install_layer_checks",
    "mode",
    "register_owner",
    "set_mode",
]
