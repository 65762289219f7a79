"""Run by tests/train/test_multirank.py under torchrun: dynamic sampling where only one rank lacks signal.

Rank 0's groups never have signal (every completion is right); rank 1's always do (right and wrong
alternate within each group). One row per micro-step, gradient accumulation 2, four micro-steps per
generation batch. Each rank writes what it saw to ``OUT/rank{R}.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset

from train.config import GRPOPhaseConfig
from train.dapo import DynamicSamplingGRPOTrainer


class RankReward:
    """Correct everywhere on rank 0 (no group varies in correctness); right/wrong alternating on rank 1 (every
    group varies). The shaped reward varies on both ranks (as DAPO's overlong penalty does), so rank 0's
    advantages are zero only when dynamic sampling drops its groups."""

    __name__ = "rank_reward"

    def __init__(self) -> None:
        self.last_accuracy: list[float | None] = []

    def __call__(self, completions, **kwargs):
        rank = int(os.environ.get("RANK", "0"))
        acc = [1.0] * len(completions) if rank == 0 else [float(i % 2) for i in range(len(completions))]
        self.last_accuracy = acc
        return [a + 0.1 * (i % 3) for i, a in enumerate(acc)]


class Recording(DynamicSamplingGRPOTrainer):
    """Counts scoring calls and records, per generation batch, the refills drawn and what was logged."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.scoring_calls = 0
        self.batches: list[dict] = []

    def _score(self, inputs):
        self.scoring_calls += 1
        return super()._score(inputs)

    def _fresh_prompts(self, n_groups, exclude):
        rows, idx = super()._fresh_prompts(n_groups, exclude)
        self.batches[-1]["refill_rows"] += idx
        return rows, idx

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        m = self._metrics["train"]
        keys = (
            "reward",
            "dynamic_sampling/filtered_share",
            "dynamic_sampling/remaining_share",
            "dynamic_sampling/rounds",
        )
        before = {k: len(m[k]) for k in keys}
        calls = self.scoring_calls
        self.batches.append({"uids": [x["uid"] for x in inputs], "refill_rows": []})
        out = super()._generate_and_score_completions(inputs)
        b = self.batches[-1]
        b["scoring_calls"] = self.scoring_calls - calls
        b["appended"] = {k: len(m[k]) - before[k] for k in keys}
        b["logged"] = {k: m[k][-1] for k in keys}
        b["advantages"] = out["advantages"].tolist()
        b["num_items_in_batch"] = float(out["num_items_in_batch"])
        return out


if __name__ == "__main__":
    model, out = sys.argv[1], Path(sys.argv[2])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [
        {"prompt": [{"role": "user", "content": f"Say something ({i})."}], "uid": f"u{i}"} for i in range(40)
    ]
    args = GRPOPhaseConfig(
        output_dir=str(out / "run"),
        learning_rate=1e-3,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        num_generations=2,
        max_completion_length=4,
        max_steps=4,
        seed=0,
        save_strategy="no",
        mask_truncated_completions=False,
        rollout="hf",
        gradient_checkpointing=False,
        disable_tqdm=True,
        ddp_backend="gloo",
        report_to="none",
    )
    torch.manual_seed(0)
    trainer = Recording(
        model=AutoModelForCausalLM.from_pretrained(model),
        reward_funcs=[RankReward()],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model),
        dynamic_sampling_rounds=2,
        dynamic_sampling_metric="accuracy",
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    logs = [h for h in trainer.state.log_history if "dynamic_sampling/rounds" in h]
    record = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "scoring_calls": trainer.scoring_calls,
        "batches": trainer.batches,
        "sampler_draws": trainer.refill_sampler.draws,
        "logged_rounds": [h["dynamic_sampling/rounds"] for h in logs],
        "log_steps": [h["step"] for h in trainer.state.log_history if "loss" in h],
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    print("RANK-DONE", rank, flush=True)
