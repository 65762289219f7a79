"""Training configs: dataclasses whose fields are the YAML keys and the CLI flags, with the same names.

A YAML file (``--config``) sets values; flags given on the command line override it; an unknown key is
an error that suggests the closest field (TRL's convention).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datagen.errors import LongmillError

ROLLOUTS = ("auto", "hf", "vllm-colocate", "vllm-server")


def gpu_has_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass
class GRPOPhaseConfig:
    """Phased GRPO with DAPO defaults.

    Args:
        model: the starting policy: a preset (tiny-qwen2), a folder (e.g. the SFT output) or a hub id.
        rollout: auto (vLLM colocated when vLLM is importable and a GPU is present, else hf), hf,
            vllm-colocate, or vllm-server (a `trl vllm-serve` process on other GPUs).
        vllm_server_url: the base URL of `trl vllm-serve` for rollout=vllm-server.
        vllm_gpu_memory_utilization: the GPU memory share vLLM may take when colocated.
        learning_rate: the policy's learning rate.
        per_device_train_batch_size: completions per device per optimiser micro-step.
        gradient_accumulation_steps: micro-steps per optimiser step.
        num_generations: completions per prompt (the GRPO group size).
        max_completion_length: the most tokens per completion.
        temperature: rollout sampling temperature.
        top_p: rollout nucleus sampling mass.
        max_steps: optimiser steps per phase (-1: one pass over the stage).
        num_train_epochs: passes over each stage when max_steps is -1.
        loss_type: TRL's loss aggregation; dapo is token-level over the whole batch.
        epsilon: the lower clip range.
        epsilon_high: the upper clip range (DAPO's clip-higher).
        beta: the KL coefficient (DAPO uses none).
        scale_rewards: group, batch or none.
        mask_truncated_completions: keep truncated completions out of the loss.
        overlong_buffer: L_cache of the soft overlong punishment (default max_completion_length/4; 0 disables).
        overlong_penalty: the overlong punishment's scale.
        dynamic_sampling_rounds: extra generation rounds to replace zero-variance groups (0 disables).
        reward_rule: the rule half of the reward: sub_em or em.
        judge_url: an OpenAI-compatible judge endpoint (the judge half of the reward); none disables.
        judge_model: the judge's served model name.
        judge_backend: openai or hf.
        judge_cache: a JSONL verdict cache.
        yarn_factor: YaRN rope scaling for contexts beyond the model's native window.
        attn_implementation: e.g. sdpa or flash_attention_2.
        gradient_checkpointing: trade compute for memory on long prompts.
        bf16: train in bfloat16; default: when a CUDA GPU with bf16 support is present.
        seed: seeds sampling, dropout and data order.
        logging_steps: log every this many steps.
        save_steps: checkpoint every this many steps (resume points).
        save_total_limit: checkpoints kept per phase.
        report_to: none, wandb, tensorboard, ...
    """

    model: str = "tiny-qwen2"
    rollout: str = "auto"
    vllm_server_url: str | None = None
    vllm_gpu_memory_utilization: float = 0.3
    learning_rate: float = 1e-6
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_generations: int = 8
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    max_steps: int = -1
    num_train_epochs: float = 1.0
    loss_type: str = "dapo"
    epsilon: float = 0.2
    epsilon_high: float = 0.28
    beta: float = 0.0
    scale_rewards: str = "group"
    mask_truncated_completions: bool = True
    overlong_buffer: int | None = None
    overlong_penalty: float = 1.0
    dynamic_sampling_rounds: int = 2
    reward_rule: str = "sub_em"
    judge_url: str | None = None
    judge_model: str | None = None
    judge_backend: str | None = None
    judge_cache: str | None = None
    yarn_factor: float | None = None
    attn_implementation: str | None = None
    gradient_checkpointing: bool = False
    bf16: bool | None = None
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    report_to: str = "none"

    def __post_init__(self) -> None:
        if self.rollout not in ROLLOUTS:
            close = difflib.get_close_matches(self.rollout, ROLLOUTS, n=1)
            raise LongmillError(f"unknown rollout {self.rollout!r}"
                                f"{f'; did you mean {close[0]!r}?' if close else ''} Valid: {', '.join(ROLLOUTS)}")
        if self.rollout == "vllm-server" and not self.vllm_server_url:
            raise LongmillError("rollout=vllm-server needs vllm_server_url, e.g. http://10.0.0.2:8000 from "
                                "`trl vllm-serve --model MODEL` on other GPUs")
        if self.num_generations < 2:
            raise LongmillError(f"num_generations must be >= 2 (GRPO compares completions within a group), "
                                f"got {self.num_generations}")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise LongmillError(f"epsilon_high ({self.epsilon_high}) must be >= epsilon ({self.epsilon}) for clip-higher")
        if self.overlong_buffer is not None and self.overlong_buffer >= self.max_completion_length:
            raise LongmillError(f"overlong_buffer ({self.overlong_buffer}) must be smaller than max_completion_length "
                                f"({self.max_completion_length})")
        if self.dynamic_sampling_rounds < 0:
            raise LongmillError("dynamic_sampling_rounds must be >= 0")
        if self.bf16 is None:
            self.bf16 = gpu_has_bf16()

    def resolved_rollout(self) -> str:
        """``auto`` resolved: vllm-colocate when vLLM is importable and CUDA is available, else hf."""
        if self.rollout != "auto":
            return self.rollout
        import torch

        has_vllm = importlib.util.find_spec("vllm") is not None
        return "vllm-colocate" if has_vllm and torch.cuda.is_available() else "hf"

    @property
    def overlong_cache(self) -> int:
        return self.max_completion_length // 4 if self.overlong_buffer is None else self.overlong_buffer


@dataclass
class SFTConfig:
    """Warm-up SFT on short triplets.

    Args:
        model: the model to fine-tune: a preset, a folder or a hub id.
        learning_rate: the learning rate.
        num_train_epochs: passes over the data.
        max_steps: a cap on optimiser steps (-1: none).
        per_device_train_batch_size: examples per device per step.
        gradient_accumulation_steps: micro-steps per optimiser step.
        max_length: truncate examples to this many tokens.
        max_examples: use at most this many triplets.
        distractors: how many of a triplet's own distractor documents go into its prompt.
        teacher_model: generate targets with this model and keep those the reward accepts (rejection sampling).
        teacher_backend: hf, vllm or openai.
        teacher_url: the server for the openai teacher backend.
        teacher_k: completions sampled per triplet from the teacher.
        teacher_max_tokens: the most tokens per teacher completion.
        gradient_checkpointing: trade compute for memory.
        bf16: train in bfloat16; default: when a CUDA GPU with bf16 support is present.
        seed: seeds document order and training.
        logging_steps: log every this many steps.
        report_to: none, wandb, tensorboard, ...
    """

    model: str = "tiny-qwen2"
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 4096
    max_examples: int | None = None
    distractors: int = 3
    teacher_model: str | None = None
    teacher_backend: str = "hf"
    teacher_url: str | None = None
    teacher_k: int = 4
    teacher_max_tokens: int = 512
    gradient_checkpointing: bool = False
    bf16: bool | None = None
    seed: int = 0
    logging_steps: int = 5
    report_to: str = "none"

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = gpu_has_bf16()


def load_yaml_config(cls: type, path: str | Path | None, overrides: dict[str, Any]) -> Any:
    """``cls`` from a YAML file, with ``overrides`` (the flags the user typed) on top.

    Raises:
        LongmillError: the file is missing or not a mapping, or has a key that is not a field.
    """
    values: dict[str, Any] = {}
    names = [f.name for f in dataclasses.fields(cls)]
    if path:
        p = Path(path)
        if not p.exists():
            raise LongmillError(f"{p}: no such config file")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise LongmillError(f"{p}: a config file must be a YAML mapping of option: value")
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                raise LongmillError(f"{p}: unknown key {key!r}{f'; did you mean {close[0]!r}?' if close else ''} "
                                    f"(keys are the command's flag names with underscores)")
        values.update(data)
    values.update(overrides)
    return cls(**values)
