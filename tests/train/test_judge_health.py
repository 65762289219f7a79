"""Where the judge is, and a judge that goes down: refused before training, stopped (or loudly warned) during it."""

from __future__ import annotations

import logging

import pytest
from transformers import TrainerCallback

from eval.judge import JudgeConfig
from longmill.errors import LongmillError
from train.config import GRPOPhaseConfig
from train.judge_health import check_judge_url, is_loopback
from train.rewards import HybridQAReward

from ..eval.fake_server import FakeServer


def test_a_loopback_judge_is_refused_when_the_run_spans_nodes(monkeypatch):
    with FakeServer() as server:  # a judge that answers, on 127.0.0.1
        cfg = GRPOPhaseConfig(judge_url=server.url, use_cpu=True)
        check_judge_url(cfg)  # one node: loopback reaches it
        monkeypatch.setenv("WORLD_SIZE", "16")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # two nodes of eight
        with pytest.raises(LongmillError, match="loopback address, but this run spans several nodes"):
            check_judge_url(cfg)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")  # one node of sixteen
        check_judge_url(cfg)
    assert is_loopback("http://localhost:8001/v1") and is_loopback("http://[::1]:8001/v1")
    assert not is_loopback("http://10.0.0.5:8001/v1")


def test_an_unreachable_judge_refuses_the_run_or_is_logged(caplog):
    server = FakeServer().start()
    url = server.url
    server.stop()  # nothing listens on that port any more
    with pytest.raises(LongmillError, match="does not answer"):
        check_judge_url(GRPOPhaseConfig(judge_url=url, use_cpu=True))
    with caplog.at_level(logging.ERROR, logger="train.judge_health"):
        check_judge_url(GRPOPhaseConfig(judge_url=url, judge_on_failure="warn", use_cpu=True))
    assert any("does not answer" in r.getMessage() for r in caplog.records)


class WrongAnswers(HybridQAReward):
    """longmill's reward on completions that always state a wrong answer, so the rule misses and the judge
    is asked for every completion (a new answer each call: the judge's verdict cache never answers for it)."""

    calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        wrong = f"Therefore, the answer is Nobody Knows {self.calls}."
        return super().__call__([wrong] * len(completions), **kwargs)


class StopServerAfter(TrainerCallback):
    """Takes the judge down after optimiser step ``step``."""

    def __init__(self, server: FakeServer, step: int):
        self.server, self.step = server, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.server.stop()


def run_with_a_judge_that_goes_down(curriculum, model, out, action: str, max_steps: int):
    from train.phases import run_phases

    server = FakeServer().start()  # judge mode: "NO" to a wrong answer
    try:
        cfg = GRPOPhaseConfig(
            model=str(model),
            max_steps=max_steps,
            per_device_train_batch_size=2,
            num_generations=2,
            max_completion_length=4,
            learning_rate=1e-4,
            save_steps=100,
            dynamic_sampling_rounds=0,
            rollout="hf",
            seed=0,
            mask_truncated_completions=False,
            gradient_checkpointing=False,
            disable_tqdm=True,
            report_to="none",
            judge_url=server.url,
            judge_max_failed_batches=2,
            judge_on_failure=action,
            use_cpu=True,
        )
        judge = JudgeConfig(
            url=server.url,
            model="judge",
            backend_options={"max_retries": 0, "timeout": 2.0, "breaker_failures": 2},
        )
        return run_phases(
            curriculum,
            out,
            cfg,
            phases=[1],
            reward_funcs=[WrongAnswers(judge=judge)],
            callbacks=[StopServerAfter(server, 1)],
        )
    finally:
        server.stop()


@pytest.mark.slow
def test_training_stops_when_the_judge_has_failed_for_consecutive_batches(
    tmp_path, small_curriculum, tiny_qwen2
):
    out = tmp_path / "rl"
    with pytest.raises(LongmillError, match=r"JUDGE DOWN: .*2 consecutive batches \(up to step 3\)") as e:
        run_with_a_judge_that_goes_down(small_curriculum, tiny_qwen2, out, "stop", max_steps=6)
    assert "Training stopped at step 3 with a checkpoint" in str(e.value)
    # step 1 was judged; steps 2 and 3 lost the judge: stopped there, resumable from a checkpoint
    assert (out / "phase-1" / "checkpoint-3").is_dir()
    assert not (out / "phase-1" / "phase.json").exists()


@pytest.mark.slow
def test_with_warn_training_goes_on_and_says_so(tmp_path, small_curriculum, tiny_qwen2, caplog):
    with caplog.at_level(logging.ERROR, logger="train.judge_health"):
        summary = run_with_a_judge_that_goes_down(small_curriculum, tiny_qwen2, tmp_path / "rl", "warn", 4)
    assert summary["phases"][0]["steps"] == 4
    downs = [r.getMessage() for r in caplog.records if "JUDGE DOWN" in r.getMessage()]
    assert len(downs) == 2 and "(up to step 3)" in downs[0] and "3 consecutive batches" in downs[1]
