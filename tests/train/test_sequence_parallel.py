"""Sequence parallelism (train/sequence_parallel.py): 2 gloo ranks with sp_size 2 give sp_size 1's log-probs, loss
and gradients, and the settings it cannot serve are refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longmill.errors import LongmillError
from tests.train.launch import torchrun
from tests.train.test_config import captured, grpo  # noqa: F401
from train.config import GRPOPhaseConfig
from train.sequence_parallel import check_model, kv_repeat
from train.stepcheck import TinyShape, write_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sp2_equals_sp1_on_tiny_qwen2_and_a_gqa_model(tmp_path, tiny_qwen2):
    """One launch, two models: tiny-qwen2 (4 heads, 2 K/V heads) and a GQA model with 1 K/V head (< sp_size, so
    repeated); micro-batches of 1, 2 and 8 rows with left-padded prompts, right-padded completions, truncated
    completions masked out, and a group length that sp_size does not divide (tests/train/sp_equivalence.py)."""
    gqa = write_model(TinyShape(num_key_value_heads=1), tmp_path / "gqa-kv1")
    proc = torchrun("sp_equivalence.py", str(tmp_path / "out"), str(tiny_qwen2), str(gqa))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("SP-EQUIVALENT") == 4 and proc.stdout.count("RANK-DONE") == 2


def test_kv_heads_are_repeated_or_refused():
    assert kv_repeat(4, 1, 2) == 2  # 1 K/V head over 2 ranks: each rank gets a copy
    assert kv_repeat(28, 4, 4) == 1 and kv_repeat(28, 2, 4) == 2 and kv_repeat(12, 3, 4) == 4
    assert kv_repeat(32, 8, 8) == 1
    with pytest.raises(LongmillError, match="does not divide the model's 28 attention heads"):
        kv_repeat(28, 4, 3)


def test_sp_size_is_a_yaml_key_and_a_flag(tmp_path, captured):  # noqa: F811
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sp_size: 4\nattn_implementation: sdpa\n")
    res = grpo("--config", str(cfg), "--sp-size", "2")
    assert res.exit_code == 0, res.output
    assert captured["config"].sp_size == 2 and captured["config"].given["sp_size"] == 2
    assert "--sp-size" in grpo("--help").output


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ({"padding_free": False}, "sp_size=2 needs padding_free: true"),
        ({"attn_implementation": "eager"}, "attn_implementation='eager': the Ulysses hook covers sdpa"),
        ({"attn_implementation": "flex_attention"}, "covers sdpa, flash_attention_2"),
    ],
)
def test_settings_sp_cannot_serve_are_refused(tmp_path, given, needle):
    with pytest.raises(LongmillError, match=needle):
        GRPOPhaseConfig(output_dir=str(tmp_path), sp_size=2, use_cpu=True, **given)
    GRPOPhaseConfig(output_dir=str(tmp_path), sp_size=1, use_cpu=True, **given)  # fine without SP


def test_a_world_sp_size_does_not_divide_is_refused_before_training(tmp_path):
    from train.backends.trl import TRLBackend

    cfg = GRPOPhaseConfig(output_dir=str(tmp_path), sp_size=2, use_cpu=True, rollout="hf")
    with pytest.raises(LongmillError, match=r"sp_size=2 must divide the number of processes \(1\)"):
        TRLBackend(cfg, tmp_path / "rl")
    TRLBackend(cfg.derive(sp_size=1), tmp_path / "rl")


def test_models_the_hook_does_not_cover_are_refused():
    from transformers import AutoModelForCausalLM

    def model(attn="sdpa", **cfg):
        config = TinyShape(**cfg).config(attn)
        return AutoModelForCausalLM.from_config(config)

    check_model(model(), 2)
    check_model(model(num_key_value_heads=1), 2)  # repeated, not refused
    with pytest.raises(LongmillError, match="attn_implementation='eager'"):
        check_model(model("eager"), 2)
    with pytest.raises(LongmillError, match="does not divide the model's 4 attention heads"):
        check_model(model(), 8)
    sliding = model()
    sliding.config.layer_types = ["sliding_attention", "full_attention"]
    with pytest.raises(LongmillError, match="sliding-window layers"):
        check_model(sliding, 2)


@pytest.mark.slow
def test_train_grpo_with_sp_size_2_on_two_ranks_and_resume(tmp_path, small_curriculum, tiny_qwen2):
    """`train grpo`'s phase 1 of the smoke curriculum on 2 CPU ranks with sp_size 2 (tests/train/two_rank_sp.py):
    a first run stops after its first checkpoint, a second resumes from it; both ranks log the same losses."""
    out = tmp_path / "rl"
    proc = torchrun("two_rank_sp.py", str(small_curriculum), str(tiny_qwen2), str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    for r in (r0, r1):
        assert r["first_run"] == "stopped after the first checkpoint"
        assert [x["step"] for x in r["first_logs"]] == [1] and [x["step"] for x in r["second_logs"]] == [2]
        # 1 micro-step per optimiser step: one sequence-parallel forward per step, in each run
        assert r["sp_forwards"] == 2
    assert r0["first_logs"] == r1["first_logs"] and r0["second_logs"] == r1["second_logs"]
    record = json.loads((out / "phase-1" / "phase.json").read_text())
    assert record["steps"] == 2 and record["resumed_from"].endswith("checkpoint-1")
    assert record["final_weights"] != record["init_weights"]
