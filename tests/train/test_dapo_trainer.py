"""DAPO on a real TRL GRPOTrainer (tiny-qwen2, CPU): clip-higher raises the upper clip bound, dynamic sampling
filters on accuracy.

The toy task: prompts with an even index are "easy" (every completion is correct); on odd prompts a
completion is correct when its first token id is even. The shaped reward adds a small term that varies
with the completion, as DAPO's overlong penalty does, so a group of easy prompts *looks* informative to a
filter on the shaped reward while teaching nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from train.config import GRPOPhaseConfig
from train.dapo import DynamicSamplingGRPOTrainer


class ToyAccuracyReward:
    """Correctness (``last_accuracy``) plus a shaping term that always varies."""

    __name__ = "toy"

    def __init__(self, always_right: bool = False):
        self.always_right = always_right
        self.last_accuracy: list[float | None] = []

    def __call__(self, completions, completion_ids, uid, **kwargs):
        acc = [
            1.0 if self.always_right or int(u[1:]) % 2 == 0 else float(ids[0] % 2 == 0)
            for u, ids in zip(uid, completion_ids, strict=True)
        ]
        self.last_accuracy = acc
        return [a + 0.01 * (sum(ids) % 7) for a, ids in zip(acc, completion_ids, strict=True)]


class Recording(DynamicSamplingGRPOTrainer):
    """Records, per generation batch, the prompts and refills, and how many TRL metric values were appended."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.batches: list[dict] = []

    def _fresh_prompts(self, n_groups, exclude):
        rows, idx = super()._fresh_prompts(n_groups, exclude)
        self.batches[-1]["refills"] += [self.train_dataset[i]["uid"] for i in idx]
        self.batches[-1]["excluded"] = set(exclude)
        return rows, idx

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        before = len(self._metrics["train"]["reward"])
        self.batches.append({"uids": [x["uid"] for x in inputs], "refills": []})
        out = super()._generate_and_score_completions(inputs)
        self.batches[-1]["reward_values"] = len(self._metrics["train"]["reward"]) - before
        self.batches[-1]["num_items"] = float(out["num_items_in_batch"])
        self.batches[-1]["advantages"] = out["advantages"].clone()
        return out


def make_trainer(tmp_path: Path, model_dir: Path, reward, **kw) -> Recording:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    rows = [
        {"prompt": [{"role": "user", "content": f"Say something ({i})."}], "uid": f"u{i}"} for i in range(32)
    ]
    args = GRPOPhaseConfig(
        **{
            **dict(
                output_dir=str(tmp_path / "run"),
                learning_rate=0.05,
                per_device_train_batch_size=4,
                num_generations=4,
                steps_per_generation=2,
                max_completion_length=6,
                max_steps=4,
                seed=0,
                save_steps=2,
                mask_truncated_completions=False,
                rollout="hf",
                gradient_checkpointing=False,
                disable_tqdm=True,
                shuffle_dataset=False,
            ),
            **kw,
        }
    )
    torch.manual_seed(0)
    return Recording(
        model=AutoModelForCausalLM.from_pretrained(str(model_dir)),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        dynamic_sampling_rounds=2,
        dynamic_sampling_metric="accuracy",
    )


@pytest.mark.slow
def test_dynamic_sampling_filters_on_accuracy(tmp_path, tiny_qwen2):
    trainer = make_trainer(tmp_path, tiny_qwen2, ToyAccuracyReward())
    trainer.train()
    assert len(trainer.batches) == 2
    for b in trainer.batches:
        assert b["reward_values"] == 1  # TRL's metrics once per generation batch, not once per refill
        easy = {u for u in b["uids"] if int(u[1:]) % 2 == 0}
        assert easy, "shuffle off: every batch has easy prompts"
        assert b["refills"], "easy groups vary in the shaped reward but not in accuracy: they were refilled"
        assert not set(b["refills"]) & set(b["uids"]) and len(set(b["refills"])) == len(b["refills"])
    shares = [
        h["dynamic_sampling/filtered_share"]
        for h in trainer.state.log_history
        if "dynamic_sampling/filtered_share" in h
    ]
    assert shares and max(shares) > 0
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "dynamic_sampling_rank0.json").read_text())
    assert state["draws"] > 0 and state["rank"] == 0

    # Resuming restores the refill sampler, so the refills continue the same sequence.
    again = make_trainer(tmp_path, tiny_qwen2, ToyAccuracyReward())
    again.load_refill_state(str(tmp_path / "run" / "checkpoint-2"))
    assert again.refill_sampler.draws == state["draws"]
    assert again.refill_sampler.rng.bit_generator.state == state["rng"]


@pytest.mark.slow
def test_groups_without_signal_after_the_last_round_leave_the_loss_and_its_normaliser(tmp_path, tiny_qwen2):
    trainer = make_trainer(
        tmp_path, tiny_qwen2, ToyAccuracyReward(always_right=True), max_steps=1, save_strategy="no"
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    b = trainer.batches[0]
    assert b["num_items"] == 0.0 and torch.all(b["advantages"] == 0)
    remaining = [
        h["dynamic_sampling/remaining_share"]
        for h in trainer.state.log_history
        if "dynamic_sampling/remaining_share" in h
    ]
    assert remaining == [1.0]
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing to learn from, nothing learnt


@pytest.mark.slow
def test_clip_higher_clips_fewer_positive_advantage_tokens_above_one(tmp_path, tiny_qwen2):
    """Same seed, same data, epsilon_high 0.28 against symmetric 0.2.

    steps_per_generation=2 > gradient_accumulation_steps=1, so the second step of the generation batch is
    off-policy. Its ratios are the same in both runs (the first step's ratio is exactly 1, where neither bound
    acts, so both runs take the same first update). TRL counts ``clip_ratio/high_mean`` as the share of tokens
    with ratio > 1 + epsilon_high and a positive advantage, and ``clip_ratio/low_mean`` as the share with
    ratio < 1 - epsilon and a negative one (trl/trainer/grpo_trainer.py, ``_compute_loss``): clip-higher must
    clip fewer tokens above and exactly as many below."""
    second = {}
    for eps_high in (0.28, 0.2):
        trainer = make_trainer(
            tmp_path / str(eps_high),
            tiny_qwen2,
            ToyAccuracyReward(),
            epsilon_high=eps_high,
            max_steps=2,
            save_strategy="no",
        )
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        assert len(logs) == 2 and logs[0]["clip_ratio/region_mean"] == 0.0  # on-policy: ratio 1
        second[eps_high] = logs[1]
    assert second[0.28]["clip_ratio/low_mean"] == second[0.2]["clip_ratio/low_mean"]
    assert second[0.2]["clip_ratio/high_mean"] > second[0.28]["clip_ratio/high_mean"], second
