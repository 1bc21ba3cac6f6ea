"""Next-token sampling: greedy, temperature, top-k, top-p, and the decoding loop."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from typedlm.errors import ConfigError
from typedlm.sampling import sample_next


def test_zero_temperature_is_argmax() -> None:
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 1.0]])
    assert sample_next(logits, temperature=0).tolist() == [1, 0]


def test_top_k_one_is_argmax_at_any_temperature() -> None:
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0))
    out = sample_next(logits, temperature=5.0, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, logits.argmax(-1))


def test_top_k_only_draws_from_the_k_largest() -> None:
    logits = torch.arange(10.0).repeat(2000, 1)
    out = sample_next(logits, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(0))
    assert set(out.tolist()) == {7, 8, 9}


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4000, 1)
    out = sample_next(logits, top_p=0.75, generator=torch.Generator().manual_seed(0))
    assert set(out.tolist()) == {0, 1}  # 0.5 < 0.75 <= 0.8
    frac0 = (out == 0).float().mean().item()
    assert abs(frac0 - 0.5 / 0.8) < 0.03  # renormalised over the kept tokens
    tiny = sample_next(logits[:10], top_p=0.01, generator=torch.Generator().manual_seed(0))
    assert tiny.tolist() == [0] * 10  # the most likely token always stays


def test_temperature_sharpens() -> None:
    logits = torch.tensor([1.0, 0.0]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    hot = (sample_next(logits, temperature=2.0, generator=g) == 0).float().mean().item()
    cold = (sample_next(logits, temperature=0.25, generator=g) == 0).float().mean().item()
    assert cold > 0.95 > hot > 0.5


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p")]
)
def test_bad_settings_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        sample_next(torch.zeros(1, 3), **kwargs)
