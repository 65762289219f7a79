"""The verl backend: writes, per stage, a ready-to-run verl 0.9.1 DAPO command with settings equivalent to ours.

It does not run verl (that happens on a Ray cluster). What it writes, under ``--out``:

- ``longmill_reward.py``: longmill's reward as one stdlib-only file (:mod:`train.backends.verl_reward`), so
  verl's workers load it by path without longmill installed in verl's environment;
- ``stage-K/val.parquet``: the held-out rows whose prompts fit stage K (verl would silently drop longer ones);
- ``stage-K/run.sh`` and ``stage-K/config.json``: ``python3 -m verl.trainer.main_ppo`` (the entry point of
  the pip-installed verl; DAPO's pieces are built into it: the ``dapo`` reward manager with its overlong
  buffer, ``algorithm.filter_groups``, asymmetric clipping), then a merge of the last FSDP checkpoint into a
  Hugging Face folder that the next stage starts from;
- ``run_all.sh``: the stages in order.

Every override is checked against verl 0.9.1's own Hydra config by ``tests/train/test_verl.py`` (where verl
is installed). The names follow verl 0.9.1's ``trainer/config/ppo_trainer.yaml``: the reward lives under
``reward.*`` (``reward.custom_reward_function``, ``reward.reward_manager``, ``reward.reward_kwargs`` for the
DAPO manager), not the legacy top-level ``custom_reward_function``/``reward_model`` keys, which
``main_ppo`` no longer reads.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

import train.backends.verl_reward as verl_reward
import train.model_folder as model_folder
from datagen.core.errors import LongmillError
from datagen.core.io import atomic_write_bytes, atomic_write_json, write_table_atomic
from train.backends.base import TRAINER_BACKENDS, StageSpec, TrainerBackend

log = logging.getLogger(__name__)

VERL_VERSION = "0.9.1"
ENTRYPOINT = "verl.trainer.main_ppo"
REWARD_FILE = "longmill_reward.py"
MODEL_FOLDER_FILE = "longmill_model_folder.py"  # a copy of train/model_folder.py, run by each stage's run.sh


def _get(cfg: Any, name: str, default: Any) -> Any:
    v = getattr(cfg, name, default)
    return default if v is None else v


def verl_batch_sizes(cfg: Any, n_gpus: int) -> tuple[int, int]:
    """(data.train_batch_size, actor.ppo_mini_batch_size), in prompts, equivalent to TRL's batches.

    TRL generates ``per_device_train_batch_size x steps_per_generation x GPUs`` completions at a time and takes
    an optimiser step every ``per_device_train_batch_size x gradient_accumulation_steps x GPUs`` completions;
    verl counts prompts (each with ``rollout.n`` completions) for both.
    """
    n = int(_get(cfg, "num_generations", 8))
    per_device = int(_get(cfg, "per_device_train_batch_size", 1))
    accum = int(_get(cfg, "gradient_accumulation_steps", 1))
    spg = int(_get(cfg, "steps_per_generation", accum))
    mini = max(1, per_device * accum * n_gpus // n)
    train = max(mini, per_device * spg * n_gpus // n)
    return train - train % mini, mini


def verl_overrides(
    cfg: Any,
    stage: StageSpec,
    init_checkpoint: str,
    ckpt_dir: Path,
    val_files: list[Path],
    reward_path: Path,
    n_gpus_per_node: int = 8,
    nnodes: int = 1,
) -> list[str]:
    """Hydra overrides for ``python -m verl.trainer.main_ppo`` (verl 0.9.1): our GRPO/DAPO settings in verl's names.

    Args:
        cfg: the phase settings (longmill's GRPOPhaseConfig; read by attribute).
        stage: the curriculum stage.
        init_checkpoint: the model this stage starts from.
        ckpt_dir: verl's ``trainer.default_local_dir``.
        val_files: this stage's validation Parquet (rows that fit the stage); empty disables validation.
        reward_path: the copy of :mod:`train.backends.verl_reward` verl loads.
        n_gpus_per_node, nnodes: the cluster.
    """
    rule = str(_get(cfg, "reward_rule", "em"))
    if rule not in verl_reward.RULES:
        raise LongmillError(
            f"reward_rule {rule!r} has no verl implementation; verl-config supports "
            f"{', '.join(verl_reward.RULES)}"
        )
    files = "[" + ",".join(str(f.resolve()) for f in stage.files) + "]"
    val = "[" + ",".join(str(f.resolve()) for f in (val_files or stage.files)) + "]"
    completion = int(_get(cfg, "max_completion_length", 1024))
    train_bsz, mini_bsz = verl_batch_sizes(cfg, n_gpus_per_node * nnodes)
    max_len = stage.max_prompt_length + completion
    beta = float(_get(cfg, "beta", 0.0))
    rounds = int(_get(cfg, "dynamic_sampling_rounds", 0))
    buffer = int(getattr(cfg, "overlong_cache", completion // 4) or 0)
    loss_type = str(_get(cfg, "loss_type", "dapo"))
    o = [
        f"data.train_files={files}",
        f"data.val_files={val}",
        "data.prompt_key=prompt",
        f"data.max_prompt_length={stage.max_prompt_length}",
        f"data.max_response_length={completion}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"data.train_batch_size={train_bsz}",
        "algorithm.adv_estimator=grpo",
        f"algorithm.norm_adv_by_std_in_grpo={_get(cfg, 'scale_rewards', 'group') != 'none'}",
        "algorithm.use_kl_in_reward=False",
        f"algorithm.filter_groups.enable={rounds > 0}",
        "algorithm.filter_groups.metric=acc",  # correctness, not the shaped score (see verl_reward.compute_score)
        f"actor_rollout_ref.model.path={init_checkpoint}",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={bool(_get(cfg, 'gradient_checkpointing', True))}",
        "actor_rollout_ref.model.use_remove_padding=True",
        f"actor_rollout_ref.actor.optim.lr={_get(cfg, 'learning_rate', 1e-6)}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_bsz}",
        f"actor_rollout_ref.actor.ppo_epochs={int(_get(cfg, 'num_iterations', 1))}",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={max_len}",
        f"actor_rollout_ref.actor.use_kl_loss={beta > 0}",
        f"actor_rollout_ref.actor.kl_loss_coef={beta}",
        f"actor_rollout_ref.actor.clip_ratio_low={_get(cfg, 'epsilon', 0.2)}",
        f"actor_rollout_ref.actor.clip_ratio_high={_get(cfg, 'epsilon_high', 0.28)}",
        "actor_rollout_ref.actor.loss_agg_mode="
        + ("token-mean" if loss_type in ("dapo", "bnpo") else "seq-mean-token-mean"),
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
        f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={max_len}",
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.n={int(_get(cfg, 'num_generations', 8))}",
        f"actor_rollout_ref.rollout.temperature={_get(cfg, 'temperature', 1.0)}",
        f"actor_rollout_ref.rollout.top_p={_get(cfg, 'top_p', 1.0)}",
        f"actor_rollout_ref.rollout.max_model_len={max_len}",
        f"actor_rollout_ref.rollout.max_num_batched_tokens={max_len}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={max(float(_get(cfg, 'vllm_gpu_memory_utilization', 0.3)), 0.6)}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={int(_get(cfg, 'vllm_tensor_parallel_size', 1))}",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={max_len}",
        "reward.reward_manager.name=dapo",
        f"reward.custom_reward_function.path={reward_path}",
        "reward.custom_reward_function.name=compute_score",
        f"+reward.custom_reward_function.reward_kwargs.rule={rule}",
        f"+reward.custom_reward_function.reward_kwargs.max_extra_tokens={int(_get(cfg, 'reward_max_extra_tokens', 2))}",
        f"+reward.reward_kwargs.max_resp_len={completion}",
        f"+reward.reward_kwargs.overlong_buffer_cfg.enable={buffer > 0}",
        f"+reward.reward_kwargs.overlong_buffer_cfg.len={max(buffer, 1)}",
        f"+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor={_get(cfg, 'overlong_penalty', 1.0)}",
        "+reward.reward_kwargs.overlong_buffer_cfg.log=True",
        f"trainer.default_local_dir={ckpt_dir}",
        f"trainer.n_gpus_per_node={n_gpus_per_node}",
        f"trainer.nnodes={nnodes}",
        "trainer.total_epochs=1",
        f"trainer.save_freq={int(_get(cfg, 'save_steps', 50))}",
        "trainer.resume_mode=auto",
        "trainer.logger=[console]",
        "trainer.project_name=longmill",
        f"trainer.experiment_name=longmill-{stage.name}",
        f"trainer.val_before_train={bool(val_files)}",
        f"trainer.test_freq={int(_get(cfg, 'save_steps', 50)) if val_files else -1}",
    ]
    judge_url = _get(cfg, "judge_url", None)
    if judge_url:
        o.append(f"+reward.custom_reward_function.reward_kwargs.judge_url={judge_url}")
        if _get(cfg, "judge_model", None):
            o.append(f"+reward.custom_reward_function.reward_kwargs.judge_model={cfg.judge_model}")
    max_steps = int(_get(cfg, "max_steps", -1))
    if max_steps > 0:
        o.append(f"trainer.total_training_steps={max_steps}")
    return o


def write_stage_eval(stage: StageSpec, out: Path) -> Path | None:
    """The held-out rows whose prompt fits ``stage`` (``prompt_tokens <= max_prompt_length``), as one Parquet file.

    Returns None when no row fits (the stage then runs without validation).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for f in stage.eval_files:
        table = pq.read_table(f)
        if "prompt_tokens" not in table.column_names:
            raise LongmillError(f"{f}: eval shard has no prompt_tokens column; rebuild the curriculum")
        tables.append(table.filter(pc.less_equal(table["prompt_tokens"], stage.max_prompt_length)))
    rows = sum(t.num_rows for t in tables)
    if not rows:
        log.warning(
            "%s: no held-out row fits %d prompt tokens; the stage runs without validation",
            stage.name,
            stage.max_prompt_length,
        )
        return None
    import pyarrow as pa

    path = out / "val.parquet"
    write_table_atomic(pa.concat_tables(tables, promote_options="default"), path)
    log.info(
        "%s: %d held-out rows fit %d prompt tokens -> %s", stage.name, rows, stage.max_prompt_length, path
    )
    return path


class VerlBackend(TrainerBackend):
    """Writes ``out/stage-K/run.sh`` and ``config.json`` per stage instead of training.

    It trains nothing here (``trains_here`` is False) and keeps no phase records: running it again rewrites
    the scripts. verl's own ``trainer.resume_mode=auto`` resumes the training they run.

    Args:
        config: the phase settings (translated into verl's names).
        out: where the scripts go.
        n_gpus_per_node: GPUs per node of the verl cluster.
        nnodes: nodes of the verl cluster.

    Raises:
        LongmillError: ``reward_funcs`` other than longmill's ``hybrid_qa`` (verl loads the reward as one file).
    """

    name = "verl"
    trains_here = False

    def __init__(self, config: Any, out: str | Path, n_gpus_per_node: int = 8, nnodes: int = 1, **_: Any):
        rewards = list(_get(config, "reward_funcs", ["hybrid_qa"]))
        if rewards != ["hybrid_qa"]:
            raise LongmillError(
                f"reward_funcs {rewards} cannot be exported to verl: its commands score with longmill's "
                f"hybrid_qa ({REWARD_FILE}, verl's custom_reward_function). Drop reward_funcs, or point "
                "reward.custom_reward_function.path in the written run.sh at your own file"
            )
        self.config = config
        self.out = Path(out)
        self.n_gpus_per_node = n_gpus_per_node
        self.nnodes = nnodes
        self.scripts: list[Path] = []
        self.reward_path = (self.out / REWARD_FILE).resolve()
        atomic_write_bytes(self.reward_path, Path(verl_reward.__file__).read_bytes())
        self.model_folder_path = (self.out / MODEL_FOLDER_FILE).resolve()
        atomic_write_bytes(self.model_folder_path, Path(model_folder.__file__).read_bytes())

    def run_phase(self, stage: StageSpec, init_checkpoint: str) -> dict[str, Any]:
        folder = self.out / stage.name
        ckpts = (folder / "checkpoints").resolve()
        merged = (folder / "hf").resolve()
        val = write_stage_eval(stage, folder)
        val_files = [val.resolve()] if val else []
        prepare = self.model_folder_command(stage, init_checkpoint, folder)
        model_path = str((folder / "model").resolve()) if prepare else init_checkpoint
        overrides = verl_overrides(
            self.config,
            stage,
            model_path,
            ckpts,
            val_files,
            self.reward_path,
            self.n_gpus_per_node,
            self.nnodes,
        )
        lines = [
            "#!/usr/bin/env bash",
            f"# longmill phase {stage.index}: {stage.name}, {stage.rows} samples, prompts <= {stage.max_prompt_length} tokens.",
            f"# Needs verl=={VERL_VERSION} (pip install verl=={VERL_VERSION} vllm ...; see the README), on the Ray",
            "# cluster's head node. longmill itself need not be installed there: the reward is "
            f"{REWARD_FILE}.",
            "set -euo pipefail",
        ]
        if prepare:
            lines += [
                "# The stage's model folder, with the rope scaling (YaRN) that every consumer must load.",
                prepare,
            ]
        lines += [f"python3 -m {ENTRYPOINT} \\"]
        lines += [f"    {shlex.quote(o)} \\" for o in overrides[:-1]] + [f"    {shlex.quote(overrides[-1])}"]
        lines += [
            "# Merge the last FSDP checkpoint into a Hugging Face folder for the next stage.",
            f"last=$(ls -d {shlex.quote(str(ckpts))}/global_step_* | sort -V | tail -n 1)",
            f'python3 -m verl.model_merger merge --backend fsdp --local_dir "$last/actor" --target_dir {shlex.quote(str(merged))}',
            "",
        ]
        script = folder / "run.sh"
        atomic_write_bytes(script, "\n".join(lines).encode())
        script.chmod(0o755)
        atomic_write_json(
            folder / "config.json",
            {
                "stage": stage.name,
                "verl_version": VERL_VERSION,
                "entrypoint": ENTRYPOINT,
                "overrides": overrides,
                "init_checkpoint": init_checkpoint,
                "model_path": model_path,
                "next_checkpoint": str(merged),
                "reward_file": str(self.reward_path),
                "val_files": [str(v) for v in val_files],
            },
        )
        self.scripts.append(script)
        return {"phase": stage.index, "stage": stage.name, "checkpoint": str(merged), "script": str(script)}

    def model_folder_command(self, stage: StageSpec, init_checkpoint: str, folder: Path) -> str | None:
        """The run.sh line that writes the stage's model folder with YaRN (None without a YaRN factor).

        verl loads ``actor_rollout_ref.model.path`` for the actor and for vLLM, and its model merger copies
        that folder's config into the next stage's checkpoint, so the rope scaling goes into the folder.
        """
        factor = _get(self.config, "yarn_factor", None)
        if not factor:
            return None
        needed = stage.max_prompt_length + int(_get(self.config, "max_completion_length", 1024))
        native = int(_get(self.config, "yarn_original_max_position_embeddings", 32_768))
        args = [
            f"{self.model_folder_path}",
            init_checkpoint,
            str((folder / "model").resolve()),
            "--yarn-factor",
            str(factor),
            "--native",
            str(native),
            "--needed",
            str(needed),
        ]
        if not _get(self.config, "yarn_within_native_window", True):
            args.append("--no-yarn-within-native-window")
        return "python3 " + " ".join(shlex.quote(a) for a in args) + " > /dev/null"

    def finish(self, final_checkpoint: str) -> dict[str, Any]:
        """Write ``run_all.sh``, which runs the stages in order; the summary names it as ``run_all``."""
        path = self.out / "run_all.sh"
        body = ["#!/usr/bin/env bash", "set -euo pipefail"] + [
            f"bash {shlex.quote(str(s.resolve()))}" for s in self.scripts
        ]
        atomic_write_bytes(path, ("\n".join(body) + "\n").encode())
        path.chmod(0o755)
        return {"run_all": str(path)}


TRAINER_BACKENDS.add("verl", VerlBackend)
