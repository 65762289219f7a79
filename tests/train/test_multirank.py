"""Two CPU ranks (torchrun, gloo) through two phases: only the main process writes, and nothing collides."""

from __future__ import annotations

import json
import os

import pytest

from tests.train.launch import torchrun


@pytest.mark.slow
def test_two_ranks_run_two_phases(tmp_path, small_curriculum, tiny_qwen2):
    out = tmp_path / "rl"
    proc = torchrun("two_rank_phases.py", str(small_curriculum), str(tiny_qwen2), str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("RANK-DONE") == 2
    p1 = json.loads((out / "phase-1" / "phase.json").read_text())
    p2 = json.loads((out / "phase-2" / "phase.json").read_text())
    assert p1["steps"] == p2["steps"] == 1
    assert p2["init_weights"] == p1["final_weights"] != p1["init_weights"]  # hashed from the saved files
    assert os.readlink(out / "final") == "phase-2/final"
    assert (out / "phase-2" / "final" / "tokenizer.json").exists()
    assert (out / "phase-1" / "checkpoint-1" / "dynamic_sampling_rank1.json").exists()
    # YaRN (x2 over a 256-token "native" window) is in the folder each phase loaded, and in the model it saved.
    cfg = json.loads((out / "phase-1" / "init-model" / "config.json").read_text())
    assert cfg["rope_scaling"]["rope_type"] == "yarn" and cfg["max_position_embeddings"] == 512
    assert p1["model_folder"].endswith("phase-1/init-model")
    assert p2["model_folder"] == p1["checkpoint"]  # phase 1 saved its model with YaRN: phase 2 loads it as is
    for k in (1, 2):
        saved = json.loads((out / f"phase-{k}" / "final" / "config.json").read_text())
        rope = saved.get("rope_parameters") or saved.get("rope_scaling")
        assert (
            rope["rope_type"] == "yarn" and rope["factor"] == 2.0 and saved["max_position_embeddings"] == 512
        )
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_refills_across_two_ranks_where_only_one_lacks_signal(tmp_path, tiny_qwen2):
    """Rank 0's groups never vary in correctness, rank 1's always do; 1 row per micro-step, accumulation 2.

    TRL gathers rewards across ranks inside every generation, so the ranks must score in lockstep: a rank
    that skipped a refill round would leave the other waiting in the gather (the timeout turns that hang
    into a failure)."""
    proc = torchrun("two_rank_refills.py", str(tiny_qwen2), str(tmp_path), timeout=420)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and len(r0["batches"]) == len(r1["batches"]) == 2  # 4 steps, 2 per generation
    # lockstep: every generation batch is scored once plus once per refill round, on both ranks alike
    assert r0["scoring_calls"] == r1["scoring_calls"] == 6
    for b0, b1 in zip(r0["batches"], r1["batches"], strict=True):
        assert b0["scoring_calls"] == b1["scoring_calls"] == 3
        # rank 0's shaped rewards vary, but its correctness does not: its groups leave the loss
        assert b0["advantages"] == [0.0] * 4
        assert any(a != 0 for a in b1["advantages"])
        # the loss normaliser counts rank 1's tokens only, and both ranks agree on it
        assert b0["num_items_in_batch"] == b1["num_items_in_batch"] > 0
        # refills are per rank: rank 0 draws two per round from its own rows (even indices), never a prompt
        # of this generation batch on either rank; rank 1 has nothing to refill and draws nothing
        drawn = b0["refill_rows"]
        assert len(drawn) == 4 and len(set(drawn)) == 4 and all(i % 2 == 0 for i in drawn)
        assert not {f"u{i}" for i in drawn} & set(b0["uids"] + b1["uids"])
        assert b1["refill_rows"] == []
        # TRL's metrics once per generation batch (not once per round or per rank), the same on both ranks
        for b in (b0, b1):
            assert set(b["appended"].values()) == {1}, b["appended"]
        assert b0["logged"] == b1["logged"]
        assert b0["logged"]["dynamic_sampling/filtered_share"] == 0.5
        assert b0["logged"]["dynamic_sampling/remaining_share"] == 0.5
        assert b0["logged"]["dynamic_sampling/rounds"] == 2.0
    assert r0["sampler_draws"] == 8 and r1["sampler_draws"] == 0
    assert r0["logged_rounds"] == [2.0, 2.0]  # one log line per generation batch carries the refill metrics
    assert "Traceback" not in proc.stderr
