"""Construction-time checks: shapes must meet, config-scoped dims must agree, classes must match their forward."""

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.layer import Layer
from typedlm.shapes import Embedded, Logits


def test_mismatched_widths_are_refused_where_composed(cfg: tl.CausalConfig) -> None:
    cfg48 = cfg.replace(heads=3)
    with pytest.raises(tl.ShapeError) as caught:
        tl.nn.TokenEmbedding(cfg) >> tl.nn.TransformerBlock(cfg48, index=0)
    message = str(caught.value)
    assert "d_model differs" in message and "d_model = 64" in message and "d_model = 48" in message


def test_a_head_whose_vocab_differs_from_the_embedding_is_refused(cfg: tl.CausalConfig) -> None:
    body = tl.nn.PositionalEmbedding(cfg) >> tl.nn.TransformerBlock(cfg, index=0)
    with pytest.raises(tl.ShapeError, match=r"vocab differs .* vocab = 256 .* vocab = 300"):
        tl.nn.TokenEmbedding(cfg) >> body >> tl.nn.LMHead(cfg.replace(vocab=300))


def test_tying_a_head_to_a_different_vocab_is_refused(cfg: tl.CausalConfig) -> None:
    with pytest.raises(tl.ShapeError, match="vocab differs"):
        tl.nn.LMHead(cfg.replace(vocab=300), tied_to=tl.nn.TokenEmbedding(cfg))


def test_wrong_order_is_refused_even_without_mypy(cfg: tl.CausalConfig) -> None:
    head: Any = tl.nn.LMHead(cfg)
    with pytest.raises(tl.ShapeError, match=r"LMHead gives 'batch seq vocab' but TransformerBlock\(index=0\) takes"):
        head >> tl.nn.TransformerBlock(cfg, index=0)


def test_stack_accepts_only_same_shape_layers(cfg: tl.CausalConfig) -> None:
    mixed: list[Any] = [tl.nn.TransformerBlock(cfg, index=0), tl.nn.LMHead(cfg)]
    with pytest.raises(tl.ShapeError, match=r"only Layer\[S, S\] may be stacked"):
        tl.nn.Stack(mixed)
    with pytest.raises(tl.ConfigError, match="at least one layer"):
        tl.nn.Stack([])


def test_chains_flatten_and_name_their_parts(cfg: tl.CausalConfig) -> None:
    chain = tl.nn.TokenEmbedding(cfg) >> tl.nn.PositionalEmbedding(cfg) >> tl.nn.LayerNorm(cfg)
    assert isinstance(chain, tl.Chain) and len(chain) == 3
    assert chain.describe() == "TokenEmbedding >> PositionalEmbedding >> LayerNorm"
    out = chain(torch.randint(0, cfg.vocab, (2, 5)))
    assert out.shape == (2, 5, cfg.d_model)


def test_a_module_level_bug_fails_at_import(tmp_path: Path, cfg: tl.CausalConfig) -> None:
    module = tmp_path / "buggy_model.py"
    module.write_text(
        "import typedlm as tl\n"
        "cfg = tl.CausalConfig(batch=2, seq_len=32, vocab=256, heads=4, head_dim=16, ffn_hidden=128, layers=2)\n"
        "model = tl.nn.TokenEmbedding(cfg) >> tl.nn.TransformerBlock(cfg.replace(head_dim=12), index=0)\n"
    )
    spec = importlib.util.spec_from_file_location("buggy_model", module)
    assert spec is not None and spec.loader is not None
    with pytest.raises(tl.ShapeError, match="d_model differs"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    sys.modules.pop("buggy_model", None)


def test_a_class_whose_forward_disagrees_with_its_declaration_is_refused() -> None:
    with pytest.raises(tl.ShapeError, match=r"BadHead\.forward annotates its output as \"batch seq d_model\""):

        class BadHead(Layer[Embedded, Logits]):
            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
                return x


def test_a_class_without_shape_annotations_is_refused() -> None:
    with pytest.raises(tl.ShapeError, match=r"must annotate its first argument and its return value"):

        class Unannotated(Layer[Embedded, Embedded]):
            def forward(self, x: Tensor) -> Tensor:
                return x


def test_layers_require_a_config() -> None:
    with pytest.raises(tl.ConfigError, match=r"LayerNorm\(cfg\): cfg must be a CausalConfig, got dict"):
        tl.nn.LayerNorm({"d_model": 64})  # type: ignore[arg-type]  # the wrong type is the point


def test_logits_are_not_one_hot_rows_though_their_dims_agree(cfg: tl.CausalConfig) -> None:
    """`Logits` and `OneHot` are both "batch seq vocab"; their tags tell them apart when a model is built
    (and to mypy: tests/typing_cases/reject_logits_as_one_hot.py)."""
    with pytest.raises(tl.ShapeError, match=r"LMHead gives logits 'batch seq vocab' but OneHotEmbedding takes one-hot"):
        tl.nn.LMHead(cfg) >> tl.nn.OneHotEmbedding(cfg)  # type: ignore[operator]  # mypy refuses it too: the point
    model = tl.nn.OneHotEmbedding(cfg) >> tl.nn.LayerNorm(cfg) >> tl.nn.LMHead(cfg)  # one-hot rows in: fine
    assert model(torch.eye(cfg.vocab)[None, :3]).shape == (1, 3, cfg.vocab)
