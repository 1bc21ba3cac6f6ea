"""examples/llama.py, a second model family written with the public API: Hugging Face's Llama gives the
same logits from the same weights, cached decoding equals recompute decoding and HF's greedy ``generate``,
shape bugs inside are refused naming the dim, training lowers the loss, and mypy / `typedlm check` pass."""

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
from jaxtyping import Float
from mypy import api
from torch import Tensor

import typedlm as tl
from examples import llama
from examples.llama import Llama, LlamaConfig
from typedlm.check import check_modules
from typedlm.kv_cache import attached_kv_cache
from typedlm.training import TrainConfig, load_corpus, split_tokens, train

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

transformers = pytest.importorskip("transformers")  # the dev extra

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(kv_heads: int = 2, **overrides: Any) -> LlamaConfig:
    sizes: dict[str, Any] = dict(
        batch=2, seq_len=24, vocab=61, heads=4, kv_heads=kv_heads, head_dim=8, ffn_hidden=40, layers=2,
        rope_theta=500.0, layer_norm_eps=1e-6,
    )  # fmt: skip
    return LlamaConfig(**(sizes | overrides))


def _model(cfg: LlamaConfig) -> Llama:
    """A Llama whose every weight is random, norm gains included (so a swapped or unused weight shows)."""
    model = Llama(cfg, seed=3).eval()
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1.0 if "norm" in name else 0.0) + 0.3 * torch.randn(p.shape, generator=generator))
    return model


_TOP_LEVEL_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "head.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.q.weight": "self_attn.q_proj.weight",
    "attention.k.weight": "self_attn.k_proj.weight",
    "attention.v.weight": "self_attn.v_proj.weight",
    "attention.o.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate": "mlp.gate_proj.weight",
    "mlp.up": "mlp.up_proj.weight",
    "mlp.down": "mlp.down_proj.weight",
}


def _hf_name(key: str) -> str:
    """HF's name of our parameter ``key``: ``blocks.1.mlp.up`` is ``model.layers.1.mlp.up_proj.weight``."""
    if key.startswith("blocks."):
        _, index, rest = key.split(".", 2)
        return f"model.layers.{index}.{_BLOCK_NAMES[rest]}"
    return _TOP_LEVEL_NAMES[key]


def _hf_copy(model: Llama, cfg: LlamaConfig) -> "LlamaForCausalLM":
    """Hugging Face's ``LlamaForCausalLM`` (eager attention, fp32) holding ``model``'s weights, every one mapped."""
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.seq_len, rms_norm_eps=cfg.layer_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    hf_cfg._attn_implementation = "eager"
    state = {_hf_name(key): value.clone() for key, value in model.state_dict().items()}
    reference: LlamaForCausalLM = transformers.LlamaForCausalLM(hf_cfg)
    reference.load_state_dict(state, strict=True)
    torch.nn.Module.eval(reference)  # transformers overrides eval() without annotations
    return reference


def _ids(cfg: LlamaConfig, batch: int, seq: int, seed: int = 0) -> Tensor:
    return torch.randint(0, cfg.vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


# --- the same logits as Hugging Face's Llama ----------------------------------------------------------


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_logits_equal_hugging_face_llama(kv_heads: int) -> None:
    cfg = _config(kv_heads)
    model = _model(cfg)
    ids = _ids(cfg, 3, cfg.seq_len)
    with torch.no_grad():
        ours = model(ids)
        theirs = _hf_copy(model, cfg)(ids).logits
    assert ours.shape == (3, cfg.seq_len, cfg.vocab)
    assert ours.abs().max() > 1.0  # the comparison is not between two near-zero tensors
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_start_pos_reads_later_positions_like_hugging_face() -> None:
    """Ids read at positions 5.. (``start_pos=5``) give HF's logits for those positions."""
    cfg = _config()
    model = _model(cfg)
    ids = _ids(cfg, 2, 7)
    with torch.no_grad():
        ours = model(ids, start_pos=5)
        theirs = _hf_copy(model, cfg)(ids, position_ids=torch.arange(5, 12).expand(2, 7)).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_the_head_is_untied_unless_asked() -> None:
    untied, tied = Llama(_config()), Llama(_config(tie_embeddings=True))
    assert untied.head.weight is not untied.embed.weight and not torch.equal(untied.head.weight, untied.embed.weight)
    assert tied.head.weight is tied.embed.weight


# --- decoding with the KV cache -------------------------------------------------------------------------


def _hf_greedy(model: Any, prompt: Tensor, new: int) -> Tensor:
    """Hugging Face's greedy ``generate`` (``model`` is Any: transformers' ``generate`` is typed loosely)."""
    out: Tensor = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False, pad_token_id=0
    )
    return out


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_cached_greedy_decoding_equals_recompute_and_hugging_face(kv_heads: int) -> None:
    cfg = _config(kv_heads)
    model = _model(cfg)
    prompt = _ids(cfg, 2, 5, seed=1)
    cached = tl.generate.generate_tokens(
        model, prompt, 30, tl.Sampling(greedy=True), kv_cache=True
    )  # slides past seq_len
    recomputed = tl.generate.generate_tokens(model, prompt, 30, tl.Sampling(greedy=True), kv_cache=False)
    assert torch.equal(cached, recomputed)
    fits = cfg.seq_len - prompt.shape[1]  # HF has no sliding window: compare while the context fits
    assert torch.equal(cached[:, : cfg.seq_len], _hf_greedy(_hf_copy(model, cfg), prompt, fits))
    assert len(set(cached[:, 5:].flatten().tolist())) > 3  # decoding wanders over the vocabulary


def test_cached_decoding_refuses_a_start_pos_that_does_not_continue_the_cache() -> None:
    cfg = _config(kv_heads=4)
    model = _model(cfg)
    ids = _ids(cfg, 1, 5)
    with attached_kv_cache(model, cfg, 1), torch.no_grad():
        model(ids[:, :4])
        with pytest.raises(
            tl.ShapeError, match=r"start_pos=0 but the KV cache holds positions 0\.\.3: pass start_pos=4"
        ):
            model(ids[:, 4:])  # forgot start_pos=4


# --- shape bugs inside are refused naming the dim -----------------------------------------------------


class ForgetsToShareKeys(llama.GroupedQueryAttention):
    """Bug: attends with the ``kv_heads`` keys and values as they are, not repeated to the ``heads`` queries."""

    def forward(self, x: Float[Tensor, "batch seq d_model"], start_pos: int = 0) -> Float[Tensor, "batch seq d_model"]:
        q = self.rotary(self.q(x), start_pos)
        k = self.rotary(self.k(x), start_pos)
        return self.o(llama.causal_attention(q, k, self.v(x)))


class KeysWithQueryHeads(llama.KeyValueProjection):
    """Bug: splits ``d_model`` into ``heads`` heads (no projection to ``kv_heads × head_dim``)."""

    def forward(self, x: Float[Tensor, "batch seq d_model"]) -> Float[Tensor, "batch kv_heads seq head_dim"]:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.cfg.heads, self.cfg.head_dim).transpose(1, 2)


def test_keys_not_shared_across_query_heads_are_refused_naming_heads() -> None:
    cfg = _config(kv_heads=2)
    with pytest.raises(tl.ShapeError, match=r"causal_attention: k expected .*heads = 4 \(fixed by q\), got heads = 2"):
        ForgetsToShareKeys(cfg)(torch.randn(3, 5, cfg.d_model))


def test_keys_with_the_query_head_count_are_refused_naming_kv_heads() -> None:
    cfg = _config(kv_heads=2)
    with pytest.raises(tl.ShapeError, match=r"kv_heads = 2 \(cfg\.kv_heads\), got kv_heads = 4"):
        KeysWithQueryHeads(cfg)(torch.randn(3, 5, cfg.d_model))


def test_positions_past_seq_len_are_refused() -> None:
    cfg = _config()
    with pytest.raises(tl.ShapeError, match=r"positions 20\.\.27 .* outside 0\.\.23 \(cfg\.seq_len = 24\)"):
        Llama(cfg)(_ids(cfg, 1, 8), start_pos=20)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(kv_heads=3), r"^LlamaConfig\.kv_heads=3: must divide heads=4"),
        (dict(kv_heads=0), r"^LlamaConfig\.kv_heads=0: must be an int >= 1"),
        (dict(head_dim=7), r"^LlamaConfig\.head_dim=7: must be even"),
        (dict(rope_theta=float("nan")), r"^LlamaConfig\.rope_theta=nan: must be a finite number > 1"),
        (dict(bias=True), r"^LlamaConfig\.bias=True: a Llama has no biases"),
        (dict(dropout=0.1), r"^LlamaConfig\.dropout=0\.1: a Llama has no dropout"),
    ],
)
def test_bad_config_is_refused_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(tl.ConfigError, match=message):
        _config(**overrides)


# --- training ---------------------------------------------------------------------------------------------


def test_a_short_training_run_lowers_the_loss() -> None:
    cfg = _config(vocab=256, seq_len=32, batch=8)
    tokens = np.asarray(tl.tokenizers.ByteTokenizer().encode(load_corpus(None, max_chars=20_000).text), np.uint16)
    train_tokens, val_tokens = split_tokens(tokens, 0.1)
    tc = TrainConfig(steps=25, lr=3e-3, warmup_steps=5, eval_every=0, eval_batches=2, device="cpu", progress=False)
    log = train(Llama(cfg), cfg, train_tokens, val_tokens, tc)
    first, last = log.steps[0].loss, log.steps[-1].loss
    assert first > 5.0  # about ln 256: the model starts knowing nothing
    assert last < first - 1.0, (first, last)
    val = log.final_val_loss
    assert val is not None and val < first - 1.0  # held-out text too: it learnt bytes, not batches


def test_command_line_trains_and_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--preset", "tiny", "--steps", "10", "--max-chars", "20000", "--device", "cpu"]
    argv += ["--out", str(tmp_path / "out"), "--no-progress", "--generate", "20", "--prompt", "ROMEO:"]
    assert llama.main(argv) == 0
    out = capsys.readouterr().out
    assert "Llama" in out and "4 query / 2 key-value heads" in out
    sample = out.split("-" * 72 + "\n")[1]
    assert sample.startswith("ROMEO:") and len(sample.encode()) >= len("ROMEO:") + 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kv-heads", "3"], "LlamaConfig.kv_heads=3: must divide heads=4 (query heads share key heads)"),
        (["--heads", "0"], "--heads 0: must be >= 1"),
        (["--steps", "0"], "--steps 0: must be an int >= 1"),
        (["--generate", "-1"], "--generate -1: must be >= 0"),
        (["--prompt", ""], "--prompt '': the sample needs at least one byte to continue"),
    ],
)
def test_command_line_refuses_bad_flags_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert llama.main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"llama: error: {message}\n"
    assert not (tmp_path / "out").exists()  # refused before any work


# --- static and probe checks --------------------------------------------------------------------------


@pytest.mark.slow
def test_mypy_strict_is_clean_on_the_example() -> None:
    stdout, stderr, status = api.run(
        ["--config-file", str(ROOT / "mypy.ini"), "--cache-dir", str(ROOT / ".mypy_cache" / "llama"),
         str(ROOT / "examples" / "llama.py")]
    )  # fmt: skip
    assert status == 0, stdout + stderr


def test_typedlm_check_probes_the_model_and_finds_nothing() -> None:
    """The checker builds `llama.probe_llama` and runs its invariants (causality, batch independence)."""
    report = check_modules([llama])
    assert report.errors == []
    assert report.models == 1 and not any("probe_llama" in p.message for p in report.problems)


@pytest.mark.slow
def test_typedlm_check_command_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "typedlm", "check", "examples/llama.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 model" in done.stdout and "no errors" in done.stdout
