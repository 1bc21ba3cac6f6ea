"""The algorithm card: read from the model, every parameter listed once, the total equal to param_count()."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from examples import card as card_example
from typedlm.card import algorithm_card, algorithm_card_full
from typedlm.layer import Layer
from typedlm.shapes import Embedded


def _total(card: str) -> int:
    match = re.search(r"total: ([\d,]+) parameters", card)
    assert match, card
    return int(match.group(1).replace(",", ""))


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


SMALL: dict[str, Any] = dict(batch=2, seq_len=16, vocab=40, heads=2, head_dim=8, ffn_hidden=48, layers=3)
CONFIGS = {
    "tied": tl.CausalConfig(**SMALL),
    "untied": tl.CausalConfig(**SMALL, tie_embeddings=False),
    "no-bias": tl.CausalConfig(**SMALL, bias=False),
    "untied-no-bias-dropout": tl.CausalConfig(**SMALL, tie_embeddings=False, bias=False, dropout=0.1),
    "one-layer": tl.CausalConfig(**{**SMALL, "layers": 1}),
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("render", [algorithm_card, algorithm_card_full])
def test_total_equals_param_count(name: str, render: object) -> None:
    model = tl.models.GPT2(CONFIGS[name])
    assert callable(render)
    assert _total(render(model)) == model.param_count()


def test_gpt2_small_total_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = tl.models.GPT2(tl.CausalConfig.gpt2_small())
    card = algorithm_card(model)
    assert _total(card) == model.param_count() == 124_439_808
    assert "L      = 12" in card and "d_e    = 768" in card and "W_qkv_l   ∈ ℝ^{3d_e×d_e}" in card


def test_tied_and_untied_unembedding() -> None:
    tied = algorithm_card(tl.models.GPT2(CONFIGS["tied"]))
    untied = algorithm_card(tl.models.GPT2(CONFIGS["untied"]))
    assert "W_u = W_e" in tied and "W_u       ∈" not in tied
    assert "W_u       ∈ ℝ^{N_V×d_e}" in untied and "= ℝ^{40×16}" in untied


def test_biases_follow_the_config() -> None:
    card = algorithm_card(tl.models.GPT2(CONFIGS["no-bias"]))
    assert "b_qkv_l" not in card and "β¹_l" not in card and "layer_norm(X[t, :] | γ¹_l)" in card
    assert "b_qkv_l" in algorithm_card(tl.models.GPT2(CONFIGS["tied"]))


def test_steps_follow_the_layers() -> None:
    card = algorithm_card(tl.models.GPT2(CONFIGS["tied"]))
    steps = card.split("Steps:")[1]
    order = ["W_e[x[t], :]", "W_p[t, :]", "for l = 1, 2, …, L do", "γ¹_l", "MHAttention", "γ²_l", "GELU", "end",
             "layer_norm(X[t, :] | γ, β)", "X W_uᵀ", "softmax(Z)"]  # fmt: skip
    positions = [steps.index(text) for text in order]
    assert positions == sorted(positions)
    assert "L      = 3" in card and "TransformerBlock l−1 of 3" in card


def test_full_card_inlines_attention_layer_norm_and_mlp() -> None:
    card = algorithm_card_full(tl.models.GPT2(CONFIGS["untied-no-bias-dropout"]))
    for text in ("S ← Q^h K^hᵀ / √d_h", "softmax(S) V^h", "√(v + ε)", "U ← GELU(X̃ W_mlp1_lᵀ)", "p_drop = 0.1"):
        assert text in card, text
    assert "MHAttention(" not in card


def test_one_hot_model_and_inputs() -> None:
    model = tl.models.causal_transformer_one_hot(CONFIGS["tied"])
    card = algorithm_card(model)
    assert "one-hot row" in card and "X ← x W_e" in card
    assert _total(card) == _n_params(model)


class Gate(Layer[Embedded, Embedded]):
    """A user layer the card has no page for."""

    def __init__(self, cfg: tl.CausalConfig) -> None:
        super().__init__(cfg)
        self.gate = torch.nn.Parameter(torch.ones(cfg.d_model))

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return x * self.gate


def test_unknown_layer_is_shown_by_its_type_and_parameters() -> None:
    cfg = CONFIGS["tied"]
    embed = tl.nn.TokenEmbedding(cfg)
    model = embed >> Gate(cfg) >> tl.models.causal_transformer_from_embeddings(cfg, tied_to=embed)
    card = algorithm_card(model)
    assert "X ← Gate(X)" in card and '"batch seq d_model" → "batch seq d_model"' in card
    assert "Gate.gate ∈ ℝ^{16}" in card
    assert _total(card) == _n_params(model)


@pytest.mark.parametrize("argv", [["--preset", "tiny"], ["--preset", "cpu", "--untied", "--full", "--vocab", "65"],
                                  ["--preset", "gpt2-xl"]])  # fmt: skip
def test_example_prints_a_total_equal_to_param_count(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert card_example.main(argv) == 0
    out = capsys.readouterr().out
    count = re.search(r"param_count\(\) = ([\d,]+)", out)
    assert count and _total(out) == int(count.group(1).replace(",", ""))


def test_blocks_of_their_own_widths_are_described_in_groups_of_equal_consecutive_blocks() -> None:
    heads, ffn = [2, 2, 4, 1], [32, 32, 64, 48]
    model = tl.models.GPT2(tl.CausalConfig(**{**SMALL, "layers": 4}), block_heads=heads, block_ffn=ffn)
    card, full = algorithm_card(model), algorithm_card_full(model)
    assert _total(card) == _total(full) == _n_params(model)
    for first, last, h, f in (("1", "2", 2, 32), ("3", None, 4, 64), ("4", None, 1, 48)):
        blocks = f"{{{first}, {last}}}" if last else f"{{{first}}}"
        widths = f"H = {h}, d_h = {16 // h}, d_mlp = {f}"
        assert f"l ∈ {blocks}:" in card and widths in card.split("Parameters:")[0]  # hyperparameters
        assert f"For l ∈ {blocks} (TransformerBlock l−1 of 4; {widths}):" in card
        assert re.search(rf"for l ∈ {re.escape(blocks)} do +▷ {widths}\n", card)
        assert f"= ℝ^{{{f}×16}}    MLP input projection" in card
    assert "\n  H      =" not in card and "d_mlp  =" not in card  # no one width claimed for every block


def test_blocks_all_of_one_width_other_than_the_configs_show_that_width() -> None:
    model = tl.models.GPT2(tl.CausalConfig(**SMALL), block_heads=[4] * 3, block_ffn=[20] * 3)
    card = algorithm_card(model)
    assert "H      = 4 " in card and "d_h    = 4 " in card and "d_mlp  = 20 " in card
    assert "for l = 1, 2, …, L do" in card and _total(card) == _n_params(model)
