"""Shared fixtures: small configs, and every test starts in the default checking mode."""

from collections.abc import Iterator

import pytest

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
