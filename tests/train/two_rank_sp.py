"""Run by tests/train/test_sequence_parallel.py under torchrun: `train grpo`'s phases with sp_size 2 on two CPU ranks.

The first run stops itself right after its first checkpoint (an exception on every rank, as a killed job would
leave it); the second resumes the phase from that checkpoint and finishes it. Each rank writes what it logged and
how many sequence-parallel forwards it ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers import TrainerCallback

import train.dapo
from train.config import GRPOPhaseConfig
from train.phases import run_phases

CALLS = {"sp_forwards": 0}
_original = train.dapo.sequence_parallel_logps


def counted(*args, **kwargs):
    CALLS["sp_forwards"] += 1
    return _original(*args, **kwargs)


train.dapo.sequence_parallel_logps = counted


class SmallIdsReward:
    __name__ = "small_ids"

    def __call__(self, completions, completion_ids, **kwargs):
        return [1.0 - sum(ids) / (len(ids) * 151_936) for ids in completion_ids]


class Record(TrainerCallback):
    def __init__(self, stop_after: int | None):
        self.stop_after = stop_after
        self.logs: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append({"step": state.global_step, "loss": logs["loss"]})

    def on_save(self, args, state, control, **kwargs):
        if self.stop_after is not None and state.global_step >= self.stop_after:
            raise RuntimeError("stopped after the first checkpoint")


if __name__ == "__main__":
    curriculum, model, out = sys.argv[1:4]
    config = GRPOPhaseConfig(
        model=model,
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        steps_per_generation=1,
        max_completion_length=8,
        learning_rate=1e-3,
        save_steps=1,
        dynamic_sampling_rounds=0,
        rollout="hf",
        seed=0,
        mask_truncated_completions=False,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        disable_tqdm=True,
        ddp_backend="gloo",
        sp_size=2,
    )
    rank = config.process_index
    result: dict = {}
    first = Record(stop_after=1)
    try:
        run_phases(curriculum, out, config, phases=[1], reward_funcs=[SmallIdsReward()], callbacks=[first])
    except RuntimeError as e:
        result["first_run"] = str(e)
    result["first_logs"] = first.logs
    second = Record(stop_after=None)
    summary = run_phases(
        curriculum, out, config, resume=True, phases=[1], reward_funcs=[SmallIdsReward()], callbacks=[second]
    )
    result.update(second_logs=second.logs, phases=summary["phases"], **CALLS)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result, default=str))
    print("RANK-DONE", rank, flush=True)
