"""torch.compile(model, fullgraph=True) with checks on: same numbers, and a wrong input is still a ShapeError.

The default runs use the ``aot_eager`` backend (dynamo + autograd tracing, where the checks live);
the slow variant compiles with inductor.
"""

import pytest
import torch

import typedlm as tl


def _compiled(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    torch._dynamo.reset()
    return torch.compile(model, fullgraph=True, backend=backend)  # type: ignore[return-value]  # OptimizedModule


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_model_matches_eager_and_checks_its_input(cfg: tl.CausalConfig, backend: str) -> None:
    model = tl.models.GPT2(cfg)
    compiled = _compiled(model, backend)
    for batch, seq in [(2, 8), (3, 12)]:
        ids = torch.randint(0, cfg.vocab, (batch, seq))
        torch.testing.assert_close(compiled(ids), model(ids), atol=1e-4, rtol=1e-4)
    with pytest.raises(tl.ShapeError, match=r"GPT2: ids expected \"batch seq\" as an integer tensor"):
        compiled(torch.zeros(2, 8))
    with pytest.raises(tl.ShapeError, match=r"seq = 40 exceeds cfg.seq_len = 32"):
        compiled(torch.zeros(1, 40, dtype=torch.long))


def test_compiled_chain_checks_its_input(cfg: tl.CausalConfig) -> None:
    chain = tl.models.causal_transformer_one_hot(cfg)
    compiled = _compiled(chain, "aot_eager")
    x = torch.nn.functional.one_hot(torch.randint(0, cfg.vocab, (2, 5)), cfg.vocab).float()
    torch.testing.assert_close(compiled(x), chain(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(tl.ShapeError, match=r"vocab = 256 \(cfg.vocab\), got vocab = 100"):
        compiled(torch.zeros(2, 5, 100))


def test_a_compiled_training_step_gives_eager_gradients(cfg: tl.CausalConfig) -> None:
    model = tl.models.GPT2(cfg, seed=2)
    ids = torch.randint(0, cfg.vocab, (2, 9))

    def loss_of(m: torch.nn.Module) -> torch.Tensor:
        return tl.losses.cross_entropy_indexed(m(ids[:, :-1]), ids[:, 1:])

    loss_of(model).backward()
    eager = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    torch._dynamo.reset()
    compiled_loss = torch.compile(loss_of, fullgraph=True, backend="aot_eager")
    compiled_loss(model).backward()
    for expected, p in zip(eager, model.parameters(), strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, expected, atol=1e-5, rtol=1e-4)


_IN_A_FRESH_PROCESS = """
import sys
{first}
import torch, typedlm as tl
assert ("torch._dynamo" in sys.modules) == {dynamo_first}, "import typedlm must not load TorchDynamo"
cfg = tl.CausalConfig(batch=2, seq_len=8, vocab=16, heads=2, head_dim=4, ffn_hidden=16, layers=1)
compiled = torch.compile(tl.models.GPT2(cfg), fullgraph=True, backend="aot_eager")
compiled(torch.zeros(2, 4, dtype=torch.long))
try:
    compiled(torch.zeros(2, 4))
except tl.ShapeError as e:
    print("ShapeError:", e)
"""


@pytest.mark.parametrize("dynamo_first", [False, True], ids=["typedlm-first", "dynamo-first"])
def test_typedlm_loads_dynamo_only_when_a_program_compiles_and_checks_either_way(dynamo_first: bool) -> None:
    """``import typedlm`` leaves TorchDynamo unloaded (it costs about a second); the checks reach dynamo
    whether it is imported after typedlm (by torch.compile) or before."""
    import subprocess
    import sys

    code = _IN_A_FRESH_PROCESS.format(first="import torch._dynamo" if dynamo_first else "", dynamo_first=dynamo_first)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'ShapeError: GPT2: ids expected "batch seq" as an integer tensor' in result.stdout
