"""GPT-2 checkpoints in Hugging Face's ``GPT2LMHeadModel`` layout, in and out.

A directory holds ``config.json`` (``n_embd``, ``n_head``, ``n_layer``, ``n_positions``, ``vocab_size``,
``n_inner``, ``layer_norm_epsilon``, ``tie_word_embeddings``, ...) and the weights: ``model.safetensors``
(preferred), ``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``: tensors only, no pickled
code), or either one sharded with its ``.index.json``, whose shards must lie inside the directory.

Hugging Face's ``Conv1D`` stores ``c_attn``, ``c_proj`` and ``c_fc`` weights as ``(in, out)``; typedlm's
``nn.Linear`` stores ``(out, in)``, so those are transposed both ways. With tied embeddings
``lm_head.weight`` is the token table: it may be absent, and is never written (safetensors cannot store
one tensor twice). The attention-mask buffers ``attn.bias`` / ``attn.masked_bias`` are ignored.

Loading refuses every bad input with an `HFCheckpointError` (a ValueError): one line that starts with
the directory or file at fault and names the field, index entry or tensor. That covers a missing or
unreadable directory or file; a ``config.json`` field of the wrong type or range, or one typedlm cannot
represent; an index entry that is not a file inside the directory; a damaged weights file, or a pickle
that is more than tensors; missing, unexpected, duplicated, mis-shaped or non-float tensors; NaN or
infinite weights. Shapes are checked against the config before the model is built, so a config that
claims a huge model costs nothing. Loading never changes anything on disk.

`save_gpt2` writes the complete new directory beside the target and swaps it in whole with
`typedlm.atomic.swap_in`: on Linux with one atomic ``renameat2(RENAME_EXCHANGE)``, elsewhere (or where the
filesystem refuses it) with two renames, ``NAME`` → ``.NAME.old`` and the new one → ``NAME``. A crash
leaves ``NAME`` holding the complete old checkpoint or the complete new one; only in the gap between the
two renames is ``NAME`` missing, and then `load_gpt2` names ``.NAME.old`` (the complete old checkpoint)
in its error, and the next save completes the swap. Files of the old directory that a save does not write
(a README, tokenizer files) are carried over by hard link (or copy), the old directory's permissions are
kept, and a new directory gets ``0o777`` less the umask. Temporary siblings left by saves whose process
died on this machine are removed by the next save of the same directory.

The format holds one ``n_head`` and one ``n_inner`` for every block, so a `GPT2` built with its own
per-block widths (``block_heads`` / ``block_ffn`` other than the config's) is refused with a ConfigError
before anything is written; `typedlm.training.save_checkpoint` keeps such a model.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from typedlm.atomic import (
    current_umask,
    fsync_directory,
    old_sibling,
    remove_leftovers,
    swap_in,
    temporary_prefix,
    write_atomic,
    write_text_atomic,
)
from typedlm.config import CausalConfig
from typedlm.errors import ConfigError, TypedLMError
from typedlm.json_fields import short_repr
from typedlm.json_file import UnreadableJSON, read_json
from typedlm.models import GPT2
from typedlm.nn import TransformerBlock

__all__ = ["HFCheckpointError", "config_from_hf", "config_to_hf", "load_gpt2", "save_gpt2"]

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
_INDEX = ".index.json"
_SHARD = re.compile(r"(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)")
"""Hugging Face's shard names (``model-00001-of-00002.safetensors``)."""
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_BLOCK = re.compile(r"transformer\.h\.(\d+)\.")
_SIZES = ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size")
"""config.json's required size fields: each an int >= 1."""
_SUPPORTED: dict[str, tuple[object, ...]] = {
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),  # GELU, tanh approximation
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "add_cross_attention": (False,),
}
"""config.json fields whose other values change the maths typedlm implements."""


class HFCheckpointError(TypedLMError, ValueError):
    """A Hugging Face GPT-2 directory typedlm cannot read: the message names the directory and what is wrong."""


def _name(name: str) -> str:
    """A tensor name as it reads in a message: as it is if printable, else quoted (a file may hold any name)."""
    return name if name.isprintable() and len(name) <= 100 else short_repr(name)


def _names(names: list[str], limit: int = 10) -> str:
    """The first ``limit`` names, comma-separated, and how many more there are."""
    shown = ", ".join(map(_name, names[:limit]))
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


# --- config ----------------------------------------------------------------------------------------


def _positive_int(hf: dict[str, Any], name: str, where: str) -> int:
    """A required int field, at least 1 (a bool, float or string is refused)."""
    value = hf.get(name)
    if value is None:
        raise HFCheckpointError(f"{where}: missing field {name!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HFCheckpointError(f"{where}: {name}={short_repr(value)} must be an int >= 1")
    return value


def _finite_number(
    hf: dict[str, Any], name: str, default: float, where: str, ok: Callable[[float], bool], rule: str
) -> float:
    """An optional number field (int or float, not a bool), finite and passing ``ok``."""
    value = hf.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HFCheckpointError(f"{where}: {name}={short_repr(value)} must be a number {rule}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not (math.isfinite(number) and ok(number)):
        raise HFCheckpointError(f"{where}: {name}={short_repr(value)} must be a number {rule}")
    return number


def _check_supported(hf: dict[str, Any], where: str) -> None:
    """``model_type`` is gpt2, and fields that change the maths have the values typedlm implements."""
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise HFCheckpointError(f"{where}: model_type={short_repr(model_type)}, expected 'gpt2'")
    for name, allowed in _SUPPORTED.items():
        if name in hf and not any(type(hf[name]) is type(ok) and hf[name] == ok for ok in allowed):
            rule = " or ".join(json.dumps(value) for value in allowed)
            raise HFCheckpointError(
                f"{where}: {name}={short_repr(hf[name])} is not supported by typedlm (must be {rule})"
            )


def config_from_hf(hf: dict[str, Any], *, where: str = CONFIG) -> CausalConfig:
    """A `CausalConfig` from a ``GPT2Config`` dict; a field of the wrong type or range, or one typedlm cannot
    honour, is an `HFCheckpointError` naming ``where`` and the field."""
    _check_supported(hf, where)
    sizes = {name: _positive_int(hf, name, where) for name in _SIZES}
    n_embd, n_head = sizes["n_embd"], sizes["n_head"]
    if n_embd % n_head:
        raise HFCheckpointError(f"{where}: n_embd={n_embd} must be a multiple of n_head={n_head}")
    n_inner = 4 * n_embd if hf.get("n_inner") is None else _positive_int(hf, "n_inner", where)
    dropout = _finite_number(hf, "resid_pdrop", 0.0, where, lambda p: 0 <= p < 1, "in [0, 1)")
    eps = _finite_number(hf, "layer_norm_epsilon", 1e-5, where, lambda e: e > 0, "> 0, finite")
    tie = hf.get("tie_word_embeddings", True)
    if not isinstance(tie, bool):
        raise HFCheckpointError(f"{where}: tie_word_embeddings={short_repr(tie)} must be true or false")
    try:
        return CausalConfig(
            batch=1,
            seq_len=sizes["n_positions"],
            vocab=sizes["vocab_size"],
            heads=n_head,
            head_dim=n_embd // n_head,
            ffn_hidden=n_inner,
            layers=sizes["n_layer"],
            dropout=dropout,
            tie_embeddings=tie,
            bias=True,
            layer_norm_eps=eps,
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


# --- loading: files --------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; anything else (unreadable, not UTF-8 JSON, not an object) is refused."""
    try:
        data = read_json(path)
    except UnreadableJSON as e:
        if e.problem in ("missing", "unreadable"):
            raise HFCheckpointError(f"{path}: cannot read ({e.reason})") from None
        at_line = f" at line {e.line}" if e.line is not None else ""
        raise HFCheckpointError(f"{path}: not valid JSON ({e.reason}{at_line})") from None
    if not isinstance(data, dict):
        raise HFCheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _shard_path(index: Path, tensor: str, shard: object) -> Path:
    """The file ``index`` names for ``tensor``: a relative path to an existing file inside the index's directory."""
    entry = f"weight_map[{short_repr(tensor)}]={short_repr(shard)}"
    if not isinstance(shard, str) or not shard:
        raise HFCheckpointError(f"{index}: {entry}: a shard must be a file name (a non-empty string)")
    if "\0" in shard or Path(shard).is_absolute() or ".." in Path(shard).parts:
        raise HFCheckpointError(f"{index}: {entry}: a shard must be a relative path inside {index.parent}")
    path = index.parent / shard
    try:
        inside = path.resolve().is_relative_to(index.parent.resolve())
        exists, is_file = path.exists(), path.is_file()
    except (OSError, RuntimeError) as error:  # a symlink loop (RuntimeError before Python 3.13), a name too long
        raise HFCheckpointError(f"{index}: {entry}: cannot resolve the shard ({short_repr(str(error), 80)})") from error
    if not inside:
        raise HFCheckpointError(f"{index}: {entry}: the shard resolves outside {index.parent}")
    if not exists:
        raise HFCheckpointError(f"{index}: {entry}: the shard does not exist")
    if not is_file:
        raise HFCheckpointError(f"{index}: {entry}: the shard is not a file")
    return path


def _index_shards(index: Path) -> list[Path]:
    """The shard files a sharded checkpoint's ``index`` names, each once, in name order."""
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise HFCheckpointError(f"{index}: missing the 'weight_map' object")
    if not weight_map:
        raise HFCheckpointError(f"{index}: 'weight_map' is empty, so it names no shard")
    shards = {_shard_path(index, tensor, shard) for tensor, shard in weight_map.items()}
    return sorted(shards)


def _weight_files(directory: Path) -> list[Path]:
    """The weight files of ``directory``: one file, or the shards an index lists; safetensors first."""
    for single in (SAFETENSORS, PYTORCH_BIN):
        if (directory / single).is_file():
            return [directory / single]
        index = directory / f"{single}{_INDEX}"
        if index.is_file():
            return _index_shards(index)
    raise HFCheckpointError(f"{directory}: no {SAFETENSORS} or {PYTORCH_BIN} (nor a sharded index of either)")


def _torch_load_problem(head: bytes, error: Exception) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in typedlm's words.

    torch's own message is not passed on: it suggests ``weights_only=False``, which would run any code
    the pickle names.
    """
    if not head:
        return "the file is empty"
    refused = re.search(r"GLOBAL ([\w.]+)", str(error))
    if refused:
        return f"it pickles {refused[1]}, which is not a tensor; typedlm loads tensors only and never runs pickled code"
    if head.startswith(b"PK\x03\x04"):
        return f"a damaged or truncated torch.save archive ({type(error).__name__})"
    if head.startswith(b"\x80"):
        return f"a damaged or truncated pickle, or one holding more than tensors ({type(error).__name__})"
    return "not a torch.save file (neither a zip archive nor a pickle)"


def _torch_load(path: Path) -> object:
    """What ``torch.save`` wrote to ``path``, loaded without unpickling anything but tensors and containers."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as error:
        raise HFCheckpointError(f"{path}: cannot read ({error.strerror or error})") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged bytes make torch raise nearly anything (RuntimeError, KeyError, ...)
        problem = _torch_load_problem(head, error)
        raise HFCheckpointError(f"{path}: cannot read weights: {problem}") from None  # torch's text: see above


def _safetensors_load(path: Path) -> dict[str, Tensor]:
    """Every tensor of a safetensors file."""
    try:
        return load_file(path)
    except OSError as error:
        raise HFCheckpointError(f"{path}: cannot read ({error.strerror or error})") from error
    except Exception as error:  # SafetensorError for a bad header or short data; any bytes may be here
        detail = short_repr(" ".join(str(error).split()), 100)
        raise HFCheckpointError(f"{path}: cannot read weights: not a valid safetensors file ({detail})") from error


def _state_dict(path: Path, loaded: object) -> dict[str, Tensor]:
    """``loaded`` as a state dict (names → tensors), or an error naming the first entry that is not one."""
    if not isinstance(loaded, dict):
        raise HFCheckpointError(f"{path}: expected a state dict (names → tensors), got {type(loaded).__name__}")
    for name, value in loaded.items():
        if not isinstance(name, str):
            raise HFCheckpointError(
                f"{path}: expected a state dict (names → tensors); key {short_repr(name)} is not a string"
            )
        if not isinstance(value, Tensor):
            kind = type(value).__name__
            raise HFCheckpointError(
                f"{path}: expected a state dict (names → tensors); {short_repr(name)} is {kind}, not a tensor"
            )
    return loaded


def _check_finite(path: Path, state: dict[str, Tensor]) -> None:
    """Refuse the first tensor (by name) that holds a NaN or an infinity, saying how many it holds."""
    for name in sorted(state):
        tensor = state[name]
        if not name.endswith(_IGNORED_SUFFIXES) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise HFCheckpointError(
                f"{path}: tensor {_name(name)} has {bad} non-finite value(s) (NaN or infinity) out of {tensor.numel()}"
            )


def _load_file(path: Path) -> dict[str, Tensor]:
    """Every tensor of one safetensors or ``torch.save`` file, each finite."""
    if path.name.endswith(".safetensors"):
        state = _safetensors_load(path)
    else:
        state = _state_dict(path, _torch_load(path))
    _check_finite(path, state)
    return state


def read_hf_state(directory: Path) -> dict[str, Tensor]:
    """Every tensor of the checkpoint in ``directory``, by canonical HF name (``transformer.h.0...``)."""
    state: dict[str, Tensor] = {}
    origin: dict[str, Path] = {}
    for path in _weight_files(directory):
        for name, tensor in _load_file(path).items():
            canonical = _canonical(name)
            if canonical in origin:
                raise HFCheckpointError(
                    f"{path}: tensor {_name(name)} is also in {origin[canonical]} (as {_name(canonical)})"
                )
            state[canonical], origin[canonical] = tensor, path
    return state


# --- loading: the model ----------------------------------------------------------------------------


def _check_directory(directory: Path) -> None:
    """``directory`` is a directory; if missing, name the complete old checkpoint an interrupted save left."""
    if directory.is_dir():
        return
    if directory.exists():
        raise HFCheckpointError(f"{directory}: not a directory")
    leftover = old_sibling(directory)
    if leftover.is_dir():
        raise HFCheckpointError(
            f"{directory}: does not exist, but an interrupted save_gpt2 left the previous checkpoint complete "
            f"at {leftover}: rename it to {directory.name}, or save again"
        )
    raise HFCheckpointError(f"{directory}: not a directory (it does not exist)")


def _problems(cfg: CausalConfig, state: dict[str, Tensor]) -> list[str]:
    """Every way ``state`` disagrees with the model ``cfg`` describes, found without allocating that model."""
    blocks = {match[1] for name in state if (match := _BLOCK.match(name))}
    if cfg.layers > len(blocks):  # checked first: a skeleton of a huge n_layer would take long to build
        return [f"config.json has n_layer={cfg.layers}, but the weights hold {len(blocks)} block(s)"]
    with torch.device("meta"):  # shapes only: no memory, however large the config
        expected = list(_pairs(GPT2(cfg)))
    problems: list[str] = []
    missing = [name for name, _, _ in expected if name not in state]
    if missing:
        problems.append(f"missing tensors {_names(missing)}")
    known = {name for name, _, _ in expected} | {"lm_head.weight"}
    unexpected = sorted(n for n in state if n not in known and not n.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        problems.append(f"unexpected tensors {_names(unexpected)}")
    for name, target, transposed in expected:
        if name in state and target is not None:
            want, got = tuple(target.shape[::-1] if transposed else target.shape), tuple(state[name].shape)
            if got != want:
                problems.append(f"{name} has shape {got}, expected {want} from config.json")
            elif not state[name].is_floating_point():
                problems.append(f"{name} has dtype {state[name].dtype}, expected a floating-point dtype")
    if cfg.tie_embeddings and "lm_head.weight" in state and "transformer.wte.weight" in state:
        head, wte = state["lm_head.weight"], state["transformer.wte.weight"]
        if head.shape != wte.shape or not torch.equal(head, wte):
            problems.append("lm_head.weight differs from transformer.wte.weight but tie_word_embeddings is true")
    return problems


def load_gpt2(directory: str | os.PathLike[str]) -> GPT2:
    """A `GPT2` (in eval mode, float32, on the CPU) with the weights of the ``GPT2LMHeadModel`` in ``directory``.

    Half-precision checkpoints are widened to float32; move or cast the model afterwards (``.to(...)``).

    Raises `HFCheckpointError` for any problem with the directory (see the module's docstring); the
    message is one line naming the file and the field or tensors at fault.
    """
    directory = Path(directory)
    _check_directory(directory)
    cfg = config_from_hf(_read_json(directory / CONFIG), where=str(directory / CONFIG))
    state = read_hf_state(directory)
    problems = _problems(cfg, state)
    if problems:
        raise HFCheckpointError(f"{directory}: " + "; ".join(problems))
    model = GPT2(cfg)
    with torch.no_grad():
        for name, target, transposed in _pairs(model):
            if target is not None:
                source = state[name]
                target.copy_(source.t() if transposed else source)
    return model.eval()


# --- saving ----------------------------------------------------------------------------------------


def _check_expressible(model: GPT2, where: str) -> None:
    """Refuse a model whose blocks do not all have the config's ``heads`` and ``ffn_hidden``."""
    cfg = model.cfg
    for name, widths, configs in (("heads", model.block_heads, cfg.heads), ("ffn", model.block_ffn, cfg.ffn_hidden)):
        other = next((i for i, width in enumerate(widths) if width != configs), None)
        if other is not None:
            field = "n_head" if name == "heads" else "n_inner"
            raise ConfigError(
                f"{where}: block {other} has {name} = {widths[other]}, not the config's {configs} (block_{name}="
                f"{list(widths)}); the Hugging Face GPT-2 format has one {field} for every block: keep this model "
                "with typedlm.training.save_checkpoint"
            )


def hf_state(model: GPT2) -> dict[str, Tensor]:
    """``model``'s weights as a ``GPT2LMHeadModel`` state dict: contiguous CPU tensors, none shared.

    A model whose blocks have their own widths is a ConfigError (the format cannot hold them)."""
    _check_expressible(model, "hf_state")
    state: dict[str, Tensor] = {}
    for name, tensor, transposed in _pairs(model):
        if tensor is None:  # a bias typedlm leaves out is a zero bias in HF's layout
            width = state[name.removesuffix(".bias") + ".weight"].shape[-1]
            state[name] = torch.zeros(width)
            continue
        value = tensor.detach().t() if transposed else tensor.detach()
        state[name] = value.to("cpu", copy=True).contiguous()
    return state


def _write_checkpoint(model: GPT2, directory: Path, weights: str) -> None:
    """``config.json`` and the weights file ``weights`` of ``model``, each written atomically (flushed to
    disk, with the permissions ``open()`` gives: see `typedlm.atomic.write_atomic`)."""
    state = hf_state(model)
    if weights == SAFETENSORS:
        write_atomic(directory / weights, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    else:
        write_atomic(directory / weights, lambda tmp: torch.save(state, tmp))
    write_text_atomic(directory / CONFIG, json.dumps(config_to_hf(model.cfg), indent=2) + "\n")


def _written_by_save(name: str) -> bool:
    """Whether a file of a checkpoint directory is one a save replaces: config, weights, index or shard."""
    ours = (CONFIG, SAFETENSORS, PYTORCH_BIN, SAFETENSORS + _INDEX, PYTORCH_BIN + _INDEX)
    return name in ours or _SHARD.fullmatch(name) is not None


def _link_or_copy(source: str, target: str) -> str:
    """A hard link ``target`` to ``source`` (no bytes copied), or a copy where linking is refused."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)
    return target


def _carry_over(previous: Path, new: Path) -> None:
    """Put into ``new`` every entry of ``previous`` that a save does not write (a README, tokenizer files)."""
    for entry in os.scandir(previous):
        if _written_by_save(entry.name):
            continue
        target = new / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            shutil.copytree(entry.path, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry.path, str(target))


def _save_target(directory: Path) -> Path:
    """The directory a save replaces: symlinks followed (the link stays, its target is replaced)."""
    target = directory.resolve()
    if not target.name:
        raise HFCheckpointError(f"{directory}: cannot save a checkpoint over the root directory")
    if target.exists() and not target.is_dir():
        raise HFCheckpointError(f"{directory}: exists and is not a directory; not replacing it")
    return target


def save_gpt2(model: GPT2, directory: str | os.PathLike[str], *, safe_serialization: bool = True) -> None:
    """Write ``model`` to ``directory`` as a ``GPT2LMHeadModel``: ``config.json`` and ``model.safetensors``
    (or ``pytorch_model.bin`` when ``safe_serialization=False``).

    The complete new directory is written beside ``directory`` and swapped in whole (see the module's
    docstring), with the old directory's other files carried over: weights of the other format, an
    index or shards of the old checkpoint are not. A crash leaves the old checkpoint or the new one.
    A model whose blocks have their own widths is a ConfigError (the format cannot hold them).
    """
    _check_expressible(model, "save_gpt2")
    directory = _save_target(Path(directory))
    directory.parent.mkdir(parents=True, exist_ok=True)
    previous = next((d for d in (directory, old_sibling(directory)) if d.is_dir()), None)
    new = Path(tempfile.mkdtemp(prefix=temporary_prefix(directory), suffix=".tmp", dir=directory.parent))
    try:
        _write_checkpoint(model, new, SAFETENSORS if safe_serialization else PYTORCH_BIN)
        if previous is not None:
            _carry_over(previous, new)
        mode = stat.S_IMODE(previous.stat().st_mode) if previous is not None else 0o777 & ~current_umask()
        os.chmod(new, mode)
        fsync_directory(new)
        swap_in(new, directory)
        fsync_directory(directory.parent)
    finally:
        shutil.rmtree(new, ignore_errors=True)  # after an exchange, it holds the previous checkpoint
    remove_leftovers(directory)
