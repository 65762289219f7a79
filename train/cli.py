"""``python -m train``: warm-up SFT, phased GRPO/DAPO, verl configs, model presets."""

from __future__ import annotations

import json
from pathlib import Path

import click

from longmill.cliutil import FlexibleGroup, dataclass_options, friendly_errors, setup_logging, typed_options
from train.config import NOT_FLAGS, GRPOPhaseConfig, SFTConfig, load_yaml_config

#: TRL options listed in `grpo --help` (every other GRPOConfig/TrainingArguments field is accepted too).
GRPO_SHOWN = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "num_iterations",
    "num_generations",
    "max_completion_length",
    "temperature",
    "top_p",
    "max_steps",
    "num_train_epochs",
    "loss_type",
    "epsilon",
    "epsilon_high",
    "beta",
    "scale_rewards",
    "mask_truncated_completions",
    "vllm_server_base_url",
    "vllm_gpu_memory_utilization",
    "vllm_enable_sleep_mode",
    "vllm_tensor_parallel_size",
    "vllm_importance_sampling_correction",
    "vllm_importance_sampling_mode",
    "vllm_importance_sampling_clip_max",
    "vllm_importance_sampling_clip_min",
    "gradient_checkpointing",
    "sp_size",
    "bf16",
    "seed",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "report_to",
)
SFT_SHOWN = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "packing",
    "gradient_checkpointing",
    "bf16",
    "seed",
    "logging_steps",
    "report_to",
)
EVERY_TRL_FIELD = (
    "Every other field of TRL's {cls} and of transformers' TrainingArguments is accepted as a flag "
    "or YAML key under its own name (hidden here), e.g. --{example}."
)


def export_only(values: dict, backend: str) -> dict:
    """Commands for another cluster are written on any host: TRL's check that this host has a bf16 GPU is
    the training host's business, so a GPU profile (bf16: true) still composes verl commands on a CPU node."""
    import torch

    from train.backends import TRAINER_BACKENDS

    if not TRAINER_BACKENDS.get(backend).trains_here and not torch.cuda.is_available():
        return {"use_cpu": True, **values}
    return values


@click.group(
    cls=FlexibleGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option("-v", "--verbose", count=True, help="-v for progress messages, -vv for debugging.")
def main(verbose: int) -> None:
    """Train long-context reasoning models: warm-up SFT, then GRPO/DAPO phase by phase over a curriculum.

    \b
    Examples:
      python -m train init-model --preset tiny-qwen2 --out models/tiny-qwen2
      python -m train sft --data data/triplets/synthetic --model tiny-qwen2 --out runs/sft --max-steps 20
      python -m train grpo --curriculum data/curriculum --model runs/sft/final --out runs/rl --max-steps 10
      python -m train grpo --curriculum data/curriculum --config train/configs/grpo-gpu-qwen2.5-7b.yaml --out runs/rl
      accelerate launch --config_file train/configs/accelerate/zero3.yaml -m train grpo --curriculum ... --out ...
      python -m train verl-config --curriculum data/curriculum --model Qwen/Qwen2.5-7B-Instruct --out runs/verl
    """
    setup_logging(verbose)


@main.command(name="init-model")
@click.option("--preset", default="tiny-qwen2", show_default=True, help="tiny-qwen2 or qwen2.5-0.5b-random.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the model to.")
@click.option("--seed", type=int, default=0, show_default=True, help="Initialisation seed.")
@friendly_errors
def init_model(preset: str, out: Path, seed: int) -> None:
    """Write a randomly initialised preset (Qwen2 shape, Qwen2.5 vocabulary and chat template), offline.

    \b
    Examples:
      python -m train init-model --preset tiny-qwen2 --out models/tiny-qwen2
      python -m train init-model --preset qwen2.5-0.5b-random --out models/qwen2.5-0.5b-random --seed 1
      python -m train sft --data data/triplets/synthetic --model models/tiny-qwen2 --out runs/sft --max-steps 5
    """
    from eval.models import materialize_preset

    path = materialize_preset(preset, out_dir=out, seed=seed)
    click.echo(f"wrote {preset} to {path}")


@main.command(epilog=EVERY_TRL_FIELD.format(cls="SFTConfig", example="weight-decay 0.01"))
@click.option("--data", required=True, help="Triplet shards (datagen triplets --out).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output folder (the model goes to OUT/final).",
)
@click.option(
    "--config", "config_file", default=None, help="YAML file with these options (flags override it)."
)
@click.option("--metrics-dir", default=None, help="Also write the training log CSV here (for `dvc plots`).")
@click.option(
    "--heldout",
    default=None,
    help="The curriculum's heldout.json (or its folder): triplets with held-out ids or questions are left out.",
)
@dataclass_options(SFTConfig, exclude=NOT_FLAGS, shown=SFT_SHOWN)
@friendly_errors
def sft(
    data: str, out: Path, config_file: str | None, metrics_dir: str | None, heldout: str | None, **kw
) -> None:
    """Warm-up SFT on short triplets: targets cite the supporting evidence and end in the answer format.

    \b
    Examples:
      python -m train init-model --preset tiny-qwen2 --out models/tiny-qwen2
      python -m train sft --data data/triplets/synthetic --model models/tiny-qwen2 --out runs/sft --max-steps 20
      python -m train sft --data data/triplets --model Qwen/Qwen2.5-7B-Instruct --out runs/sft \\
          --max-length 8192 --gradient-accumulation-steps 8 --lr-scheduler-type cosine --warmup-ratio 0.05
    """
    from train.sft import run_sft

    config = load_yaml_config(SFTConfig, config_file, typed_options(SFTConfig, kw))
    summary = run_sft(data, out, config, metrics_dir=metrics_dir, heldout=heldout)
    click.echo(
        f"SFT: {summary['examples']} examples, {summary['steps']} steps, loss {summary['train_loss']:.4f}; "
        f"model in {summary['checkpoint']}"
    )


@main.command(epilog=EVERY_TRL_FIELD.format(cls="GRPOConfig", example="vllm-model-impl transformers"))
@click.option("--curriculum", required=True, help="A curriculum folder (python -m curriculum build --out).")
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Run folder: OUT/phase-K per phase."
)
@click.option(
    "--config", "config_file", default=None, help="YAML file with these options (flags override it)."
)
@click.option(
    "--resume", is_flag=True, help="Continue: skip finished phases, resume a phase from its last checkpoint."
)
@click.option(
    "--backend", default="trl", show_default=True, help="trl (train here) or verl (write verl commands)."
)
@click.option(
    "--phases", default=None, help="Run only these phases, e.g. 1 or 1,2 (earlier ones must be done)."
)
@click.option(
    "--metrics-dir",
    default=None,
    help="Also write each phase's metrics.csv here as phase-K.csv (for `dvc plots`).",
)
@dataclass_options(GRPOPhaseConfig, exclude=NOT_FLAGS, shown=GRPO_SHOWN)
@friendly_errors
def grpo(
    curriculum: str,
    out: Path,
    config_file: str | None,
    resume: bool,
    backend: str,
    phases: str | None,
    metrics_dir: str | None,
    **kw,
) -> None:
    """Phased GRPO with DAPO defaults: one phase per curriculum stage, each from the previous checkpoint.

    DAPO defaults: token-level loss (loss_type dapo), clip-higher (epsilon_high 0.28; it acts only when a
    generation batch feeds several optimiser steps: steps_per_generation > gradient_accumulation_steps, or
    num_iterations > 1), no KL (beta 0), truncated completions masked, soft overlong punishment, a constant
    learning rate, and online dynamic sampling (groups whose answers are all right or all wrong are
    replaced by fresh ones). Logs: OUT/phase-K/metrics.jsonl and metrics.csv.

    \b
    Examples:
      python -m train grpo --curriculum data/curriculum --model runs/sft/final --out runs/rl --max-steps 10 \\
          --rollout hf --per-device-train-batch-size 4 --num-generations 4 --steps-per-generation 2
      python -m train grpo --curriculum data/curriculum --config train/configs/grpo-gpu-qwen2.5-7b.yaml --out runs/rl
      python -m train grpo --curriculum data/curriculum --config train/configs/grpo-gpu-qwen2.5-7b.yaml \\
          --out runs/rl --resume --warmup-steps 10 --vllm-importance-sampling-mode token_truncate
      accelerate launch --config_file train/configs/accelerate/zero3.yaml -m train grpo \\
          --curriculum data/curriculum --config train/configs/grpo-gpu-qwen2.5-7b.yaml --out runs/rl
    """
    from train.backends import TRAINER_BACKENDS
    from train.phases import run_phases

    config = load_yaml_config(
        GRPOPhaseConfig, config_file, export_only(typed_options(GRPOPhaseConfig, kw), backend)
    )
    only = [int(x) for x in phases.split(",")] if phases else None
    extra = {"metrics_dir": metrics_dir} if metrics_dir else {}
    for warning in TRAINER_BACKENDS.get(backend).preflight(config, curriculum):
        click.echo(f"warning: {warning}", err=True)
    summary = run_phases(curriculum, out, config, backend=backend, resume=resume, phases=only, **extra)
    for p in summary["phases"]:
        click.echo(f"phase {p['phase']} ({p.get('stage')}): {p.get('steps', '-')} steps -> {p['checkpoint']}")
    click.echo(f"final checkpoint: {summary['final_checkpoint']}")


@main.command(name="verl-config")
@click.option("--curriculum", required=True, help="A curriculum folder.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write stage-K/run.sh.")
@click.option(
    "--config", "config_file", default=None, help="YAML file with the GRPO options (flags override it)."
)
@click.option(
    "--n-gpus-per-node", type=int, default=8, show_default=True, help="GPUs per node of the verl cluster."
)
@click.option("--nnodes", type=int, default=1, show_default=True, help="Nodes of the verl cluster.")
@click.option(
    "--gpu-memory-gib",
    type=float,
    default=80.0,
    show_default=True,
    help="Memory of one GPU of the verl cluster (the memory plan sets the token budget per GPU and offload).",
)
@dataclass_options(GRPOPhaseConfig, exclude=NOT_FLAGS, shown=GRPO_SHOWN)
@friendly_errors
def verl_config(
    curriculum: str,
    out: Path,
    config_file: str | None,
    n_gpus_per_node: int,
    nnodes: int,
    gpu_memory_gib: float,
    **kw,
) -> None:
    """Write, per stage, a ready-to-run verl DAPO command with settings equivalent to longmill's GRPO.

    Each option is written in verl 0.9.1's names; an option verl lacks is refused (a scheduler, loss, logger or
    reward scaling it has not) or named in a warning (it is ignored). Long prompts get QwenLong-L1's levers:
    padding removal, Ulysses sequence parallelism (--sp-size), dynamic batches with a token budget per GPU and
    parameter/optimizer offload, sized by `train plan` for --gpu-memory-gib.

    \b
    Examples:
      python -m train verl-config --curriculum data/curriculum --config train/configs/grpo-gpu-qwen2.5-7b.yaml \\
          --out runs/verl --sp-size 4
      python -m train verl-config --curriculum data/curriculum --model Qwen/Qwen2.5-32B-Instruct --out runs/verl \\
          --nnodes 4 --sp-size 8 --judge-url http://judge-host:8001/v1
    """
    from train.backends import TRAINER_BACKENDS
    from train.phases import run_phases

    config = load_yaml_config(
        GRPOPhaseConfig, config_file, export_only(typed_options(GRPOPhaseConfig, kw), "verl")
    )
    for warning in TRAINER_BACKENDS.get("verl").preflight(config, curriculum):
        click.echo(f"warning: {warning}", err=True)
    summary = run_phases(
        curriculum,
        out,
        config,
        backend="verl",
        n_gpus_per_node=n_gpus_per_node,
        nnodes=nnodes,
        gpu_memory_gib=gpu_memory_gib,
    )
    click.echo(
        json.dumps(
            {"run_all": summary["run_all"], "stages": [p["checkpoint"] for p in summary["phases"]]}, indent=2
        )
    )


_FROM_CONFIG = " [--config's, else train grpo's default]."


@main.command()
@click.option(
    "--model",
    default=None,
    help="A folder with config.json, or a preset: qwen2.5-{0.5b,1.5b,7b,14b,32b}[-instruct], tiny-qwen2 "
    "[the config's model, else qwen2.5-7b-instruct].",
)
@click.option(
    "--prompt-length",
    default=None,
    help="Longest prompt per stage (list) [a profile's curriculum bins, else 20k,40k,60k].",
)
@click.option("--completion-length", default=None, help="max_completion_length" + _FROM_CONFIG)
@click.option(
    "--config",
    "config_file",
    default=None,
    help="A GRPO YAML (train/configs/*.yaml) or a profile (profiles/*.yaml: its rl section and curriculum bins); "
    "its batch, vLLM, checkpointing and sp_size keys are read, flags override.",
)
@click.option(
    "--per-device-train-batch-size",
    type=int,
    default=None,
    help="Sequences per GPU per micro-step" + _FROM_CONFIG,
)
@click.option(
    "--gradient-accumulation-steps",
    type=int,
    default=None,
    help="Micro-steps per optimiser step" + _FROM_CONFIG,
)
@click.option("--num-generations", type=int, default=None, help="The GRPO group size" + _FROM_CONFIG)
@click.option(
    "--steps-per-generation", type=int, default=None, help="Micro-steps per generation batch" + _FROM_CONFIG
)
@click.option(
    "--num-iterations", type=int, default=None, help="Passes over each generation batch" + _FROM_CONFIG
)
@click.option("--num-gpus", type=int, default=8, show_default=True, help="Training processes, one GPU each.")
@click.option(
    "--sharding",
    type=click.Choice(["zero3", "zero2", "zero1", "fsdp", "ddp"]),
    default="zero3",
    show_default=True,
    help="DeepSpeed ZeRO stage, FSDP2, or plain DDP.",
)
@click.option("--gpu-memory-gib", type=float, default=80.0, show_default=True, help="Memory of one GPU.")
@click.option(
    "--gradient-checkpointing/--no-gradient-checkpointing",
    default=None,
    help="Recompute activations in backward" + _FROM_CONFIG,
)
@click.option(
    "--activation-offload/--no-activation-offload",
    default=None,
    help="Checkpointed activations in host memory (activation_checkpointing_kwargs offload)" + _FROM_CONFIG,
)
@click.option("--attn-implementation", default=None, help="sdpa, flash_attention_2 or eager" + _FROM_CONFIG)
@click.option(
    "--padding-free/--no-padding-free",
    default=None,
    help="longmill's padding-free forward; off plans TRL's padded forward (T x T mask with SDPA)"
    + _FROM_CONFIG,
)
@click.option(
    "--rollout",
    type=click.Choice(["auto", "vllm-colocate", "vllm-server", "hf"]),
    default=None,
    help="Where rollouts run (auto plans vLLM, as on a GPU)" + _FROM_CONFIG,
)
@click.option(
    "--vllm-gpu-memory-utilization", type=float, default=None, help="Colocated vLLM's share" + _FROM_CONFIG
)
@click.option(
    "--vllm-enable-sleep-mode/--no-vllm-enable-sleep-mode",
    default=None,
    help="vLLM asleep while training" + _FROM_CONFIG,
)
@click.option(
    "--vllm-tensor-parallel-size", type=int, default=None, help="GPUs per colocated vLLM" + _FROM_CONFIG
)
@click.option(
    "--beta", type=float, default=None, help="KL coefficient (> 0 adds a reference model)" + _FROM_CONFIG
)
@click.option(
    "--sp-size",
    type=int,
    default=None,
    help="Ulysses sequence parallelism: ranks sharing a micro-batch's tokens in the training forward"
    + _FROM_CONFIG,
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly_errors
def plan(
    model: str | None,
    prompt_length: str | None,
    completion_length: str | None,
    config_file: str | None,
    num_gpus: int,
    sharding: str,
    gpu_memory_gib: float,
    as_json: bool,
    **kw,
) -> None:
    """Expected peak GPU memory of a GRPO run, by component, and the largest prompt and batch that fit.

    Every setting comes from --config (a GRPO YAML or a profile), then the flags; what neither gives is
    `train grpo`'s default, so the plan is of the run that `train grpo` with the same config would make.
    It prints the attention path it assumes (longmill's padding-free forward by default) and whether the
    micro-step peaks at the LM head's backward or at the last layer's; the activation terms are checked against
    measured peaks by benchmarks/plan_check.py.

    \b
    Examples:
      python -m train plan --model qwen2.5-7b-instruct --prompt-length 20k,40k,60k --completion-length 10000 \\
          --config train/configs/grpo-gpu-qwen2.5-7b.yaml --num-gpus 8 --sharding zero3 --gpu-memory-gib 80
      python -m train plan --config train/configs/grpo-gpu-qwen2.5-7b.yaml --prompt-length 60k --no-padding-free
      python -m train plan --config train/configs/grpo-gpu-qwen2.5-7b.yaml --prompt-length 120k --activation-offload
      python -m train plan --config profiles/gpu-qwen2.5-7b-120k.yaml
      python -m train plan --config train/configs/grpo-gpu-qwen2.5-7b.yaml --model qwen2.5-32b-instruct \\
          --prompt-length 60k --num-gpus 16 --vllm-tensor-parallel-size 4 --sp-size 8 --activation-offload
    """
    from longmill.lengths import parse_length, parse_lengths
    from train.plan import (
        format_report,
        plan_report,
        plan_settings,
        profile_lengths,
        read_plan_yaml,
        resolve_shape,
    )

    values = read_plan_yaml(config_file)
    values.update({k: v for k, v in kw.items() if v is not None})
    if completion_length is not None:
        values["max_completion_length"] = parse_length(completion_length)
    shape = resolve_shape(model or values.get("model") or "qwen2.5-7b-instruct")
    reports = [
        plan_report(
            shape,
            plan_settings(n, values, num_gpus=num_gpus, sharding=sharding, gpu_memory_gib=gpu_memory_gib),
        )
        for n in (
            parse_lengths(prompt_length)
            if prompt_length
            else profile_lengths(config_file) or parse_lengths("20k,40k,60k")
        )
    ]
    click.echo(json.dumps(reports, indent=2) if as_json else "\n\n".join(format_report(r) for r in reports))
