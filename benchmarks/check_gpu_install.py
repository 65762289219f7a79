"""Check that the README's GPU install resolves: ``pip install --dry-run`` of
``-c constraints/gpu.txt -e ".[pipeline,gpu,deepspeed]"`` on this x86-64 Linux machine, then the versions it
would install against the constraints and against each other (vLLM's torch/transformers pins, TRL's vLLM range).

    python benchmarks/check_gpu_install.py              # about 4 minutes: pip fetches every wheel's metadata
    python benchmarks/check_gpu_install.py --report R   # also keep pip's JSON report

Exit status: 0 when it resolves and agrees, 1 when it does not, 0 with "SKIPPED" when the package index cannot
be reached or the machine is not x86-64 Linux (the GPU wheels are built for it). Nothing is installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = "pipeline,gpu,deepspeed"


def constraints(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower()] = str(next(iter(req.specifier)).version)
    return out


def index_reachable(url: str = "https://pypi.org/simple/vllm/") -> bool:
    try:
        with urllib.request.urlopen(url, timeout=15):
            return True
    except OSError:
        return False


def check(report: dict, pins: dict[str, str]) -> list[str]:
    """Problems in pip's installation report (empty when everything agrees)."""
    installed = {i["metadata"]["name"].lower(): i["metadata"] for i in report["install"]}
    version = {k: Version(Version(m["version"]).base_version) for k, m in installed.items()}
    problems = [
        f"{name}: would install {version.get(name)}, constraints/gpu.txt pins {pin}"
        for name, pin in pins.items()
        if version.get(name) != Version(pin)
    ]
    for pkg, dep_name in (
        ("vllm", "torch"),
        ("vllm", "transformers"),
        ("vllm", "torchvision"),
        ("trl", "transformers"),
        ("trl", "accelerate"),
    ):
        for dep in installed.get(pkg, {}).get("requires_dist", []):
            req = Requirement(dep)
            if (
                req.name.lower() == dep_name
                and not req.marker
                and dep_name in version
                and not req.specifier.contains(version[dep_name], prereleases=True)
            ):
                problems.append(
                    f"{pkg} requires {dep}, but {dep_name} {version[dep_name]} would be installed"
                )
    trl_vllm = [
        Requirement(d) for d in installed.get("trl", {}).get("requires_dist", []) if d.startswith("vllm")
    ]
    if trl_vllm and "vllm" in version and not trl_vllm[0].specifier.contains(version["vllm"]):
        problems.append(f"TRL supports {trl_vllm[0]}, but vllm {version['vllm']} would be installed")
    if "flash-attn" in installed:
        problems.append("flash-attn is in the resolution: it builds from source; keep it a separate step")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report", type=Path, help="keep pip's JSON report here")
    args = ap.parse_args()
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        print(f"SKIPPED: run on x86-64 Linux (this is {platform.system()} {platform.machine()})")
        return 0
    if not index_reachable():
        print("SKIPPED: the package index is not reachable")
        return 0
    pins = constraints(ROOT / "constraints" / "gpu.txt")
    with tempfile.TemporaryDirectory() as tmp:
        report_path = args.report or Path(tmp) / "report.json"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report_path),
            "-c",
            str(ROOT / "constraints" / "gpu.txt"),
            "-e",
            f"{ROOT}[{EXTRAS}]",
        ]
        print("$", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
            print("FAILED: the GPU install does not resolve")
            return 1
        report = json.loads(report_path.read_text())
    problems = check(report, pins)
    names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    print("would install: " + ", ".join(f"{k}=={names[k]}" for k in sorted(pins) if k in names))
    for p in problems:
        print("PROBLEM:", p)
    print("OK: the GPU install resolves and its versions agree" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
