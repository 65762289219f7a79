"""Per-phase training logs as JSON lines and CSV, for humans and for `dvc plots`."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from longmill.io import atomic_write_bytes

log = logging.getLogger(__name__)

#: The columns of metrics.csv (TRL's names; missing ones stay empty).
CSV_COLUMNS = (
    "step",
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "rewards/hybrid_qa/mean",
    "hybrid_qa/accuracy",
    "entropy",
    "clip_ratio/region_mean",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "completions/mean_length",
    "completions/clipped_ratio",
    "dynamic_sampling/filtered_share",
    "dynamic_sampling/replaced_share",
    "dynamic_sampling/remaining_share",
    "dynamic_sampling/rounds",
    "hybrid_qa/judge_failed",
    "sampling/importance_sampling_ratio/min",
    "sampling/importance_sampling_ratio/mean",
    "sampling/importance_sampling_ratio/max",
    "sampling/sampling_logp_difference/mean",
    "sampling/sampling_logp_difference/max",
    "loss",
    "learning_rate",
    "step_time",
)


class MetricsLogger(TrainerCallback):
    """Keeps every log in ``metrics.jsonl`` and ``metrics.csv`` (rewritten atomically on each log).

    Args:
        folder: the phase folder.
        phase: the phase number, stored in each record.
        resume_step: on resume, records after this step (written before the kill, after the last
            checkpoint) are dropped so that each step appears once.
        csv_copy: also write the CSV here (e.g. a `dvc plots` folder outside the run's outputs).
        is_main: whether this process writes (only the main process of a multi-GPU run does); default:
            accelerate's view of this process.
    """

    def __init__(
        self,
        folder: str | Path,
        phase: int,
        resume_step: int | None = None,
        csv_copy: str | Path | None = None,
        is_main: bool | None = None,
    ):
        if is_main is None:
            from accelerate import PartialState

            is_main = PartialState().is_main_process
        self.is_main = is_main
        self.jsonl = Path(folder) / "metrics.jsonl"
        self.csv = Path(folder) / "metrics.csv"
        self.csv_copy = Path(csv_copy) if csv_copy else None
        self.phase = phase
        self.records: list[dict[str, Any]] = []
        if self.jsonl.exists():
            for line in self.jsonl.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a kill
                if resume_step is not None and rec.get("step", 0) <= resume_step:
                    self.records.append(rec)
        if self.is_main:
            self._rewrite()

    def _rewrite(self) -> None:
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.jsonl, "".join(json.dumps(r) + "\n" for r in self.records).encode())
        buf = io.StringIO()
        w = csv.DictWriter(
            buf, fieldnames=["phase", *CSV_COLUMNS], extrasaction="ignore", lineterminator="\n"
        )
        w.writeheader()
        for r in self.records:
            if "reward" in r or "loss" in r:
                w.writerow(r)
        atomic_write_bytes(self.csv, buf.getvalue().encode())
        if self.csv_copy:
            atomic_write_bytes(self.csv_copy, buf.getvalue().encode())

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401 - transformers' hook
        if not logs or not state.is_world_process_zero or not self.is_main:
            return
        rec = {
            "phase": self.phase,
            "step": int(state.global_step),
            **{k: v for k, v in logs.items() if isinstance(v, int | float)},
        }
        self.records.append(rec)
        self._rewrite()  # small files, rewritten whole and atomically: a kill never leaves a torn line
