"""The default trainer backend: TRL's GRPOTrainer with DAPO settings and online dynamic sampling."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from eval.models import load_causal_lm
from longmill.errors import LongmillError
from longmill.io import atomic_write_json, file_digest
from train.backends.base import TRAINER_BACKENDS, StageSpec, TrainerBackend
from train.callbacks import MetricsLogger
from train.config import GRPOPhaseConfig
from train.judge_health import JudgeHealth, check_judge_url
from train.model_folder import missing_files, phase_scaling, prepare_model_folder, run_spans_nodes
from train.rewards import build_rewards

log = logging.getLogger(__name__)

#: Columns a phase needs: the prompt, and what the reward reads.
REWARD_COLUMNS = ("prompt", "answers", "question", "uid", "data_source")


def files_digest(folder: str | Path) -> str:
    """A hash of a saved model's weight files (names and bytes): equal digests mean equal saved weights.

    Hashing the files (on the main process, after saving) works the same under DDP, FSDP2 (whose parameters
    are DTensors) and ZeRO-3 (whose ranks hold empty partitions), where hashing parameters does not.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        raise LongmillError(f"{folder}: no weight files (*.safetensors, *.bin) to hash")
    h = hashlib.blake2b(digest_size=16)
    for p in files:
        h.update(p.name.encode() + b"\0")
        file_digest(p, into=h)
    return h.hexdigest()


def load_stage_dataset(files: list[Path]) -> Any:
    """The stage's shards through ``datasets`` (exactly how a TRL user would load them)."""
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    return ds.select_columns([c for c in REWARD_COLUMNS if c in ds.column_names])


def grpo_args(cfg: GRPOPhaseConfig, phase_dir: Path, stage: StageSpec, rollout: str) -> GRPOPhaseConfig:
    """The phase's TRL config: the user's settings with the phase's output folder, rollout and lengths."""
    kw: dict[str, Any] = {
        "output_dir": str(phase_dir),
        "use_vllm": rollout.startswith("vllm"),
        "remove_unused_columns": False,
    }
    if rollout.startswith("vllm"):
        kw["vllm_mode"] = "server" if rollout == "vllm-server" else "colocate"
        if "vllm_max_model_length" not in cfg.given:  # prompts fit the stage's edge by construction
            kw["vllm_max_model_length"] = stage.max_prompt_length + (cfg.max_completion_length or 0)
    return cfg.derive(**kw)


def check_rollout(rollout: str) -> None:
    """Refuse a vLLM rollout where vLLM is not installed, with the command that installs it.

    Raises:
        LongmillError: ``rollout`` is vllm-colocate or vllm-server and ``vllm`` is not importable.
    """
    if rollout.startswith("vllm") and importlib.util.find_spec("vllm") is None:
        raise LongmillError(
            f"rollout={rollout} needs vLLM, which is not installed here: pip install 'longmill[gpu]' "
            "(vllm>=0.22,<=0.31, on a CUDA host), or use --rollout hf (or auto)"
        )


def refill_weights(stage: StageSpec, dataset: Any) -> list[float]:
    """Per-row weights for dynamic sampling's refills: the stage's own mix, retrospective weights included.

    The stage's own rows share ``1 - retro_share`` of the mass uniformly; its retrospective rows (the hard
    samples of earlier bins, listed in the manifest) share ``retro_share`` in proportion to their difficulty,
    as the curriculum drew them (QwenLong-L1's retrospective sampling).
    """
    n = len(dataset)
    manifest_path = Path(stage.files[0]).parent.parent / "manifest.json" if stage.files else None
    retro: set[str] = set()
    if manifest_path is not None and manifest_path.exists():
        for s in json.loads(manifest_path.read_text()).get("stages", []):
            if s.get("name") == stage.name:
                retro = set(s.get("retro_uids") or [])
    uids = dataset["uid"] if "uid" in dataset.column_names else [None] * n
    is_retro = [u in retro for u in uids]
    n_retro = sum(is_retro)
    if not n_retro or n_retro == n:
        return [1.0] * n
    difficulty = _stage_difficulty(stage.files, uids)
    retro_mass = n_retro / n
    d_sum = sum(d for d, r in zip(difficulty, is_retro, strict=True) if r)
    return [
        retro_mass * d / d_sum if r else (1 - retro_mass) / (n - n_retro)
        for d, r in zip(difficulty, is_retro, strict=True)
    ]


def _stage_difficulty(files: list[Path], uids: list[Any]) -> list[float]:
    import pyarrow.parquet as pq

    by_uid: dict[Any, float] = {}
    for f in files:
        t = pq.read_table(f, columns=[c for c in ("uid", "difficulty") if c in pq.read_schema(f).names])
        if "difficulty" not in t.column_names:
            return [1.0] * len(uids)
        for u, d in zip(t.column("uid").to_pylist(), t.column("difficulty").to_pylist(), strict=True):
            by_uid[u] = float(d) if d is not None else 1.0
    return [max(by_uid.get(u, 1.0), 1e-6) for u in uids]


def _state() -> Any:
    from accelerate import PartialState

    return PartialState()


class TRLBackend(TrainerBackend):
    """Runs a phase with :class:`train.dapo.DynamicSamplingGRPOTrainer`.

    Every rank runs every phase; only the main process writes files (the phase's model folder, tokenizer,
    ``phase.json``), and the ranks wait for each other after each write. A finished phase's
    ``phase.json`` is its record, so runs resume; ``OUT/final`` links to the last phase's model.

    Args:
        config: the phase settings; its ``reward_funcs`` name the rewards.
        out: the run folder; phase k trains in ``out/phase-k``.
        resume: continue a phase from its last checkpoint when one exists.
        reward_funcs: reward function objects that replace the configured ones (tests use toy rewards).
        callbacks: extra transformers callbacks.
        metrics_dir: also write each phase's metrics.csv here as phase-K.csv (for `dvc plots`).

    Raises:
        LongmillError: a vLLM rollout without vLLM installed (see :func:`check_rollout`); an ``sp_size`` that does
            not divide the number of processes;
            a judge some rank cannot reach (:func:`train.judge_health.check_judge_url`).
    """

    name = "trl"
    resumable = True

    def __init__(
        self,
        config: GRPOPhaseConfig,
        out: str | Path,
        resume: bool = False,
        reward_funcs: list[Any] | None = None,
        callbacks: list[Any] | None = None,
        metrics_dir: str | Path | None = None,
    ):
        check_rollout(config.resolved_rollout())
        if getattr(config, "sp_size", 1) > 1:
            from train.sequence_parallel import check_world

            check_world(
                config.sp_size, _state().num_processes
            )  # before any phase: a launch sp_size cannot split
        check_judge_url(config)  # every rank, before any training: a judge some node cannot reach is refused
        self.config = config
        self.out = Path(out)
        self.resume = resume
        self.reward_funcs = reward_funcs
        self.callbacks = list(callbacks or [])
        self.metrics_dir = Path(metrics_dir) if metrics_dir else None

    @classmethod
    def preflight(cls, config: GRPOPhaseConfig, curriculum: str | Path) -> list[str]:
        """The memory plan's warnings (:func:`train.plan.check_plan`) for this config over ``curriculum``."""
        from train.plan import check_plan

        return check_plan(config, curriculum=curriculum)

    def finished_phase(self, stage: StageSpec) -> dict[str, Any] | None:
        marker = self.out / f"phase-{stage.index}" / "phase.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def finish(self, final_checkpoint: str) -> dict[str, Any]:
        """Point ``OUT/final`` at the last phase's model (whatever the number of phases), atomically."""
        if _state().is_main_process:
            link = self.out / "final"
            tmp = self.out / f".final.{os.getpid()}"
            tmp.symlink_to(
                Path(final_checkpoint).resolve().relative_to(self.out.resolve()), target_is_directory=True
            )
            os.replace(tmp, link)
        return {}

    def rewards(self) -> list[Any]:
        """The phase's reward functions: those given to the constructor, else the config's ``reward_funcs``."""
        return self.reward_funcs or build_rewards(self.config.reward_funcs, self.config)

    def model_folder(self, stage: StageSpec, init_checkpoint: str, phase_dir: Path) -> str:
        """The folder this phase loads (and hands to vLLM): YaRN written into its config.json where asked.

        The folder's other files are links into the folder it starts from (the main process's hub cache for a
        hub id), or copies with ``model_folder_files: copy`` (and ``auto`` in a run over several nodes). Every
        rank then checks that it can read the folder, before any training.
        """
        cfg = self.config
        state = _state()
        if not cfg.yarn_factor:
            self.check_model_folder(init_checkpoint)
            return init_checkpoint
        native = cfg.yarn_original_max_position_embeddings
        needed = stage.max_prompt_length + (cfg.max_completion_length or 0)
        scaling = phase_scaling(cfg.yarn_factor, native, needed, cfg.yarn_within_native_window)
        mode = getattr(cfg, "model_folder_files", "auto")
        copy = mode == "copy" or (mode == "auto" and run_spans_nodes())
        chosen = [
            prepare_model_folder(init_checkpoint, phase_dir / "init-model", scaling, native, copy=copy)
            if state.is_main_process
            else None
        ]
        if state.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(chosen, from_process=0)  # also the barrier: the folder is written
        self.check_model_folder(chosen[0])
        return chosen[0]

    def check_model_folder(self, folder: str) -> None:
        """Every rank reads ``folder`` from its own host; one that cannot stops the run before it trains.

        Raises:
            LongmillError: on every rank, naming the hosts and files that are missing.
        """
        import socket

        state = _state()
        missing = missing_files(folder)
        if state.num_processes == 1 and not Path(folder).exists():
            return  # one process: the loader says the model is missing, in its own words
        report = [(socket.gethostname(), state.process_index, len(missing), missing[0])] if missing else []
        if state.num_processes > 1:
            from accelerate.utils import gather_object

            report = gather_object(report)
        if report:
            where = "; ".join(f"rank {r} on {h}: {n} unreadable, e.g. {m}" for h, r, n, m in report)
            raise LongmillError(
                f"model folder {folder} cannot be read on every node ({where}). Put the run folder (--out) "
                "on storage every node mounts, and set model_folder_files: copy (auto does so when the launcher "
                "reports several nodes) so the folder holds its weights instead of links into one node's cache"
            )

    def run_phase(self, stage: StageSpec, init_checkpoint: str) -> dict[str, Any]:
        from transformers.trainer_utils import get_last_checkpoint

        from train.dapo import DynamicSamplingGRPOTrainer

        cfg = self.config
        state = _state()
        phase_dir = self.out / f"phase-{stage.index}"
        phase_dir.mkdir(parents=True, exist_ok=True)
        rollout = cfg.resolved_rollout()
        last = get_last_checkpoint(str(phase_dir)) if self.resume else None
        resume_step = None
        if last:
            resume_step = json.loads((Path(last) / "trainer_state.json").read_text())["global_step"]
        dtype = "bfloat16" if cfg.bf16 else "float32"
        folder = self.model_folder(stage, init_checkpoint, phase_dir)
        model, tokenizer = load_causal_lm(
            folder, dtype=dtype, device="cpu", attn_implementation=cfg.attn_implementation
        )
        dataset = load_stage_dataset(stage.files)
        args = grpo_args(cfg, phase_dir, stage, rollout)
        rewards = self.rewards()
        judge_health = JudgeHealth(cfg.judge_max_failed_batches, cfg.judge_on_failure, cfg.judge_url)
        trainer = DynamicSamplingGRPOTrainer(
            model=model,
            reward_funcs=rewards,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[
                MetricsLogger(
                    phase_dir,
                    stage.index,
                    resume_step,
                    self.metrics_dir / f"phase-{stage.index}.csv" if self.metrics_dir else None,
                    is_main=state.is_main_process,
                ),
                judge_health,
                *self.callbacks,
            ],
            dynamic_sampling_rounds=cfg.dynamic_sampling_rounds,
            dynamic_sampling_metric=cfg.dynamic_sampling_metric,
            refill_weights=refill_weights(stage, dataset),
        )
        log.info(
            "phase %d (%s): %d samples, prompts <= %d tokens, rollout %s, from %s%s",
            stage.index,
            stage.name,
            stage.rows,
            stage.max_prompt_length,
            rollout,
            folder,
            f", resuming {last}" if last else "",
        )
        result = trainer.train(resume_from_checkpoint=last)
        if judge_health.tripped:  # the same on every rank (it reads the logged, rank-averaged metrics)
            raise LongmillError(f"phase {stage.index}: {judge_health.tripped}")
        final = phase_dir / "final"
        trainer.save_model(str(final))  # every rank: ZeRO-3 and FSDP gather the weights collectively
        record = {
            "phase": stage.index,
            "stage": stage.name,
            "rows": stage.rows,
            "max_prompt_length": stage.max_prompt_length,
            "init_checkpoint": str(init_checkpoint),
            "model_folder": str(folder),
            "checkpoint": str(final),
            "steps": int(trainer.state.global_step),
            "resumed_from": last,
            "rollout": rollout,
            "rewards": [getattr(f, "__name__", type(f).__name__) for f in rewards],
            "train_loss": float(result.training_loss),
        }
        if state.is_main_process:
            tokenizer.save_pretrained(str(final))
            record["init_weights"] = files_digest(folder) if Path(folder).is_dir() else None
            record["final_weights"] = files_digest(final)
            atomic_write_json(phase_dir / "phase.json", record)
        state.wait_for_everyone()
        return self.finished_phase(stage) or record  # every rank returns the main process's record


TRAINER_BACKENDS.add("trl", TRLBackend)
