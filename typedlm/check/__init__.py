"""The analysis-time checker (``python -m typedlm check``): shape bugs inside layers and training code,
found before the run with no data and no real compute.

It imports the user's modules, builds every layer at a probe config, traces each forward on the meta
device with two free sizes, checks model invariants (causality, batch independence, cached decoding)
on tiny tensors, and calls `typedlm.checked` functions with probe tensors. See `typedlm.check.run`.
"""

from typedlm.check.report import Problem, Report
from typedlm.check.run import check, check_modules

__all__ = ["Problem", "Report", "check", "check_modules"]
