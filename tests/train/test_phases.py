"""Phased GRPO over a two-stage curriculum: phase 2 starts from phase 1's weights, and a killed run resumes."""

from __future__ import annotations

import json

import pytest
from transformers import TrainerCallback

from train.backends.trl import TRLBackend
from train.config import GRPOPhaseConfig
from train.phases import run_phases


class KillAt(TrainerCallback):
    """Simulates a kill (Ctrl-C, preemption) at a given step of a given phase."""

    def __init__(self, phase_dir_name: str, step: int):
        self.phase_dir_name, self.step = phase_dir_name, step

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.phase_dir_name) and state.global_step == self.step:
            raise KeyboardInterrupt


class SmallIdsReward:
    """A dense toy reward (random policies already disagree on it), so every phase really updates weights."""

    __name__ = "small_ids"

    def __call__(self, completions, completion_ids, **kwargs):
        return [1.0 - sum(ids) / (len(ids) * 151_936) for ids in completion_ids]


def cfg(model, **kw):
    base = dict(
        model=str(model),
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-3,
        save_steps=1,
        dynamic_sampling_rounds=0,
        rollout="hf",
        seed=0,
        mask_truncated_completions=False,
    )  # a random model never stops: keep its truncated completions
    return GRPOPhaseConfig(**{**base, **kw})


@pytest.mark.slow
def test_two_phases_hand_over_weights_and_a_killed_run_resumes(
    tmp_path, small_curriculum, tiny_qwen2, monkeypatch
):
    out = tmp_path / "rl"
    config = cfg(tiny_qwen2)
    original = TRLBackend.__init__

    def with_kill(self, *a, **kw):
        original(self, *a, **kw)
        self.callbacks.append(KillAt("phase-2", 2))

    monkeypatch.setattr(TRLBackend, "__init__", with_kill)
    toy = [SmallIdsReward()]
    with pytest.raises(KeyboardInterrupt):
        run_phases(small_curriculum, out, config, reward_funcs=toy)
    p1 = json.loads((out / "phase-1" / "phase.json").read_text())
    assert p1["steps"] == 2 and not (out / "phase-2" / "phase.json").exists()
    assert (out / "phase-2" / "checkpoint-1").exists()

    monkeypatch.setattr(TRLBackend, "__init__", original)
    with pytest.raises(Exception, match="--resume"):
        run_phases(
            small_curriculum, out, config, reward_funcs=toy
        )  # refusing to silently redo a finished phase
    summary = run_phases(small_curriculum, out, config, resume=True, reward_funcs=toy)
    p2 = json.loads((out / "phase-2" / "phase.json").read_text())
    assert p2["resumed_from"].endswith("checkpoint-1") and p2["steps"] == 2
    # Phase 2 demonstrably started from phase 1's weights, and training changed them.
    assert p2["init_checkpoint"] == p1["checkpoint"]
    assert p2["init_weights"] == p1["final_weights"] != p1["init_weights"]
    assert p2["final_weights"] != p2["init_weights"]
    assert p2["max_prompt_length"] == 400 and p1["max_prompt_length"] == 300
    assert summary["final_checkpoint"].endswith("phase-2/final")
    steps = [
        json.loads(x)["step"]
        for x in (out / "phase-2" / "metrics.jsonl").read_text().splitlines()
        if "reward" in json.loads(x)
    ]
    assert steps == [1, 2]  # the step logged before the kill is not repeated
    header = (out / "phase-2" / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("phase,step,reward,reward_std,frac_reward_zero_std")


def test_config_errors_say_how_to_fix(tmp_path):
    from longmill.errors import LongmillError

    with pytest.raises(LongmillError, match="did you mean 'vllm-server'"):
        GRPOPhaseConfig(rollout="vllm-srever")
    with pytest.raises(LongmillError, match="vllm_server_base_url"):
        GRPOPhaseConfig(rollout="vllm-server")
    with pytest.raises(LongmillError, match="clip-higher"):
        GRPOPhaseConfig(epsilon=0.3, epsilon_high=0.2)
    with pytest.raises(LongmillError, match="num_generations must be >= 2"):
        GRPOPhaseConfig(num_generations=1)


def fake_host(monkeypatch, vllm: bool, gpu: bool):
    """This host as seen by the rollout choice: vLLM importable or not, a CUDA GPU or not."""
    import importlib.util

    import torch

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **kw: (real("json") if vllm else None) if name == "vllm" else real(name, *a, **kw),
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)


@pytest.mark.parametrize(
    ("vllm", "gpu", "expected"),
    [
        (False, False, "hf"),
        (True, False, "hf"),
        (False, True, "hf"),
        (True, True, "vllm-colocate"),
    ],
)
def test_auto_rollout_uses_vllm_only_with_vllm_and_a_gpu(monkeypatch, vllm, gpu, expected):
    auto, hf = GRPOPhaseConfig(rollout="auto"), GRPOPhaseConfig(rollout="hf")  # built on the real (CPU) host
    fake_host(monkeypatch, vllm=vllm, gpu=gpu)
    assert auto.resolved_rollout() == expected
    assert hf.resolved_rollout() == "hf"  # an explicit choice is kept


@pytest.mark.parametrize("rollout", ["vllm-colocate", "vllm-server"])
def test_asking_for_vllm_without_vllm_fails_with_the_install_command(
    tmp_path, small_curriculum, tiny_qwen2, monkeypatch, rollout
):
    from longmill.errors import LongmillError

    fake_host(monkeypatch, vllm=False, gpu=False)
    config = cfg(
        tiny_qwen2,
        rollout=rollout,
        **({"vllm_server_base_url": "http://127.0.0.1:9"} if rollout == "vllm-server" else {}),
    )
    with pytest.raises(LongmillError, match=rf"rollout={rollout} needs vLLM.*pip install 'longmill\[gpu\]'"):
        run_phases(small_curriculum, tmp_path / "rl", config)
    assert not (tmp_path / "rl" / "phase-1").exists()  # refused before any phase started
