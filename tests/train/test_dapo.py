"""Dynamic sampling's group bookkeeping on plain tensors."""

from __future__ import annotations

import pytest
import torch

from train.dapo import replace_groups, zero_variance_groups


def test_zero_variance_groups():
    adv = torch.tensor([0.0, 0.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    assert zero_variance_groups(adv, 2).tolist() == [True, False, True, True]


def test_replace_groups_repads_and_moves_whole_groups():
    pad = 0
    out = {"prompt_ids": torch.tensor([[0, 5], [0, 5], [6, 7], [6, 7]]), "prompt_mask": torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1]]),
           "completion_ids": torch.tensor([[1, 2], [3, 0], [4, 0], [5, 0]]),
           "completion_mask": torch.tensor([[1, 1], [1, 0], [1, 0], [1, 0]]),
           "advantages": torch.tensor([0.0, 0.0, 1.0, -1.0]), "num_items_in_batch": torch.tensor(5)}
    new = {"prompt_ids": torch.tensor([[9, 9, 9], [9, 9, 9]]), "prompt_mask": torch.ones(2, 3, dtype=torch.long),
           "completion_ids": torch.tensor([[8, 8, 8], [7, 0, 0]]), "completion_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]),
           "advantages": torch.tensor([0.7, -0.7]), "num_items_in_batch": torch.tensor(4)}
    merged = replace_groups(out, new, dst=[0], src=[0], group_size=2, pad_token_id=pad)
    assert merged["prompt_ids"].tolist() == [[9, 9, 9], [9, 9, 9], [0, 6, 7], [0, 6, 7]]  # left padding grows
    assert merged["prompt_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]]
    assert merged["completion_ids"].tolist() == [[8, 8, 8], [7, 0, 0], [4, 0, 0], [5, 0, 0]]  # right padding grows
    assert merged["advantages"].tolist() == pytest.approx([0.7, -0.7, 1.0, -1.0])
    assert out["advantages"].tolist() == [0.0, 0.0, 1.0, -1.0]  # the input is not modified


def test_unknown_output_keys_are_refused():
    with pytest.raises(NotImplementedError, match="dynamic_sampling_rounds=0"):
        replace_groups({"advantages": torch.zeros(2), "pixel_values": torch.zeros(2)},
                       {"advantages": torch.zeros(2)}, [0], [0], 2, 0)
