"""Each generation backend owns its options: declared once (its ``Options`` dataclass), checked with
"did you mean", and used by the judge, ``eval run`` and curriculum's pass-rate difficulty."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from click.testing import CliRunner

from eval.backends.base import (
    BACKENDS,
    backend_class,
    backend_options,
    get_backend,
    option_names,
    options_help,
    parse_option_items,
)
from eval.run import GenerateConfig
from longmill.errors import LongmillError, UnknownNameError


@pytest.mark.parametrize("name", ["hf", "openai", "vllm"])
def test_each_backend_declares_the_options_its_constructor_takes(name):
    cls = backend_class(name)
    assert dataclasses.is_dataclass(cls.Options)
    params = inspect.signature(cls.__init__).parameters
    for f in dataclasses.fields(cls.Options):
        assert f.name in params or any(p.kind is p.VAR_KEYWORD for p in params.values()), (name, f.name)


def test_an_unknown_option_answers_did_you_mean():
    with pytest.raises(UnknownNameError, match="did you mean 'gpu_memory_utilization'"):
        get_backend("vllm", "m", gpu_memory_utilisation=0.5)  # checked before vLLM is imported
    with pytest.raises(UnknownNameError, match="did you mean 'dtype'.*Valid options: device, dtype"):
        backend_options("hf", {"dtpye": "bfloat16"})
    with pytest.raises(UnknownNameError, match="did you mean 'openai'"):
        backend_class("opnai")


def test_option_strings_are_typed_by_the_backend_dataclass():
    assert parse_option_items("openai", "max_rounds=3,timeout=2.5,max_wait=None") == {
        "max_rounds": 3,
        "timeout": 2.5,
        "max_wait": None,
    }
    assert parse_option_items("vllm", ["enforce_eager=yes", "max_model_len=4096"]) == {
        "enforce_eager": True,
        "max_model_len": 4096,
    }
    with pytest.raises(LongmillError, match="cannot read 'lots' as int"):
        parse_option_items("hf", ["batch_size=lots"])
    with pytest.raises(LongmillError, match="KEY=VALUE"):
        parse_option_items("hf", ["batch_size"])


def test_generate_config_takes_options_from_the_backend_not_a_list_of_its_own():
    gen = GenerateConfig(
        backend="openai",
        backend_option=["url=http://127.0.0.1:9/v1,timeout=7", "max_rounds=2", "concurrency=3"],
    )
    opts = gen.backend_options()
    assert set(opts) == set(option_names("openai"))
    assert (opts["url"], opts["timeout"], opts["max_rounds"], opts["concurrency"]) == (
        "http://127.0.0.1:9/v1",
        7.0,
        2,
        3,
    )
    hf = GenerateConfig(
        backend="hf", backend_option="device=cpu,dtype=float32", batch_size=2
    ).backend_options()
    assert set(hf) == set(option_names("hf")) and (hf["device"], hf["batch_size"]) == ("cpu", 2)
    with pytest.raises(UnknownNameError, match="did you mean 'max_rounds'"):
        GenerateConfig(backend="openai", backend_option="max_round=2")
    with pytest.raises(LongmillError, match="needs url="):
        GenerateConfig(backend="openai").backend_options()


def test_eval_run_lists_and_checks_backend_options():
    from eval.cli import main

    runner = CliRunner()
    help_text = runner.invoke(main, ["run", "--help"]).output
    for name in BACKENDS.names():
        assert f"{name}:" in help_text
    assert "gpu_memory_utilization" in " ".join(help_text.split())
    bad = runner.invoke(
        main,
        ["run", "--data", "x", "--out", "y", "--backend", "vllm", "--backend-option", "enforce_eagre=true"],
    )
    assert bad.exit_code != 0 and "did you mean 'enforce_eager'" in bad.output
    assert "hf: device" in options_help()


def test_judge_flags_accept_any_in_process_backend():
    from eval.run import JudgeFlags

    cfg = JudgeFlags(judge_backend="vllm", judge_model="Qwen/Qwen2.5-1.5B-Instruct").judge_config()
    assert cfg is not None and cfg.backend == "vllm" and cfg.url is None
    assert JudgeFlags().judge_config() is None
    with pytest.raises(LongmillError, match="needs --judge-url"):
        JudgeFlags(judge_model="m").judge_config()
