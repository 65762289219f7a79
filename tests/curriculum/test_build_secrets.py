"""`curriculum build` with model difficulty from an OpenAI-compatible server: the URL's credentials and
an `api_key=` backend option reach the server (a real one on loopback) and no file the build writes."""

from __future__ import annotations

import json

import pytest

from datagen.generators.base import GenConfig
from datagen.runner import RunConfig, run_generator
from datagen.sources import get_source

from ..cli import files_holding, run_cli
from ..eval.fake_server import FakeServer


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "qa-1500"
    run_generator(
        "longqa",
        GenConfig(length=1500, seed=4),
        get_source("synthetic", options={"num_triplets": 20}),
        RunConfig(out=out, num_samples=6),
    )
    return out


@pytest.mark.parametrize("secret_in", ["url", "backend_option"])
def test_build_writes_no_secret_to_any_file(shards, tmp_path, monkeypatch, secret_in):
    from curriculum.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeServer() as server:
        if secret_in == "url":
            secret = "pa55-build-word"
            auth = [
                "--difficulty-backend-option",
                "url=" + server.url.replace("http://", f"http://builder:{secret}@"),
            ]
        else:
            secret = "sk-build-5551234"
            auth = ["--difficulty-backend-option", f"url={server.url}", "--difficulty-backend-option"]
            auth += [f"api_key={secret},concurrency=2"]
        args = ["build", "--input", shards, "--out", tmp_path / "c", "--stats-out", tmp_path / "stats.json"]
        args += [
            "--bins",
            "1500",
            "--eval-share",
            "0",
            "--no-filter-extremes",
            "--difficulty-model",
            "served",
        ]
        args += ["--difficulty-backend", "openai", "--k", "2", "--difficulty-max-tokens", "8", *auth]
        proc = run_cli(main, *map(str, args), prog_name="python -m curriculum")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        sent = {r.headers["Authorization"].split()[0] for r in server.requests}
    assert sent == ({"Basic"} if secret_in == "url" else {"Bearer"}) and len(server.requests) == 6
    assert files_holding(tmp_path, secret) == []
    assert secret not in proc.stdout + proc.stderr
    config = json.loads((tmp_path / "c" / "manifest.json").read_text())["config"]
    if secret_in == "url":
        assert config["difficulty_backend_option"] == ["url=http://***@" + server.url.split("//")[1]]
    else:
        assert config["difficulty_backend_option"] == [f"url={server.url}", "api_key=***", "concurrency=2"]
