"""Losses agree with their definitions, accept (batch, seq) or flattened targets, and check shapes."""

import pytest
import torch
import torch.nn.functional as F

import typedlm as tl


def test_indexed_cross_entropy_matches_torch_for_both_target_layouts() -> None:
    logits, targets = torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))
    expected = F.cross_entropy(logits.reshape(15, 11), targets.reshape(15))
    torch.testing.assert_close(tl.losses.cross_entropy_indexed(logits, targets), expected)
    torch.testing.assert_close(tl.losses.cross_entropy_indexed(logits, targets.flatten()), expected)


def test_ignore_index_skips_positions() -> None:
    logits, targets = torch.randn(1, 4, 7), torch.tensor([[1, 2, -1, -1]])
    expected = F.cross_entropy(logits[0, :2], targets[0, :2])
    torch.testing.assert_close(tl.losses.cross_entropy_indexed(logits, targets, ignore_index=-1), expected)


def test_one_hot_cross_entropy_equals_indexed() -> None:
    logits, targets = torch.randn(2, 6, 9), torch.randint(0, 9, (2, 6))
    torch.testing.assert_close(
        tl.losses.cross_entropy_one_hot(logits, F.one_hot(targets, 9).float()),
        tl.losses.cross_entropy_indexed(logits, targets),
    )


def test_masked_cross_entropy_scores_only_masked_positions() -> None:
    logits, targets = torch.randn(2, 6, 4), torch.randint(0, 4, (2, 6))
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 3:] = True
    expected = F.cross_entropy(logits[:, 3:].reshape(-1, 4), targets[:, 3:].reshape(-1))
    torch.testing.assert_close(tl.losses.masked_cross_entropy(logits, targets, mask), expected)


def test_losses_check_shapes_and_dtypes() -> None:
    logits = torch.randn(2, 3, 5)
    with pytest.raises(tl.ShapeError, match=r"cross_entropy_one_hot: targets expected .*vocab = 5 \(fixed by logits\)"):
        tl.losses.cross_entropy_one_hot(logits, torch.zeros(2, 3, 6))
    with pytest.raises(tl.ShapeError, match=r"targets expected \"batch seq\" as an integer tensor"):
        tl.losses.cross_entropy_indexed(logits, torch.zeros(2, 3))
    with pytest.raises(tl.ShapeError, match=r"mask expected \"batch seq\" as a boolean tensor"):
        tl.losses.masked_cross_entropy(logits, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))
    with pytest.raises(tl.ShapeError, match=r"logits expected \"batch seq vocab\" \(3 dims\), got 2 dims"):
        tl.losses.cross_entropy_indexed(torch.randn(6, 5), torch.zeros(6, dtype=torch.long))


def _per_position_reference(logits: torch.Tensor, ids: torch.Tensor, scored: int) -> torch.Tensor:
    """Mean over positions t < scored of -log softmax(logits[b, t])[ids[b, t + 1]], written out."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    terms = [-log_probs[b, t, ids[b, t + 1]] for b in range(ids.shape[0]) for t in range(scored)]
    return torch.stack(terms).mean().float()


def test_next_token_loss_scores_each_position_against_the_following_id() -> None:
    logits, ids = torch.randn(2, 6, 9), torch.randint(0, 9, (2, 6))
    torch.testing.assert_close(tl.losses.next_token_cross_entropy(logits, ids), _per_position_reference(logits, ids, 5))


def test_next_token_loss_with_one_more_id_scores_every_position() -> None:
    logits, window = torch.randn(2, 6, 9), torch.randint(0, 9, (2, 7))
    loss = tl.losses.next_token_cross_entropy(logits, window)
    torch.testing.assert_close(loss, _per_position_reference(logits, window, 6))
    torch.testing.assert_close(loss, tl.losses.cross_entropy_indexed(logits, window[:, 1:]))


def test_next_token_loss_refuses_ids_that_are_not_the_models_input() -> None:
    logits = torch.randn(2, 6, 9)
    for wrong in (torch.randint(0, 9, (2, 5)), torch.randint(0, 9, (2, 8)), torch.randint(0, 9, (3, 6))):
        with pytest.raises(tl.ShapeError, match="next_token_cross_entropy: ids expected"):
            tl.losses.next_token_cross_entropy(logits, wrong)
