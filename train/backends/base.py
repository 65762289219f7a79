"""The trainer-backend interface: what :func:`train.phases.run_phases` needs from a backend.

A backend runs (or prepares) one phase at a time and says, through class attributes and small methods,
whatever the phase loop would otherwise learn by testing its name: whether it trains on this host,
whether finished phases can be skipped on resume, and what it leaves behind when the run ends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from longmill.registry import Registry


@dataclass
class StageSpec:
    """One curriculum stage as a trainer sees it.

    Args:
        index: 1-based phase number.
        name: the stage folder's name (``stage-1``).
        files: its Parquet shards.
        max_prompt_length: the stage's length bin edge (no prompt is longer).
        rows: samples in the stage.
        eval_files: the curriculum's held-out shards (for validation), possibly empty.
    """

    index: int
    name: str
    files: list[Path]
    max_prompt_length: int
    rows: int
    eval_files: list[Path]

    @classmethod
    def from_manifest(cls, curriculum: Path, manifest: dict[str, Any]) -> list[StageSpec]:
        evals = [curriculum / "eval" / s["file"] for s in manifest["eval"]["shards"] if s["rows"]]
        return [
            cls(
                index=i + 1,
                name=s["name"],
                files=[curriculum / s["name"] / sh["file"] for sh in s["shards"]],
                max_prompt_length=int(s["max_prompt_length"]),
                rows=int(s["rows"]),
                eval_files=evals,
            )
            for i, s in enumerate(manifest["stages"])
        ]


class TrainerBackend(ABC):
    """A trainer behind :func:`train.phases.run_phases`; register subclasses in :data:`TRAINER_BACKENDS`.

    A subclass is constructed as ``Backend(config, out, resume=..., **options)`` with the phase settings,
    the run folder and its own options (passed through ``run_phases``), and must accept options meant for
    other backends (``**_``) or name every one it takes.

    Class attributes:
        name: the registry name (``--backend``).
        trains_here: whether phases train on this host. Backends that only write commands for another
            cluster set it to False, so this host's checks of the settings (TRL refuses bf16 without a
            GPU) are left to the training host.
        resumable: whether finished phases leave a record (:meth:`finished_phase`). A resumable run skips
            them with ``resume=True`` and refuses to silently redo them without it.
    """

    name: ClassVar[str]
    trains_here: ClassVar[bool] = True
    resumable: ClassVar[bool] = False

    @classmethod
    def preflight(cls, config: Any, curriculum: str | Path) -> list[str]:
        """Warnings about ``config`` over ``curriculum`` before anything runs (e.g. an expected memory shortfall)."""
        return []

    @abstractmethod
    def run_phase(self, stage: StageSpec, init_checkpoint: str) -> dict[str, Any]:
        """Train (or prepare) ``stage`` from ``init_checkpoint``.

        Returns:
            The phase's record: at least ``phase``, ``stage`` and ``checkpoint`` (what the next phase starts
            from); a resumable backend also gives ``init_checkpoint``.
        """

    def finished_phase(self, stage: StageSpec) -> dict[str, Any] | None:
        """The record of ``stage`` when an earlier run finished it (resumable backends), else None."""
        return None

    def finish(self, final_checkpoint: str) -> dict[str, Any]:
        """Called once after the last phase; returns entries for the run's summary (e.g. a script to run)."""
        return {}


TRAINER_BACKENDS: Registry[type[TrainerBackend]] = Registry("trainer backend")
