from __future__ import annotations

import pytest

from curriculum.build import CurriculumConfig, build_curriculum
from datagen.generators.base import GenConfig
from datagen.runner import RunConfig, run_generator, run_triplets
from datagen.sources import get_source


@pytest.fixture(scope="session")
def small_curriculum(tmp_path_factory):
    """A two-stage curriculum of short long-QA prompts (300 and 400 tokens), cheap on CPU."""
    root = tmp_path_factory.mktemp("train-data")
    src = get_source("synthetic", options={"num_triplets": 60})
    ins = []
    for length in (300, 400):
        run_generator(
            "longqa",
            GenConfig(length=length, seed=2),
            src,
            RunConfig(out=root / f"qa-{length}", num_samples=12),
        )
        ins.append(root / f"qa-{length}")
    build_curriculum(ins, root / "curriculum", CurriculumConfig(bins=[300, 400], eval_share=0.0, seed=1))
    return root / "curriculum"


@pytest.fixture(scope="session")
def small_triplets(tmp_path_factory):
    out = tmp_path_factory.mktemp("triplets") / "synthetic"
    run_triplets(get_source("synthetic", options={"num_triplets": 24}), out)
    return out
