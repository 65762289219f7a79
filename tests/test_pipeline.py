"""The DVC pipeline end to end on a minute-scale profile: repro, metrics, plots, caching, partial re-runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_params() -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["sources"]["synthetic"]["source_opt"] = ["num_triplets=120"]
    p["lengths"] = [768, 1024]
    p["keychain_lengths"] = [768, 1024]
    p["curriculum"]["bins"] = "768,1024"
    for gen in ("keychain", "longqa"):
        p[gen]["num_samples"] = 8
    p["sft"].update(max_steps=1, max_examples=4)
    # one on-policy group of two per phase: on CPU, TRL scores every prompt position through the vocabulary,
    # which is most of a tiny model's step (rows x length x 151,936)
    p["rl"].update(
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        steps_per_generation=1,
        dynamic_sampling_rounds=0,
        max_completion_length=8,
    )
    p["eval"].update(n=1, max_tokens=8)
    return p


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=1200
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git + DVC project with the repository's pipeline, code and a tiny params.yaml."""
    root = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("datagen", "curriculum", "eval", "train"):
        shutil.copytree(ROOT / pkg, root / pkg, ignore=ignore)
    shutil.copytree(ROOT / "data" / "raw", root / "data" / "raw")
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / f, root / f)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")  # parsing settings the pipeline relies on
    return root


@pytest.mark.slow
@pytest.mark.timeout(
    1800
)  # three `dvc repro` runs (the first trains and evaluates), beyond pyproject's 600 s
def test_repro_metrics_plots_and_partial_reruns(project):
    # End to end: the real `dvc` command line in subprocesses, on a copy of the repository's pipeline.
    out = dvc(project, "repro").stdout
    for stage in (
        "triplets@synthetic",
        "keychain@synthetic-768",
        "longqa@synthetic-1024",
        "curriculum",
        "sft",
        "rl",
        "eval",
    ):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    files = next(iter(metrics.values()))["data"]
    assert "em" in files["runs/eval/metrics.json"]["data"]["overall"]
    assert files["metrics/curriculum.json"]["data"]["stages"]["stage-2"]["rows"] > 0
    assert files["metrics/synth/keychain-synthetic-768.json"]["data"]["written"] == 8
    assert (project / "runs" / "eval" / "plots" / "length_depth_heatmap.png").exists()
    assert (project / "metrics" / "rl" / "phase-2.csv").exists()
    dvc(project, "plots", "show", "-o", str(project / "plots-html"))
    assert (project / "plots-html" / "index.html").exists()

    again = dvc(project, "repro").stdout
    assert "Data and pipelines are up to date." in again and "Running stage" not in again

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["curriculum"]["retro_share"] = 0.3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = dvc(project, "repro").stdout
    rerun = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}
    assert rerun == {"curriculum", "rl", "eval"}, log  # only what is downstream of the curriculum
