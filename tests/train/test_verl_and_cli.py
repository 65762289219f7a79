"""verl configs per stage, and the train CLI's YAML config with flag overrides."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from ..cli import run_cli


def run(*args, check=True):
    """`python -m train ARGS`, run in-process (tests/cli.py)."""
    from train.cli import main

    proc = run_cli(main, *args, prog_name="python -m train")
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def test_verl_config_writes_a_runnable_command_per_stage(tmp_path, small_curriculum):
    cfg = tmp_path / "gpu.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"num_generations": 16, "max_completion_length": 4096, "judge_url": "http://j:8001/v1"}
        )
    )
    out = tmp_path / "verl"
    run(
        "verl-config",
        "--curriculum",
        str(small_curriculum),
        "--model",
        "Qwen/Qwen2.5-7B-Instruct",
        "--out",
        str(out),
        "--config",
        str(cfg),
        "--num-generations",
        "8",
    )
    s1 = (out / "stage-1" / "run.sh").read_text()
    s2 = json.loads((out / "stage-2" / "config.json").read_text())
    for needle in (
        "verl.trainer.main_ppo",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "algorithm.adv_estimator=grpo",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "reward.custom_reward_function.name=compute_score",
        "longmill_reward.py",
        "data.max_prompt_length=300",
        "actor_rollout_ref.rollout.n=8",
        "data.max_response_length=4096",
        "judge_url=http://j:8001/v1",
        "+reward.reward_kwargs.overlong_buffer_cfg.len=1024",
        "algorithm.filter_groups.enable=True",
        "actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct",
        "stage-1/part-00000.parquet",
    ):
        assert needle in s1, needle
    # stage 2 starts from stage 1's merged Hugging Face folder
    assert s2["init_checkpoint"].endswith("stage-1/hf") and "data.max_prompt_length=400" in s2["overrides"]
    assert subprocess.run(["bash", "-n", str(out / "stage-1" / "run.sh")]).returncode == 0
    assert "stage-2/run.sh" in (out / "run_all.sh").read_text()


def test_yaml_config_with_unknown_key_is_refused(tmp_path, small_curriculum):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("num_generation: 4\n")
    proc = run(
        "grpo",
        "--curriculum",
        str(small_curriculum),
        "--out",
        str(tmp_path / "o"),
        "--config",
        str(cfg),
        check=False,
    )
    assert (
        proc.returncode == 2 and "unknown key 'num_generation'; did you mean 'num_generations'" in proc.stderr
    )


@pytest.mark.slow  # two GRPO phases on the tiny model: 40-125 s on 2 cores
def test_grpo_cli_smoke_with_config_and_overrides(tmp_path, small_curriculum, tiny_qwen2):
    cfg = tmp_path / "smoke.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": str(tiny_qwen2),
                "max_steps": 5,
                "per_device_train_batch_size": 4,
                "num_generations": 4,
                "max_completion_length": 8,
                "dynamic_sampling_rounds": 1,
            }
        )
    )
    proc = run(
        "grpo",
        "--curriculum",
        str(small_curriculum),
        "--out",
        str(tmp_path / "rl"),
        "--config",
        str(cfg),
        "--max-steps",
        "1",
    )
    assert "final checkpoint:" in proc.stdout
    saved = yaml.safe_load((tmp_path / "rl" / "config.yaml").read_text())
    assert saved["max_steps"] == 1 and saved["num_generations"] == 4  # the flag overrode the file
    for k in (1, 2):
        assert json.loads((tmp_path / "rl" / f"phase-{k}" / "phase.json").read_text())["steps"] == 1
        assert (tmp_path / "rl" / f"phase-{k}" / "metrics.csv").exists()


def test_missing_curriculum_and_bad_model(tmp_path, small_curriculum):
    proc = run("grpo", "--curriculum", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr
    proc = run(
        "grpo",
        "--curriculum",
        str(small_curriculum),
        "--out",
        str(tmp_path / "o2"),
        "--model",
        str(tmp_path / "no-model"),
        "--max-steps",
        "1",
        check=False,
    )
    assert proc.returncode == 2 and "cannot load model" in proc.stderr
