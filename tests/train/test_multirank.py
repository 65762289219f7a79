"""Two CPU ranks (torchrun, gloo) through two phases: only the main process writes, and nothing collides."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_run_two_phases(tmp_path, small_curriculum, tiny_qwen2):
    out = tmp_path / "rl"
    script = Path(__file__).with_name("two_rank_phases.py")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(script),
            str(small_curriculum),
            str(tiny_qwen2),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("RANK-DONE") == 2
    p1 = json.loads((out / "phase-1" / "phase.json").read_text())
    p2 = json.loads((out / "phase-2" / "phase.json").read_text())
    assert p1["steps"] == p2["steps"] == 1
    assert p2["init_weights"] == p1["final_weights"] != p1["init_weights"]  # hashed from the saved files
    assert os.readlink(out / "final") == "phase-2/final"
    assert (out / "phase-2" / "final" / "tokenizer.json").exists()
    assert (out / "phase-1" / "checkpoint-1" / "dynamic_sampling_rank1.json").exists()
    # YaRN (x2 over a 256-token "native" window) is in the folder each phase loaded, and in the model it saved.
    cfg = json.loads((out / "phase-1" / "init-model" / "config.json").read_text())
    assert cfg["rope_scaling"]["rope_type"] == "yarn" and cfg["max_position_embeddings"] == 512
    assert p1["model_folder"].endswith("phase-1/init-model")
    assert p2["model_folder"] == p1["checkpoint"]  # phase 1 saved its model with YaRN: phase 2 loads it as is
    for k in (1, 2):
        saved = json.loads((out / f"phase-{k}" / "final" / "config.json").read_text())
        rope = saved.get("rope_parameters") or saved.get("rope_scaling")
        assert (
            rope["rope_type"] == "yarn" and rope["factor"] == 2.0 and saved["max_position_embeddings"] == 512
        )
    assert "Traceback" not in proc.stderr
