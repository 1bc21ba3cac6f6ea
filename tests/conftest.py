"""Shared fixtures: small configs, one torch thread, and every test starts in the default checking mode."""

from collections.abc import Iterator

import pytest
import torch

import typedlm as tl


@pytest.fixture
def cfg() -> tl.CausalConfig:
    """d_model 64 (4 heads × 16), 256-way vocab, 32 positions, 2 layers."""
    return tl.CausalConfig(batch=2, seq_len=32, vocab=256, heads=4, head_dim=16, ffn_hidden=128, layers=2)


@pytest.fixture(autouse=True)
def full_checks() -> Iterator[None]:
    """Run each test in full mode and restore whatever mode was in force."""
    with tl.checks.mode("full"):
        yield


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and do not stall on a busy machine): a module that decodes or
    runs HF models uses it for every test (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
