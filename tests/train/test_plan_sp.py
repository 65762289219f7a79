"""`train plan --sp-size`: what Ulysses divides (a layer's recompute, the LM head's share) and what it does not (the
checkpointed layer inputs of a micro-batch, the model states), the smallest sp_size that fits, and the 120K profile."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from longmill.errors import LongmillError
from train.cli import main
from train.plan import (
    PlanSettings,
    estimate,
    plan_settings,
    profile_lengths,
    read_plan_yaml,
    resolve_shape,
    smallest_sp_size,
    sp_sizes,
)

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "gpu-qwen2.5-7b-120k.yaml"
Q7 = resolve_shape("qwen2.5-7b-instruct")


def test_sp_divides_the_per_token_terms_of_one_micro_batch_in_flight():
    s = PlanSettings(prompt_length=120_000, completion_length=10_000)
    one, four = estimate(Q7, s), estimate(Q7, replace(s, sp_size=4))
    # a layer's recompute and backward: 1/4 of the tokens (the weight gradient term is per layer, not per token)
    assert four.recompute == pytest.approx(one.recompute / 4, rel=0.01)
    assert four.logits < one.logits  # the head's backward scores 1/4 of the completion at a time
    # what TRL's single backward keeps for all shares, and the model states, are not divided
    for term in ("activation_checkpoints", "final_norm", "rope", "weights", "optimizer"):
        assert getattr(four, term) == getattr(one, term), term
    assert not one.fits and four.fits


def test_kv_heads_repeated_for_ulysses_are_counted():
    gqa = replace(Q7, num_key_value_heads=1)  # 1 K/V head over 4 ranks: repeated to 4
    s = PlanSettings(prompt_length=60_000, completion_length=10_000, sp_size=4)
    assert estimate(gqa, s).recompute > estimate(replace(gqa, num_key_value_heads=4), s).recompute * 0.99
    assert estimate(gqa, replace(s, sp_size=1)).recompute < estimate(gqa, s).recompute * 4


def test_smallest_sp_size_and_the_sizes_a_model_allows():
    assert sp_sizes(Q7, 8) == [1, 2, 4]  # 28 heads: 8 does not divide them
    assert sp_sizes(resolve_shape("qwen2.5-32b-instruct"), 16) == [1, 2, 4, 8]
    s = PlanSettings(prompt_length=120_000, completion_length=10_000)
    assert smallest_sp_size(Q7, s) == 2
    assert smallest_sp_size(Q7, replace(s, prompt_length=60_000)) == 1
    assert smallest_sp_size(Q7, replace(s, prompt_length=400_000)) is None
    with pytest.raises(LongmillError, match="divide num_gpus"):
        PlanSettings(prompt_length=1000, completion_length=10, num_gpus=8, sp_size=3)
    with pytest.raises(LongmillError, match="padding-free"):
        PlanSettings(prompt_length=1000, completion_length=10, sp_size=2, padding_free=False)


def test_the_120k_profile_fits_every_phase_on_8x80gb_only_with_its_sp_size():
    values = read_plan_yaml(PROFILE)
    lengths = profile_lengths(PROFILE)
    assert lengths == [20_000, 60_000, 120_000] and values["sp_size"] == 4
    for n in lengths:
        s = plan_settings(n, values, num_gpus=8, sharding="zero3", gpu_memory_gib=80)
        assert estimate(Q7, s).fits, n
    assert not estimate(Q7, replace(s, sp_size=1)).fits  # 120K + 10K needs the SP division
    res = CliRunner().invoke(main, ["plan", "--config", str(PROFILE), "--json"])
    assert res.exit_code == 0, res.output
    reports = json.loads(res.output)
    assert [r["settings"]["prompt_length"] for r in reports] == lengths
    assert all(r["fits"] and r["settings"]["sp_size"] == 4 for r in reports)
    assert reports[-1]["smallest_sp_size"] == 2
    table = CliRunner().invoke(
        main, ["plan", "--config", str(PROFILE), "--sp-size", "1", "--prompt-length", "120k"]
    )
    assert "DOES NOT FIT" in table.output and "smallest sp_size that fits: 2" in table.output
