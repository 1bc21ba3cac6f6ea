"""GPT-2 checkpoints in Hugging Face's ``GPT2LMHeadModel`` layout, in and out.

A directory holds ``config.json`` (``n_embd``, ``n_head``, ``n_layer``, ``n_positions``, ``vocab_size``,
``n_inner``, ``layer_norm_epsilon``, ``tie_word_embeddings``, ...) and the weights: ``model.safetensors``
(preferred), ``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``), or either one sharded
with its ``.index.json``.

Hugging Face's ``Conv1D`` stores ``c_attn``, ``c_proj`` and ``c_fc`` weights as ``(in, out)``; typedlm's
``nn.Linear`` stores ``(out, in)``, so those are transposed both ways. With tied embeddings
``lm_head.weight`` is the token table: it may be absent, and is never written (safetensors cannot store
one tensor twice). The attention-mask buffers ``attn.bias`` / ``attn.masked_bias`` are ignored.

Every problem with a directory (no config or weights, a config typedlm cannot represent, missing,
unexpected or mis-shaped tensors) is an `HFCheckpointError` (a ValueError) naming the directory and
the offending fields or tensors. `save_gpt2` writes to a temporary directory and renames, so a
checkpoint is never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from typedlm.config import CausalConfig
from typedlm.errors import ConfigError, TypedLMError
from typedlm.models import GPT2
from typedlm.nn import TransformerBlock

__all__ = ["HFCheckpointError", "config_from_hf", "config_to_hf", "load_gpt2", "save_gpt2"]

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_SUPPORTED: dict[str, tuple[object, ...]] = {
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),  # GELU, tanh approximation
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "add_cross_attention": (False,),
}
"""config.json fields whose other values change the maths typedlm implements."""


class HFCheckpointError(TypedLMError, ValueError):
    """A Hugging Face GPT-2 directory typedlm cannot read: the message names the directory and what is wrong."""


# --- config ----------------------------------------------------------------------------------------


def config_from_hf(hf: dict[str, Any], *, where: str = CONFIG) -> CausalConfig:
    """A `CausalConfig` from a ``GPT2Config`` dict; fields typedlm cannot honour are an `HFCheckpointError`."""

    def field(name: str, default: Any = None) -> Any:
        value = hf.get(name, default)
        if value is None:
            raise HFCheckpointError(f"{where}: missing field {name!r}")
        return value

    if hf.get("model_type", "gpt2") != "gpt2":
        raise HFCheckpointError(f"{where}: model_type={hf['model_type']!r}, expected 'gpt2'")
    for name, allowed in _SUPPORTED.items():
        if name in hf and hf[name] not in allowed:
            rule = " or ".join(json.dumps(value) for value in allowed)
            raise HFCheckpointError(f"{where}: {name}={hf[name]!r} is not supported by typedlm (must be {rule})")
    n_embd, n_head = field("n_embd"), field("n_head")
    if not isinstance(n_embd, int) or not isinstance(n_head, int) or n_head < 1 or n_embd % n_head:
        raise HFCheckpointError(f"{where}: n_embd={n_embd!r} must be a multiple of n_head={n_head!r}")
    n_inner = hf.get("n_inner")
    try:
        return CausalConfig(
            batch=1,
            seq_len=field("n_positions"),
            vocab=field("vocab_size"),
            heads=n_head,
            head_dim=n_embd // n_head,
            ffn_hidden=4 * n_embd if n_inner is None else n_inner,
            layers=field("n_layer"),
            dropout=float(hf.get("resid_pdrop", 0.0)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            bias=True,
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        )
    except ConfigError as error:
        raise HFCheckpointError(f"{where}: {error}") from error


def config_to_hf(cfg: CausalConfig) -> dict[str, Any]:
    """The ``config.json`` of a ``GPT2LMHeadModel`` with ``cfg``'s sizes."""
    eot = 50256 if cfg.vocab == 50257 else None
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": cfg.vocab,
        "n_positions": cfg.seq_len,
        "n_ctx": cfg.seq_len,
        "n_embd": cfg.d_model,
        "n_head": cfg.heads,
        "n_layer": cfg.layers,
        "n_inner": cfg.ffn_hidden,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": 0.0,  # typedlm has no embedding dropout
        "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "torch_dtype": "float32",
    }


# --- the mapping between the two layouts -----------------------------------------------------------


def _pairs(model: GPT2) -> Iterator[tuple[str, Tensor | None, bool]]:
    """``(hf_name, typedlm tensor or None, transposed)`` for every weight of ``model`` in HF's layout.

    A None tensor stands for a bias typedlm does not have (``cfg.bias=False``): zero in HF's layout.
    """
    yield "transformer.wte.weight", model.embed.weight, False
    yield "transformer.wpe.weight", model.transformer.pos.weight, False
    for i, block in enumerate(model.transformer.blocks):
        assert isinstance(block, TransformerBlock)
        h = f"transformer.h.{i}"
        for hf_name, linear in (
            ("attn.c_attn", block.attn.qkv),
            ("attn.c_proj", block.attn.proj),
            ("mlp.c_fc", block.mlp.fc),
            ("mlp.c_proj", block.mlp.proj),
        ):
            yield f"{h}.{hf_name}.weight", linear.weight, True
            yield f"{h}.{hf_name}.bias", linear.bias, False
        for hf_name, norm in (("ln_1", block.ln_1), ("ln_2", block.ln_2)):
            yield f"{h}.{hf_name}.weight", norm.weight, False
            yield f"{h}.{hf_name}.bias", norm.bias, False
    yield "transformer.ln_f.weight", model.transformer.ln_f.weight, False
    yield "transformer.ln_f.bias", model.transformer.ln_f.bias, False
    if not model.cfg.tie_embeddings:
        yield "lm_head.weight", model.transformer.head.weight, False


def _canonical(name: str) -> str:
    """HF names with the ``transformer.`` prefix (a bare ``GPT2Model`` saves them without it)."""
    return name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"


# --- loading ---------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise HFCheckpointError(f"{path}: cannot read ({error.strerror or error})") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HFCheckpointError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise HFCheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_file(path: Path) -> dict[str, Tensor]:
    """Every tensor of one safetensors or ``torch.save`` file."""
    try:
        if path.name.endswith(".safetensors"):
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, SafetensorError, EOFError) as error:
        raise HFCheckpointError(f"{path}: cannot read weights ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise HFCheckpointError(f"{path}: expected a dict of tensors (a state dict)")
    return state


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of ``directory``: one file, or the shards an index lists; safetensors first."""
    for single in (SAFETENSORS, PYTORCH_BIN):
        if (directory / single).is_file():
            return [directory / single]
        index = directory / f"{single}.index.json"
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise HFCheckpointError(f"{index}: missing the 'weight_map' object")
            return [directory / name for name in sorted(set(map(str, weight_map.values())))]
    raise HFCheckpointError(f"{directory}: no {SAFETENSORS} or {PYTORCH_BIN} (nor a sharded index of either)")


def read_hf_state(directory: Path) -> dict[str, Tensor]:
    """Every tensor of the checkpoint in ``directory``, by canonical HF name (``transformer.h.0...``)."""
    state: dict[str, Tensor] = {}
    for path in _weight_files(directory):
        for name, tensor in _load_file(path).items():
            state[_canonical(name)] = tensor
    return state


def load_gpt2(directory: str | os.PathLike[str]) -> GPT2:
    """A `GPT2` (in eval mode, float32, on the CPU) with the weights of the ``GPT2LMHeadModel`` in ``directory``.

    Half-precision checkpoints are widened to float32; move or cast the model afterwards (``.to(...)``).

    Raises `HFCheckpointError` naming every missing, unexpected or mis-shaped tensor.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise HFCheckpointError(f"{directory}: not a directory")
    cfg = config_from_hf(_read_json(directory / CONFIG), where=str(directory / CONFIG))
    state = read_hf_state(directory)
    model = GPT2(cfg)
    expected = list(_pairs(model))
    problems: list[str] = []
    missing = [name for name, _, _ in expected if name not in state]
    if missing:
        problems.append(f"missing tensors {', '.join(missing)}")
    known = {name for name, _, _ in expected} | {"lm_head.weight"}
    unexpected = sorted(n for n in state if n not in known and not n.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        problems.append(f"unexpected tensors {', '.join(unexpected)}")
    for name, target, transposed in expected:
        if name in state and target is not None:
            want = tuple(target.shape[::-1] if transposed else target.shape)
            if tuple(state[name].shape) != want:
                problems.append(f"{name} has shape {tuple(state[name].shape)}, expected {want} from config.json")
    if cfg.tie_embeddings and "lm_head.weight" in state and "transformer.wte.weight" in state:
        head, wte = state["lm_head.weight"], state["transformer.wte.weight"]
        if head.shape != wte.shape or not torch.equal(head, wte):
            problems.append("lm_head.weight differs from transformer.wte.weight but tie_word_embeddings is true")
    if problems:
        raise HFCheckpointError(f"{directory}: " + "; ".join(problems))
    with torch.no_grad():
        for name, target, transposed in expected:
            if target is not None:
                source = state[name]
                target.copy_(source.t() if transposed else source)
    return model.eval()


# --- saving ----------------------------------------------------------------------------------------


def hf_state(model: GPT2) -> dict[str, Tensor]:
    """``model``'s weights as a ``GPT2LMHeadModel`` state dict: contiguous CPU tensors, none shared."""
    state: dict[str, Tensor] = {}
    for name, tensor, transposed in _pairs(model):
        if tensor is None:  # a bias typedlm leaves out is a zero bias in HF's layout
            width = state[name.removesuffix(".bias") + ".weight"].shape[-1]
            state[name] = torch.zeros(width)
            continue
        value = tensor.detach().t() if transposed else tensor.detach()
        state[name] = value.to("cpu", copy=True).contiguous()
    return state


def save_gpt2(model: GPT2, directory: str | os.PathLike[str], *, safe_serialization: bool = True) -> None:
    """Write ``model`` to ``directory`` as a ``GPT2LMHeadModel``: ``config.json`` and ``model.safetensors``
    (or ``pytorch_model.bin`` when ``safe_serialization=False``).

    The files are written to a temporary directory beside ``directory`` and moved in; a weights file
    of the other format left in ``directory`` is removed so that it cannot shadow the new one.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    weights = SAFETENSORS if safe_serialization else PYTORCH_BIN
    state = hf_state(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        if safe_serialization:
            save_file(state, tmp / weights, metadata={"format": "pt"})
        else:
            torch.save(state, tmp / weights)
        (tmp / CONFIG).write_text(json.dumps(config_to_hf(model.cfg), indent=2) + "\n", encoding="utf-8")
        for name in (weights, CONFIG):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if not directory.exists():
            os.replace(tmp, directory)
            return
        os.replace(tmp / weights, directory / weights)
        for stale in (SAFETENSORS, PYTORCH_BIN, f"{SAFETENSORS}.index.json", f"{PYTORCH_BIN}.index.json"):
            if stale != weights:
                (directory / stale).unlink(missing_ok=True)
        os.replace(tmp / CONFIG, directory / CONFIG)  # last: a config names finished weights
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
