"""Dynamic sampling's group bookkeeping on plain tensors."""

from __future__ import annotations

import pytest
import torch

from train.dapo import RefillSampler, no_signal_groups, replace_groups, zero_variance_groups


def test_zero_variance_groups():
    adv = torch.tensor([0.0, 0.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    assert zero_variance_groups(adv, 2).tolist() == [True, False, True, True]


def test_replace_groups_repads_and_moves_whole_groups():
    pad = 0
    out = {
        "prompt_ids": torch.tensor([[0, 5], [0, 5], [6, 7], [6, 7]]),
        "prompt_mask": torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1]]),
        "completion_ids": torch.tensor([[1, 2], [3, 0], [4, 0], [5, 0]]),
        "completion_mask": torch.tensor([[1, 1], [1, 0], [1, 0], [1, 0]]),
        "advantages": torch.tensor([0.0, 0.0, 1.0, -1.0]),
        "num_items_in_batch": torch.tensor(5),
    }
    new = {
        "prompt_ids": torch.tensor([[9, 9, 9], [9, 9, 9]]),
        "prompt_mask": torch.ones(2, 3, dtype=torch.long),
        "completion_ids": torch.tensor([[8, 8, 8], [7, 0, 0]]),
        "completion_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]),
        "advantages": torch.tensor([0.7, -0.7]),
        "num_items_in_batch": torch.tensor(4),
    }
    merged = replace_groups(out, new, dst=[0], src=[0], group_size=2, pad_token_id=pad)
    assert merged["prompt_ids"].tolist() == [[9, 9, 9], [9, 9, 9], [0, 6, 7], [0, 6, 7]]  # left padding grows
    assert merged["prompt_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]]
    assert merged["completion_ids"].tolist() == [
        [8, 8, 8],
        [7, 0, 0],
        [4, 0, 0],
        [5, 0, 0],
    ]  # right padding grows
    assert merged["advantages"].tolist() == pytest.approx([0.7, -0.7, 1.0, -1.0])
    assert out["advantages"].tolist() == [0.0, 0.0, 1.0, -1.0]  # the input is not modified


def test_unknown_output_keys_are_refused():
    with pytest.raises(NotImplementedError, match="dynamic_sampling_rounds=0"):
        replace_groups(
            {"advantages": torch.zeros(2), "pixel_values": torch.zeros(2)},
            {"advantages": torch.zeros(2)},
            [0],
            [0],
            2,
            0,
        )


# -- refills: per-rank, weighted, no repeats, checkpointable ----------------------------------------------


def test_no_signal_groups_look_at_known_values_only():
    nan = float("nan")
    v = torch.tensor([1.0, 1.0, 0.0, 1.0, nan, 0.0, nan, nan, 0.0, 0.0])
    assert no_signal_groups(v, 2).tolist() == [True, False, True, True, True]


def test_refill_sampler_ranks_draw_disjoint_rows_and_respect_exclusions_and_weights():
    w = [1.0] * 20
    w[4] = 0.0  # a zero-weight row is never drawn
    r0, r1 = RefillSampler(w, seed=3, rank=0, world=2), RefillSampler(w, seed=3, rank=1, world=2)
    a, b = r0.draw(6, exclude={0, 2}), r1.draw(6, exclude=set())
    assert len(set(a)) == len(a) == 6 and len(set(b)) == 6
    assert not set(a) & set(b) and not {0, 2, 4} & set(a)  # ranks never share a prompt
    assert all(i % 2 == 0 for i in a) and all(i % 2 == 1 for i in b)
    assert (
        r0.draw(100, exclude=set(a)) and len(r0.draw(100, exclude=set())) == 9
    )  # 10 even rows, one weightless


def test_refill_sampler_state_round_trips_through_json():
    import json

    s = RefillSampler([1.0, 2.0, 3.0, 4.0] * 5, seed=0)
    s.draw(3, set())
    state = json.loads(json.dumps(s.state_dict()))
    expected = s.draw(4, set())
    t = RefillSampler([1.0, 2.0, 3.0, 4.0] * 5, seed=0)
    t.load_state_dict(state)
    assert t.draw(4, set()) == expected


def test_refill_weights_give_retrospective_rows_their_share_by_difficulty(small_curriculum):
    import json

    import pyarrow.parquet as pq

    from longmill.manifest import load_manifest
    from train.backends.base import StageSpec
    from train.backends.trl import load_stage_dataset, refill_weights

    stage = StageSpec.from_manifest(small_curriculum, load_manifest(small_curriculum))[1]
    ds = load_stage_dataset(stage.files)
    w = refill_weights(stage, ds)
    retro = set(
        next(
            s
            for s in json.loads((small_curriculum / "manifest.json").read_text())["stages"]
            if s["name"] == stage.name
        )["retro_uids"]
    )
    assert retro, "the fixture's second stage has retrospective samples"
    is_retro = [u in retro for u in ds["uid"]]
    assert sum(w) == pytest.approx(1.0)
    assert sum(x for x, r in zip(w, is_retro, strict=True) if r) == pytest.approx(len(retro) / len(ds))
    diff = {}
    for f in stage.files:
        t = pq.read_table(f, columns=["uid", "difficulty"]).to_pydict()
        diff.update(zip(t["uid"], t["difficulty"], strict=True))
    ratios = {round(x / diff[u], 9) for x, u, r in zip(w, ds["uid"], is_retro, strict=True) if r}
    assert len(ratios) == 1  # retrospective rows weigh in proportion to their difficulty
    assert len({x for x, r in zip(w, is_retro, strict=True) if not r}) == 1  # the stage's own rows: uniform
