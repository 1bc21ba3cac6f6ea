"""Hugging Face GPT-2 checkpoints: parity with ``transformers`` both ways, both weight formats, clear errors."""

import ctypes
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import typedlm as tl
from typedlm import atomic, hf
from typedlm.hf import HFCheckpointError, load_gpt2, save_gpt2

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

transformers = pytest.importorskip("transformers")  # the dev extra

VOCAB, POSITIONS = 101, 48


pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_model(**overrides: object) -> "GPT2LMHeadModel":
    """A randomly initialised GPT2LMHeadModel; a wide init makes greedy decoding wander over the vocabulary."""
    torch.manual_seed(0)
    settings: dict[str, object] = dict(
        vocab_size=VOCAB, n_positions=POSITIONS, n_embd=48, n_layer=2, n_head=4, n_inner=None,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.3, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model: GPT2LMHeadModel = transformers.GPT2LMHeadModel(transformers.GPT2Config(**(settings | overrides)))
    torch.nn.Module.eval(model)  # transformers overrides eval() without annotations
    return model


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    _hf_model().save_pretrained(directory)
    return directory


def _ids(batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _hf_greedy(model: Any, prompt: torch.Tensor, new: int) -> torch.Tensor:
    """Hugging Face's greedy ``generate``; the explicit mask keeps it from treating a prompt id as padding.

    ``model`` is Any: transformers types ``generate`` with a self type mypy cannot match and a union result.
    """
    mask = torch.ones_like(prompt)
    out: torch.Tensor = model.generate(prompt, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=0)
    return out


def _hf_logits(model: "GPT2LMHeadModel", ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits: torch.Tensor = model(ids).logits
    return logits


def _logits(model: tl.models.GPT2, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)


# --- Hugging Face → typedlm ------------------------------------------------------------------------


def test_loaded_model_gives_hugging_faces_logits(hf_dir: Path) -> None:
    model = load_gpt2(hf_dir)
    assert not model.training
    assert model.cfg.seq_len == POSITIONS and model.cfg.vocab == VOCAB and model.cfg.d_model == 48
    assert model.cfg.ffn_hidden == 4 * 48 and model.cfg.tie_embeddings
    ids = _ids(3, POSITIONS)
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    torch.testing.assert_close(_logits(model, ids), _hf_logits(reference, ids), atol=1e-5, rtol=0)


def test_loaded_model_gives_hugging_faces_20_greedy_tokens(hf_dir: Path) -> None:
    reference = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    prompt = _ids(1, 6, seed=1)
    expected = _hf_greedy(reference, prompt, 20)
    ours = load_gpt2(hf_dir).generate(prompt, 20, tl.Sampling(greedy=True))
    assert len(set(ours[0, 6:].tolist())) > 3  # the test sees real decoding, not one repeated token
    assert torch.equal(ours, expected)
    assert torch.equal(load_gpt2(hf_dir).generate(prompt, 20, tl.Sampling(greedy=True), kv_cache=False), expected)


def test_pytorch_model_bin_with_an_explicit_tied_head_loads(tmp_path: Path, hf_dir: Path) -> None:
    reference = _hf_model()
    state = {name: tensor.clone() for name, tensor in reference.state_dict().items()}
    assert "lm_head.weight" in state
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    ids = _ids(2, 10)
    torch.testing.assert_close(_logits(load_gpt2(tmp_path), ids), _hf_logits(reference, ids), atol=1e-5, rtol=0)


def test_sharded_safetensors_and_bare_gpt2model_names_load(tmp_path: Path) -> None:
    reference = _hf_model()
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ids = _ids(2, 10)
    loaded = load_gpt2(tmp_path / "sharded")
    torch.testing.assert_close(_logits(loaded, ids), _hf_logits(reference, ids), atol=1e-5, rtol=0)

    bare = tmp_path / "bare"  # GPT2Model.save_pretrained: no "transformer." prefix, no lm_head
    bare.mkdir()
    state = {k.removeprefix("transformer."): v.contiguous() for k, v in reference.state_dict().items()}
    save_file({k: v for k, v in state.items() if k != "lm_head.weight"}, bare / "model.safetensors")
    (bare / "config.json").write_bytes((tmp_path / "sharded" / "config.json").read_bytes())
    torch.testing.assert_close(_logits(load_gpt2(bare), ids), _hf_logits(reference, ids), atol=1e-5, rtol=0)


def test_kv_cache_decoding_of_a_loaded_model_matches_recompute_past_the_context(hf_dir: Path) -> None:
    model = load_gpt2(hf_dir)
    prompt = _ids(2, 30, seed=2)
    cached = model.generate(prompt, 30, tl.Sampling(greedy=True))  # 60 > n_positions = 48: the window slides
    assert torch.equal(cached, model.generate(prompt, 30, tl.Sampling(greedy=True), kv_cache=False))


# --- typedlm → Hugging Face ------------------------------------------------------------------------


def _typedlm_model(seed: int = 4, /, **changes: object) -> tl.models.GPT2:
    cfg = tl.CausalConfig(batch=2, seq_len=POSITIONS, vocab=VOCAB, heads=4, head_dim=12, ffn_hidden=80, layers=2)
    model = tl.models.GPT2(cfg.replace(**changes), seed=seed).eval()
    with torch.no_grad():  # non-zero biases and gains, so that a dropped or misplaced one is noticed
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.normal_(0.5, 0.3)
    return model


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_saved_model_opens_in_hugging_face_with_the_same_logits(tmp_path: Path, safe: bool) -> None:
    model = _typedlm_model()
    save_gpt2(model, tmp_path / "out", safe_serialization=safe)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary directory left behind
    expected = {"config.json", "model.safetensors" if safe else "pytorch_model.bin"}
    assert set(os.listdir(tmp_path / "out")) == expected
    if safe:
        assert "lm_head.weight" not in load_file(tmp_path / "out" / "model.safetensors")  # tied: stored once
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    ids = _ids(2, POSITIONS)
    torch.testing.assert_close(_hf_logits(reference, ids), _logits(model, ids), atol=1e-5, rtol=0)
    prompt = _ids(1, 5, seed=3)
    greedy = _hf_greedy(reference, prompt, 20)
    assert torch.equal(model.generate(prompt, 20, tl.Sampling(greedy=True)), greedy)


@pytest.mark.parametrize("changes", [dict(tie_embeddings=False), dict(bias=False), dict(layer_norm_eps=1e-6)])
def test_untied_biasless_and_eps_variants_round_trip(tmp_path: Path, changes: dict[str, object]) -> None:
    model = _typedlm_model(**changes)
    save_gpt2(model, tmp_path)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = _ids(2, 12)
    torch.testing.assert_close(_hf_logits(reference, ids), _logits(model, ids), atol=1e-5, rtol=0)
    loaded = load_gpt2(tmp_path)
    assert loaded.cfg.tie_embeddings == model.cfg.tie_embeddings
    assert loaded.cfg.layer_norm_eps == model.cfg.layer_norm_eps
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), atol=1e-6, rtol=0)


def test_saving_over_a_checkpoint_replaces_it_and_removes_the_other_format(tmp_path: Path) -> None:
    save_gpt2(_typedlm_model(), tmp_path / "ckpt", safe_serialization=False)
    newer = _typedlm_model(layer_norm_eps=1e-6)
    save_gpt2(newer, tmp_path / "ckpt")
    assert set(os.listdir(tmp_path / "ckpt")) == {"config.json", "model.safetensors"}
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert load_gpt2(tmp_path / "ckpt").cfg.layer_norm_eps == 1e-6


def test_a_failed_save_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hf, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        save_gpt2(_typedlm_model(), tmp_path / "out")
    assert os.listdir(tmp_path) == []


# --- saving over a checkpoint: one atomic swap ------------------------------------------------------


def _same(loaded: tl.models.GPT2, model: tl.models.GPT2) -> bool:
    """Whether ``loaded`` has exactly ``model``'s weights and layer-norm epsilon."""
    ours, theirs = loaded.state_dict(), model.state_dict()
    return (
        loaded.cfg.layer_norm_eps == model.cfg.layer_norm_eps
        and ours.keys() == theirs.keys()
        and all(torch.equal(ours[name], theirs[name]) for name in ours)
    )


class _Crash(BaseException):
    """The process dies here: nothing runs after it, not even cleanup."""


def _crash_at(monkeypatch: pytest.MonkeyPatch, step: int | None) -> list[str]:
    """Record the save's moves and deletes (os.replace, the exchange, shutil.rmtree); from call ``step`` on,
    each one crashes instead (so cleanup after the crash cannot run either)."""
    calls: list[str] = []

    def patch(owner: object, name: str) -> None:
        real = getattr(owner, name)

        def crashing(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            if step is not None and len(calls) > step:
                raise _Crash(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, crashing)

    patch(os, "replace")
    patch(atomic, "exchange")
    patch(shutil, "rmtree")
    return calls


def _renameat2_refused(*args: object) -> int:
    """renameat2 as a filesystem without RENAME_EXCHANGE answers it."""
    ctypes.set_errno(errno.EINVAL)
    return -1


_SWAPS = {
    # steps of a save over an existing checkpoint, and what a crash at each step leaves at its path; the
    # first two are write_atomic's renames of the weights and config.json inside the new directory
    "exchange": (["replace", "replace", "exchange", "rmtree"], ["old", "old", "old", "new"]),
    "two-renames": (
        ["replace", "replace", "exchange", "replace", "replace", "rmtree", "rmtree"],
        ["old", "old", "old", "old", "missing", "new", "new"],
    ),
}


def _found_at(ckpt: Path, old: tl.models.GPT2, new: tl.models.GPT2) -> str:
    """ "old" or "new" (the complete checkpoint at ``ckpt``), or "missing" (and the old one complete beside it)."""
    if not ckpt.exists():
        with pytest.raises(HFCheckpointError, match=r"interrupted save_gpt2 left the previous checkpoint complete"):
            load_gpt2(ckpt)
        assert _same(load_gpt2(ckpt.with_name(".ckpt.old")), old)
        assert (ckpt.with_name(".ckpt.old") / "README.md").read_text() == "my notes\n"
        return "missing"
    assert (ckpt / "README.md").read_text() == "my notes\n"
    loaded = load_gpt2(ckpt)
    if _same(loaded, old):
        return "old"
    assert _same(loaded, new), "the directory mixes the old and the new checkpoint"
    return "new"


@pytest.mark.parametrize("swap", sorted(_SWAPS))
def test_a_save_that_crashes_at_any_step_leaves_the_old_or_the_new_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    steps, outcomes = _SWAPS[swap]
    if swap == "two-renames":
        monkeypatch.setattr(atomic, "_renameat2", lambda: _renameat2_refused)
    old, new = _typedlm_model(4), _typedlm_model(5, layer_norm_eps=1e-6)

    def prepare(root: Path) -> Path:
        save_gpt2(old, root / "ckpt")
        (root / "ckpt" / "README.md").write_text("my notes\n")
        return root / "ckpt"

    ckpt = prepare(tmp_path / "complete")
    with monkeypatch.context() as patched:
        calls = _crash_at(patched, None)
        save_gpt2(new, ckpt)
    assert calls == steps
    assert _found_at(ckpt, old, new) == "new" and os.listdir(ckpt.parent) == ["ckpt"]

    found = []
    for step in range(len(steps)):
        ckpt = prepare(tmp_path / f"crash-at-{step}")
        with monkeypatch.context() as patched:
            _crash_at(patched, step)
            with pytest.raises(_Crash):
                save_gpt2(new, ckpt)
        found.append(_found_at(ckpt, old, new))
        with monkeypatch.context() as patched:  # the next save completes the swap and clears what the crash left
            patched.setattr(atomic, "process_alive", lambda pid: False)  # the crashed save's process counts as dead
            save_gpt2(new, ckpt)
        assert _found_at(ckpt, old, new) == "new"
        assert os.listdir(ckpt.parent) == ["ckpt"]
    assert found == outcomes


def test_a_failed_second_rename_puts_the_old_checkpoint_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "_renameat2", lambda: _renameat2_refused)
    old = _typedlm_model(4)
    save_gpt2(old, tmp_path / "ckpt")
    real_replace, calls = os.replace, []

    def replace(source: Any, target: Any) -> None:
        calls.append(Path(target).name)
        if calls.count("ckpt") == 1 and calls[-1] == "ckpt":  # the new directory onto the checkpoint's path
            raise OSError(errno.EIO, "disk on fire")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk on fire"):
        save_gpt2(_typedlm_model(5), tmp_path / "ckpt")
    assert calls == ["model.safetensors", "config.json", ".ckpt.old", "ckpt", "ckpt"]  # files written, swap, undo
    assert _same(load_gpt2(tmp_path / "ckpt"), old) and os.listdir(tmp_path) == ["ckpt"]


def test_saving_over_a_checkpoint_keeps_the_users_files_and_the_directorys_permissions(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    _hf_model().save_pretrained(ckpt, max_shard_size="100KB")
    assert len(list(ckpt.glob("model-*-of-*.safetensors"))) > 1
    (ckpt / "pytorch_model.bin").write_bytes(b"stale weights of the other format")
    (ckpt / "README.md").write_text("my notes\n")
    (ckpt / "tokenizer").mkdir()
    (ckpt / "tokenizer" / "vocab.json").write_text("{}")
    (ckpt / "latest").symlink_to("README.md")
    os.chmod(ckpt, 0o750)
    theirs = {name for name in os.listdir(ckpt) if not name.startswith(("model", "pytorch_model", "config.json"))}
    assert {"README.md", "tokenizer", "latest", "generation_config.json"} <= theirs

    model = _typedlm_model()
    save_gpt2(model, ckpt)
    assert set(os.listdir(ckpt)) == theirs | {"config.json", "model.safetensors"}
    assert (ckpt / "README.md").read_text() == "my notes\n" and (ckpt / "tokenizer" / "vocab.json").read_text() == "{}"
    assert os.readlink(ckpt / "latest") == "README.md"
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o750
    assert os.listdir(tmp_path) == ["ckpt"]
    assert _same(load_gpt2(ckpt), model)


def test_a_new_checkpoint_directory_honours_the_umask(tmp_path: Path) -> None:
    mask = os.umask(0o027)
    try:
        save_gpt2(_typedlm_model(), tmp_path / "ckpt")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o750
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / "ckpt" / name).stat().st_mode) == 0o640


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_the_atomic_exchange_works_on_this_filesystem(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "one").touch()
    (second / "two").touch()
    assert atomic.exchange(first, second)
    assert os.listdir(first) == ["two"] and os.listdir(second) == ["one"]
    with pytest.raises(FileNotFoundError):
        atomic.exchange(first, tmp_path / "missing")


def test_a_save_removes_the_temporaries_of_dead_saves_only(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    save_gpt2(_typedlm_model(), ckpt)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ours = atomic.temporary_prefix(ckpt)  # ends in this process's pid and "-"
    dead = ours.removesuffix(f"{os.getpid()}-") + f"{int(finished.stdout)}-"
    for name in (f"{dead}x1.tmp", f"{ours}x2.tmp", ".other.save-x-1-x3.tmp", ".ckpt.unrelated.tmp"):
        (tmp_path / name).mkdir()
    save_gpt2(_typedlm_model(5), ckpt)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["ckpt", f"{ours}x2.tmp", ".other.save-x-1-x3.tmp", ".ckpt.unrelated.tmp"]
    )


def test_saving_through_a_symlink_replaces_the_checkpoint_it_points_at(tmp_path: Path) -> None:
    real = tmp_path / "store" / "ckpt"
    save_gpt2(_typedlm_model(), real)
    link = tmp_path / "link"
    link.symlink_to(real)
    newer = _typedlm_model(5)
    save_gpt2(newer, link)
    assert link.is_symlink() and _same(load_gpt2(real), newer)
    assert os.listdir(tmp_path / "store") == ["ckpt"]


def test_saving_over_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ckpt").write_text("mine")
    with pytest.raises(HFCheckpointError, match=r"ckpt: exists and is not a directory"):
        save_gpt2(_typedlm_model(), tmp_path / "ckpt")
    assert (tmp_path / "ckpt").read_text() == "mine" and os.listdir(tmp_path) == ["ckpt"]


# --- bad directories -------------------------------------------------------------------------------


def _copy(hf_dir: Path, to: Path) -> Path:
    to.mkdir()
    for name in ("config.json", "model.safetensors"):
        (to / name).write_bytes((hf_dir / name).read_bytes())
    return to


def _edit_weights(directory: Path, edit: dict[str, torch.Tensor | None]) -> None:
    state = load_file(directory / "model.safetensors")
    for name, value in edit.items():
        if value is None:
            del state[name]
        else:
            state[name] = value
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


def _edit_config(directory: Path, **changes: object) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | changes))


def test_missing_files_are_named(tmp_path: Path, hf_dir: Path) -> None:
    with pytest.raises(HFCheckpointError, match="not a directory"):
        load_gpt2(tmp_path / "nowhere")
    with pytest.raises(HFCheckpointError, match=r"config\.json: cannot read"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    with pytest.raises(HFCheckpointError, match=r"no model\.safetensors or pytorch_model\.bin"):
        load_gpt2(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(HFCheckpointError, match=r"model\.safetensors: cannot read weights"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(HFCheckpointError, match=r"config\.json: not valid JSON"):
        load_gpt2(tmp_path)


def test_missing_unexpected_and_misshaped_tensors_are_all_named(tmp_path: Path, hf_dir: Path) -> None:
    directory = _copy(hf_dir, tmp_path / "bad")
    _edit_weights(
        directory,
        {
            "transformer.h.1.mlp.c_fc.bias": None,
            "transformer.h.0.attn.c_attn.weight": torch.zeros(144, 48),
            "transformer.h.9.ln_1.weight": torch.zeros(48),
        },
    )
    with pytest.raises(HFCheckpointError) as info:
        load_gpt2(directory)
    message = str(info.value)
    assert "missing tensors transformer.h.1.mlp.c_fc.bias" in message
    assert "unexpected tensors transformer.h.9.ln_1.weight" in message
    assert "transformer.h.0.attn.c_attn.weight has shape (144, 48), expected (48, 144)" in message


def test_a_head_that_is_not_the_tied_embedding_is_refused(tmp_path: Path, hf_dir: Path) -> None:
    directory = _copy(hf_dir, tmp_path / "bad")
    _edit_weights(directory, {"lm_head.weight": torch.zeros(VOCAB, 48)})
    with pytest.raises(HFCheckpointError, match=r"lm_head\.weight differs from transformer\.wte\.weight"):
        load_gpt2(directory)
    _edit_config(directory, tie_word_embeddings=False)
    loaded = load_gpt2(directory)  # untied, the head is its own tensor
    assert not loaded.cfg.tie_embeddings and bool((loaded.transformer.head.weight == 0).all())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(activation_function="relu"), r"activation_function='relu' is not supported by typedlm"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True is not supported"),
        (dict(model_type="llama"), "model_type='llama', expected 'gpt2'"),
        (dict(n_head=5), "n_embd=48 must be a multiple of n_head=5"),
        (dict(n_layer=0), r"config\.json: n_layer=0 must be an int >= 1"),
        (dict(n_positions=None), "missing field 'n_positions'"),
    ],
)
def test_configs_typedlm_cannot_represent_are_named(
    tmp_path: Path, hf_dir: Path, changes: dict[str, object], message: str
) -> None:
    directory = _copy(hf_dir, tmp_path / "bad")
    _edit_config(directory, **changes)
    with pytest.raises(HFCheckpointError, match=message):
        load_gpt2(directory)
    assert issubclass(HFCheckpointError, ValueError)
