"""The default trainer backend: TRL's GRPOTrainer with DAPO settings and online dynamic sampling."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from datagen.shards import atomic_write_json
from eval.judge import JudgeConfig
from eval.models import load_causal_lm
from train.backends.base import TRAINER_BACKENDS, StageSpec
from train.callbacks import MetricsLogger
from train.config import GRPOPhaseConfig
from train.rewards import HybridQAReward

log = logging.getLogger(__name__)

#: Columns a phase needs: the prompt, and what the reward reads.
REWARD_COLUMNS = ("prompt", "answers", "question", "uid", "data_source")


def weights_digest(model: Any) -> str:
    """A hash of every parameter (name, dtype, shape, bytes): equal digests mean equal weights."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
    return h.hexdigest()


def load_stage_dataset(files: list[Path]) -> Any:
    """The stage's shards through ``datasets`` (exactly how a TRL user would load them)."""
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    return ds.select_columns([c for c in REWARD_COLUMNS if c in ds.column_names])


def grpo_args(cfg: GRPOPhaseConfig, phase_dir: Path, stage: StageSpec, rollout: str) -> Any:
    """TRL's GRPOConfig for one phase (fields this TRL version lacks are left out, with a log line)."""
    from trl import GRPOConfig

    kw: dict[str, Any] = dict(
        output_dir=str(phase_dir), learning_rate=cfg.learning_rate, seed=cfg.seed,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_p=cfg.top_p,
        max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs, loss_type=cfg.loss_type,
        epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta, scale_rewards=cfg.scale_rewards,
        mask_truncated_completions=cfg.mask_truncated_completions, logging_steps=cfg.logging_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        report_to=cfg.report_to, gradient_checkpointing=cfg.gradient_checkpointing, bf16=cfg.bf16,
        remove_unused_columns=False,
        # TRL before 0.25 truncated prompts to this; newer versions keep prompts whole (ours fit by construction).
        max_prompt_length=stage.max_prompt_length,
        use_vllm=rollout.startswith("vllm"),
    )
    if rollout.startswith("vllm"):
        kw.update(vllm_mode="server" if rollout == "vllm-server" else "colocate",
                  vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                  vllm_max_model_length=stage.max_prompt_length + cfg.max_completion_length)
        if rollout == "vllm-server":
            kw["vllm_server_base_url"] = cfg.vllm_server_url
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    dropped = sorted(k for k in kw if k not in fields)
    if dropped:
        log.debug("this TRL version has no %s; left out", dropped)
    return GRPOConfig(**{k: v for k, v in kw.items() if k in fields})


def make_reward(cfg: GRPOPhaseConfig) -> HybridQAReward:
    judge = None
    if cfg.judge_url or cfg.judge_backend == "hf":
        kw = {"backend": cfg.judge_backend or "openai", "url": cfg.judge_url, "cache_path": cfg.judge_cache}
        if cfg.judge_model:
            kw["model"] = cfg.judge_model
        judge = JudgeConfig(**kw)
    return HybridQAReward(cfg.reward_rule, judge, max_completion_length=cfg.max_completion_length if cfg.overlong_cache else None,
                          overlong_buffer=cfg.overlong_cache or None, overlong_penalty=cfg.overlong_penalty)


class TRLBackend:
    """Runs a phase with :class:`train.dapo.DynamicSamplingGRPOTrainer`.

    Args:
        config: the phase settings.
        out: the run folder; phase k trains in ``out/phase-k``.
        resume: continue a phase from its last checkpoint when one exists.
        reward_funcs: replace the default reward (tests use toy rewards).
        callbacks: extra transformers callbacks.
        metrics_dir: also write each phase's metrics.csv here as phase-K.csv (for `dvc plots`).
    """

    name = "trl"

    def __init__(self, config: GRPOPhaseConfig, out: str | Path, resume: bool = False,
                 reward_funcs: list[Any] | None = None, callbacks: list[Any] | None = None,
                 metrics_dir: str | Path | None = None):
        self.config = config
        self.out = Path(out)
        self.resume = resume
        self.reward_funcs = reward_funcs
        self.callbacks = list(callbacks or [])
        self.metrics_dir = Path(metrics_dir) if metrics_dir else None

    def run_phase(self, stage: StageSpec, init_checkpoint: str) -> str:
        from transformers.trainer_utils import get_last_checkpoint

        from train.dapo import DynamicSamplingGRPOTrainer

        cfg = self.config
        phase_dir = self.out / f"phase-{stage.index}"
        phase_dir.mkdir(parents=True, exist_ok=True)
        rollout = cfg.resolved_rollout()
        last = get_last_checkpoint(str(phase_dir)) if self.resume else None
        resume_step = None
        if last:
            resume_step = json.loads((Path(last) / "trainer_state.json").read_text())["global_step"]
        dtype = "bfloat16" if cfg.bf16 else "float32"
        model, tokenizer = load_causal_lm(init_checkpoint, dtype=dtype, device="cpu",
                                          attn_implementation=cfg.attn_implementation, yarn_factor=cfg.yarn_factor)
        init_digest = weights_digest(model)
        dataset = load_stage_dataset(stage.files)
        args = grpo_args(cfg, phase_dir, stage, rollout)
        trainer = DynamicSamplingGRPOTrainer(
            model=model, reward_funcs=self.reward_funcs or [make_reward(cfg)], args=args, train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[MetricsLogger(phase_dir, stage.index, resume_step,
                                     self.metrics_dir / f"phase-{stage.index}.csv" if self.metrics_dir else None),
                       *self.callbacks],
            dynamic_sampling_rounds=cfg.dynamic_sampling_rounds,
        )
        log.info("phase %d (%s): %d samples, prompts <= %d tokens, rollout %s, from %s%s", stage.index, stage.name,
                 stage.rows, stage.max_prompt_length, rollout, init_checkpoint, f", resuming {last}" if last else "")
        result = trainer.train(resume_from_checkpoint=last)
        final = phase_dir / "final"
        trainer.save_model(str(final))
        tokenizer.save_pretrained(str(final))
        atomic_write_json(phase_dir / "phase.json", {
            "phase": stage.index, "stage": stage.name, "rows": stage.rows, "max_prompt_length": stage.max_prompt_length,
            "init_checkpoint": str(init_checkpoint), "checkpoint": str(final), "init_weights": init_digest,
            "final_weights": weights_digest(trainer.model), "steps": int(trainer.state.global_step),
            "resumed_from": last, "rollout": rollout, "train_loss": float(result.training_loss),
        })
        return str(final)


TRAINER_BACKENDS.add("trl", TRLBackend)

