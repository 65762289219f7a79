"""verl runs that train: the install that starts verl 0.9.1's trainer, every option of `verl-config --help` carried,
refused or named, QwenLong-L1's long-prompt levers sized by the memory plan, and verl's own checks run on the
result in verl's own environment (where one is given)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from longmill.errors import LongmillError
from train.backends.base import StageSpec
from train.backends.verl import VerlBackend, export_warnings, verl_memory_plan
from train.config import GRPOPhaseConfig

from .test_verl import ROOT, _verl_wheel_config, curriculum_with_eval, stage_configs  # noqa: F401

#: A long stage (as the GPU profile's third): only its paths and sizes reach the commands.
STAGE = StageSpec(3, "stage-3", [Path("/data/curriculum/stage-3/part-00000.parquet")], 60_000, 10_000, [])


def export(cfg: GRPOPhaseConfig, tmp: Path, stage: StageSpec = STAGE, **backend) -> str:
    """The stage's run.sh as VerlBackend writes it for ``cfg`` (phase 1 starts from the configured model)."""
    backend_ = VerlBackend(cfg, tmp, **backend)
    return Path(backend_.run_phase(stage, cfg.model)["script"]).read_text()


#: One value away from the default for every option `verl-config --help` lists (TRL's shown ones and longmill's).
VALUES = {
    "learning_rate": 3e-6,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 10,
    "warmup_ratio": 0.1,
    "per_device_train_batch_size": 16,
    "gradient_accumulation_steps": 2,
    "steps_per_generation": 4,
    "num_iterations": 2,
    "num_generations": 4,
    "max_completion_length": 2048,
    "temperature": 0.7,
    "top_p": 0.9,
    "max_steps": 10,
    "num_train_epochs": 2.0,
    "loss_type": "grpo",
    "epsilon": 0.1,
    "epsilon_high": 0.3,
    "beta": 0.04,
    "scale_rewards": "none",
    "mask_truncated_completions": False,
    "vllm_server_base_url": "http://10.0.0.2:8000",
    "vllm_gpu_memory_utilization": 0.35,
    "vllm_enable_sleep_mode": True,
    "vllm_tensor_parallel_size": 2,
    "vllm_importance_sampling_correction": False,
    "vllm_importance_sampling_mode": "sequence_mask",
    "vllm_importance_sampling_clip_max": 2.0,
    "vllm_importance_sampling_clip_min": 0.5,
    "gradient_checkpointing": False,
    "bf16": False,
    "seed": 7,
    "logging_steps": 5,
    "save_steps": 20,
    "save_total_limit": 5,
    "report_to": ["wandb"],
    "model": "qwen2.5-1.5b-instruct",
    "rollout": "hf",
    "overlong_buffer": 512,
    "overlong_penalty": 0.5,
    "dynamic_sampling_rounds": 3,
    "dynamic_sampling_metric": "reward",
    "reward_funcs": ["hybrid_qa", "format"],
    "reward_rule": "bounded_sub_em",
    "reward_max_extra_tokens": 4,
    "judge_url": "http://judge-host:9001/v1",
    "judge_model": "Qwen/Qwen2.5-7B-Instruct",
    "judge_backend": "hf",
    "judge_backend_option": ["timeout=7", "breaker_cooldown=45"],
    "judge_cache": "runs/judge.jsonl",
    "yarn_factor": 8.0,
    "yarn_original_max_position_embeddings": 16_384,
    "yarn_within_native_window": False,
    "attn_implementation": "sdpa",
    "judge_max_failed_batches": 5,
    "judge_on_failure": "warn",
    "model_folder_files": "copy",
    "sp_size": 2,
    "padding_free": False,
}


def test_every_option_of_verl_config_help_is_carried_named_or_refused(tmp_path):
    """Each option --help lists, set away from its default, must change the command, be named in a warning, or be
    refused with a message that names it: none may vanish silently."""
    from longmill.cliutil import docstring_args
    from train.cli import GRPO_SHOWN

    fields = {f.name for f in dataclasses.fields(GRPOPhaseConfig)}
    listed = sorted((set(GRPO_SHOWN) | set(docstring_args(GRPOPhaseConfig))) & fields)
    assert not set(listed) - set(VALUES), f"give a test value for {set(listed) - set(VALUES)}"
    base = dict(  # a judge and YaRN, so that the options that refine them have something to act on
        model="qwen2.5-7b-instruct",
        judge_url="http://judge:8001/v1",
        yarn_factor=4.0,
        yarn_original_max_position_embeddings=32_768,
        use_cpu=True,
    )
    baseline = export(GRPOPhaseConfig(**base), tmp_path)  # one folder for all: the paths in the script agree
    silent = []
    for name in listed:
        cfg = GRPOPhaseConfig(**{**base, name: VALUES[name]})
        try:
            script = export(cfg, tmp_path)
        except LongmillError as e:
            assert name in str(e), (name, str(e))
            continue
        warned = any(name in w for w in export_warnings(cfg))
        if script == baseline and not warned:
            silent.append(name)
    assert not silent, f"options dropped without a word: {silent}"


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("lr_scheduler_type", "linear", "its FSDP optimizer has constant and cosine"),
        ("report_to", ["comet_ml"], "has no verl 0.9.1 logger"),
        ("loss_type", "cispo", "has no verl loss aggregation"),
        ("scale_rewards", "batch", "norm_adv_by_std_in_grpo"),
        ("num_train_epochs", 1.5, "verl counts whole epochs"),
        ("judge_backend", "hf", "OpenAI-compatible judge over HTTP"),
        ("sp_size", 8, "does not divide qwen2.5-7b-instruct's 28 attention heads"),
        ("sp_size", 4, "must divide the cluster's 2 GPUs"),
    ],
)
def test_what_verl_has_not_is_refused_with_the_reason(tmp_path, option, value, reason):
    cfg = GRPOPhaseConfig(model="qwen2.5-7b-instruct", use_cpu=True, **{option: value})
    with pytest.raises(LongmillError, match=reason):
        export(cfg, tmp_path, n_gpus_per_node=2)


def test_a_stage_smaller_than_one_batch_is_refused(tmp_path):
    small = dataclasses.replace(STAGE, rows=31)
    cfg = GRPOPhaseConfig(
        model="qwen2.5-7b-instruct",
        per_device_train_batch_size=1,
        steps_per_generation=32,
        gradient_accumulation_steps=8,
        num_generations=8,
        use_cpu=True,
    )
    with pytest.raises(
        LongmillError, match=r"stage-3 has 31 rows, fewer than verl's data.train_batch_size=32"
    ):
        export(cfg, tmp_path / "a", stage=small)
    export(cfg, tmp_path / "b", stage=dataclasses.replace(STAGE, rows=32))


def overrides_of(script: str) -> dict[str, str]:
    import shlex

    words = shlex.split(
        script.split("python3 -m verl.trainer.main_ppo", 1)[1].split("\n# Merge")[0].replace("\\\n", " ")
    )
    return dict(w.lstrip("+").split("=", 1) for w in words)


def test_long_prompts_get_qwenlong_levers_sized_by_the_plan(tmp_path):
    """QwenLong-L1's 60K verl script: padding removal, Ulysses, dynamic batches with a token budget per GPU, and
    parameter/optimizer offload; here sized by the memory plan for the stage and the cluster's GPUs."""
    cfg = GRPOPhaseConfig(model="qwen2.5-7b-instruct", max_completion_length=10_000, use_cpu=True)
    total = 70_000
    for sp in (1, 2, 4):
        big = verl_memory_plan(cfg.derive(sp_size=sp), STAGE, 8, 141.0)
        small = verl_memory_plan(cfg.derive(sp_size=sp), STAGE, 8, 40.0)
        assert big["planned"] and not big["offload"]
        assert big["tokens_per_gpu"] >= math.ceil(total / sp)  # one whole sequence fits a micro-batch
        assert big["tokens_per_gpu"] > small["tokens_per_gpu"] or small["offload"]
    # a 40 GB GPU cannot hold a 7B model's states beside one 70K-token sequence: offload, one sequence per step
    small = verl_memory_plan(cfg, STAGE, 8, 40.0)
    assert small["offload"] and small["tokens_per_gpu"] == total
    # Ulysses over 4 GPUs: each holds a quarter of the sequence, so it fits without offload on 80 GB
    four = verl_memory_plan(cfg.derive(sp_size=4), STAGE, 8, 80.0)
    o = overrides_of(export(cfg.derive(sp_size=4), tmp_path, gpu_memory_gib=80.0))
    assert o["actor_rollout_ref.model.use_remove_padding"] == "True"
    assert o["actor_rollout_ref.actor.use_dynamic_bsz"] == "True"
    assert o["actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size"] == "4"
    assert o["actor_rollout_ref.ref.fsdp_config.ulysses_sequence_parallel_size"] == "4"
    for key in (
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
    ):
        assert o[key] == str(four["tokens_per_gpu"]) and four["tokens_per_gpu"] >= total // 4
    assert o["actor_rollout_ref.actor.fsdp_config.param_offload"] == str(four["offload"])
    o1 = overrides_of(export(cfg, tmp_path / "40", gpu_memory_gib=40.0))
    assert o1["actor_rollout_ref.actor.fsdp_config.param_offload"] == "True"
    assert o1["actor_rollout_ref.actor.fsdp_config.optimizer_offload"] == "True"
    assert o1["actor_rollout_ref.ref.fsdp_config.param_offload"] == "True"


def test_sp_size_is_a_flag_of_verl_config(curriculum_with_eval, tmp_path):  # noqa: F811
    from train.cli import main

    r = CliRunner().invoke(
        main,
        [
            "verl-config",
            "--curriculum",
            str(curriculum_with_eval),
            "--model",
            "Qwen/Qwen2.5-7B-Instruct",
            "--out",
            str(tmp_path / "v"),
            "--num-generations",
            "8",
            "--sp-size",
            "4",
        ],
    )
    assert r.exit_code == 0, r.output
    for stage in stage_configs(tmp_path / "v"):
        assert "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=4" in stage["overrides"]
        assert stage["memory_plan"]["sp_size"] == 4


def _requirements_of(metadata: str) -> list[tuple[str, str | None, set[str]]]:
    """(name, extra it belongs to or None, extras it asks of itself) per Requires-Dist line."""
    from packaging.requirements import Requirement

    out = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        extra = None
        if req.marker is not None:
            for e in ("verl-core", "vllm", "sglang", "fsdp", "megatron", "cpu", "test", "math", "mcore"):
                if req.marker.evaluate({"extra": e}) and not req.marker.evaluate({"extra": "__none__"}):
                    extra = e
                    break
            else:
                extra = "other"
        out.append((req.name.lower(), extra, set(req.extras)))
    return out


def test_the_install_line_brings_transfer_queue_per_verls_own_metadata():
    """main_ppo runs verl 0.9.1's V1 trainer, which imports transfer_queue (verl/trainer/ppo/v1/trainer_base.py);
    only the verl-core extra lists TransferQueue, the package that ships it. Read from the real wheel's METADATA."""
    from packaging.requirements import Requirement

    config_dir = _verl_wheel_config()
    if config_dir is None:
        pytest.skip("the verl 0.9.1 wheel cannot be fetched from the package index here")
    (metadata,) = config_dir.parents[2].glob("verl-*.dist-info/METADATA")
    reqs = _requirements_of(metadata.read_text())
    assert "transferqueue" not in {n for n, e, _ in reqs if e is None}  # `pip install verl==0.9.1` lacks it
    install = VerlBackend.INSTALL
    spec = install.split("pip install ", 1)[1].split(" &&")[0].strip('"')
    wanted = set(Requirement(spec).extras)
    assert Requirement(spec).name == "verl" and str(Requirement(spec).specifier) == "==0.9.1"
    closure, todo = set(), list(wanted)
    while todo:  # extras that pull in other extras of verl itself (vllm -> verl[verl-core])
        extra = todo.pop()
        closure.add(extra)
        todo += [x for n, e, xs in reqs if e == extra and n == "verl" for x in xs if x not in closure]
    assert "transferqueue" in {n for n, e, _ in reqs if e in closure}, (install, closure)


def verl_python() -> str | None:
    """A Python interpreter of an environment where verl 0.9.1 is installed with its trainer's extras (verl pins
    transformers < 5.11, so it cannot share longmill's): $LONGMILL_VERL_PYTHON, e.g. /work/verl-venv/bin/python."""
    path = os.environ.get("LONGMILL_VERL_PYTHON")
    return path if path and Path(path).exists() else None


def test_commands_pass_verls_own_checks_in_verls_environment(curriculum_with_eval, tmp_path):  # noqa: F811
    python = verl_python()
    if python is None:
        pytest.skip("set LONGMILL_VERL_PYTHON to a Python with verl[verl-core]==0.9.1 installed")
    from train.cli import main

    cfg = tmp_path / "opts.yaml"
    cfg.write_text(
        "num_generations: 8\nmax_completion_length: 4096\nper_device_train_batch_size: 1\n"
        "gradient_accumulation_steps: 4\nsteps_per_generation: 8\nlr_scheduler_type: cosine\nwarmup_steps: 5\n"
        "report_to: [tensorboard]\nseed: 7\nsave_total_limit: 3\nnum_train_epochs: 2\nbf16: true\n"
        "vllm_gpu_memory_utilization: 0.4\nvllm_importance_sampling_mode: token_mask\n"
        "vllm_importance_sampling_clip_min: 0.5\nvllm_importance_sampling_clip_max: 2.0\nweight_decay: 0.01\n"
    )
    r = CliRunner().invoke(
        main,
        [
            "verl-config",
            "--curriculum",
            str(curriculum_with_eval),
            "--model",
            "Qwen/Qwen2.5-7B-Instruct",
            "--config",
            str(cfg),
            "--out",
            str(tmp_path / "v"),
            "--n-gpus-per-node",
            "2",
            "--sp-size",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    paths = sorted(str(p) for p in (tmp_path / "v").glob("stage-*/config.json"))
    done = subprocess.run(
        [python, str(Path(__file__).with_name("verl_env_check.py")), *paths],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["verl"] == "0.9.1" and len(report["stages"]) == 2
    for stage, written in zip(report["stages"], stage_configs(tmp_path / "v"), strict=True):
        plan = written["memory_plan"]
        a = stage["actor"]
        assert a["engine_ulysses"] == stage["ref"]["engine_ulysses"] == 2  # what verl's FSDP engine reads
        assert (
            a["use_dynamic_bsz"]
            and a["use_remove_padding"]
            and a["attn_implementation"] == "flash_attention_2"
        )
        assert (
            a["ppo_max_token_len_per_gpu"]
            == stage["ref"]["ppo_max_token_len_per_gpu"]
            == plan["tokens_per_gpu"]
        )
        assert stage["rollout"]["log_prob_max_token_len_per_gpu"] == plan["tokens_per_gpu"]
        assert (
            a["param_offload"] == a["optimizer_offload"] == stage["ref"]["param_offload"] == plan["offload"]
        )
        assert (
            a["dtype"] == "bfloat16" and a["loss_agg_mode"] == "token-mean" and a["clip_ratio_high"] == 0.28
        )
        assert a["data_loader_seed"] == stage["seed"] == stage["rollout"]["seed"] == 7
        assert stage["optim"] == {
            "lr_scheduler_type": "cosine",
            "lr_warmup_steps": 5,
            "lr_warmup_steps_ratio": 0.0,
            "weight_decay": 0.01,
            "clip_grad": 1.0,
        }
        assert stage["rollout"]["gpu_memory_utilization"] == 0.4  # as given, not raised
        assert stage["rollout_correction"] == {
            "rollout_is": "token",
            "upper": 2.0,
            "lower": 0.5,
        }  # TRL's token_mask
        assert stage["trainer"] == {
            "total_epochs": 2,
            "max_actor_ckpt_to_keep": 3,
            "logger": ["console", "tensorboard"],
        }
        assert stage["train_batch_size"] == 2 and stage["reward_acc"] == 1.0
