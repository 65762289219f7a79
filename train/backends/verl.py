"""The verl backend: writes, per stage, a ready-to-run verl DAPO command with settings equivalent to ours.

It does not run verl (that happens on a Ray cluster). Each ``stage-K/run.sh`` trains on the stage's Parquet
files with longmill's reward (``custom_reward_function`` -> :func:`train.rewards.compute_score`), then
merges the last FSDP checkpoint into a Hugging Face folder that the next stage starts from.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

import train.rewards
from datagen.shards import atomic_write_bytes, atomic_write_json
from train.backends.base import TRAINER_BACKENDS, StageSpec
from train.config import GRPOPhaseConfig

log = logging.getLogger(__name__)


def verl_overrides(cfg: GRPOPhaseConfig, stage: StageSpec, init_checkpoint: str, ckpt_dir: Path,
                   n_gpus_per_node: int = 8, nnodes: int = 1) -> list[str]:
    """Hydra overrides for ``recipe.dapo.main_dapo``: our GRPO/DAPO settings in verl's names."""
    files = "[" + ",".join(str(f.resolve()) for f in stage.files) + "]"
    val = "[" + ",".join(str(f.resolve()) for f in stage.eval_files) + "]" if stage.eval_files else files
    prompt_bsz = max(1, cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * n_gpus_per_node * nnodes
                     // cfg.num_generations)
    max_len = stage.max_prompt_length + cfg.max_completion_length
    o = [
        f"data.train_files={files}",
        f"data.val_files={val}",
        "data.prompt_key=prompt",
        f"data.max_prompt_length={stage.max_prompt_length}",
        f"data.max_response_length={cfg.max_completion_length}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"data.train_batch_size={prompt_bsz}",
        f"data.gen_batch_size={prompt_bsz * (1 + max(cfg.dynamic_sampling_rounds, 0))}",
        "algorithm.adv_estimator=grpo",
        f"algorithm.use_kl_in_reward={cfg.beta > 0}",
        f"actor_rollout_ref.actor.use_kl_loss={cfg.beta > 0}",
        f"actor_rollout_ref.actor.kl_loss_coef={cfg.beta}",
        f"actor_rollout_ref.actor.clip_ratio_low={cfg.epsilon}",
        f"actor_rollout_ref.actor.clip_ratio_high={cfg.epsilon_high}",
        "actor_rollout_ref.actor.loss_agg_mode=" + ("token-mean" if cfg.loss_type in ("dapo", "bnpo") else "seq-mean-token-mean"),
        f"algorithm.filter_groups.enable={cfg.dynamic_sampling_rounds > 0}",
        "algorithm.filter_groups.metric=score",
        f"algorithm.filter_groups.max_num_gen_batches={max(cfg.dynamic_sampling_rounds, 0) + 1}",
        f"actor_rollout_ref.model.path={init_checkpoint}",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={cfg.gradient_checkpointing}",
        "actor_rollout_ref.model.use_remove_padding=True",
        f"actor_rollout_ref.actor.optim.lr={cfg.learning_rate}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={prompt_bsz}",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={max_len}",
        f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={max_len}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={max_len}",
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.n={cfg.num_generations}",
        f"actor_rollout_ref.rollout.temperature={cfg.temperature}",
        f"actor_rollout_ref.rollout.top_p={cfg.top_p}",
        f"actor_rollout_ref.rollout.max_num_batched_tokens={max_len}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={max(cfg.vllm_gpu_memory_utilization, 0.6)}",
        "reward_model.reward_manager=dapo",
        f"reward_model.overlong_buffer.enable={bool(cfg.overlong_cache)}",
        f"reward_model.overlong_buffer.len={cfg.overlong_cache}",
        f"reward_model.overlong_buffer.penalty_factor={cfg.overlong_penalty}",
        f"custom_reward_function.path={Path(train.rewards.__file__).resolve()}",
        "custom_reward_function.name=compute_score",
        f"+custom_reward_function.reward_kwargs.rule={cfg.reward_rule}",
        f"trainer.default_local_dir={ckpt_dir}",
        f"trainer.n_gpus_per_node={n_gpus_per_node}",
        f"trainer.nnodes={nnodes}",
        "trainer.total_epochs=1",
        f"trainer.save_freq={cfg.save_steps}",
        "trainer.resume_mode=auto",
        "trainer.logger=['console']",
        f"trainer.experiment_name=longmill-{stage.name}",
    ]
    if cfg.judge_url:
        o.append(f"+custom_reward_function.reward_kwargs.judge_url={cfg.judge_url}")
        if cfg.judge_model:
            o.append(f"+custom_reward_function.reward_kwargs.judge_model={cfg.judge_model}")
    if cfg.max_steps > 0:
        o.append(f"trainer.total_training_steps={cfg.max_steps}")
    return o


class VerlBackend:
    """Writes ``out/stage-K/run.sh`` and ``config.json`` per stage instead of training.

    Args:
        config: the phase settings (translated into verl's names).
        out: where the scripts go.
        n_gpus_per_node: GPUs per node of the verl cluster.
        nnodes: nodes of the verl cluster.
    """

    name = "verl"

    def __init__(self, config: GRPOPhaseConfig, out: str | Path, n_gpus_per_node: int = 8, nnodes: int = 1, **_: Any):
        self.config = config
        self.out = Path(out)
        self.n_gpus_per_node = n_gpus_per_node
        self.nnodes = nnodes
        self.scripts: list[Path] = []

    def run_phase(self, stage: StageSpec, init_checkpoint: str) -> str:
        folder = self.out / stage.name
        ckpts = (folder / "checkpoints").resolve()
        merged = (folder / "hf").resolve()
        overrides = verl_overrides(self.config, stage, init_checkpoint, ckpts, self.n_gpus_per_node, self.nnodes)
        lines = ["#!/usr/bin/env bash",
                 f"# longmill phase {stage.index}: {stage.name}, {stage.rows} samples, prompts <= {stage.max_prompt_length} tokens.",
                 "# Run from a verl checkout (python -m recipe.dapo.main_dapo), on the Ray cluster's head node.",
                 "set -euo pipefail",
                 "python3 -m recipe.dapo.main_dapo \\"]
        lines += [f"    {shlex.quote(o)} \\" for o in overrides[:-1]] + [f"    {shlex.quote(overrides[-1])}"]
        lines += ["# Merge the last FSDP checkpoint into a Hugging Face folder for the next stage.",
                  f'last=$(ls -d {shlex.quote(str(ckpts))}/global_step_* | sort -V | tail -n 1)',
                  f'python3 -m verl.model_merger merge --backend fsdp --local_dir "$last/actor" --target_dir {shlex.quote(str(merged))}',
                  ""]
        script = folder / "run.sh"
        atomic_write_bytes(script, "\n".join(lines).encode())
        script.chmod(0o755)
        atomic_write_json(folder / "config.json", {"stage": stage.name, "entrypoint": "recipe.dapo.main_dapo",
                                                   "overrides": overrides, "init_checkpoint": init_checkpoint,
                                                   "next_checkpoint": str(merged)})
        self.scripts.append(script)
        return str(merged)

    def finish(self) -> Path:
        """Write ``run_all.sh``, which runs the stages in order."""
        path = self.out / "run_all.sh"
        body = ["#!/usr/bin/env bash", "set -euo pipefail"] + [f"bash {shlex.quote(str(s.resolve()))}" for s in self.scripts]
        atomic_write_bytes(path, ("\n".join(body) + "\n").encode())
        path.chmod(0o755)
        return path


TRAINER_BACKENDS.add("verl", VerlBackend)
