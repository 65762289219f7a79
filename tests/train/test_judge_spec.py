"""The training judge as one spec: judge_backend, judge_model, judge_url and judge_backend_option (the backend's
own options, JudgeConfig's defaults) reach TRL's reward and verl's export alike; keys never sit in the config."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time

import pytest

import eval.reward
from eval.judge import JudgeConfig
from longmill.errors import LongmillError
from train.backends.verl import REWARD_FILE, export_warnings
from train.config import GRPOPhaseConfig, SFTConfig
from train.rewards import make_reward

from ..eval.fake_server import Action, FakeServer
from .test_verl_export import export, overrides_of

OPTIONS = ("timeout", "max_retries", "breaker_failures", "breaker_cooldown", "api_key_env")


def test_verl_compute_score_defaults_are_the_judges():
    """The stdlib copy cannot import JudgeConfig, so its defaults are written again: they must agree."""
    opts = JudgeConfig(url="http://judge:8001/v1").options()
    params = inspect.signature(eval.reward.compute_score).parameters
    assert {k: params[f"judge_{k}"].default for k in OPTIONS} == {k: getattr(opts, k) for k in OPTIONS}
    assert params["judge_model"].default == JudgeConfig.model


def test_judge_options_reach_trl_and_verl_alike(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "JUDGE_KEY", "sk-judge-s3cret"
    )  # resolved where the config is built, as TRL's reward does
    cfg = GRPOPhaseConfig(
        model="qwen2.5-7b-instruct",
        judge_url="http://judge:8001/v1",
        judge_backend_option="timeout=7,max_retries=1,breaker_cooldown=45,api_key_env=JUDGE_KEY",
        use_cpu=True,
    )
    trl = make_reward(cfg).judge_config.options()
    script = export(cfg, tmp_path)
    assert "s3cret" not in script  # the variable's name travels, never its value
    verl = overrides_of(script)
    for key in OPTIONS:
        assert verl[f"reward.custom_reward_function.reward_kwargs.judge_{key}"] == str(getattr(trl, key)), key
    assert (trl.timeout, trl.max_retries, trl.breaker_cooldown, trl.api_key_env) == (
        7.0,
        1,
        45.0,
        "JUDGE_KEY",
    )
    assert trl.breaker_failures == 5  # not given: JudgeConfig's default, on both paths
    # without options both get JudgeConfig's defaults (the verl export used to leave verl's own 60 s cooldown)
    plain = GRPOPhaseConfig(model="qwen2.5-7b-instruct", judge_url="http://judge:8001/v1", use_cpu=True)
    verl = overrides_of(export(plain, tmp_path / "plain"))
    assert verl["reward.custom_reward_function.reward_kwargs.judge_breaker_cooldown"] == "30.0"
    assert verl["reward.custom_reward_function.reward_kwargs.judge_timeout"] == "30.0"


def test_an_option_verl_cannot_carry_is_named(tmp_path):
    cfg = GRPOPhaseConfig(
        judge_url="http://judge:8001/v1", judge_backend_option=["concurrency=4", "timeout=5"], use_cpu=True
    )
    warnings = export_warnings(cfg)
    assert any("judge_backend_option concurrency" in w for w in warnings)
    assert not any("judge_backend_option timeout" in w for w in warnings)


def test_the_judge_timeout_bounds_a_hung_judge_in_trl_and_verl(tmp_path):
    """A judge that hangs 3 s: judge_backend_option timeout=0.5 fails the call in well under that on both paths."""
    with FakeServer(default=Action.hang(3.0)) as server:
        cfg = GRPOPhaseConfig(
            model="qwen2.5-7b-instruct",
            judge_url=server.url,
            judge_model="judge",
            judge_backend_option="timeout=0.5,max_retries=0",
            use_cpu=True,
        )
        start = time.monotonic()
        out = make_reward(cfg)(
            ["Therefore, the answer is Lutetia."], answers=[["Paris"]], question=["Capital?"]
        )
        assert out == [None] and time.monotonic() - start < 2.5
        kwargs = {
            k.rsplit(".", 1)[1]: v
            for k, v in overrides_of(export(cfg, tmp_path)).items()
            if k.startswith("reward.custom_reward_function.reward_kwargs.judge_")
        }
        code = (
            "import importlib.util, json, sys, time; s = importlib.util.spec_from_file_location('r', sys.argv[1]); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); kw = json.loads(sys.argv[2]); "
            "kw = {k: (None if v == 'null' else float(v) if k in ('judge_timeout', 'judge_breaker_cooldown') "
            "else int(v) if k in ('judge_max_retries', 'judge_breaker_failures') else v) for k, v in kw.items()}; "
            "t = time.monotonic(); r = m.compute_score('x', 'Therefore, the answer is Lutetia.', ['Paris'], {}, **kw); "
            "print(json.dumps([r, time.monotonic() - t]))"
        )
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code, str(tmp_path / REWARD_FILE), json.dumps(kwargs)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    result, seconds = json.loads(proc.stdout)
    assert result["judge_failed"] == 1.0 and seconds < 2.5


@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [
        (
            GRPOPhaseConfig,
            {"judge_url": "http://j:8001/v1", "judge_backend_option": ["api_key=sk-s3cret"]},
            "api_key_env=MY_JUDGE_KEY",
        ),
        (
            GRPOPhaseConfig,
            {"judge_url": "http://alice:s3cret@j:8001/v1"},
            r"http://\*\*\*@j:8001/v1 carries user:pass@",
        ),
        (
            SFTConfig,
            {
                "teacher_backend": "openai",
                "teacher_backend_option": "url=http://j/v1,api_key=sk-s3cret",
            },
            "api_key_env=MY_TEACHER_KEY",
        ),
        (
            SFTConfig,
            {"teacher_backend": "openai", "teacher_backend_option": ["url=http://bob:s3cret@j/v1"]},
            r"teacher_backend_option url= http://\*\*\*@j/v1 carries user:pass@",
        ),
        (
            GRPOPhaseConfig,
            {"judge_url": "http://j:8001/v1", "judge_backend_option": ["timout=3"]},
            "did you mean 'timeout'",
        ),
        (SFTConfig, {"teacher_backend_option": ["dtype=bf16", "devices=cpu"]}, "did you mean 'device'"),
    ],
)
def test_credentials_and_unknown_options_are_refused(tmp_path, cls, kw, match):
    with pytest.raises(LongmillError, match=match) as e:
        cls(output_dir=str(tmp_path), use_cpu=True, **kw)
    assert "s3cret" not in str(e.value)


def test_the_teacher_options_reach_its_backend(tmp_path, monkeypatch):
    import train.sft

    seen = {}

    def fake_generate(items, gen, path):
        seen["options"] = gen.backend_options()
        path.write_text("")

    monkeypatch.setattr("eval.run.generate_predictions", fake_generate)
    monkeypatch.setenv("TEACHER_KEY", "sk-teacher")
    cfg = SFTConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        teacher_model="teacher",
        teacher_backend="openai",
        teacher_backend_option="url=http://t:8000/v1,timeout=45,api_key_env=TEACHER_KEY",
    )
    train.sft.apply_teacher([], cfg, tmp_path)
    assert seen["options"]["timeout"] == 45.0 and seen["options"]["api_key_env"] == "TEACHER_KEY"
    assert seen["options"]["url"] == "http://t:8000/v1"


def test_verl_sends_the_key_named_by_judge_api_key_env(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-judge")
    with FakeServer(default=Action.ok("YES")) as server:
        for env in ("JUDGE_KEY", None):
            r = eval.reward.compute_score(
                "x",
                "Therefore, the answer is Lutetia.",
                ["Paris"],
                {},
                judge_url=server.url,
                judge_api_key_env=env,
            )
            assert r["score"] == 1.0
        sent = [rec.headers["Authorization"] for rec in server.requests]
    assert sent == ["Bearer sk-judge", "Bearer EMPTY"]
