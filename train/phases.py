"""Phased RL over a curriculum: one phase per stage, each starting from the previous phase's checkpoint."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from curriculum.manifest import check as check_manifest
from datagen.core.errors import LongmillError
from datagen.core.io import atomic_write_bytes, atomic_write_json
from datagen.core.manifest import load_manifest
from eval.models import resolve_model
from train.backends import TRAINER_BACKENDS, StageSpec
from train.config import GRPOPhaseConfig

log = logging.getLogger(__name__)


def run_phases(curriculum: str | Path, out: str | Path, config: GRPOPhaseConfig, backend: str = "trl",
               resume: bool = False, phases: list[int] | None = None, **backend_options: Any) -> dict[str, Any]:
    """Train phase 1..K over ``curriculum``'s stages in order (``python -m train grpo``).

    Args:
        curriculum: a folder built by ``python -m curriculum build``.
        out: the run folder (``phase-K/`` per phase, ``summary.json``).
        config: the phase settings (shared by every phase).
        backend: a name in :data:`TRAINER_BACKENDS`.
        resume: finished phases are skipped and an unfinished one continues from its last checkpoint.
        phases: run only these phase numbers (1-based); earlier ones must be finished.
        backend_options: passed to the backend's constructor.

    Returns:
        The summary: each phase's checkpoint and figures. ``OUT/final`` links to the last phase's model.
    """
    from accelerate import PartialState

    state = PartialState()  # one process, or every rank of a torchrun/accelerate launch
    curriculum, out = Path(curriculum), Path(out)
    check_manifest(curriculum)  # the shards are the ones the manifest describes (hashes, no stale stages)
    manifest = load_manifest(curriculum)
    stages = StageSpec.from_manifest(curriculum, manifest)
    out.mkdir(parents=True, exist_ok=True)
    done = [p for p in sorted(out.glob("phase-*/phase.json"))]
    if done and not resume and backend == "trl":
        raise LongmillError(f"{out} already holds finished phases ({', '.join(p.parent.name for p in done)}); "
                            "pass --resume to continue that run, or choose another --out")
    state.wait_for_everyone()  # every rank has checked the folder before the main process writes to it
    if state.is_main_process:
        atomic_write_bytes(out / "config.yaml", yaml.safe_dump(plain(config.given), sort_keys=True).encode())
    runner = TRAINER_BACKENDS.get(backend)(config, out, resume=resume, **backend_options)
    init = resolve_model(config.model)
    summary: dict[str, Any] = {"curriculum": str(curriculum), "backend": backend, "phases": []}
    for stage in stages:
        marker = out / f"phase-{stage.index}" / "phase.json"
        if backend == "trl" and marker.exists():
            info = json.loads(marker.read_text())
            if info.get("init_checkpoint") != str(init):
                raise LongmillError(f"{marker} started from {info.get('init_checkpoint')}, not {init}; the run's "
                                    "settings changed: use another --out")
            log.info("phase %d already finished: %s", stage.index, info["checkpoint"])
            summary["phases"].append(info)
            init = info["checkpoint"]
            continue
        if phases and stage.index not in phases:
            raise LongmillError(f"phase {stage.index} is not finished, so phase {min(phases)} cannot start yet")
        checkpoint = runner.run_phase(stage, str(init))
        info = json.loads(marker.read_text()) if marker.exists() else {"phase": stage.index, "stage": stage.name,
                                                                       "checkpoint": checkpoint}
        summary["phases"].append(info)
        init = checkpoint
        if phases and stage.index == max(phases):
            break
    if hasattr(runner, "finish"):
        summary["run_all"] = str(runner.finish())
    summary["final_checkpoint"] = str(init)
    if state.is_main_process:
        if backend == "trl":
            # OUT/final always names the last phase's model, whatever the number of phases; replaced atomically.
            link = out / "final"
            tmp = out / f".final.{os.getpid()}"
            tmp.symlink_to(Path(init).resolve().relative_to(out.resolve()), target_is_directory=True)
            os.replace(tmp, link)
        atomic_write_json(out / "summary.json", summary)
    state.wait_for_everyone()
    return summary


def plain(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with enums as their values and tuples as lists (what yaml.safe_dump accepts)."""
    import enum

    def conv(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in values.items()}
