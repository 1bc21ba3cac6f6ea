"""CausalConfig: validation names the field and rule; derived shapes; presets; dict round trip."""

import dataclasses
from typing import Any

import pytest

import typedlm as tl

SMALL: dict[str, Any] = dict(batch=8, seq_len=64, vocab=256, heads=4, head_dim=16, ffn_hidden=256, layers=2)


def test_derived_shapes() -> None:
    cfg = tl.CausalConfig(**SMALL, seed_stride=1)
    assert cfg.d_model == 64
    assert cfg.one_hot_shape == (8, 64, 256)
    assert cfg.embedded_shape == (8, 64, 64)


def test_frozen() -> None:
    cfg = tl.CausalConfig(**SMALL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.heads = 8  # type: ignore[misc]  # assigning to a frozen field is the point of the test


@pytest.mark.parametrize("field", ["batch", "seq_len", "vocab", "heads", "head_dim", "ffn_hidden", "layers"])
@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "4", None])
def test_every_dimension_is_an_int_at_least_one(field: str, bad: object) -> None:
    with pytest.raises(tl.ConfigError, match=rf"CausalConfig\.{field}=.*must be"):
        tl.CausalConfig(**(SMALL | {field: bad}))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.1", True])
def test_dropout_in_unit_interval(bad: object) -> None:
    with pytest.raises(tl.ConfigError, match=r"CausalConfig\.dropout="):
        tl.CausalConfig(**SMALL, dropout=bad)  # type: ignore[arg-type]  # wrong types are what is tested


@pytest.mark.parametrize(("field", "bad"), [("tie_embeddings", 1), ("bias", "yes"), ("layer_norm_eps", 0.0)])
def test_other_fields_validated(field: str, bad: object) -> None:
    with pytest.raises(tl.ConfigError, match=rf"CausalConfig\.{field}="):
        tl.CausalConfig(**(SMALL | {field: bad}))


def test_dict_round_trip_and_errors() -> None:
    cfg = tl.CausalConfig(**SMALL, dropout=0.1, tie_embeddings=False, bias=False, layer_norm_eps=1e-6)
    assert tl.CausalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(tl.ConfigError, match=r"unknown field.*d_model"):
        tl.CausalConfig.from_dict(cfg.to_dict() | {"d_model": 64})
    missing = cfg.to_dict()
    del missing["heads"]
    with pytest.raises(tl.ConfigError, match=r"missing field.*heads"):
        tl.CausalConfig.from_dict(missing)


def test_replace_validates() -> None:
    cfg = tl.CausalConfig(**SMALL)
    assert cfg.replace(heads=8).d_model == 128
    with pytest.raises(tl.ConfigError, match="heads"):
        cfg.replace(heads=0)


@pytest.mark.parametrize(
    ("preset", "layers", "d_model"),
    [
        (tl.CausalConfig.gpt2_small, 12, 768),
        (tl.CausalConfig.gpt2_medium, 24, 1024),
        (tl.CausalConfig.gpt2_large, 36, 1280),
        (tl.CausalConfig.gpt2_xl, 48, 1600),
    ],
)
def test_presets(preset: Any, layers: int, d_model: int) -> None:
    cfg = preset()
    assert (cfg.layers, cfg.d_model, cfg.ffn_hidden, cfg.vocab, cfg.seq_len) == (
        layers,
        d_model,
        4 * d_model,
        50257,
        1024,
    )
    assert preset(batch=2).batch == 2


def test_gpt2_small_parameter_count() -> None:
    assert tl.models.GPT2(tl.CausalConfig.gpt2_small()).param_count() == 124_439_808
