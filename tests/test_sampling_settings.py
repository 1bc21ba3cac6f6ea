"""`typedlm.Sampling`: one settings object for `generate`/`stream`, checked field by field when made."""

import dataclasses
import math
from typing import Any

import pytest
import torch
from jaxtyping import Float, Int
from torch import Tensor

import typedlm as tl
from typedlm.generate import generate_tokens
from typedlm.sampling import sample_next
from typedlm.shapes import Logits, TokenIds

BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"temperature": -1.0}, r"temperature=-1.0: must be >= 0"),
    ({"temperature": math.nan}, r"temperature=nan: must be a finite number"),
    ({"temperature": True}, r"temperature=True"),
    ({"temperature": "hot"}, r"temperature='hot'"),
    ({"top_k": 0}, r"top_k=0: must be an int >= 1"),
    ({"top_k": 2.5}, r"top_k=2.5"),
    ({"top_k": True}, r"top_k=True"),
    ({"top_p": 0.0}, r"top_p=0.0: must be a number in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p=1.5"),
    ({"top_p": math.nan}, r"top_p=nan"),
    ({"greedy": "yes"}, r"greedy='yes': must be True or False"),
    ({"stop_at_eot": 1}, r"stop_at_eot=1: must be True or False"),
    ({"seed": -1}, r"seed=-1: must be an int >= 0"),
    ({"seed": 1.5}, r"seed=1.5"),
    ({"seed": True}, r"seed=True"),
    ({"eot_token": -2}, r"eot_token=-2: must be a token id >= 0, 'auto' or None"),
    ({"eot_token": "eos"}, r"eot_token='eos'"),
    ({"eot_token": False}, r"eot_token=False"),
]


@pytest.mark.parametrize(
    ("fields", "message"), BAD_SETTINGS, ids=[next(iter(f)) + "=" + repr(f) for f, _ in BAD_SETTINGS]
)
def test_bad_settings_are_refused_when_made_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(tl.ConfigError, match=f"^{message}") as raised:
        tl.Sampling(**fields)
    assert "\n" not in str(raised.value)


def test_settings_are_frozen_and_replace_checks_again() -> None:
    settings = tl.Sampling(top_k=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.top_k = 0  # type: ignore[misc]  # the mistake under test
    with pytest.raises(tl.ConfigError, match="top_k=0"):
        dataclasses.replace(settings, top_k=0)


def test_an_end_of_text_id_outside_the_vocabulary_is_refused_before_decoding(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg)
    with pytest.raises(tl.ConfigError, match=r"eot_token=256: must be an id in 0..255 \(cfg.vocab = 256\)"):
        model.stream(torch.zeros(1, 2, dtype=torch.long), 3, tl.Sampling(eot_token=256))  # no next() needed
    model.stream(torch.zeros(1, 2, dtype=torch.long), 3, tl.Sampling(eot_token=256, stop_at_eot=False))


class FixedLogits(tl.Layer[TokenIds, Logits]):
    """A model whose next-token logits are the same at every position, so its samples are ``sample_next``'s."""

    def __init__(self, cfg: tl.CausalConfig, logits: Tensor) -> None:
        super().__init__(cfg)
        self.logits = torch.nn.Parameter(logits)

    def forward(self, ids: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
        return self.logits.expand(ids.shape[0], ids.shape[1], -1)


SETTINGS = [
    tl.Sampling(seed=3),
    tl.Sampling(temperature=0.5, seed=4),
    tl.Sampling(top_k=3, seed=5),
    tl.Sampling(top_p=0.6, seed=6),
    tl.Sampling(temperature=2.0, top_k=10, top_p=0.9, seed=7),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "temperature", "top_k", "top_p", "all"])
def test_each_setting_reaches_the_sampler(settings: tl.Sampling, cfg: tl.CausalConfig) -> None:
    """Decoding draws what ``sample_next`` draws with the same settings from a generator seeded alike."""
    logits = torch.randn(cfg.vocab, generator=torch.Generator().manual_seed(0)) * 0.5
    model = FixedLogits(cfg, logits)
    out = generate_tokens(model, torch.zeros(1, 1, dtype=torch.long), 30, settings)
    generator = torch.Generator().manual_seed(settings.seed or 0)
    expected = [
        int(sample_next(logits[None], temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p,
                        generator=generator))
        for _ in range(30)
    ]  # fmt: skip
    assert out[0, 1:].tolist() == expected
    assert len(set(expected)) > 1


def test_greedy_takes_the_argmax_whatever_the_temperature(cfg: tl.CausalConfig) -> None:
    logits = torch.randn(cfg.vocab, generator=torch.Generator().manual_seed(1))
    out = generate_tokens(
        FixedLogits(cfg, logits),
        torch.zeros(2, 1, dtype=torch.long),
        4,
        tl.Sampling(greedy=True, temperature=5.0, top_k=50),
    )
    assert out[:, 1:].eq(int(logits.argmax())).all()
