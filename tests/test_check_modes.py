"""Checking modes: full checks every layer, boundary only models and losses, off wraps nothing."""

import os
import subprocess
import sys

import pytest
import torch

import typedlm as tl
from typedlm import checks
from typedlm.models import GPT2
from typedlm.nn import TransformerBlock


def _is_wrapped(cls: type) -> bool:
    return bool(cls.__dict__["forward"].__code__.co_name == "checked_forward")


def test_modes_swap_forward_methods() -> None:
    assert checks.current_mode() == "full"
    assert _is_wrapped(TransformerBlock) and _is_wrapped(GPT2) and _is_wrapped(tl.Chain)
    with checks.mode("boundary"):
        assert not _is_wrapped(TransformerBlock)
        assert _is_wrapped(GPT2) and _is_wrapped(tl.Chain)
        with checks.mode("off"):
            assert not _is_wrapped(TransformerBlock) and not _is_wrapped(GPT2) and not _is_wrapped(tl.Chain)
        assert _is_wrapped(GPT2)
    assert _is_wrapped(TransformerBlock)


def test_boundary_checks_the_model_entry_but_not_inner_layers(cfg: tl.CausalConfig) -> None:
    block = tl.nn.TransformerBlock(cfg, index=0)
    model = tl.models.GPT2(cfg)
    with checks.mode("boundary"):
        with pytest.raises(tl.ShapeError, match="GPT2: ids"):
            model(torch.zeros(1, 2))
        with pytest.raises(RuntimeError) as caught:  # an inner layer is not checked: torch reports it
            block(torch.zeros(1, 2, 48))
        assert not isinstance(caught.value, tl.ShapeError)
        with pytest.raises(tl.ShapeError, match="cross_entropy_indexed"):
            tl.losses.cross_entropy_indexed(torch.zeros(1, 2, 5), torch.zeros(1, 3, dtype=torch.long))


def test_off_skips_loss_checks_too() -> None:
    with checks.mode("off"), pytest.raises(ValueError) as caught:
        tl.losses.cross_entropy_indexed(torch.zeros(1, 2, 5), torch.zeros(1, 3, dtype=torch.long))
    assert not isinstance(caught.value, tl.ShapeError)


def test_set_mode_refuses_unknown_modes() -> None:
    with pytest.raises(tl.ConfigError, match="must be one of full, boundary, off"):
        checks.set_mode("some")  # type: ignore[arg-type]  # the wrong value is the point
    assert checks.current_mode() == "full"


def _run(code: str, mode: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"TYPEDLM_CHECKS": mode}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_env_var_off_wraps_nothing_at_import() -> None:
    code = (
        "import typedlm as tl\n"
        "from typedlm import losses, nn\n"
        "assert tl.checks.current_mode() == 'off'\n"
        "assert nn.TransformerBlock.__dict__['forward'].__code__.co_name == 'forward'\n"
        "assert losses.cross_entropy_indexed.__code__.co_name == 'cross_entropy_indexed'\n"
        "print('ok')\n"
    )
    result = _run(code, "off")
    assert result.stdout.strip() == "ok", result.stderr


def test_env_var_with_a_bad_value_is_a_config_error_when_a_layer_is_built() -> None:
    code = (
        "import typedlm as tl\n"
        "cfg = tl.CausalConfig(batch=1, seq_len=4, vocab=8, heads=1, head_dim=4, ffn_hidden=8, layers=1)\n"
        "try:\n"
        "    tl.models.GPT2(cfg)\n"
        "except tl.ConfigError as e:\n"
        "    print('refused:', e)\n"
    )
    result = _run(code, "sometimes")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.strip() == "refused: TYPEDLM_CHECKS='sometimes': must be one of full, boundary, off"
