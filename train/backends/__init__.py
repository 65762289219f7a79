"""Trainer backends behind ``run_phase(stage, init_checkpoint) -> checkpoint``: ``trl`` (default), ``verl``."""

from train.backends import trl, verl  # noqa: F401  (registers them)
from train.backends.base import TRAINER_BACKENDS, StageSpec, TrainerBackend

__all__ = ["TRAINER_BACKENDS", "StageSpec", "TrainerBackend"]
