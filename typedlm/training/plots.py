"""The loss-curve PNG (``loss.png`` in the run's output folder), drawn with matplotlib if installed.

matplotlib is the optional extra ``typedlm[plots]``; without it `save_loss_curve` explains how to get it
instead of failing the run.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from typedlm.atomic import write_atomic
from typedlm.training.trainlog import TrainLog

MISSING_MATPLOTLIB = (
    "loss curve not drawn: matplotlib is not installed (pip install 'typedlm[plots]'); "
    "the losses are in the TrainLog JSON (--log)."
)


def save_loss_curve(log: TrainLog, path: str | Path) -> str | None:
    """Plot training loss per step and validation loss per evaluation to ``path`` (PNG, atomically).

    Returns None when written, or a one-line reason when not (matplotlib missing, nothing to plot).
    """
    if importlib.util.find_spec("matplotlib") is None:
        return MISSING_MATPLOTLIB
    finite = [s for s in log.steps if math.isfinite(s.loss)]
    if not finite:
        return "loss curve not drawn: no finite loss was recorded"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([s.step + 1 for s in finite], [s.loss for s in finite], lw=0.8, alpha=0.7, label="train")
    if log.evals:
        ax.plot([e.step for e in log.evals], [e.val_loss for e in log.evals], "o-", lw=1.5, label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    cfg = log.config
    ax.set_title(f"{cfg.get('layers')} layers × d_model {cfg.get('heads', 0) * cfg.get('head_dim', 0)}, {log.status}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return None
