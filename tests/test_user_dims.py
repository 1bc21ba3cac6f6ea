"""Users' own dims: config-scoped (a CausalConfig subclass or any frozen dataclass), layer-local, per call
(stateless layers), unknown names refused when the class is created, and `typedlm check` on user configs."""

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.check import check
from typedlm.dims import DimEnv
from typedlm.layer import Layer, Stack
from typedlm.shapes import Embedded

CFG = tl.CausalConfig(batch=2, seq_len=16, vocab=32, heads=2, head_dim=8, ffn_hidden=64, layers=2)


@dataclass(frozen=True)
class GQAConfig(tl.CausalConfig):
    """A CausalConfig subclass: ``kv_heads`` becomes a checked dim."""

    kv_heads: int = 1


@dataclass(frozen=True)
class MixerConfig:
    """Not a CausalConfig: ``width`` and ``rank`` are dims, ``seq_len`` bounds seq, ``batch`` stays free."""

    seq_len: int
    width: int
    rank: int
    batch: int = 4
    scale: float = 1.0


Wide = Literal["batch seq width"]


class KVReadout(Layer[Embedded, Embedded]):
    """Takes keys of ``kv_heads`` heads beside its input."""

    def __init__(self, cfg: GQAConfig) -> None:
        super().__init__(cfg)

    def forward(
        self, x: Float[Tensor, "batch seq d_model"], keys: Float[Tensor, "batch kv_heads seq head_dim"]
    ) -> Float[Tensor, "batch seq d_model"]:
        return x + keys.mean(dim=1).repeat(1, 1, x.shape[-1] // keys.shape[-1])


class LowRank(Layer[Wide, Wide]):
    """``width → rank → width``, from a plain frozen dataclass config."""

    def __init__(self, cfg: MixerConfig) -> None:
        super().__init__(cfg)
        self.down = torch.nn.Linear(cfg.width, cfg.rank)
        self.up = torch.nn.Linear(cfg.rank, cfg.width)

    def forward(self, x: Float[Tensor, "batch seq width"]) -> Float[Tensor, "batch seq width"]:
        out: Tensor = self.up(self.down(x))
        return out


# --- 1. config-scoped user dims ----------------------------------------------------------------------


def test_the_int_fields_a_causal_config_subclass_adds_are_checked_dims() -> None:
    cfg = GQAConfig(batch=2, seq_len=16, vocab=32, heads=4, head_dim=4, ffn_hidden=64, layers=2, kv_heads=2)
    layer = KVReadout(cfg)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(layer(x, torch.zeros(3, 2, 5, 4)), x)
    with pytest.raises(tl.ShapeError, match=r"keys expected .* with kv_heads = 2 \(cfg\.kv_heads\), got kv_heads = 4"):
        layer(x, torch.zeros(3, 4, 5, 4))


def test_a_causal_config_keeps_its_dims_and_batch_layers_seed_stride_are_not_dims() -> None:
    assert set(DimEnv.from_config(CFG).sizes) == {"vocab", "d_model", "heads", "head_dim", "ffn"}
    gqa = GQAConfig(batch=2, seq_len=16, vocab=32, heads=4, head_dim=4, ffn_hidden=64, layers=2, kv_heads=2)
    env = DimEnv.from_config(gqa)
    assert set(env.sizes) == {"vocab", "d_model", "heads", "head_dim", "ffn", "kv_heads"}
    assert (env.sizes["kv_heads"].size, env.sizes["kv_heads"].source) == (2, "cfg.kv_heads")
    assert env.max_seq is not None and env.max_seq.size == 16


def test_a_plain_frozen_dataclass_configures_a_layer_with_its_int_fields_as_dims() -> None:
    layer = LowRank(MixerConfig(seq_len=8, width=6, rank=3))
    assert set(layer.dim_env.sizes) == {"width", "rank"}
    x = torch.randn(5, 8, 6)  # batch 5, though the config says 4: batch is free
    torch.testing.assert_close(layer(x), layer.up(layer.down(x)))
    with pytest.raises(tl.ShapeError, match=r"width = 6 \(cfg\.width\), got width = 7"):
        layer(torch.randn(5, 8, 7))
    with pytest.raises(tl.ShapeError, match=r"seq = 9 exceeds cfg\.seq_len = 8"):
        layer(torch.randn(5, 9, 6))


def test_user_config_dims_must_agree_across_composition() -> None:
    narrow, wide = LowRank(MixerConfig(seq_len=8, width=6, rank=3)), LowRank(MixerConfig(seq_len=8, width=5, rank=3))
    with pytest.raises(tl.ShapeError, match=r"width differs — LowRank has width = 6 \(cfg\.width\)"):
        narrow >> wide


def test_a_config_must_be_a_frozen_dataclass_of_the_annotated_type() -> None:
    @dataclass
    class Mutable:
        width: int

    class Anything(Layer[Embedded, Embedded]):
        def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
            return x

    with pytest.raises(tl.ConfigError, match=r"Anything\(cfg\): cfg must be a CausalConfig, a frozen dataclass"):
        Anything(Mutable(3))  # a dataclass to mypy; not frozen
    with pytest.raises(tl.ConfigError, match=r"LowRank\(cfg\): cfg must be a MixerConfig, got CausalConfig"):
        LowRank(CFG)  # type: ignore[arg-type]  # the point: refused at runtime too


Hidden = Literal["batch seq d_model", "hidden"]


def test_a_users_tagged_alias_is_not_embedded_when_composed() -> None:
    class Encode(Layer[Embedded, Hidden]):
        def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
            return x

    class Decode(Layer[Hidden, Embedded]):
        def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
            return x

    x = torch.randn(1, 2, CFG.d_model)
    torch.testing.assert_close((Encode(CFG) >> Decode(CFG))(x), x)
    with pytest.raises(tl.ShapeError, match=r"Encode gives hidden .* but LayerNorm takes untagged .*another meaning"):
        Encode(CFG) >> tl.nn.LayerNorm(CFG)  # type: ignore[operator]  # the point: refused at runtime too
    with pytest.raises(tl.ShapeError, match=r"LayerNorm gives untagged .* but Decode takes hidden"):
        tl.nn.LayerNorm(CFG) >> Decode(CFG)  # type: ignore[operator]  # the point: refused at runtime too


# --- 2. layer-local dims -------------------------------------------------------------------------------


def _reference_block(block: tl.nn.TransformerBlock, x: Tensor, heads: int) -> Tensor:
    """A pre-LN GPT-2 block written out in plain PyTorch from the block's weights, with ``heads`` heads."""
    batch, seq, width = x.shape
    eps = CFG.layer_norm_eps

    def linear(t: Tensor, layer: torch.nn.Linear) -> Tensor:
        return t @ layer.weight.T + (layer.bias if layer.bias is not None else 0.0)

    h = F.layer_norm(x, (width,), block.ln_1.weight, block.ln_1.bias, eps)
    q, k, v = (
        t.view(batch, seq, heads, width // heads).transpose(1, 2) for t in linear(h, block.attn.qkv).chunk(3, -1)
    )
    scores = (q @ k.transpose(-2, -1) / math.sqrt(width // heads)).masked_fill(
        torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf")
    )
    x = x + linear((scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, width), block.attn.proj)
    h = linear(F.layer_norm(x, (width,), block.ln_2.weight, block.ln_2.bias, eps), block.mlp.fc)
    gelu = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    return x + linear(gelu, block.mlp.proj)


def test_blocks_of_different_widths_at_one_d_model_stack_and_compute_plain_attention() -> None:
    widths = [(2, 32), (4, 64), (1, 48)]
    blocks = [tl.nn.TransformerBlock(CFG, index=i, heads=h, ffn=f) for i, (h, f) in enumerate(widths)]
    stack = Stack(blocks).eval()
    for block, (heads, ffn) in zip(blocks, widths, strict=True):
        assert block.mlp.fc.weight.shape == (ffn, CFG.d_model)
        assert block.describe() == f"TransformerBlock(index={block.index}, heads={heads}, ffn={ffn})"
    x = torch.randn(3, 7, CFG.d_model)
    expected = x
    for block, (heads, _) in zip(blocks, widths, strict=True):
        expected = _reference_block(block, expected, heads)
    torch.testing.assert_close(stack(x), expected, atol=1e-5, rtol=1e-5)
    # a model-wide dim still has to agree
    with pytest.raises(tl.ShapeError, match="d_model differs"):
        Stack([blocks[0], tl.nn.TransformerBlock(CFG.replace(head_dim=4), index=3)])


def test_a_local_dim_is_checked_on_the_layers_calls_naming_its_source() -> None:
    class Adapter(Layer[Embedded, Embedded]):
        local_dims = ("rank",)

        def __init__(self, cfg: tl.CausalConfig, rank: int) -> None:
            super().__init__(cfg, rank=rank)

        def forward(
            self, x: Float[Tensor, "batch seq d_model"], low: Float[Tensor, "batch seq rank"]
        ) -> Float[Tensor, "batch seq d_model"]:
            return x + low.sum(-1, keepdim=True)

    narrow, wide = Adapter(CFG, 3), Adapter(CFG, 5)
    x = torch.randn(2, 4, CFG.d_model)
    torch.testing.assert_close(narrow(x, torch.ones(2, 4, 3)), x + 3)
    torch.testing.assert_close(wide(x, torch.ones(2, 4, 5)), x + 5)
    with pytest.raises(tl.ShapeError, match=r"low expected .* with rank = 3 \(Adapter\(rank=3\)\), got rank = 5"):
        narrow(x, torch.ones(2, 4, 5))
    assert "rank" not in (narrow >> wide).dim_env.sizes  # local: not unified across >>

    class Forgets(Adapter):
        def __init__(self, cfg: tl.CausalConfig) -> None:
            Layer.__init__(self, cfg)

    with pytest.raises(tl.ConfigError, match=r"Forgets: local dim 'rank' has no size: pass super\(\).__init__"):
        Forgets(CFG)


def test_a_local_size_overrides_the_configs_for_that_layer_only() -> None:
    mlp = tl.nn.MLP(CFG, ffn=24)
    assert mlp.fc.weight.shape == (24, CFG.d_model) and mlp.dim_size("ffn") == 24
    assert tl.nn.MLP(CFG).dim_size("ffn") == CFG.ffn_hidden
    attn = tl.nn.CausalSelfAttention(CFG, heads=4)
    assert (attn.dim_size("heads"), attn.dim_size("head_dim")) == (4, CFG.d_model // 4)
    with pytest.raises(tl.ConfigError, match=r"CausalSelfAttention\(heads=3\): d_model = 16 .* not divisible by"):
        tl.nn.CausalSelfAttention(CFG, heads=3)
    with pytest.raises(tl.ConfigError, match=r"MLP\(ffn=0\): a layer-local dim size must be an int >= 1"):
        tl.nn.MLP(CFG, ffn=0)
    with pytest.raises(tl.ConfigError, match=r"MLP: no size for dim 'rank'"):
        mlp.dim_size("rank")


# --- 3. stateless layers -------------------------------------------------------------------------------


class Double(Layer[Embedded, Embedded]):
    """No config: every dim of its input is bound per call."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return 2 * x


def test_a_stateless_layer_needs_no_config_and_composes_first_in_a_chain() -> None:
    assert Double().cfg is None and Double().dim_env.sizes == {}
    torch.testing.assert_close(Double()(torch.ones(1, 2, 3)), torch.full((1, 2, 3), 2.0))  # any d_model
    model = Double() >> tl.nn.LayerNorm(CFG)
    assert model.cfg is CFG
    x = torch.randn(2, 5, CFG.d_model)
    torch.testing.assert_close(model(x), F.layer_norm(2 * x, (CFG.d_model,), eps=CFG.layer_norm_eps))
    with pytest.raises(tl.ShapeError, match=r"LayerNorm: x expected .* d_model = 16"):
        model(torch.randn(2, 5, 12))


def test_a_stateless_layer_binds_its_dims_per_call_across_arguments() -> None:
    class Add(Layer[Embedded, Embedded]):
        def __init__(self) -> None:
            super().__init__()

        def forward(
            self, x: Float[Tensor, "batch seq d_model"], y: Float[Tensor, "batch seq d_model"]
        ) -> Float[Tensor, "batch seq d_model"]:
            return x + y

    torch.testing.assert_close(Add()(torch.ones(1, 2, 5), torch.ones(1, 2, 5)), torch.full((1, 2, 5), 2.0))
    with pytest.raises(tl.ShapeError, match=r"y expected .* d_model = 5 \(fixed by x\), got d_model = 6"):
        Add()(torch.ones(1, 2, 5), torch.ones(1, 2, 6))


# --- 4. unknown dim names ------------------------------------------------------------------------------


def test_a_misspelt_dim_is_refused_when_the_class_is_created_listing_the_known_ones() -> None:
    with pytest.raises(tl.ShapeError) as caught:

        class Misspelt(Layer[Embedded, Embedded]):
            def forward(
                self, x: Float[Tensor, "batch seq d_model"], h: Float[Tensor, "batch seq ffn_hidden"]
            ) -> Float[Tensor, "batch seq d_model"]:
                return x

    message = str(caught.value)
    assert message.startswith("class ") and 'Misspelt: forward annotates "batch seq ffn_hidden"' in message
    assert "unknown dim 'ffn_hidden'; known: batch, seq, vocab, d_model, heads, head_dim, ffn" in message
    assert "free_dims = ('ffn_hidden',)" in message and "local_dims" in message


def test_declared_per_call_local_underscored_and_variadic_names_are_known() -> None:
    class Cross(Layer[Embedded, Embedded]):
        free_dims = ("kv_seq",)

        def forward(
            self,
            x: Float[Tensor, "batch seq d_model"],
            memory: Float[Tensor, "batch kv_seq d_model"],
            extra: Float[Tensor, "*lead _any"],
        ) -> Float[Tensor, "batch seq d_model"]:
            return x + memory.mean(1, keepdim=True)

    layer = Cross(CFG)
    x = torch.randn(2, 3, CFG.d_model)
    torch.testing.assert_close(layer(x, torch.ones(2, 9, CFG.d_model), torch.ones(4, 5)), x + 1)


def test_an_expression_or_a_result_only_name_of_a_stateless_layer_is_unknown() -> None:
    with pytest.raises(tl.ShapeError, match=r"annotates \"batch sq\+1\": unknown dim 'sq'"):

        class Shifted(Layer[Embedded, Embedded]):
            def forward(
                self, x: Float[Tensor, "batch seq d_model"], pos: Float[Tensor, "batch sq+1"]
            ) -> Float[Tensor, "batch seq d_model"]:
                return x

    with pytest.raises(tl.ShapeError, match=r"unknown dim 'width'; known: batch, seq, d_model \(per call: the layer"):

        class Widen(Layer[Embedded, Wide]):
            def __init__(self) -> None:
                super().__init__()

            def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq width"]:
                return x


def test_a_user_config_type_read_from_init_makes_its_fields_known() -> None:
    class Mix(Layer[Wide, Wide]):
        def __init__(self, cfg: MixerConfig) -> None:
            super().__init__(cfg)

        def forward(
            self, x: Float[Tensor, "batch seq width"], low: Float[Tensor, "batch rank"]
        ) -> Float[Tensor, "batch seq width"]:
            return x

    layer = Mix(MixerConfig(seq_len=4, width=3, rank=2))
    with pytest.raises(tl.ShapeError, match=r"rank = 2 \(cfg\.rank\), got rank = 3"):
        layer(torch.ones(1, 4, 3), torch.ones(1, 3))
    with pytest.raises(tl.ShapeError, match=r"unknown dim 'width'; known: .*\(per call, and CausalConfig's\)"):

        class Unannotated(Layer[Wide, Wide]):
            def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]  # the point: no annotation
                super().__init__(cfg)

            def forward(self, x: Float[Tensor, "batch seq width"]) -> Float[Tensor, "batch seq width"]:
                return x


def test_a_config_type_unreadable_at_class_creation_is_checked_when_the_layer_is_built() -> None:
    class Later(Layer[Wide, Wide]):
        def __init__(self, cfg: "NotYetDefined") -> None:  # type: ignore[name-defined]  # noqa: F821  # unresolvable on purpose
            super().__init__(cfg)

        def forward(self, x: Float[Tensor, "batch seq width"]) -> Float[Tensor, "batch seq width"]:
            return x

    Later(MixerConfig(seq_len=4, width=3, rank=2))  # width is a field of this config
    with pytest.raises(tl.ShapeError, match=r"Later\(cfg\): forward annotates .* unknown dim 'width'.*CausalConfig's"):
        Later(CFG)


# --- 5. typedlm check on user configs --------------------------------------------------------------


PROBED = """
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

import typedlm as tl
from typedlm.shapes import Embedded

Wide = Literal["batch seq width"]


@dataclass(frozen=True)
class GQAConfig(tl.CausalConfig):
    kv_heads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.heads % self.kv_heads:
            raise tl.ConfigError(f"GQAConfig.kv_heads={self.kv_heads}: must divide heads={self.heads}")


@dataclass(frozen=True)
class MixerConfig:
    seq_len: int
    width: int
    rank: int
    theta: float  # no default: the probe gives it one


class KVProject(tl.Layer[Embedded, Embedded]):
    def __init__(self, cfg: GQAConfig) -> None:
        super().__init__(cfg)
        self.down = torch.nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim)
        self.up = torch.nn.Linear(cfg.kv_heads * cfg.head_dim, cfg.d_model)

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return self.up(self.down(x))


class KVProjectBug(KVProject):
    def __init__(self, cfg: GQAConfig) -> None:
        super().__init__(cfg)
        self.up = torch.nn.Linear(cfg.heads * cfg.head_dim, cfg.d_model)  # heads for kv_heads


class LowRank(tl.Layer[Wide, Wide]):
    def __init__(self, cfg: MixerConfig) -> None:
        super().__init__(cfg)
        self.down = torch.nn.Linear(cfg.width, cfg.rank)
        self.up = torch.nn.Linear(cfg.rank, cfg.width)

    def forward(self, x: Float[Tensor, "batch seq width"]) -> Float[Tensor, "batch seq width"]:
        return self.up(self.down(x))


class LowRankBug(LowRank):
    def __init__(self, cfg: MixerConfig) -> None:
        super().__init__(cfg)
        self.up = torch.nn.Linear(cfg.width, cfg.width)  # width for rank


class Double(tl.Layer[Embedded, Embedded]):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
        return 2 * x


@dataclass(frozen=True)
class Picky:
    width: int

    def __post_init__(self) -> None:
        raise ValueError("Picky refuses every width")


class Unbuildable(tl.Layer[Wide, Wide]):
    def __init__(self, cfg: Picky) -> None:
        super().__init__(cfg)

    def forward(self, x: Float[Tensor, "batch seq width"]) -> Float[Tensor, "batch seq width"]:
        return x
"""


def test_typedlm_check_builds_layers_of_user_configs_with_distinct_sizes(tmp_path: Path) -> None:
    module = tmp_path / "user_layers.py"
    module.write_text(textwrap.dedent(PROBED))
    report = check([str(module)])
    assert report.layers == 6, report.format()
    # heads for kv_heads, width for rank: caught only because the probe gives each dim its own size
    assert {p.message.split(":")[0] for p in report.errors} == {"KVProjectBug", "LowRankBug"}, report.format()
    [skipped] = [p for p in report.problems if p.code == "skipped"]
    assert "skipped Unbuildable" in skipped.message and "Picky refuses every width" in skipped.message


def test_a_layer_that_takes_a_config_but_forgets_to_pass_it_on_is_refused_when_built() -> None:
    class Forgets(Layer[Embedded, Embedded]):
        def __init__(self, cfg: tl.CausalConfig) -> None:
            super().__init__()  # bug: d_model would be bound per call, not to cfg.d_model

        def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
            return x

    with pytest.raises(tl.ConfigError, match=r"^Forgets: __init__ takes a config .* pass super\(\)\.__init__\(cfg\)$"):
        Forgets(CFG)


def test_a_keyword_only_cfg_is_the_layers_config() -> None:
    class KeywordConfig(Layer[Embedded, Embedded]):
        def __init__(self, *, cfg: tl.CausalConfig) -> None:
            super().__init__(cfg)

        def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch seq d_model"]:
            return x

    layer = KeywordConfig(cfg=CFG)
    assert layer(torch.randn(2, 3, CFG.d_model)).shape == (2, 3, CFG.d_model)
    with pytest.raises(tl.ShapeError, match=r"d_model = 16 \(cfg\.d_model"):
        layer(torch.randn(2, 3, CFG.d_model + 1))
