"""The trainer interface: one small method, ``run_phase(stage, init_checkpoint) -> checkpoint``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from datagen.core.registry import Registry


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
        return [cls(index=i + 1, name=s["name"], files=[curriculum / s["name"] / sh["file"] for sh in s["shards"]],
                    max_prompt_length=int(s["max_prompt_length"]), rows=int(s["rows"]), eval_files=evals)
                for i, s in enumerate(manifest["stages"])]


class TrainerBackend(Protocol):
    """Trains (or prepares) one phase from ``init_checkpoint`` and returns the phase's checkpoint."""

    name: str

    def run_phase(self, stage: StageSpec, init_checkpoint: str) -> str: ...


TRAINER_BACKENDS: Registry[type] = Registry("trainer backend")
