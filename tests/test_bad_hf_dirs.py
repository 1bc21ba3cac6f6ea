"""Every bad Hugging Face directory is refused by `load_gpt2` with an `HFCheckpointError`: one line that starts
with the checkpoint's path and names the file and the field, index entry or tensor at fault. Loading never
changes anything on disk. Hypothesis fuzzes config.json, the shard index and the weights files: whatever
they hold, `load_gpt2` returns a model or raises `HFCheckpointError`, nothing else."""

import io
import json
import os
import pickle
import random
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import typedlm as tl
from typedlm.hf import HFCheckpointError, config_to_hf, hf_state, load_gpt2, save_gpt2

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, on odd pickles

TINY = tl.CausalConfig(batch=1, seq_len=8, vocab=16, heads=2, head_dim=4, ffn_hidden=16, layers=1, seed_stride=1)
SAFETENSORS, BIN, CONFIG = "model.safetensors", "pytorch_model.bin", "config.json"
INDEX = "model.safetensors.index.json"
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
FIELDS = (
    "n_embd", "n_head", "n_layer", "n_positions", "vocab_size", "n_inner", "layer_norm_epsilon", "resid_pdrop",
    "tie_word_embeddings", "model_type", "activation_function", "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx", "add_cross_attention",
)  # fmt: skip
"""The config.json fields typedlm reads."""
TENSORS = sorted(hf_state(tl.models.GPT2(TINY)))
"""The tensor names of the tiny checkpoint, in HF's layout."""

Damage = Callable[[Path], object]
"""Breaks the valid checkpoint directory it is given (its parent is the case's own sandbox)."""


class _Evil:
    """A class of the test's own: a pickle naming it must be refused, never unpickled."""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid checkpoint of a tiny GPT-2, saved once: each case damages a copy."""
    directory = tmp_path_factory.mktemp("tiny") / "ckpt"
    save_gpt2(tl.models.GPT2(TINY, seed=1), directory)
    return directory


# --- ways to damage a checkpoint -------------------------------------------------------------------


def _state(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / SAFETENSORS)


def _config(**changes: object) -> Damage:
    """Set config.json fields (a value of ``...`` deletes the field)."""

    def damage(directory: Path) -> None:
        config = json.loads((directory / CONFIG).read_text())
        config.update(changes)
        config = {name: value for name, value in config.items() if value is not ...}
        (directory / CONFIG).write_text(json.dumps(config))

    return damage


def _write(name: str, content: bytes | str) -> Damage:
    def damage(directory: Path) -> None:
        data = content.encode() if isinstance(content, str) else content
        (directory / name).write_bytes(data)

    return damage


def _edit_text(name: str, old: str, new: str) -> Damage:
    def damage(directory: Path) -> None:
        text = (directory / name).read_text()
        assert old in text
        (directory / name).write_text(text.replace(old, new))

    return damage


def _replace_by_directory(name: str) -> Damage:
    def damage(directory: Path) -> None:
        (directory / name).unlink()
        (directory / name).mkdir()

    return damage


def _weights(**edit: torch.Tensor | None) -> Damage:
    """Replace, add or (with None) delete tensors of model.safetensors; ``__`` in a name stands for ``.``."""

    def damage(directory: Path) -> None:
        state = _state(directory)
        for key, value in edit.items():
            name = key.replace("__", ".")
            if value is None:
                del state[name]
            else:
                state[name] = value
        save_file(state, directory / SAFETENSORS)

    return damage


def _with_nonfinite(name: str, positions: list[int], value: float) -> Damage:
    def damage(directory: Path) -> None:
        state = _state(directory)
        flat = state[name].flatten().clone()
        flat[positions] = value
        state[name] = flat.reshape(state[name].shape)
        save_file(state, directory / SAFETENSORS)

    return damage


def _cut_safetensors(keep: Callable[[bytes], int]) -> Damage:
    """Keep only the first ``keep(data)`` bytes of model.safetensors."""

    def damage(directory: Path) -> None:
        data = (directory / SAFETENSORS).read_bytes()
        (directory / SAFETENSORS).write_bytes(data[: keep(data)])

    return damage


def _header_length(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def _as_bin(directory: Path, payload: object | bytes) -> None:
    """Replace model.safetensors by pytorch_model.bin: raw bytes, or ``torch.save(payload)``."""
    (directory / SAFETENSORS).unlink()
    if isinstance(payload, bytes):
        (directory / BIN).write_bytes(payload)
    else:
        torch.save(payload, directory / BIN)


def _bin(make: Callable[[dict[str, torch.Tensor]], object | bytes]) -> Damage:
    """pytorch_model.bin holding ``make(valid state)``: bytes as they are, anything else through torch.save."""
    return lambda directory: _as_bin(directory, make(_state(directory)))


def _torch_bytes(payload: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _weight_map(names: list[str]) -> dict[str, str]:
    """The first half of the (sorted) tensor names in the first shard, the rest in the second."""
    names = sorted(names)
    return dict.fromkeys(names[: len(names) // 2], SHARDS[0]) | dict.fromkeys(names[len(names) // 2 :], SHARDS[1])


def _shard(directory: Path) -> dict[str, Any]:
    """Split model.safetensors into two shards with an index (valid: it loads); returns the index."""
    state = _state(directory)
    (directory / SAFETENSORS).unlink()
    weight_map = _weight_map(list(state))
    for shard in SHARDS:
        save_file({name: state[name] for name, where in weight_map.items() if where == shard}, directory / shard)
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / INDEX).write_text(json.dumps(index))
    return index


def _index(change: Callable[[Path, dict[str, Any]], object]) -> Damage:
    """Shard the checkpoint, then write ``change(directory, index)`` as the index (bytes as they are)."""

    def damage(directory: Path) -> None:
        content = change(directory, _shard(directory))
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (directory / INDEX).write_bytes(data)

    return damage


def _first_shard_is(value: object) -> Damage:
    """The index maps its first tensor to ``value``."""

    def change(directory: Path, index: dict[str, Any]) -> object:
        index["weight_map"][next(iter(index["weight_map"]))] = value
        return index

    return _index(change)


def _first_shard_links_to(target: str, *, make_target: bool) -> Damage:
    """The first tensor's shard is a symlink ``link.safetensors`` → ``target`` (relative to the directory)."""

    def change(directory: Path, index: dict[str, Any]) -> object:
        if make_target:
            shutil.copy(directory / SHARDS[0], directory.parent / "outside.safetensors")
        (directory / "link.safetensors").symlink_to(target)
        index["weight_map"][next(iter(index["weight_map"]))] = "link.safetensors"
        return index

    return _index(change)


def _move(to: Callable[[Path], Path]) -> Damage:
    return lambda directory: directory.rename(to(directory))


def _replace_by_file(directory: Path) -> None:
    shutil.rmtree(directory)
    directory.write_text("not a directory")


def _subdirectory_shard(directory: Path, index: dict[str, Any]) -> object:
    (directory / "sub").mkdir()
    index["weight_map"][next(iter(index["weight_map"]))] = "sub"
    return index


# --- the cases -------------------------------------------------------------------------------------

FIRST = "transformer.h.0.attn.c_attn.bias"
"""The first tensor in the index's weight_map (names in sorted order)."""

_BAD_FIELD_VALUES: list[tuple[str, object, str]] = [
    *[
        (field, value, f"{field}={value!r} must be an int >= 1")
        for field in ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size", "n_inner")
        for value in ("8", 8.0, True, 0, -1, [8], {"n": 8})
    ],
    *[
        (field, None, f"missing field {field!r}")
        for field in ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size")
    ],
    *[
        ("layer_norm_epsilon", value, f"layer_norm_epsilon={value!r} must be a number > 0, finite")
        for value in ("1e-5", True, 0, -1e-5, float("nan"), float("inf"), None, [1e-5])
    ],
    *[
        ("resid_pdrop", value, f"resid_pdrop={value!r} must be a number in [0, 1)")
        for value in (1, 1.0, -0.1, "0.1", True, float("nan"), None)
    ],
    *[
        ("tie_word_embeddings", value, f"tie_word_embeddings={value!r} must be true or false")
        for value in (1, 0, "true", None, list[object]())
    ],
    ("model_type", "llama", "model_type='llama', expected 'gpt2'"),
    ("model_type", 5, "model_type=5, expected 'gpt2'"),
    ("activation_function", "relu", "activation_function='relu' is not supported by typedlm"),
    ("activation_function", None, "activation_function=None is not supported by typedlm"),
    ("scale_attn_weights", False, "scale_attn_weights=False is not supported"),
    ("scale_attn_weights", 1, "scale_attn_weights=1 is not supported"),
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx=True is not supported"),
    ("add_cross_attention", True, "add_cross_attention=True is not supported"),
]

UNREADABLE_SAFETENSORS = "model.safetensors: cannot read weights: not a valid safetensors file"
UNREADABLE_BIN = "pytorch_model.bin: cannot read weights: "
MISSING_SHARD = "model-00003-of-00002.safetensors"
ENTRY = f"{INDEX}: weight_map['{FIRST}']="
"""How an error about the index's first entry starts."""


def _garbage(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


CASES: list[tuple[str, Damage, tuple[str, ...]]] = [
    # the directory
    ("missing-dir", shutil.rmtree, ("ckpt: not a directory (it does not exist)",)),
    ("file-instead-of-dir", _replace_by_file, ("ckpt: not a directory",)),
    ("interrupted-save", _move(lambda d: d.with_name(".ckpt.old")), (".ckpt.old", "interrupted save_gpt2")),
    # config.json as a file
    ("no-config", lambda d: (d / CONFIG).unlink(), ("config.json: cannot read",)),
    ("config-is-a-dir", _replace_by_directory(CONFIG), ("config.json: cannot read",)),
    ("config-not-json", _write(CONFIG, "{oops"), ("config.json: not valid JSON",)),
    ("config-not-utf8", _write(CONFIG, b"\xff\xfe{}"), ("config.json: not valid JSON",)),
    ("config-int-too-long", _write(CONFIG, '{"n_layer": 1' + "0" * 5000 + "}"), ("config.json: not valid JSON",)),
    ("config-nested-too-deep", _write(CONFIG, "[" * 100_000), ("config.json: not valid JSON (nested too deeply)",)),
    ("config-a-list", _write(CONFIG, "[1, 2]"), ("config.json: expected a JSON object, got list",)),
    ("config-a-string", _write(CONFIG, '"gpt2"'), ("config.json: expected a JSON object, got str",)),
    (
        "config-huge-float",
        _edit_text(CONFIG, '"layer_norm_epsilon": 1e-05', '"layer_norm_epsilon": 1e999'),
        ("layer_norm_epsilon=inf",),
    ),
    # config.json fields
    *[
        (f"field-{field}={json.dumps(value)}", _config(**{field: value}), ("config.json: " + message,))
        for field, value, message in _BAD_FIELD_VALUES
    ],
    ("n_embd-not-a-multiple-of-n_head", _config(n_head=3), ("config.json: n_embd=8 must be a multiple of n_head=3",)),
    # config.json disagreeing with the weights (checked before the model is built)
    ("more-layers-than-blocks", _config(n_layer=4), ("n_layer=4, but the weights hold 1 block(s)",)),
    ("huge-n_layer", _config(n_layer=10**15), (f"n_layer={10**15}, but the weights hold 1 block(s)",)),
    ("huge-n_positions", _config(n_positions=10**12), (f"wpe.weight has shape (8, 8), expected ({10**12}, 8)",)),
    ("wrong-vocab_size", _config(vocab_size=17), ("transformer.wte.weight has shape (16, 8), expected (17, 8)",)),
    ("wrong-n_inner", _config(n_inner=15), ("h.0.mlp.c_fc.weight has shape (8, 16), expected (8, 15)",)),
    # the weights, as a whole
    ("no-weights", lambda d: (d / SAFETENSORS).unlink(), ("ckpt: no model.safetensors or pytorch_model.bin",)),
    ("weights-a-dir", _replace_by_directory(SAFETENSORS), ("no model.safetensors",)),
    # tensors
    (
        "missing-tensor",
        _weights(transformer__h__0__mlp__c_fc__bias=None),
        ("missing tensors transformer.h.0.mlp.c_fc.bias",),
    ),
    (
        "unexpected-tensor",
        _weights(transformer__h__3__ln_1__weight=torch.ones(8)),
        ("unexpected tensors transformer.h.3.ln_1.weight",),
    ),
    ("tensor-name-with-a-newline", _weights(**{"x\ny": torch.ones(1)}), ("unexpected tensors 'transformer.x\\ny'",)),
    (
        "misshaped-tensor",
        _weights(transformer__h__0__attn__c_attn__weight=torch.zeros(24, 8)),
        ("transformer.h.0.attn.c_attn.weight has shape (24, 8), expected (8, 24)",),
    ),
    (
        "int-tensor",
        _weights(transformer__ln_f__weight=torch.ones(8, dtype=torch.int64)),
        ("transformer.ln_f.weight has dtype torch.int64",),
    ),
    (
        "untied-head",
        _weights(lm_head__weight=torch.zeros(16, 8)),
        ("lm_head.weight differs from transformer.wte.weight",),
    ),
    (
        "tensor-twice",
        _weights(h__0__ln_1__weight=torch.ones(8)),
        ("model.safetensors: tensor transformer.h.0.ln_1.weight is also in", "(as transformer.h.0.ln_1.weight)"),
    ),
    (
        "nan-weights",
        _with_nonfinite("transformer.h.0.ln_1.weight", [0, 3, 5], float("nan")),
        ("model.safetensors: tensor transformer.h.0.ln_1.weight has 3 non-finite value(s)",),
    ),
    (
        "inf-weights",
        _with_nonfinite("transformer.wpe.weight", [1, 9], float("-inf")),
        ("model.safetensors: tensor transformer.wpe.weight has 2 non-finite value(s) (NaN or infinity) out of 64",),
    ),
    # a damaged model.safetensors
    ("safetensors-empty", _write(SAFETENSORS, b""), (UNREADABLE_SAFETENSORS,)),
    ("safetensors-random", _write(SAFETENSORS, _garbage(0, 500)), (UNREADABLE_SAFETENSORS,)),
    ("safetensors-truncated", _cut_safetensors(lambda data: len(data) // 2), (UNREADABLE_SAFETENSORS,)),
    ("safetensors-header-only", _cut_safetensors(_header_length), (UNREADABLE_SAFETENSORS,)),
    ("safetensors-header-cut", _cut_safetensors(lambda data: _header_length(data) - 5), (UNREADABLE_SAFETENSORS,)),
    # a damaged pytorch_model.bin
    ("bin-empty", _bin(lambda state: b""), (UNREADABLE_BIN + "the file is empty",)),
    ("bin-not-torch", _bin(lambda state: b"this is a text file"), (UNREADABLE_BIN + "not a torch.save file",)),
    (
        "bin-truncated",
        _bin(lambda state: _torch_bytes(state)[:-300]),
        (UNREADABLE_BIN + "a damaged or truncated torch.save archive",),
    ),
    (
        "bin-zip-of-garbage",
        _bin(lambda state: _zip({"archive/data.pkl": _garbage(1, 200), "archive/version": b"3\n"})),
        (UNREADABLE_BIN + "a damaged or truncated torch.save archive",),
    ),
    (
        "bin-zip-without-archive",
        _bin(lambda state: _zip({"readme.txt": b"hello"})),
        (UNREADABLE_BIN + "a damaged or truncated torch.save archive",),
    ),
    (
        "bin-torch-saved-class",
        _bin(lambda state: state | {"extra": _Evil()}),
        (UNREADABLE_BIN + f"it pickles {_Evil.__module__}._Evil", "never runs pickled code"),
    ),
    (
        "bin-pickled-class",
        _bin(lambda state: pickle.dumps({"extra": _Evil()}, protocol=2)),
        (UNREADABLE_BIN + f"it pickles {_Evil.__module__}._Evil",),
    ),
    (
        "bin-pickle-protocol-5",
        _bin(lambda state: pickle.dumps({"a": 1}, protocol=5)),
        (UNREADABLE_BIN + "a damaged or truncated pickle, or one holding more than tensors",),
    ),
    (
        "bin-a-list",
        _bin(lambda state: list(state.values())),
        ("pytorch_model.bin: expected a state dict (names → tensors), got list",),
    ),
    (
        "bin-non-tensor-value",
        _bin(lambda state: state | {"transformer.wte.weight": [1.0]}),
        ("pytorch_model.bin: expected a state dict", "'transformer.wte.weight' is list, not a tensor"),
    ),
    (
        "bin-int-key",
        _bin(lambda state: {1: torch.zeros(1)}),
        ("pytorch_model.bin: expected a state dict", "key 1 is not a string"),
    ),
    (
        "bin-nan",
        _bin(lambda state: state | {"transformer.ln_f.bias": torch.full((8,), float("nan"))}),
        ("pytorch_model.bin: tensor transformer.ln_f.bias has 8 non-finite value(s)",),
    ),
    # a sharded checkpoint's index
    ("index-not-json", _index(lambda d, index: b"{"), (f"{INDEX}: not valid JSON",)),
    ("index-a-list", _index(lambda d, index: [index]), (f"{INDEX}: expected a JSON object, got list",)),
    (
        "index-without-weight_map",
        _index(lambda d, index: {"metadata": {}}),
        (f"{INDEX}: missing the 'weight_map' object",),
    ),
    (
        "index-weight_map-a-list",
        _index(lambda d, index: {"weight_map": [SHARDS[0]]}),
        (f"{INDEX}: missing the 'weight_map' object",),
    ),
    ("index-weight_map-empty", _index(lambda d, index: {"weight_map": {}}), (f"{INDEX}: 'weight_map' is empty",)),
    (
        "index-shard-absolute",
        _first_shard_is("/etc/passwd"),
        (ENTRY + "'/etc/passwd': a shard must be a relative path inside",),
    ),
    (
        "index-shard-dotdot",
        _first_shard_is(f"../ckpt/{SHARDS[0]}"),
        (ENTRY + f"'../ckpt/{SHARDS[0]}': a shard must be a relative path inside",),
    ),
    ("index-shard-nul", _first_shard_is("a\0b"), (ENTRY + "'a\\x00b': a shard must be a relative path inside",)),
    (
        "index-shard-symlink-outside",
        _first_shard_links_to("../outside.safetensors", make_target=True),
        (ENTRY + "'link.safetensors': the shard resolves outside",),
    ),
    (
        "index-shard-symlink-loop",
        _first_shard_links_to("link.safetensors", make_target=False),
        (ENTRY + "'link.safetensors'",),
    ),
    ("index-shard-an-int", _first_shard_is(5), (ENTRY + "5: a shard must be a file name",)),
    ("index-shard-null", _first_shard_is(None), (ENTRY + "None: a shard must be a file name",)),
    ("index-shard-a-list", _first_shard_is([SHARDS[0]]), (ENTRY + f"['{SHARDS[0]}']: a shard must be a file name",)),
    ("index-shard-empty-name", _first_shard_is(""), (ENTRY + "'': a shard must be a file name",)),
    (
        "index-shard-missing",
        _first_shard_is(MISSING_SHARD),
        (ENTRY + f"'{MISSING_SHARD}': the shard does not exist",),
    ),
    ("index-shard-a-dir", _index(_subdirectory_shard), (ENTRY + "'sub': the shard is not a file",)),
    (
        "index-shard-damaged",
        _index(lambda d, index: [(d / SHARDS[1]).write_bytes(b"\0" * 10), index][1]),
        (f"{SHARDS[1]}: cannot read weights",),
    ),
    ("index-shard-not-weights", _first_shard_is(CONFIG), ("config.json: cannot read weights: not a torch.save file",)),
]


def _snapshot(root: Path) -> dict[str, tuple[str, bytes, int]]:
    """Every path under ``root``: its kind, its bytes (a link's target) and its mtime."""
    found: dict[str, tuple[str, bytes, int]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            if path.is_symlink():
                found[str(path)] = ("link", os.readlink(path).encode(), info.st_mtime_ns)
            elif path.is_dir():
                found[str(path)] = ("dir", b"", info.st_mtime_ns)
            else:
                found[str(path)] = ("file", path.read_bytes(), info.st_mtime_ns)
    return found


def _copy(saved: Path, sandbox: Path) -> Path:
    sandbox.mkdir()
    return Path(shutil.copytree(saved, sandbox / "ckpt"))


def _check_message(error: HFCheckpointError, directory: Path) -> str:
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(str(directory)), message
    assert "weights_only" not in message, message
    return message


@pytest.mark.parametrize(("damage", "fragments"), [(d, f) for _, d, f in CASES], ids=[name for name, _, _ in CASES])
def test_a_bad_directory_is_refused_with_one_line_naming_the_fault(
    saved: Path, tmp_path: Path, damage: Damage, fragments: tuple[str, ...]
) -> None:
    directory = _copy(saved, tmp_path / "case")
    damage(directory)
    before = _snapshot(tmp_path)
    with pytest.raises(HFCheckpointError) as info:
        load_gpt2(directory)
    message = _check_message(info.value, directory)
    for fragment in fragments:
        assert fragment in message
    assert _snapshot(tmp_path) == before  # loading changed nothing on disk


def test_the_undamaged_layouts_load(saved: Path, tmp_path: Path) -> None:
    """The cases' starting points are valid: sharded, pytorch_model.bin and the plain directory all load."""
    reference = load_gpt2(saved)
    sharded = _copy(saved, tmp_path / "sharded")
    _shard(sharded)
    as_bin = _copy(saved, tmp_path / "bin")
    _as_bin(as_bin, _state(saved))
    for directory in (sharded, as_bin):
        loaded = load_gpt2(directory)
        for ours, theirs in zip(loaded.parameters(), reference.parameters(), strict=True):
            assert torch.equal(ours, theirs)


def test_there_is_a_case_for_each_field_typedlm_reads() -> None:
    assert {field for field, _, _ in _BAD_FIELD_VALUES} == set(FIELDS)


# --- fuzzing ---------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_plausible = st.one_of(
    st.integers(-2, 40), st.floats(), st.sampled_from([True, False, None, 1e-5, 0.5, 1.0, "gelu_new", "gpt2", "8"])
)


@pytest.fixture(scope="module")
def config_fuzz_dir(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(saved, tmp_path_factory.mktemp("fuzz-config") / "ckpt"))


@pytest.fixture(scope="module")
def weights_fuzz_dir(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(saved, tmp_path_factory.mktemp("fuzz-weights") / "ckpt"))


@pytest.fixture(scope="module")
def sharded_fuzz_dir(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = Path(shutil.copytree(saved, tmp_path_factory.mktemp("fuzz-sharded") / "ckpt"))
    _shard(directory)
    (directory / "sub").mkdir()
    return directory


def _loads_or_refuses(directory: Path) -> str:
    """`load_gpt2` gives a model ("loaded") or an `HFCheckpointError` ("refused"); anything else escapes
    and fails the test."""
    try:
        model = load_gpt2(directory)
    except HFCheckpointError as error:
        _check_message(error, directory)
        return "refused"
    assert isinstance(model, tl.models.GPT2)
    return "loaded"


def _edited_config(changes: dict[str, object], removed: set[str]) -> bytes:
    """The tiny model's real config.json with some fields changed and some removed."""
    config = config_to_hf(TINY) | changes
    return json.dumps({name: value for name, value in config.items() if name not in removed}).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=st.one_of(
        _json.map(lambda value: json.dumps(value).encode()),
        st.builds(
            _edited_config,
            st.dictionaries(st.sampled_from(FIELDS), _json | _plausible, max_size=4),
            st.sets(st.sampled_from(FIELDS), max_size=2),
        ),
        st.binary(max_size=64),
    )
)
def test_any_config_json_loads_or_is_refused(config_fuzz_dir: Path, content: bytes) -> None:
    (config_fuzz_dir / CONFIG).write_bytes(content)
    assert _loads_or_refuses(config_fuzz_dir) in ("loaded", "refused")


_shard_names = st.one_of(
    st.sampled_from([*SHARDS, "", ".", "..", "sub", "../ckpt/" + SHARDS[0], "/etc/passwd", CONFIG, INDEX, "a\0b"]),
    st.text(max_size=12),
    _json,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=st.one_of(
        _json,
        st.builds(lambda m: {"weight_map": m}, st.dictionaries(st.text(max_size=40), _shard_names, max_size=4)),
        st.dictionaries(st.sampled_from(TENSORS), _shard_names, max_size=3).map(
            lambda changes: {"weight_map": _weight_map(TENSORS) | changes}
        ),
        st.binary(max_size=64),
    )
)
def test_any_shard_index_loads_or_is_refused(sharded_fuzz_dir: Path, content: object) -> None:
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    (sharded_fuzz_dir / INDEX).write_bytes(data)
    assert _loads_or_refuses(sharded_fuzz_dir) in ("loaded", "refused")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from([SAFETENSORS, BIN]),
    cut=st.integers(0, 10_000),
    splice=st.binary(max_size=16),
    at=st.integers(0, 10_000),
)
def test_any_damaged_weights_file_loads_or_is_refused(
    weights_fuzz_dir: Path, saved: Path, name: str, cut: int, splice: bytes, at: int
) -> None:
    """A valid weights file, cut short and with a few bytes overwritten: a model (if the damage missed) or an error."""
    for stale in (SAFETENSORS, BIN):
        (weights_fuzz_dir / stale).unlink(missing_ok=True)
    data = (saved / SAFETENSORS).read_bytes() if name == SAFETENSORS else _torch_bytes(_state(saved))
    data = data[: max(0, len(data) - cut)]
    data = data[:at] + splice + data[at + len(splice) :]
    (weights_fuzz_dir / name).write_bytes(data)
    assert _loads_or_refuses(weights_fuzz_dir) in ("loaded", "refused")
