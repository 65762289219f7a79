"""The generation backend's and its HTTP client's counters reach the run's metrics (one Stats helper)."""

from __future__ import annotations

import json

from datagen.generators.keychain import KeyChainConfig
from datagen.runner import RunConfig, run_generator
from datagen.sources import get_source
from eval.run import GenerateConfig, run_eval

from .fake_server import FakeServer


def test_openai_backend_counts_are_merged_into_the_run_metrics(tmp_path):
    src = get_source("synthetic", options={"num_triplets": 200})
    run_generator(
        "keychain",
        KeyChainConfig(length=1500, num_chains=2, hops=2),
        src,
        RunConfig(out=tmp_path / "kc", num_samples=3),
    )
    with FakeServer() as server:
        gen = GenerateConfig(
            model="served",
            backend="openai",
            backend_option=[f"url={server.url}"],
            n=2,
            temperature=0.7,
            max_tokens=8,
        )
        m = run_eval(str(tmp_path / "kc"), tmp_path / "o", gen)
        sent = server.count()
    counts = m["config"]["generation_counts"]
    assert counts["generated"] == 3 and counts["failed"] == 0
    assert counts["backend"]["prompts"] == 3 and counts["backend"]["failed_prompts"] == 0
    assert counts["http"]["succeeded"] == counts["backend"]["requests"] + counts["backend"]["topup_requests"]
    assert counts["http"]["attempts"] == sent and counts["http"]["failures_by_reason"] == {}
    written = json.loads(next((tmp_path / "o").glob("metrics*.json")).read_text())
    assert written["config"]["generation_counts"]["backend"] == counts["backend"]
