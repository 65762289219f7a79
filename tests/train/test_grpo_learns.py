"""The GRPO/DAPO loop really learns: on a trivially learnable task, the mean reward rises.

The task: sampling is restricted to eight words (TRL's ``generation_kwargs`` -> ``suppress_tokens``) and
the reward is the share of completion tokens that are one of four "good" words. A random policy picks
good words about half the time, so rewards vary within every group from the first step, and the policy
gradient only has to move eight logits. Same seed, a fixed number of steps, CPU, the tiny-qwen2 preset,
through longmill's trainer (with dynamic sampling on).
"""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from train.dapo import DynamicSamplingGRPOTrainer

WORDS = ["Ġyes", "Ġno", "Ġred", "Ġblue", "Ġcat", "Ġdog", "Ġup", "Ġdown"]


class GoodWordsReward:
    """Share of completion tokens that are good words."""

    __name__ = "good_words"

    def __init__(self, good):
        self.good = set(good)

    def __call__(self, completions, completion_ids, **kwargs):
        return [sum(t in self.good for t in ids) / max(len(ids), 1) for ids in completion_ids]


@pytest.mark.slow
def test_mean_reward_rises(tmp_path, tiny_qwen2):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    tok = AutoTokenizer.from_pretrained(str(tiny_qwen2))
    allowed = tok.convert_tokens_to_ids(WORDS)
    suppress = sorted(set(range(151_936)) - set(allowed))
    prompts = [
        {"prompt": [{"role": "user", "content": f"Say a few words, please ({i})."}]} for i in range(64)
    ]
    args = GRPOConfig(
        output_dir=str(tmp_path),
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=16,
        logging_steps=1,
        seed=0,
        report_to="none",
        save_strategy="no",
        beta=0.0,
        loss_type="dapo",
        epsilon_high=0.28,
        temperature=1.0,
        generation_kwargs={"suppress_tokens": suppress},
        disable_tqdm=True,
        bf16=False,
    )
    trainer = DynamicSamplingGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(tiny_qwen2)),
        reward_funcs=[GoodWordsReward(allowed[::2])],
        args=args,
        train_dataset=Dataset.from_list(prompts),
        processing_class=tok,
        dynamic_sampling_rounds=1,
    )
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    (tmp_path / "rewards.json").write_text(json.dumps(rewards))
    assert len(rewards) == 16
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.15, rewards
    assert last > 0.75, rewards
