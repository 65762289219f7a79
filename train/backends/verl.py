"""The verl backend: writes, per stage, a ready-to-run verl 0.9.1 DAPO command with settings equivalent to ours.

It does not run verl (that happens on a Ray cluster). What it writes, under ``--out``:

- ``longmill_reward.py``: a verbatim copy of :mod:`eval.reward`, longmill's reward rules as one stdlib-only file
  (``compute_score`` is verl's entry), so verl's workers load it by path without longmill in verl's environment;
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

import eval.reward as reward_rules
import train.model_folder as model_folder
from eval.backends.base import split_option_items
from longmill.errors import LongmillError
from longmill.io import atomic_write_bytes, atomic_write_json, write_table_atomic
from train.backends.base import TRAINER_BACKENDS, StageSpec, TrainerBackend
from train.rewards import judge_config

log = logging.getLogger(__name__)

VERL_VERSION = "0.9.1"
ENTRYPOINT = "verl.trainer.main_ppo"
REWARD_FILE = "longmill_reward.py"  # a copy of eval/reward.py, verl's custom_reward_function
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


#: Fields of the phase settings that verl_overrides (or the stage's model-folder step) translates. A field a user
#: sets that is not here has no verl equivalent: it is named in a warning rather than dropped silently.
EXPORTED = frozenset(
    {
        "model", "max_completion_length", "num_generations", "per_device_train_batch_size",
        "gradient_accumulation_steps", "steps_per_generation", "num_iterations", "learning_rate",
        "lr_scheduler_type", "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm",
        "num_train_epochs", "max_steps", "save_steps", "save_total_limit", "report_to", "seed", "loss_type",
        "epsilon", "epsilon_high", "beta", "scale_rewards", "temperature", "top_p", "top_k",
        "gradient_checkpointing", "bf16", "attn_implementation", "vllm_gpu_memory_utilization",
        "vllm_enable_sleep_mode", "vllm_tensor_parallel_size", "vllm_importance_sampling_correction",
        "vllm_importance_sampling_mode", "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min",
        "overlong_buffer", "overlong_penalty", "dynamic_sampling_rounds", "dynamic_sampling_metric",
        "reward_funcs", "reward_rule", "reward_max_extra_tokens", "judge_url", "judge_model", "judge_backend",
        "judge_backend_option",
        "yarn_factor", "yarn_original_max_position_embeddings", "yarn_within_native_window",
        "model_folder_files", "sp_size", "padding_free",
    }
)  # fmt: skip
#: The judge's backend options that eval.reward.compute_score carries (as judge_<option>).
VERL_JUDGE_OPTIONS = frozenset(
    {"timeout", "max_retries", "breaker_failures", "breaker_cooldown", "api_key_env"}
)
#: Fields that concern only the host that writes the commands (or TRL's own process); never worth a warning.
LOCAL_ONLY = frozenset({"output_dir", "use_cpu", "disable_tqdm", "logging_dir", "rollout", "metrics_dir"})
#: TRL's schedulers that verl 0.9.1's FSDP optimizer has (``FSDPOptimizerConfig``: constant or cosine, each
#: with linear warm-up); TRL's ``constant`` has no warm-up, so it is exported with none.
LR_SCHEDULERS = {"constant": "constant", "constant_with_warmup": "constant", "cosine": "cosine"}
#: TRL's loss types and verl's loss aggregation of the same normalisation (``actor.loss_agg_mode``).
LOSS_AGG = {
    "dapo": "token-mean",
    "bnpo": "token-mean",
    "grpo": "seq-mean-token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
}
#: ``report_to`` names that verl's ``Tracking`` (verl/utils/tracking.py) has under the same name.
LOGGERS = ("wandb", "mlflow", "swanlab", "tensorboard", "clearml", "trackio")
#: How ``dynamic_sampling_metric`` reads in verl's ``algorithm.filter_groups.metric``: the reward's ``acc``
#: (extra info of longmill_reward.compute_score) or ``reward``, the replay buffer's canonical score.
FILTER_METRICS = {"accuracy": "acc", "reward": "reward"}


def _is_whole(x: float) -> bool:
    return float(x) == int(float(x))


def export_warnings(cfg: Any) -> list[str]:
    """One line per option the user set (away from its default) that the verl commands cannot carry: those not in
    :data:`EXPORTED`, and those exported only in part."""
    given = dict(getattr(cfg, "given", {}) or {})
    out = [
        f"{k}={given[k]!r} has no verl 0.9.1 equivalent; the verl commands ignore it"
        for k in sorted(given)
        if k not in EXPORTED and k not in LOCAL_ONLY
    ]
    judge_options = {
        k.split("=", 1)[0].strip() for k in split_option_items(given.get("judge_backend_option"))
    }
    for key in sorted(judge_options - VERL_JUDGE_OPTIONS):
        out.append(
            f"judge_backend_option {key} is not exported: verl's compute_score asks the judge one call at a time "
            f"and takes only {', '.join(sorted(VERL_JUDGE_OPTIONS))}"
        )
    attn = given.get("attn_implementation")
    if attn and attn != "flash_attention_2":
        out.append(
            f"attn_implementation={attn!r} is not exported: verl's padding removal and Ulysses sequence parallelism "
            "patch transformers' flash-attention path (verl/models/transformers/monkey_patch.py), so the command "
            "keeps verl's flash_attention_2 (install flash-attn in verl's environment)"
        )
    if given.get("padding_free") is False:
        out.append(
            "padding_free=False is not exported: verl's command always removes padding "
            "(actor_rollout_ref.model.use_remove_padding=True, the flash-attention varlen path)"
        )
    if given.get("dynamic_sampling_rounds", 0) > 0:
        out.append(
            f"dynamic_sampling_rounds={given['dynamic_sampling_rounds']} is exported as algorithm.filter_groups.enable "
            "only: verl 0.9.1's replay buffer refills filtered groups without a round cap (max_num_gen_batches is "
            "not read by its V1 trainer)"
        )
    if given.get("rollout") not in (None, "auto", "vllm-colocate"):
        out.append(f"rollout={given['rollout']!r} is not exported: verl rolls out with vLLM beside the actor")
    if "vllm_importance_sampling_clip_min" in given and str(
        getattr(cfg, "vllm_importance_sampling_mode", "token_truncate")
    ).endswith("_truncate"):
        out.append(
            "vllm_importance_sampling_clip_min is not exported with a *_truncate mode: verl's truncated importance "
            "sampling clamps the weights from above only"
        )
    return out


def _scheduler(cfg: Any) -> list[str]:
    name = _get(cfg, "lr_scheduler_type", "constant_with_warmup")
    name = str(getattr(name, "value", name))  # TrainingArguments holds a SchedulerType enum
    if name not in LR_SCHEDULERS:
        raise LongmillError(
            f"lr_scheduler_type {name!r} has no verl 0.9.1 equivalent (its FSDP optimizer has constant and "
            f"cosine, with warm-up); use one of {', '.join(LR_SCHEDULERS)} for verl-config"
        )
    warmup = float(_get(cfg, "warmup_steps", 0) or 0)
    if name == "constant":  # TRL's constant schedule has no warm-up
        warmup = 0.0
    o = [f"actor_rollout_ref.actor.optim.lr_scheduler_type={LR_SCHEDULERS[name]}"]
    if 0 < warmup < 1:  # transformers reads warmup_steps below 1 as a share of the steps
        o += [
            "actor_rollout_ref.actor.optim.lr_warmup_steps=-1",
            f"actor_rollout_ref.actor.optim.lr_warmup_steps_ratio={warmup}",
        ]
    else:
        o.append(f"actor_rollout_ref.actor.optim.lr_warmup_steps={int(warmup)}")
    if LR_SCHEDULERS[name] == "cosine":
        o.append("actor_rollout_ref.actor.optim.min_lr_ratio=0.0")  # TRL's cosine decays to 0
    return o


def _loggers(cfg: Any) -> str:
    report = _get(cfg, "report_to", [])
    names = [report] if isinstance(report, str) else list(report or [])
    names = [n for n in names if n not in ("none", None)]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise LongmillError(
            f"report_to {unknown} has no verl 0.9.1 logger; verl-config exports {', '.join(LOGGERS)} "
            "(verl/utils/tracking.py), always beside console"
        )
    return "trainer.logger=[" + ",".join(["console", *names]) + "]"


def _importance_sampling(cfg: Any) -> list[str]:
    """TRL's vLLM importance-sampling correction in verl's ``algorithm.rollout_correction`` (decoupled mode).

    TRL (grpo_trainer.py, ``_generate_and_score_completions``): the ratio of trainer to vLLM probabilities per
    token or per sequence, clamped above at ``clip_max`` (``*_truncate``) or zeroed outside
    ``[clip_min, clip_max]`` (``*_mask``). verl: ``rollout_is`` token/sequence with a threshold that is an upper
    bound (TIS) or a ``lower_upper`` string (IcePop: zero outside), rollout_corr_helper.py.
    """
    key = "algorithm.rollout_correction"
    if not bool(_get(cfg, "vllm_importance_sampling_correction", True)):
        return [f"{key}.rollout_is=null"]
    mode = str(_get(cfg, "vllm_importance_sampling_mode", "token_truncate"))
    level, kind = mode.split("_", 1)
    hi = float(_get(cfg, "vllm_importance_sampling_clip_max", 3.0))
    lo = getattr(cfg, "vllm_importance_sampling_clip_min", None)
    threshold = f"{hi}" if kind == "truncate" else f"'{float(lo or 0.0)}_{hi}'"
    return [
        f"{key}.rollout_is={level}",
        f"{key}.rollout_is_threshold={threshold}",
        f"{key}.rollout_rs=null",
        f"{key}.bypass_mode=False",
    ]


def verl_gpu_memory_utilization(cfg: Any) -> float:
    """vLLM's share of each GPU in the verl command: the user's value as given, else verl's default (0.5,
    ``actor_rollout_ref.rollout.gpu_memory_utilization``); TRL's default (0.3) is not carried over."""
    given = getattr(cfg, "given", {}) or {}
    return float(cfg.vllm_gpu_memory_utilization) if "vllm_gpu_memory_utilization" in given else 0.5


def verl_memory_plan(
    cfg: Any, stage: StageSpec, n_gpus: int, gpu_memory_gib: float, model: str | None = None
) -> dict[str, Any]:
    """The token budget per GPU (``ppo_max_token_len_per_gpu``) and whether to offload, from ``train plan``.

    With Ulysses over ``sp_size`` GPUs each GPU holds ``1/sp_size`` of a sequence, and verl packs up to
    ``ppo_max_token_len_per_gpu x sp_size`` tokens into a micro-batch (verl/workers/engine/utils.py), so one
    sequence of T tokens needs a budget of at least ceil(T / sp_size). The plan is asked for that share of the
    stage's longest prompt and completion under FSDP over ``n_gpus`` with colocated vLLM: the budget is the
    largest share that fits (at least one sequence); when even one sequence does not fit, parameters and
    optimizer states go to host memory (verl's ``param_offload``/``optimizer_offload``, as QwenLong-L1's 60K
    script does) and the budget is one sequence.
    """
    import math

    from train.plan import plan_report, plan_settings, resolve_shape

    sp = int(_get(cfg, "sp_size", 1))
    completion = int(_get(cfg, "max_completion_length", 1024))
    total = stage.max_prompt_length + completion
    one_sequence = math.ceil(total / sp)
    plan: dict[str, Any] = {"sp_size": sp, "sequence_tokens": total, "tokens_per_gpu": one_sequence}
    try:
        shape = resolve_shape(model or str(_get(cfg, "model", "")))
    except LongmillError as e:
        plan.update(offload=False, planned=False, note=f"no memory plan ({e}); one sequence per micro-batch")
        return plan
    for what, n in (
        ("attention heads", shape.num_attention_heads),
        ("key/value heads", shape.num_key_value_heads),
    ):
        if sp > 1 and n % sp and not (what.startswith("key") and sp % n == 0):
            raise LongmillError(
                f"sp_size={sp} does not divide {shape.name}'s {n} {what} (verl's Ulysses splits heads over the "
                f"sequence-parallel group, verl/models/transformers/monkey_patch.py); choose a divisor of {n}"
            )
    values = {
        "per_device_train_batch_size": 1,
        "gradient_checkpointing": bool(_get(cfg, "gradient_checkpointing", True)),
        "attn_implementation": "flash_attention_2",
        "rollout": "vllm-colocate",
        "vllm_gpu_memory_utilization": verl_gpu_memory_utilization(cfg),
        "vllm_enable_sleep_mode": True,
        "vllm_tensor_parallel_size": int(_get(cfg, "vllm_tensor_parallel_size", 1)),
        "beta": float(_get(cfg, "beta", 0.0)),
        "max_completion_length": math.ceil(completion / sp),
    }
    report = plan_report(
        shape,
        plan_settings(
            math.ceil(stage.max_prompt_length / sp), values, num_gpus=n_gpus, sharding="fsdp",
            gpu_memory_gib=gpu_memory_gib,
        ),
    )  # fmt: skip
    g = report["gib"]
    states = g["weights"] + g["gradients"] + g["optimizer"]
    if report["fits"]:
        largest = int(report.get("largest_prompt_length") or 0) + values["max_completion_length"]
        plan.update(tokens_per_gpu=max(one_sequence, largest), offload=False, peak_gib=round(g["peak"], 1))
    else:
        peak = g["peak"] - states
        plan.update(offload=True, peak_gib=round(peak, 1))
        if peak > g["gpu_memory"]:
            plan["note"] = (
                f"{stage.name}: even with parameters and optimizer offloaded, the plan puts {peak:.1f} GiB of "
                f"{g['gpu_memory']:.0f} on a GPU for one sequence of {total:,} tokens over sp_size={sp}; raise sp_size"
            )
    plan.update(planned=True, model=shape.name, gpu_memory_gib=gpu_memory_gib)
    return plan


def verl_overrides(
    cfg: Any,
    stage: StageSpec,
    init_checkpoint: str,
    ckpt_dir: Path,
    val_files: list[Path],
    reward_path: Path,
    n_gpus_per_node: int = 8,
    nnodes: int = 1,
    plan: dict[str, Any] | None = None,
) -> list[str]:
    """Hydra overrides for ``python -m verl.trainer.main_ppo`` (verl 0.9.1): our GRPO/DAPO settings in verl's names.

    Args:
        cfg: the phase settings (longmill's GRPOPhaseConfig; read by attribute).
        stage: the curriculum stage.
        init_checkpoint: the model this stage starts from.
        ckpt_dir: verl's ``trainer.default_local_dir``.
        val_files: this stage's validation Parquet (rows that fit the stage); empty disables validation.
        reward_path: the copy of :mod:`eval.reward` verl loads.
        n_gpus_per_node, nnodes: the cluster.
        plan: :func:`verl_memory_plan` for this stage (token budget per GPU, offload); default one sequence per
            micro-batch without offload.

    Raises:
        LongmillError: a setting verl cannot carry (a loss type, scheduler, logger, reward scaling or judge backend
            it lacks, a fractional epoch count), a stage with fewer rows than ``data.train_batch_size``, or an
            ``sp_size`` that does not divide the GPUs.
    """
    rule = str(_get(cfg, "reward_rule", "em"))
    if rule not in reward_rules.RULES:
        raise LongmillError(f"unknown reward_rule {rule!r}; valid: {', '.join(reward_rules.RULES)}")
    if str(_get(cfg, "judge_backend", "openai")) != "openai":
        raise LongmillError(
            f"judge_backend {cfg.judge_backend!r} cannot be exported: verl loads the reward as one stdlib file that "
            "asks an OpenAI-compatible judge over HTTP (judge_url)"
        )
    loss_type = str(_get(cfg, "loss_type", "dapo"))
    if loss_type not in LOSS_AGG:
        raise LongmillError(
            f"loss_type {loss_type!r} has no verl loss aggregation; verl-config exports {', '.join(LOSS_AGG)}"
        )
    scale = str(getattr(_get(cfg, "scale_rewards", "group"), "value", _get(cfg, "scale_rewards", "group")))
    if scale not in ("group", "none", "True", "False"):
        raise LongmillError(
            f"scale_rewards={scale!r} cannot be exported: verl's GRPO normalises by the group's std or not at all "
            "(algorithm.norm_adv_by_std_in_grpo)"
        )
    epochs = float(_get(cfg, "num_train_epochs", 1.0))
    if epochs < 1 or not _is_whole(epochs):
        raise LongmillError(
            f"num_train_epochs={epochs:g}: verl counts whole epochs (trainer.total_epochs); use an integer >= 1, "
            "or max_steps"
        )
    sp = int(_get(cfg, "sp_size", 1))
    n_gpus = n_gpus_per_node * nnodes
    if n_gpus % sp:
        raise LongmillError(f"sp_size={sp} must divide the cluster's {n_gpus} GPUs")
    files = "[" + ",".join(str(f.resolve()) for f in stage.files) + "]"
    val = "[" + ",".join(str(f.resolve()) for f in (val_files or stage.files)) + "]"
    completion = int(_get(cfg, "max_completion_length", 1024))
    train_bsz, mini_bsz = verl_batch_sizes(cfg, n_gpus)
    if stage.rows < train_bsz:
        raise LongmillError(
            f"{stage.name} has {stage.rows} rows, fewer than verl's data.train_batch_size={train_bsz} prompts: verl "
            f"would count rows // train_batch_size = 0 steps per epoch and divide by it (verl/trainer/ppo/v1/"
            f"trainer_base.py). Build a larger stage, or lower per_device_train_batch_size x steps_per_generation x "
            f"GPUs / num_generations"
        )
    max_len = stage.max_prompt_length + completion
    plan = plan or {"tokens_per_gpu": max_len // sp + (max_len % sp > 0), "offload": False}
    budget = int(plan["tokens_per_gpu"])
    offload = bool(plan["offload"])
    beta = float(_get(cfg, "beta", 0.0))
    rounds = int(_get(cfg, "dynamic_sampling_rounds", 0))
    buffer = int(getattr(cfg, "overlong_cache", completion // 4) or 0)
    seed = int(_get(cfg, "seed", 42))
    o = [
        f"data.train_files={files}",
        f"data.val_files={val}",
        "data.prompt_key=prompt",
        f"data.max_prompt_length={stage.max_prompt_length}",
        f"data.max_response_length={completion}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"data.train_batch_size={train_bsz}",
        f"data.seed={seed}",
        "algorithm.adv_estimator=grpo",
        f"algorithm.norm_adv_by_std_in_grpo={scale not in ('none', 'False')}",
        "algorithm.use_kl_in_reward=False",
        f"algorithm.filter_groups.enable={rounds > 0}",
        f"algorithm.filter_groups.metric={FILTER_METRICS[str(_get(cfg, 'dynamic_sampling_metric', 'accuracy'))]}",
        *_importance_sampling(cfg),
        f"actor_rollout_ref.model.path={init_checkpoint}",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={bool(_get(cfg, 'gradient_checkpointing', True))}",
        "actor_rollout_ref.model.use_remove_padding=True",  # packed sequences, no padding (flash-attention varlen)
        "+actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2",
        f"actor_rollout_ref.actor.optim.lr={_get(cfg, 'learning_rate', 1e-6)}",
        *_scheduler(cfg),
        f"actor_rollout_ref.actor.optim.weight_decay={float(_get(cfg, 'weight_decay', 0.0))}",
        f"actor_rollout_ref.actor.optim.betas=[{float(_get(cfg, 'adam_beta1', 0.9))},{float(_get(cfg, 'adam_beta2', 0.999))}]",
        f"actor_rollout_ref.actor.optim.clip_grad={float(_get(cfg, 'max_grad_norm', 1.0))}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_bsz}",
        f"actor_rollout_ref.actor.ppo_epochs={int(_get(cfg, 'num_iterations', 1))}",
        f"actor_rollout_ref.actor.data_loader_seed={seed}",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={budget}",
        f"actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size={sp}",
        f"actor_rollout_ref.actor.fsdp_config.param_offload={offload}",
        f"actor_rollout_ref.actor.fsdp_config.optimizer_offload={offload}",
        f"actor_rollout_ref.actor.fsdp_config.seed={seed}",
        f"actor_rollout_ref.actor.use_kl_loss={beta > 0}",
        f"actor_rollout_ref.actor.kl_loss_coef={beta}",
        f"actor_rollout_ref.actor.clip_ratio_low={_get(cfg, 'epsilon', 0.2)}",
        f"actor_rollout_ref.actor.clip_ratio_high={_get(cfg, 'epsilon_high', 0.28)}",
        f"actor_rollout_ref.actor.loss_agg_mode={LOSS_AGG[loss_type]}",
        "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
        f"actor_rollout_ref.ref.log_prob_max_token_len_per_gpu={budget}",
        f"actor_rollout_ref.ref.fsdp_config.ulysses_sequence_parallel_size={sp}",
        f"actor_rollout_ref.ref.fsdp_config.param_offload={offload}",
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.n={int(_get(cfg, 'num_generations', 8))}",
        f"actor_rollout_ref.rollout.temperature={_get(cfg, 'temperature', 1.0)}",
        f"actor_rollout_ref.rollout.top_p={_get(cfg, 'top_p', 1.0)}",
        f"actor_rollout_ref.rollout.top_k={int(_get(cfg, 'top_k', 0)) or -1}",
        f"actor_rollout_ref.rollout.seed={seed}",
        f"actor_rollout_ref.rollout.max_model_len={max_len}",
        f"actor_rollout_ref.rollout.max_num_batched_tokens={max_len}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={int(_get(cfg, 'vllm_tensor_parallel_size', 1))}",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={budget}",
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
        f"trainer.total_epochs={int(epochs)}",
        f"trainer.save_freq={int(_get(cfg, 'save_steps', 50))}",
        f"trainer.max_actor_ckpt_to_keep={_get(cfg, 'save_total_limit', 'null')}",
        "trainer.resume_mode=auto",
        _loggers(cfg),
        "trainer.project_name=longmill",
        f"trainer.experiment_name=longmill-{stage.name}",
        f"trainer.val_before_train={bool(val_files)}",
        f"trainer.test_freq={int(_get(cfg, 'save_steps', 50)) if val_files else -1}",
    ]
    given = getattr(cfg, "given", {}) or {}
    if "vllm_gpu_memory_utilization" in given:  # as given (verl's own default otherwise), never raised
        o.append(f"actor_rollout_ref.rollout.gpu_memory_utilization={verl_gpu_memory_utilization(cfg)}")
    if "bf16" in given:  # verl trains in bf16 mixed precision unless told otherwise
        dtype = "bfloat16" if cfg.bf16 else "float32"
        o += [
            f"actor_rollout_ref.actor.fsdp_config.dtype={dtype}",
            f"actor_rollout_ref.ref.fsdp_config.dtype={dtype}",
        ]
    if "vllm_enable_sleep_mode" in given:  # verl frees the KV cache between rollouts (free_cache_engine)
        o.append(f"actor_rollout_ref.rollout.free_cache_engine={bool(cfg.vllm_enable_sleep_mode)}")
    judge = judge_config(cfg)
    if judge is not None:  # the judge TRL's reward would ask, with the same options (JudgeConfig's defaults)
        opts = judge.options()
        kwargs = {
            "judge_url": judge.url,
            "judge_model": judge.model,
            "judge_timeout": opts.timeout,
            "judge_max_retries": opts.max_retries,
            "judge_breaker_failures": opts.breaker_failures,
            "judge_breaker_cooldown": opts.breaker_cooldown,
            "judge_api_key_env": opts.api_key_env or "null",
        }
        o += [f"+reward.custom_reward_function.reward_kwargs.{k}={v}" for k, v in kwargs.items()]
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

    #: The install that starts verl 0.9.1's trainer: main_ppo runs the V1 trainer, which imports transfer_queue,
    #: shipped only with the ``verl-core`` extra (pulled in by ``verl[vllm]``, with vLLM 0.24.0, torch 2.11.0 and
    #: transformers 5.9.0); flash-attn is in neither, and padding removal and Ulysses need it.
    INSTALL = f'pip install "verl[vllm]=={VERL_VERSION}" && pip install flash-attn --no-build-isolation'

    @classmethod
    def preflight(cls, config: Any, curriculum: str | Path) -> list[str]:
        """The options set away from their defaults that the verl commands cannot carry (see :func:`export_warnings`)."""
        return export_warnings(config)

    def __init__(
        self,
        config: Any,
        out: str | Path,
        n_gpus_per_node: int = 8,
        nnodes: int = 1,
        gpu_memory_gib: float = 80.0,
        **_: Any,
    ):
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
        self.gpu_memory_gib = gpu_memory_gib
        self.scripts: list[Path] = []
        self.reward_path = (self.out / REWARD_FILE).resolve()
        atomic_write_bytes(self.reward_path, Path(reward_rules.__file__).read_bytes())
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
        plan = verl_memory_plan(
            self.config,
            stage,
            self.n_gpus_per_node * self.nnodes,
            self.gpu_memory_gib,
            model=str(_get(self.config, "model", init_checkpoint)),
        )
        if plan.get("note"):
            log.warning("%s", plan["note"])
        overrides = verl_overrides(
            self.config,
            stage,
            model_path,
            ckpts,
            val_files,
            self.reward_path,
            self.n_gpus_per_node,
            self.nnodes,
            plan=plan,
        )
        lines = [
            "#!/usr/bin/env bash",
            f"# longmill phase {stage.index}: {stage.name}, {stage.rows} samples, prompts <= {stage.max_prompt_length} tokens.",
            f"# Needs verl=={VERL_VERSION} on every node of the Ray cluster, installed with the trainer's extras:",
            f"#   {self.INSTALL}",
            f"# longmill itself need not be installed there: the reward is {REWARD_FILE}.",
            f"# Memory: {plan['tokens_per_gpu']:,} tokens per GPU per micro-batch, Ulysses over {plan['sp_size']} GPUs, "
            f"offload {'on' if plan.get('offload') else 'off'} ({'from train plan' if plan.get('planned') else 'not planned'}).",
            "# Where this differs from train grpo: truncated completions are trained (score plus the full overlong",
            "# penalty, no mask), and group refills have no round cap (docs/design.md, 'verl runs that train').",
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
                "memory_plan": plan,
                "install": self.INSTALL,
                "not_exported": export_warnings(self.config),
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
        mode = str(_get(self.config, "model_folder_files", "auto"))
        if mode == "copy" or (mode == "auto" and self.nnodes > 1):
            args.append(
                "--copy"
            )  # verl's workers on other nodes load the folder: no links into this node's cache
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
