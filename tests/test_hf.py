"""Hugging Face GPT-2 checkpoints: parity with ``transformers`` both ways, both weight formats, clear errors."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import typedlm as tl
from typedlm import hf
from typedlm.hf import HFCheckpointError, load_gpt2, save_gpt2

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

transformers = pytest.importorskip("transformers")  # the dev extra

VOCAB, POSITIONS = 101, 48


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models decode fastest on one thread (and do not stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    ours = load_gpt2(hf_dir).generate(prompt, 20, greedy=True)
    assert len(set(ours[0, 6:].tolist())) > 3  # the test sees real decoding, not one repeated token
    assert torch.equal(ours, expected)
    assert torch.equal(load_gpt2(hf_dir).generate(prompt, 20, greedy=True, kv_cache=False), expected)


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
    cached = model.generate(prompt, 30, greedy=True)  # 60 > n_positions = 48: the window slides
    assert torch.equal(cached, model.generate(prompt, 30, greedy=True, kv_cache=False))


# --- typedlm → Hugging Face ------------------------------------------------------------------------


def _typedlm_model(**changes: object) -> tl.models.GPT2:
    cfg = tl.CausalConfig(batch=2, seq_len=POSITIONS, vocab=VOCAB, heads=4, head_dim=12, ffn_hidden=80, layers=2)
    model = tl.models.GPT2(cfg.replace(**changes), seed=4).eval()
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
    assert torch.equal(model.generate(prompt, 20, greedy=True), greedy)


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
        (dict(n_layer=0), "CausalConfig.layers=0: must be >= 1"),
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
