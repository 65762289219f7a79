"""Launching a test script on two CPU ranks (torchrun, gloo), for the multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``tests/train/<script>`` on two CPU ranks with ``args``; one OpenMP thread each, output captured."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(Path(__file__).with_name(script)),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
