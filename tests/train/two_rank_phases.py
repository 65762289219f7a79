"""Run by tests/train/test_multirank.py under torchrun: two phases on every rank (gloo, CPU)."""

from __future__ import annotations

import sys

from train.config import GRPOPhaseConfig
from train.phases import run_phases


class SmallIdsReward:
    __name__ = "small_ids"

    def __call__(self, completions, completion_ids, **kwargs):
        return [1.0 - sum(ids) / (len(ids) * 151_936) for ids in completion_ids]


if __name__ == "__main__":
    curriculum, model, out = sys.argv[1:4]
    config = GRPOPhaseConfig(
        model=model,
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        steps_per_generation=1,
        max_completion_length=8,
        learning_rate=1e-3,
        save_steps=1,
        dynamic_sampling_rounds=1,
        dynamic_sampling_metric="reward",
        rollout="hf",
        seed=0,
        mask_truncated_completions=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        yarn_factor=2.0,
        yarn_original_max_position_embeddings=256,
        ddp_backend="gloo",
    )
    summary = run_phases(curriculum, out, config, reward_funcs=[SmallIdsReward()])
    print("RANK-DONE", config.process_index, summary["final_checkpoint"], flush=True)
