"""Phased RL over a curriculum: one phase per stage, each starting from the previous phase's checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from eval.models import resolve_model
from longmill.errors import LongmillError
from longmill.io import atomic_write_bytes, atomic_write_json
from longmill.manifest import check as check_manifest
from longmill.manifest import load_manifest
from train.backends import TRAINER_BACKENDS, StageSpec, TrainerBackend
from train.config import GRPOPhaseConfig

log = logging.getLogger(__name__)


def run_phases(
    curriculum: str | Path,
    out: str | Path,
    config: GRPOPhaseConfig,
    backend: str = "trl",
    resume: bool = False,
    phases: list[int] | None = None,
    **backend_options: Any,
) -> dict[str, Any]:
    """Train phase 1..K over ``curriculum``'s stages in order (``python -m train grpo``).

    Nothing here depends on which backend runs: what differs (resumability, what a run leaves behind) is
    the backend's to say (:class:`train.backends.TrainerBackend`).

    Args:
        curriculum: a folder built by ``python -m curriculum build``.
        out: the run folder (the backend's per-phase folders, ``config.yaml``, ``summary.json``).
        config: the phase settings (shared by every phase).
        backend: a name in :data:`TRAINER_BACKENDS`.
        resume: finished phases are skipped and an unfinished one continues from its last checkpoint.
        phases: run only these phase numbers (1-based); earlier ones must be finished.
        backend_options: passed to the backend's constructor.

    Returns:
        The summary: each phase's record, the final checkpoint, and what the backend's ``finish`` adds.

    Raises:
        LongmillError: a resumable backend's finished phases in ``out`` without ``resume``, or a finished
            phase that started from another model than this run's.
    """
    from accelerate import PartialState

    state = PartialState()  # one process, or every rank of a torchrun/accelerate launch
    curriculum, out = Path(curriculum), Path(out)
    check_manifest(curriculum)  # the shards are the ones the manifest describes (hashes, no stale stages)
    manifest = load_manifest(curriculum)
    stages = StageSpec.from_manifest(curriculum, manifest)
    out.mkdir(parents=True, exist_ok=True)
    runner: TrainerBackend = TRAINER_BACKENDS.get(backend)(config, out, resume=resume, **backend_options)
    finished = {s.index: runner.finished_phase(s) for s in stages} if runner.resumable else {}
    done = [f"phase-{k}" for k, info in finished.items() if info]
    if done and not resume:
        raise LongmillError(
            f"{out} already holds finished phases ({', '.join(done)}); "
            "pass --resume to continue that run, or choose another --out"
        )
    state.wait_for_everyone()  # every rank has checked the folder before the main process writes to it
    if state.is_main_process:
        atomic_write_bytes(out / "config.yaml", yaml.safe_dump(plain(config.given), sort_keys=True).encode())
    init = str(resolve_model(config.model))
    summary: dict[str, Any] = {"curriculum": str(curriculum), "backend": backend, "phases": []}
    for stage in stages:
        info = finished.get(stage.index)
        if info:
            if info.get("init_checkpoint") != init:
                raise LongmillError(
                    f"phase {stage.index} in {out} started from {info.get('init_checkpoint')}, not "
                    f"{init}; the run's settings changed: use another --out"
                )
            log.info("phase %d already finished: %s", stage.index, info["checkpoint"])
            summary["phases"].append(info)
            init = str(info["checkpoint"])
            continue
        if phases and stage.index not in phases:
            raise LongmillError(
                f"phase {stage.index} is not finished, so phase {min(phases)} cannot start yet"
            )
        info = runner.run_phase(stage, init)
        summary["phases"].append(info)
        init = str(info["checkpoint"])
        if phases and stage.index == max(phases):
            break
    summary.update(runner.finish(init))
    summary["final_checkpoint"] = init
    if state.is_main_process:
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
