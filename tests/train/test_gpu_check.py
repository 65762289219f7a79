"""benchmarks/gpu_check.sh runs end to end in its dry mode (every part on CPU at tiny shapes), so the script is
not broken on the day a GPU is at hand."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", **env},
    )


@pytest.mark.slow
def test_dry_run_runs_every_part_and_writes_results(tmp_path):
    proc = _run(tmp_path, GPU_CHECK_DRY="1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.log", "results.json", "summary.md"]
    results = json.loads((tmp_path / "results.json").read_text())
    parts = {p["part"]: p for p in results["parts"] if p["part"] != "step"}
    steps = [p for p in results["parts"] if p["part"] == "step"]
    assert results["dry"] and set(parts) == {"env", "vllm", "sp", "bench"} and len(steps) == 2
    assert parts["vllm"]["skipped"] and parts["sp"]["skipped"]  # no GPU: skipped cleanly, the script goes on
    for step in steps:  # the padding-free path, a refill round, and the planner beside the measured peak
        assert step["square_masks"] == 0 and step["attention_calls"] > 0 and step["refill_rounds"] >= 1
        assert abs(step["plan_over_peak"] - 1) < 0.05
    (row,) = parts["bench"]["rows"]
    assert abs(row["plan_gib"] / row["peak_gib"] - 1) < 0.05
    summary = (tmp_path / "summary.md").read_text()
    for needle in (
        "| env | ok |",
        "| tiny | ok |",
        "| small | ok |",
        "| vllm | skipped |",
        "| sp | skipped |",
        "| bench | ok |",
    ):
        assert needle in summary, needle


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_without_a_gpu_and_without_dry_mode_it_says_so(tmp_path):
    proc = _run(tmp_path, GPU_CHECK_DRY="0")
    assert proc.returncode == 1
    assert "no CUDA GPU" in proc.stdout + proc.stderr and "GPU_CHECK_DRY=1" in proc.stdout + proc.stderr
