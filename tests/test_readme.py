"""The README's commands and snippets stay true: .ci/run runs its test command; the snippets run on CPU."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL)


def readme_commands() -> tuple[str, str]:
    """The two commands of the README's first block: (run the pipeline, run the tests)."""
    lines = [x for x in blocks("bash")[0].splitlines() if x.strip() and not x.lstrip().startswith("#")]
    assert len(lines) == 2, f"the README's first block should hold exactly two commands, found {lines}"
    pipeline, tests = lines
    assert pipeline.endswith("&& dvc repro") and tests.endswith("&& python -m pytest")
    return pipeline, tests


def ci_commands() -> list[str]:
    """The command lines of .ci/run: its lines that are not comments, the shebang, `set` or `cd`."""
    return [
        x
        for x in (ROOT / ".ci" / "run").read_text().splitlines()
        if x.strip() and not x.startswith("#") and not x.startswith(("set ", "cd "))
    ]


def test_ci_runs_the_readme_test_command_verbatim_then_lints():
    first, *rest = ci_commands()
    assert first == readme_commands()[1]
    assert rest == ["ruff check .", "ruff format --check ."]


def test_the_readme_install_commands_name_real_extras_and_constraints():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    needs = {"dvc repro": "dvc", "python -m pytest": "pytest"}
    for cmd in readme_commands():
        words = shlex.split(cmd)
        extra = re.fullmatch(r"\.\[([\w,-]+)\]", words[words.index("-e") + 1]).group(1)
        for name in extra.split(","):
            assert name in extras, f"README installs the extra {name!r}; pyproject.toml has {sorted(extras)}"
        tool = next(v for k, v in needs.items() if cmd.endswith(k))
        assert any(re.match(rf"{tool}\b", d) for name in extra.split(",") for d in extras[name]), (
            f"the README's command runs {tool}, but the extras [{extra}] do not install it"
        )
        constraints = ROOT / words[words.index("-c") + 1]
        assert constraints.is_file(), f"the README installs with -c {constraints.name}, which does not exist"
        pins = dict(re.findall(r"^([\w.-]+)==(\S+)", constraints.read_text(), re.MULTILINE))
        assert "torch" in pins, f"{constraints} must pin torch, or pip pulls the CUDA build"
    # The pinned torch satisfies the range pyproject declares.
    torch_range = next(d for d in project["dependencies"] if re.match(r"torch\b", d))
    from packaging.requirements import Requirement

    cpu_pins = dict(
        re.findall(r"^([\w.-]+)==(\S+)", (ROOT / "constraints/cpu.txt").read_text(), re.MULTILINE)
    )
    assert Requirement(torch_range).specifier.contains(cpu_pins["torch"])


def test_the_test_command_runs_every_package_s_doctests_under_a_timeout():
    """`python -m pytest` (the README's and CI's command) also collects the packages, for their doctests."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    pytest_ini = pyproject["tool"]["pytest"]["ini_options"]
    assert packages <= set(pytest_ini["testpaths"]) and "tests" in pytest_ini["testpaths"]
    assert "--doctest-modules" in pytest_ini["addopts"].split()
    assert 0 < int(pytest_ini["timeout"]) <= 900
    deps = {re.match(r"[\w-]+", d).group(0) for d in pyproject["project"]["dependencies"]}
    assert "click" in deps and "typer" not in deps  # every CLI is click


def test_the_stages_in_the_readme_table_exist_in_dvc_yaml():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    launcher = yaml.safe_load((ROOT / "params.yaml").read_text())["launcher"]
    table = re.findall(r"^\| (`[^|]+`) \| (`[^|]+`) \| `([^`]+)`", README, re.MULTILINE)
    assert len(table) >= 6
    seen = set()
    for names, commands, writes in table:
        # A writes-column path such as data/triplets/<src>/ names the folder a stage outputs under.
        folder = "/".join(writes.split("/")[:2])
        for name in (n.split("@")[0] for n in re.findall(r"`([^`]+)`", names)):
            assert name in stages, f"the README names the DVC stage {name!r}; dvc.yaml has {sorted(stages)}"
            stage = stages[name].get("do", stages[name])
            cmd = " ".join(stage["cmd"].split()).replace("${launcher}", launcher)
            assert any(cmd.startswith(c) for c in re.findall(r"`([^`]+)`", commands)), (name, cmd)
            outs = [
                next(iter(o)) if isinstance(o, dict) else o
                for key in ("outs", "metrics")
                for o in stage.get(key, [])
            ]
            assert any(o.startswith(folder) for o in outs), (name, folder, outs)
            seen.add(name)
    assert seen == set(stages), f"stages missing from the README's table: {sorted(set(stages) - seen)}"


def test_commands_in_the_reference_exist():
    from click.testing import CliRunner

    from curriculum.cli import main as curriculum_main
    from datagen.cli import main as datagen_main
    from eval.cli import main as eval_main
    from train.cli import main as train_main

    mains = {"datagen": datagen_main, "curriculum": curriculum_main, "eval": eval_main, "train": train_main}
    rows = re.findall(r"^\| `((?:datagen|python -m \w+) [\w-]+)", README, re.MULTILINE)
    assert len(rows) >= 12
    for row in rows:
        words = row.split()
        prog, sub = (words[0], words[1]) if words[0] == "datagen" else (words[2], words[3])
        result = CliRunner().invoke(mains[prog], [sub, "--help"])
        assert result.exit_code == 0, row


def flags_in(block: str, prog: str) -> list[str]:
    text = block.replace("\\\n", " ")
    line = next(x for x in text.splitlines() if prog in x)
    return [t for t in shlex.split(line) if t.startswith("--")]


def test_datagen_examples_use_real_flags():
    from click.testing import CliRunner

    from datagen.cli import main

    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            m = re.match(r"\s*datagen (\w+) (.*)", line)
            if not m:
                continue
            help_text = CliRunner().invoke(main, [m.group(1), "--help"]).output
            for flag in [
                t.split("=")[0] for t in shlex.split(m.group(2).split("#")[0]) if t.startswith("--")
            ]:
                assert flag in help_text, f"README uses {flag} with datagen {m.group(1)}"


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    from datagen.generators.base import GenConfig
    from datagen.runner import RunConfig, run_generator
    from datagen.sources import get_source

    out = tmp_path_factory.mktemp("readme") / "stage-1"
    run_generator(
        "longqa",
        GenConfig(length=300),
        get_source("synthetic", options={"num_triplets": 40}),
        RunConfig(out=out, num_samples=4),
    )
    return out


@pytest.mark.slow
def test_trl_snippet_runs(stage, tiny_qwen2, tmp_path):
    code = next(b for b in blocks("python") if "GRPOTrainer(" in b)
    code = (
        code.replace("Qwen/Qwen2.5-7B-Instruct", str(tiny_qwen2))
        .replace("data/curriculum/stage-1/*.parquet", str(stage / "*.parquet"))
        .replace(
            'output_dir="runs/trl"',
            f'output_dir="{tmp_path}", max_steps=1, bf16=False, report_to="none", '
            'per_device_train_batch_size=8, save_strategy="no"',
        )
        .replace("4096", "8")
    )
    ns: dict = {}
    exec(compile(code, "README-trl-snippet", "exec"), ns)
    # the snippet trained: one optimiser step, the stage's rows reached the reward with their answers
    trainer, reward = ns["trainer"], ns["trainer"].reward_funcs[0]
    assert trainer.state.global_step == 1 and len(ns["train"]) == 4
    assert reward.stats.to_dict()["completions"] >= 8  # one generation batch was scored
    assert len(reward.last_accuracy) >= 1 and all(r in (0.0, 1.0) for r in reward.last_accuracy)
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert "rewards/hybrid_qa/mean" in logged


def test_verl_snippet_points_at_a_real_reward_function():
    block = next(b for b in blocks("bash") if "verl.trainer.main_ppo" in b)
    path = re.search(r"custom_reward_function\.path=\$PWD/(\S+)", block).group(1)
    name = re.search(r"custom_reward_function\.name=(\w+)", block).group(1)
    spec = importlib.util.spec_from_file_location("custom", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = getattr(mod, name)(
        "keychain/x", "Therefore, the answer is Ed Wood.", ["Ed Wood"], {"question": "Who?"}
    )
    assert out["score"] == 1.0
    assert "data.prompt_key=prompt" in block


def test_openrlhf_snippet_reward_and_keys(stage):
    import pyarrow.parquet as pq

    from datagen.tokenizers import get_tokenizer

    block = next(b for b in blocks("bash") if "openrlhf" in b)
    flags = dict(re.findall(r"--(\w+) (\S+)", block.replace("\\\n", " ")))
    assert flags["input_key"] == "prompt" and flags["label_key"] == "answers"
    spec = importlib.util.spec_from_file_location("rm", ROOT / flags["remote_rm_url"])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = pq.read_table(next(stage.glob("*.parquet"))).to_pylist()[0]
    prompt = get_tokenizer("qwen2.5").render(row[flags["input_key"]])
    good, bad = prompt + f"Therefore, the answer is {row['answers'][0]}.", prompt + "No idea."
    out = mod.reward_func([good, bad], [prompt, prompt], [row[flags["label_key"]]] * 2)
    assert out["rewards"].tolist() == [1.0, 0.0]
