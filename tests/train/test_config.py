"""longmill's configs are TRL's: any GRPOConfig field from YAML and flags, unknown keys refused with a suggestion."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from click.testing import CliRunner
from trl import GRPOConfig

import train.phases
from longmill.errors import LongmillError
from train.cli import main
from train.config import GRPOPhaseConfig, SFTConfig, check_trl_fields, load_yaml_config


@pytest.fixture
def captured(monkeypatch):
    """`train grpo` with run_phases replaced by a recorder: what configuration reached the trainer?"""
    seen = {}

    def fake(curriculum, out, config, **kw):
        seen["config"], seen["kw"] = config, kw
        return {"phases": [], "final_checkpoint": "x"}

    monkeypatch.setattr(train.phases, "run_phases", fake)
    return seen


def grpo(*args):
    return CliRunner().invoke(main, ["grpo", "--curriculum", "c", "--out", "o", *args])


def test_configs_are_trl_configs():
    assert issubclass(GRPOPhaseConfig, GRPOConfig)
    assert {f.name for f in dataclasses.fields(GRPOConfig)} <= {
        f.name for f in dataclasses.fields(GRPOPhaseConfig)
    }
    from trl import SFTConfig as TRLSFTConfig

    assert issubclass(SFTConfig, TRLSFTConfig)


def test_any_trl_field_from_yaml_and_flags_with_flags_winning(tmp_path, captured):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "num_iterations": 2,
                "lr_scheduler_type": "cosine",
                "warmup_steps": 3,
                "vllm_enable_sleep_mode": True,
                "per_device_train_batch_size": 4,
                "num_generations": 4,
                "dynamic_sampling_rounds": 1,
            }
        )
    )
    # snake_case flags (what DVC writes from params.yaml), None for an optional value, --no- for a boolean
    res = grpo(
        "--config",
        str(cfg),
        "--lr_scheduler_type",
        "constant_with_warmup",
        "--steps_per_generation",
        "2",
        "--vllm_importance_sampling_mode",
        "token_mask",
        "--vllm_server_base_url",
        "None",
        "--no-mask_truncated_completions",
        "--report-to",
        "none",
        "--max-steps",
        "5",
    )
    assert res.exit_code == 0, res.output
    c = captured["config"]
    assert isinstance(c, GRPOConfig)
    assert (c.num_iterations, c.warmup_steps, c.vllm_enable_sleep_mode) == (2, 3, True)  # from the file
    assert c.lr_scheduler_type.value == "constant_with_warmup"  # the flag beat the file
    assert (c.steps_per_generation, c.vllm_importance_sampling_mode, c.max_steps) == (2, "token_mask", 5)
    assert c.mask_truncated_completions is False and c.vllm_server_base_url is None
    assert c.generation_batch_size == 8  # TRL's own derivation ran
    assert c.given["num_iterations"] == 2 and "output_dir" not in c.given


def test_a_bad_flag_value_is_a_one_line_error_naming_the_flag(captured):
    """A list of numbers and a number that is not optional: the value is refused by click, naming the flag
    (a bad --reward-weights item used to escape as a ValueError traceback, and --learning-rate None used
    to reach TRL as None)."""
    for args, needle in (
        (("--reward-weights", "1,x"), "Invalid value for '--reward-weights': 'x' is not a valid float."),
        (("--learning-rate", "None"), "Invalid value for '--learning-rate': 'None' is not a valid float."),
        (
            ("--num_generations", "2.5"),
            "Invalid value for '--num-generations': '2.5' is not a valid integer.",
        ),
    ):
        res = grpo(*args)
        assert res.exit_code == 2 and needle in res.output and res.exception.__class__ is SystemExit, (
            res.output
        )
    assert "config" not in captured
    res = grpo(
        "--reward-weights", "1", "--reward_weights", "0.5,2", "--reward-funcs", "hybrid_qa,format,format"
    )
    assert res.exit_code == 0, res.output
    assert captured["config"].reward_weights == [1.0, 0.5, 2.0]


def test_unknown_yaml_key_and_unknown_flag_suggest_the_field(tmp_path, captured):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("steps_per_generations: 2\n")
    res = grpo("--config", str(cfg))
    assert res.exit_code == 2 and "did you mean 'steps_per_generation'" in res.output
    res = grpo("--num-iteration", "2")
    assert res.exit_code == 2 and "--num-iterations" in res.output  # click's own suggestion
    with pytest.raises(LongmillError, match="did you mean 'epsilon_high'"):
        load_yaml_config(GRPOPhaseConfig, None, {"epsilon_hihg": 0.3})


def test_trl_validation_becomes_a_one_line_error():
    with pytest.raises(LongmillError, match="generation_batch_size"):
        GRPOPhaseConfig(per_device_train_batch_size=3, num_generations=2)


def test_dapo_defaults_and_a_phase_derived_from_them(tmp_path):
    c = GRPOPhaseConfig(per_device_train_batch_size=4, num_generations=4)
    assert (c.epsilon_high, c.mask_truncated_completions, c.loss_type, c.beta) == (0.28, True, "dapo", 0.0)
    assert c.lr_scheduler_type.value == "constant_with_warmup" and c.warmup_steps == 0  # constant by default
    phase = c.derive(output_dir=str(tmp_path / "phase-1"), use_vllm=False)
    assert phase.output_dir.endswith("phase-1") and phase.per_device_train_batch_size == 4
    assert phase.steps_per_generation == c.steps_per_generation  # TRL's derivation re-runs without a conflict


def test_a_dapo_setting_the_installed_trl_lacks_is_an_error():
    @dataclasses.dataclass
    class OldTRLConfig:  # as if TRL had renamed epsilon_high
        epsilon: float = 0.2

    with pytest.raises(LongmillError, match="epsilon_high.*pip install 'trl>=1.6,<1.17'"):
        check_trl_fields(OldTRLConfig)
    check_trl_fields(GRPOConfig)  # the installed TRL has every one


def test_help_shows_runnable_examples():
    for cmd, needle in (
        ("grpo", "python -m train grpo --curriculum"),
        ("sft", "python -m train sft --data"),
        ("init-model", "python -m train init-model --preset tiny-qwen2"),
    ):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0 and "Examples:" in res.output and needle in res.output, res.output
    assert "--steps-per-generation" in CliRunner().invoke(main, ["grpo", "--help"]).output


def dvc_flags(section: dict) -> list[str]:
    """A params.yaml section as DVC unpacks it (`parsing.bool = boolean_optional`, `parsing.list = append`)."""
    out = []
    for k, v in section.items():
        if isinstance(v, bool):
            out.append(f"--{k}" if v else f"--no-{k}")
        elif isinstance(v, list):
            for x in v:
                out += [f"--{k}", str(x)]
        else:
            out += [f"--{k}", str(v)]
    return out


@pytest.mark.parametrize(
    "profile", ["params.yaml", "profiles/gpu-qwen2.5-7b.yaml", "profiles/gpu-qwen2.5-7b-120k.yaml"]
)
def test_params_sections_reach_the_commands_as_dvc_writes_them(profile, captured, monkeypatch):
    from pathlib import Path

    import torch

    import train.sft

    root = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((root / profile).read_text())
    on_cpu = [] if torch.cuda.is_available() else ["--use_cpu"]  # the GPU profile asks for bf16
    res = grpo(*dvc_flags(params["rl"]), *on_cpu)
    assert res.exit_code == 0, res.output
    c = captured["config"]
    for k, v in params["rl"].items():
        assert getattr(c, k) == v or str(
            getattr(c, k).value if hasattr(getattr(c, k), "value") else getattr(c, k)
        ) == str(v), k
    seen = {}
    monkeypatch.setattr(
        train.sft,
        "run_sft",
        lambda data, out, config, metrics_dir=None, heldout=None: (
            seen.setdefault("c", config) and {"examples": 0, "steps": 0, "train_loss": 0.0, "checkpoint": "x"}
        ),
    )
    res = CliRunner().invoke(main, ["sft", "--data", "d", "--out", "o", *dvc_flags(params["sft"]), *on_cpu])
    assert res.exit_code == 0, res.output
    assert all(getattr(seen["c"], k) == v for k, v in params["sft"].items())


@pytest.fixture(scope="module")
def two_stages(tmp_path_factory):
    """A real curriculum: two stages (300 and 400 tokens) with held-out rows, each stage holding at least the 32
    prompts of one verl batch of the GPU YAML (verl-config refuses a smaller stage)."""
    from curriculum.build import CurriculumConfig, build_curriculum
    from datagen.generators.base import GenConfig
    from datagen.runner import RunConfig, run_generator
    from datagen.sources import get_source

    root = tmp_path_factory.mktemp("verl-data")
    src = get_source("synthetic", options={"num_triplets": 100})
    for length in (300, 400):
        run_generator(
            "longqa",
            GenConfig(length=length, seed=3),
            src,
            RunConfig(out=root / f"qa-{length}", num_samples=60),
        )
    ins = [root / "qa-300", root / "qa-400"]
    build_curriculum(ins, root / "curriculum", CurriculumConfig(bins=[300, 400], eval_share=0.3, seed=1))
    return root / "curriculum"


def test_verl_commands_from_the_gpu_yaml_compose_on_a_cpu_host(two_stages, tmp_path):
    """`train verl-config` run for real (nothing replaced) with the GPU YAML on a CPU host: the YAML's TRL keys
    reach verl's command (steps_per_generation sets the rollout batch, epsilon_high the upper clip), and the
    command composes against verl 0.9.1's own Hydra config (installed, or its wheel from the package index);
    where neither is available, the composition is skipped and says so."""
    import json
    from pathlib import Path

    from .test_verl import verl_config_dir

    gpu_yaml = Path(__file__).resolve().parents[2] / "train" / "configs" / "grpo-gpu-qwen2.5-7b.yaml"
    given = yaml.safe_load(gpu_yaml.read_text())
    res = CliRunner().invoke(
        main,
        [
            "verl-config",
            "--curriculum",
            str(two_stages),
            "--out",
            str(tmp_path),
            "--config",
            str(gpu_yaml),
        ],
    )
    assert res.exit_code == 0, res.output
    stages = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("stage-*/config.json"))]
    assert len(stages) == 2
    o = stages[0]["overrides"]
    # 32 prompts x 8 completions per generation (steps_per_generation 32 x 1 sequence per GPU x 8 GPUs / 8)
    assert given["steps_per_generation"] == 32 and "data.train_batch_size=32" in o
    assert f"actor_rollout_ref.actor.clip_ratio_high={given['epsilon_high']}" in o
    assert f"actor_rollout_ref.rollout.n={given['num_generations']}" in o
    config_dir = verl_config_dir()
    if config_dir is None:
        pytest.skip("verl 0.9.1 is neither installed nor fetchable from the package index: not composed")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    for stage in stages:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = compose(config_name="ppo_trainer", overrides=stage["overrides"])
        assert cfg.data.train_batch_size == 32 and cfg.actor_rollout_ref.rollout.n == given["num_generations"]
        assert cfg.actor_rollout_ref.actor.clip_ratio_high == given["epsilon_high"]
