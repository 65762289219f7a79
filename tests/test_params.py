"""params.yaml and the profiles: every key is a config field (or a documented pipeline key) with a comment."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import yaml

from curriculum.build import CurriculumConfig
from datagen.generators.base import GenConfig
from datagen.generators.keychain import KeyChainConfig
from datagen.runner import RunConfig
from eval.run import GenerateConfig, JudgeFlags
from tests.train.test_config import dvc_flags
from train.config import GRPOPhaseConfig, SFTConfig

ROOT = Path(__file__).resolve().parents[1]
PROFILES = [
    ROOT / "params.yaml",
    ROOT / "profiles" / "gpu-qwen2.5-7b.yaml",
    ROOT / "profiles" / "gpu-qwen2.5-7b-120k.yaml",
    ROOT / "profiles" / "cpu-learning-smollm2.yaml",
]
TOP_LEVEL = {
    "profile",
    "model",
    "launcher",
    "sources",
    "source_names",
    "lengths",
    "keychain_lengths",
    "keychain",
    "longqa",
    "curriculum",
    "sft",
    "rl",
    "eval",
}
SOURCE_FLAGS = {"source", "input", "source_opt", "map", "limit", "strict", "rows_per_part"}


def names(*classes) -> set[str]:
    return {f.name for c in classes for f in dataclasses.fields(c)}


SECTIONS = {
    "keychain": names(KeyChainConfig, RunConfig) - {"length", "out"},
    "longqa": names(GenConfig, RunConfig) - {"length", "out"},
    "curriculum": names(CurriculumConfig),
    "sft": names(SFTConfig) - {"model"},
    "rl": names(GRPOPhaseConfig) - {"model"},
    "eval": names(GenerateConfig, JudgeFlags) - {"model"},
}


@pytest.fixture(params=PROFILES, ids=lambda p: p.name)
def profile(request):
    return request.param, yaml.safe_load(request.param.read_text())


def test_every_key_is_a_config_field(profile):
    path, params = profile
    assert set(params) == TOP_LEVEL
    for section, fields in SECTIONS.items():
        unknown = set(params[section]) - fields
        assert not unknown, f"{path.name}: {section} has keys that are not flags of its command: {unknown}"
    for name, src in params["sources"].items():
        assert set(src) <= SOURCE_FLAGS, (name, src)
    assert list(params["sources"]) == params["source_names"]


def test_configs_build_from_each_section(profile):
    """The values are valid, not just the names: each section builds its config dataclass."""
    _, p = profile
    CurriculumConfig(**p["curriculum"])
    assert set(p["keychain_lengths"]) <= set(p["lengths"])  # KeyChain runs at some of the synthesized lengths
    KeyChainConfig(
        length=p["keychain_lengths"][0],
        **{k: v for k, v in p["keychain"].items() if k in names(KeyChainConfig)},
    )
    GenConfig(length=p["lengths"][0], **{k: v for k, v in p["longqa"].items() if k in names(GenConfig)})
    # The GPU profile asks for bf16; TRL checks the hardware, so on a CPU host say that it is one.
    on_cpu = {} if torch.cuda.is_available() else {"use_cpu": True}
    SFTConfig(**p["sft"], **on_cpu)
    GenerateConfig(**{k: v for k, v in p["eval"].items() if k in names(GenerateConfig)})
    rl = dict(p["rl"])
    if rl.get("rollout") == "vllm-server":
        rl["vllm_server_base_url"] = "http://x"
    GRPOPhaseConfig(**rl, **on_cpu)
    assert CurriculumConfig(**p["curriculum"]).bins == sorted(p["lengths"])  # one bin per synthesized length


def test_every_key_has_a_comment(profile):
    path, _ = profile
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"^\s*[\w.-]+:", line) and not line.strip().startswith("#"):
            assert "#" in line, f"{path.name}:{n}: key without a comment: {line.strip()}"
        if re.match(r"^\s*- ", line):  # list items (source options) are commented on their key
            continue


def test_dvc_yaml_references_only_existing_sections():
    dvc = "\n".join(x for x in (ROOT / "dvc.yaml").read_text().splitlines() if not x.lstrip().startswith("#"))
    for ref in set(re.findall(r"\$\{(\w+)\}", dvc)) - {"key", "item"}:
        assert ref in TOP_LEVEL, ref


def test_eval_section_reaches_eval_run_as_dvc_writes_it(profile):
    """Each item of a list (backend_option: [tensor_parallel_size=1, yarn_factor=4.0, max_model_len=72000])
    is its own flag in the command DVC runs; every item must reach the backend, not only the last."""
    from eval.cli import run
    from longmill.cliutil import fields_of

    _, p = profile
    args = ["--model", "m", "--data", "d", "--out", "o", *dvc_flags(p["eval"])]
    with run.make_context("run", args) as ctx:
        gen = GenerateConfig(**fields_of(GenerateConfig, ctx.params))
        flags = JudgeFlags(**fields_of(JudgeFlags, ctx.params))
    given = p["eval"].get("backend_option", [])
    assert gen.backend_option == [str(x) for x in given]
    options = gen.backend_options() if gen.backend != "openai" else {}
    for item in given:
        key, value = str(item).split("=", 1)
        assert str(options[key]) == value
    assert flags.judge_backend_option == [str(x) for x in p["eval"].get("judge_backend_option", [])]
