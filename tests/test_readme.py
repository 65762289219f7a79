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


def test_ci_runs_the_readme_test_command():
    setup = blocks("bash")[0].splitlines()
    run_cmd = next(line for line in setup if "pytest" in line)
    test_cmd = next(line for line in setup if "pytest" in line)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci
    main_cmd = next(line for line in setup if "dvc repro" in line)
    assert main_cmd.startswith("python3 -m venv .venv") and "constraints/cpu.txt" in main_cmd
    assert run_cmd == test_cmd


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
            for flag in [t.split("=")[0] for t in shlex.split(m.group(2).split("#")[0]) if t.startswith("--")]:
                assert flag in help_text, f"README uses {flag} with datagen {m.group(1)}"


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    from datagen.generators.base import GenConfig
    from datagen.runner import RunConfig, run_generator
    from datagen.sources import get_source

    out = tmp_path_factory.mktemp("readme") / "stage-1"
    run_generator("longqa", GenConfig(length=300), get_source("synthetic", options={"num_triplets": 40}),
                  RunConfig(out=out, num_samples=4))
    return out


@pytest.mark.slow
def test_trl_snippet_runs(stage, tiny_qwen2, tmp_path):
    code = next(b for b in blocks("python") if "GRPOTrainer(" in b)
    code = (code.replace("Qwen/Qwen2.5-7B-Instruct", str(tiny_qwen2))
                .replace("data/curriculum/stage-1/*.parquet", str(stage / "*.parquet"))
                .replace('output_dir="runs/trl"', f'output_dir="{tmp_path}", max_steps=1, bf16=False, report_to="none", '
                                                  'per_device_train_batch_size=8, save_strategy="no"')
                .replace("4096", "8"))
    exec(compile(code, "README-trl-snippet", "exec"), {})


def test_verl_snippet_points_at_a_real_reward_function():
    block = next(b for b in blocks("bash") if "verl.trainer.main_ppo" in b)
    path = re.search(r"custom_reward_function\.path=\$PWD/(\S+)", block).group(1)
    name = re.search(r"custom_reward_function\.name=(\w+)", block).group(1)
    spec = importlib.util.spec_from_file_location("custom", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = getattr(mod, name)("keychain/x", "Therefore, the answer is Ed Wood.", ["Ed Wood"], {"question": "Who?"})
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
