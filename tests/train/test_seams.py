"""The train seams: rewards named in config (registry or dotted path), and trainer backends behind one interface."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

import train.phases
from longmill.errors import LongmillError, UnknownNameError
from train.backends import TRAINER_BACKENDS, TrainerBackend
from train.cli import main
from train.config import GRPOPhaseConfig
from train.phases import run_phases
from train.rewards import REWARDS, AnswerFormatReward, HybridQAReward, build_rewards, resolve_reward


@pytest.fixture
def my_pkg(tmp_path, monkeypatch):
    """A user's package on sys.path with a reward function, a reward class and two things that are not rewards."""
    pkg = tmp_path / "site" / "my_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "rewards.py").write_text(
        textwrap.dedent("""
        CALLS = []

        def short_reward(completions, completion_ids, **kwargs):
            CALLS.append(len(completions))
            return [1.0 / (1 + len(ids)) + 0.01 * (i % 3) for i, ids in enumerate(completion_ids)]

        class Brevity:
            __name__ = "brevity"

            def __call__(self, completions, **kwargs):
                return [0.0] * len(completions)

        class Nameless:
            def __call__(self, completions, **kwargs):
                return [0.0] * len(completions)

        THRESHOLD = 0.5
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield "my_pkg.rewards"
    import sys

    for name in ("my_pkg.rewards", "my_pkg"):
        sys.modules.pop(name, None)


# -- rewards ------------------------------------------------------------------------------------------


def test_default_and_registered_rewards_follow_the_config():
    assert GRPOPhaseConfig().reward_funcs == ["hybrid_qa"]
    cfg = GRPOPhaseConfig(
        reward_funcs=["hybrid_qa", "format"], reward_rule="bounded_sub_em", reward_weights=[1.0, 0.1]
    )
    qa, fmt = build_rewards(cfg.reward_funcs, cfg)
    assert isinstance(qa, HybridQAReward) and qa.rule == "bounded_sub_em"
    assert isinstance(fmt, AnswerFormatReward) and fmt.__name__ == "format"
    assert fmt(["Therefore, the answer is Paris.", "Paris?"]) == [1.0, 0.0]
    assert {"hybrid_qa", "format"} <= set(REWARDS.names())
    assert GRPOPhaseConfig(reward_funcs="format").reward_funcs == ["format"]  # a YAML scalar is one name


def test_unknown_reward_names_say_did_you_mean():
    with pytest.raises(
        UnknownNameError, match="unknown reward 'hybird_qa'; did you mean 'hybrid_qa'?.*dotted path"
    ):
        GRPOPhaseConfig(reward_funcs=["hybird_qa"])  # refused when the config is built, before any run
    with pytest.raises(UnknownNameError, match="did you mean 'format'"):
        resolve_reward("fromat")
    with pytest.raises(LongmillError, match="reward_funcs is empty"):
        GRPOPhaseConfig(reward_funcs=[])


def test_dotted_paths_resolve_like_trls_scripts(my_pkg):
    fn = resolve_reward(f"{my_pkg}:short_reward")
    assert fn.__name__ == "short_reward" and fn(["a", "b"], completion_ids=[[1], [1, 2, 3]]) == [0.5, 0.26]
    assert resolve_reward(f"{my_pkg}.short_reward") is fn  # TRL's form: module.attr
    assert resolve_reward(f"{my_pkg}:Brevity").__name__ == "brevity"  # a class is instantiated
    with pytest.raises(LongmillError, match="cannot import module 'my_pkg.nope'"):
        resolve_reward("my_pkg.nope:x")
    with pytest.raises(LongmillError, match="has no 'short_rewrad'; did you mean 'short_reward'"):
        resolve_reward(f"{my_pkg}:short_rewrad")
    with pytest.raises(LongmillError, match="is a float, not a function"):
        resolve_reward(f"{my_pkg}:THRESHOLD")
    with pytest.raises(LongmillError, match="has no __name__"):
        resolve_reward(f"{my_pkg}:Nameless")


def test_reward_funcs_flag_reaches_the_config(monkeypatch):
    seen = {}

    def fake(curriculum, out, config, **kw):
        seen["config"] = config
        return {"phases": [], "final_checkpoint": "x"}

    monkeypatch.setattr(train.phases, "run_phases", fake)
    res = CliRunner().invoke(
        main,
        [
            "grpo",
            "--curriculum",
            "c",
            "--out",
            "o",
            "--reward-funcs",
            "hybrid_qa,format",
            "--reward-weights",
            "1,0.2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert seen["config"].reward_funcs == ["hybrid_qa", "format"] and seen["config"].reward_weights == [
        1.0,
        0.2,
    ]
    res = CliRunner().invoke(main, ["grpo", "--curriculum", "c", "--out", "o", "--reward-funcs", "hybird_qa"])
    assert res.exit_code == 2 and "did you mean 'hybrid_qa'" in res.output


def test_the_trl_backend_builds_the_configured_rewards(tmp_path, my_pkg):
    from train.backends.trl import TRLBackend

    cfg = GRPOPhaseConfig(reward_funcs=[f"{my_pkg}:short_reward", "hybrid_qa"], reward_rule="sub_em")
    user, qa = TRLBackend(cfg, tmp_path).rewards()
    assert user.__name__ == "short_reward" and user(["a"], completion_ids=[[7]]) == [0.5]
    assert qa.rule == "sub_em"
    toy = AnswerFormatReward()
    assert TRLBackend(cfg, tmp_path, reward_funcs=[toy]).rewards() == [toy]  # objects given in code win


@pytest.mark.slow
def test_one_grpo_step_with_a_reward_given_by_dotted_path(tmp_path, small_curriculum, tiny_qwen2, my_pkg):
    config = GRPOPhaseConfig(
        model=str(tiny_qwen2),
        reward_funcs=[f"{my_pkg}:short_reward"],
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        dynamic_sampling_rounds=0,
        rollout="hf",
        seed=0,
        mask_truncated_completions=False,
        save_steps=10,
        disable_tqdm=True,
    )
    summary = run_phases(small_curriculum, tmp_path / "rl", config, phases=[1])
    import my_pkg.rewards as user

    assert (
        user.CALLS and sum(user.CALLS) == 4
    )  # one generation batch of 4 completions, scored by the user's reward
    record = json.loads((tmp_path / "rl" / "phase-1" / "phase.json").read_text())
    assert record["rewards"] == ["short_reward"] and record["steps"] == 1
    assert summary["phases"][0]["checkpoint"] == record["checkpoint"]
    logged = [json.loads(x) for x in (tmp_path / "rl" / "phase-1" / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/short_reward/mean" in row for row in logged)


def test_verl_refuses_rewards_it_cannot_export(tmp_path, small_curriculum):
    config = GRPOPhaseConfig(reward_funcs=["hybrid_qa", "format"], use_cpu=True)
    with pytest.raises(LongmillError, match="cannot be exported to verl"):
        run_phases(small_curriculum, tmp_path / "verl", config, backend="verl")


# -- trainer backends ---------------------------------------------------------------------------------


class Recording(TrainerBackend):
    """A backend that trains nothing: it records what the phase loop asked of it."""

    name = "recording"
    resumable = True
    calls: list = []

    def __init__(self, config, out, resume=False, **options):
        self.out, self.options = out, options

    def run_phase(self, stage, init_checkpoint):
        Recording.calls.append((stage.index, init_checkpoint))
        record = {
            "phase": stage.index,
            "stage": stage.name,
            "checkpoint": f"ckpt-{stage.index}",
            "init_checkpoint": init_checkpoint,
        }
        (self.out / f"done-{stage.index}.json").write_text(json.dumps(record))
        return record

    def finished_phase(self, stage):
        path = self.out / f"done-{stage.index}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def finish(self, final_checkpoint):
        return {"exported": final_checkpoint, "options": self.options}


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setitem(TRAINER_BACKENDS._items, "recording", Recording)
    Recording.calls = []
    return Recording


def test_any_registered_backend_runs_the_phases(tmp_path, small_curriculum, tiny_qwen2, recording):
    config = GRPOPhaseConfig(model=str(tiny_qwen2))
    out = tmp_path / "run"
    summary = run_phases(small_curriculum, out, config, backend="recording", phases=[1], flavour="x")
    assert recording.calls == [(1, str(tiny_qwen2))]
    with pytest.raises(LongmillError, match=r"already holds finished phases \(phase-1\); pass --resume"):
        run_phases(small_curriculum, out, config, backend="recording")  # resumable: no silent redo
    summary = run_phases(small_curriculum, out, config, backend="recording", resume=True)
    assert recording.calls == [
        (1, str(tiny_qwen2)),
        (2, "ckpt-1"),
    ]  # phase 1 skipped, phase 2 from its checkpoint
    assert summary["final_checkpoint"] == "ckpt-2" and summary["exported"] == "ckpt-2"
    assert [p["phase"] for p in summary["phases"]] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["backend"] == "recording"
    other = GRPOPhaseConfig(model=str(tmp_path / "other-model"))
    with pytest.raises(LongmillError, match="started from .* not .*other-model"):
        run_phases(small_curriculum, out, other, backend="recording", resume=True)


def test_a_backend_that_is_not_resumable_is_rerun_and_unknown_backends_suggest(
    tmp_path, small_curriculum, tiny_qwen2, recording, monkeypatch
):
    monkeypatch.setattr(Recording, "resumable", False)
    config = GRPOPhaseConfig(model=str(tiny_qwen2))
    run_phases(small_curriculum, tmp_path / "run", config, backend="recording")
    run_phases(small_curriculum, tmp_path / "run", config, backend="recording")  # rewritten, not refused
    assert [c[0] for c in recording.calls] == [1, 2, 1, 2]
    with pytest.raises(UnknownNameError, match="did you mean 'recording'"):
        run_phases(small_curriculum, tmp_path / "run", config, backend="recordin")
    with pytest.raises(TypeError):
        type("Incomplete", (TrainerBackend,), {"name": "x"})()  # run_phase is required
