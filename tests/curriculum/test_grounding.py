"""Knowledge-grounding / contextual-robustness filter: known pass rates from a deterministic backend,
and a real tiny Qwen2 model through the hf backend on CPU."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import eval.backends  # noqa: F401  (registers the built-in backends)
from curriculum.grounding import CLOSED_BOOK_PROMPT, GroundingConfig, ground
from datagen.generators.base import GenConfig
from datagen.runner import RunConfig, run_generator
from datagen.sources import get_source
from eval.backends.base import BACKENDS, GenerationBackend
from eval.run import GenerateConfig
from longmill.errors import LongmillError

CLOSED_MARK = CLOSED_BOOK_PROMPT.split("{")[0]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("g") / "qa-1500"
    run_generator(
        "longqa",
        GenConfig(length=1500, seed=2),
        get_source("synthetic", options={"num_triplets": 30}),
        RunConfig(out=out, num_samples=6),
    )
    return out


def rows_of(folder):
    return [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


class FakeBackend(GenerationBackend):
    """Answers a question right on a fixed number of its k completions: ``plan[question] = (closed, context)``;
    a count of None makes the generation fail (None), as a dead endpoint does."""

    name = "fake-grounding"
    plan: dict[str, tuple[int | None, int | None]] = {}
    answers: dict[str, str] = {}
    calls: list[int] = []
    #: every prompt seen, as (closed book?, its text), for the tests to check what each kind holds
    seen: list[tuple[bool, str]] = []

    def __init__(self, model, **kw):
        pass

    def generate(self, prompts, n=1, sampling=None, progress=None):
        out = []
        for p in prompts:
            text = p[-1]["content"]
            closed = text.startswith(CLOSED_MARK)
            q = next(q for q in self.plan if q in text)
            right = self.plan[q][0 if closed else 1]
            FakeBackend.calls.append(n)
            FakeBackend.seen.append((closed, text))
            out.append(
                None
                if right is None
                else [
                    f"Therefore, the answer is {self.answers[q] if j < right else 'nobody at all'}."
                    for j in range(n)
                ]
            )
            if progress:
                progress(1)
        return out


@pytest.fixture()
def fake(shards, monkeypatch):
    monkeypatch.setitem(BACKENDS._items, "fake-grounding", FakeBackend)
    rs = rows_of(shards)
    plan = {r["question"]: (0, 4) for r in rs}
    plan[rs[0]["question"]] = (2, 4)  # answerable closed book: 2/4
    plan[rs[1]["question"]] = (0, 3)  # needs the context: 0/4 closed, 3/4 with it
    plan[rs[2]["question"]] = (None, 1)  # the closed-book generation fails
    plan[rs[3]["question"]] = (4, None)  # always answerable; the context generation fails
    monkeypatch.setattr(FakeBackend, "plan", plan)
    monkeypatch.setattr(FakeBackend, "answers", {r["question"]: r["answers"][0] for r in rs})
    monkeypatch.setattr(FakeBackend, "calls", [])
    monkeypatch.setattr(FakeBackend, "seen", [])
    return rs


def gen_config() -> GenerateConfig:
    """The generation settings (built while the fake backend is registered: unknown backends are refused)."""
    return GenerateConfig(model="fake", backend="fake-grounding", temperature=0.7)


def test_known_pass_rates_are_recorded_and_answerable_samples_dropped(shards, fake, tmp_path):
    stats = ground(shards, tmp_path / "g", GroundingConfig(k=4), gen_config())
    out = {r["uid"]: r for r in rows_of(tmp_path / "g")}
    u = [r["uid"] for r in fake]
    assert u[0] not in out and u[3] not in out  # closed-book rates 0.5 and 1.0 > 0
    assert out[u[1]]["closed_book_pass_rate"] == 0.0 and out[u[1]]["context_pass_rate"] == 0.75
    assert (
        out[u[2]]["closed_book_pass_rate"] is None and out[u[2]]["context_pass_rate"] == 0.25
    )  # failure kept
    assert all(out[x]["context_pass_rate"] == 1.0 for x in u[4:])
    assert all(r["grounding_flag"] is None for r in out.values())
    assert set(FakeBackend.calls) == {4}
    assert stats["read"] == 6 and stats["written"] == 4
    assert stats["dropped"] == {"answerable_closed_book": 2}
    assert stats["generation_failed"] == {"closed_book": 1, "context": 1}
    assert stats["closed_book_pass_rate"]["max"] == 1.0 and stats["context_pass_rate"]["min"] == 0.25
    assert json.loads((tmp_path / "g" / "stats.json").read_text()) == stats
    # The rows keep the sample schema (its three grounding columns, null in the input, are filled in).
    schema = pq.read_schema(next((tmp_path / "g").glob("part-*.parquet")))
    src = pq.read_schema(next(shards.glob("part-*.parquet")))
    assert schema.names == src.names and {
        "closed_book_pass_rate",
        "context_pass_rate",
        "grounding_flag",
    } <= set(src.names)
    assert schema.metadata == src.metadata
    from datagen.verify import verify

    report = verify(tmp_path / "g")  # a grounded folder is still a valid sample folder
    assert report.ok, [str(v) for v in report.violations[:3]]

    # what each pass was shown: the closed-book prompts hold the question and no gold-document text at all
    # (not one sentence of it), the with-context prompts hold every gold document
    closed = [t for c, t in FakeBackend.seen if c]
    context = [t for c, t in FakeBackend.seen if not c]
    assert len(closed) == len(context) == len(fake)
    for r in fake:
        gold_sentences = [s for d in r["gold_docs"] for s in d["text"].split(". ") if len(s) > 20]
        mine = [t for t in closed if r["question"] in t]
        assert len(mine) == 1 and not any(s in mine[0] for s in gold_sentences)
        assert not any(d["title"] in mine[0] for d in r["gold_docs"] if d["title"] not in r["question"])
        ctx = [t for t in context if r["question"] in t]
        assert len(ctx) == 1 and all(d["text"] in ctx[0] for d in r["gold_docs"])


def test_flag_mode_keeps_every_row_and_marks_the_answerable_ones(shards, fake, tmp_path):
    stats = ground(shards, tmp_path / "g", GroundingConfig(k=4, action="flag"), gen_config())
    rs = rows_of(tmp_path / "g")
    assert [r["uid"] for r in rs] == [r["uid"] for r in fake]
    assert [r["grounding_flag"] for r in rs] == [
        "answerable_closed_book",
        None,
        None,
        "answerable_closed_book",
        None,
        None,
    ]
    assert stats["dropped"] == {} and stats["flagged"] == {"answerable_closed_book": 2}
    # A looser threshold keeps the half-answerable one; no context pass leaves that column null.
    stats = ground(
        shards, tmp_path / "h", GroundingConfig(k=4, max_closed_book=0.5, with_context=False), gen_config()
    )
    rs = rows_of(tmp_path / "h")
    assert stats["dropped"] == {"answerable_closed_book": 1} and all(
        r["context_pass_rate"] is None for r in rs
    )
    assert rs[0]["closed_book_pass_rate"] == 0.5


def test_same_input_same_bytes_and_a_rerun_resumes_from_the_rollouts(shards, fake, tmp_path):
    ground(shards, tmp_path / "a", GroundingConfig(k=4), gen_config())
    n_calls = len(FakeBackend.calls)
    # every rollout that succeeded is on file; only the two prompts whose generation failed are asked again
    ground(shards, tmp_path / "a", GroundingConfig(k=4), gen_config())
    assert len(FakeBackend.calls) == n_calls + 2
    ground(shards, tmp_path / "b", GroundingConfig(k=4), gen_config())

    def sha(folder):
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*.parquet"))]

    assert sha(tmp_path / "a") == sha(tmp_path / "b")


def test_the_cli_runs_the_filter(shards, fake, tmp_path):
    from curriculum.cli import main

    res = CliRunner().invoke(
        main,
        [
            "ground",
            "--input",
            str(shards),
            "--out",
            str(tmp_path / "g"),
            "--k",
            "4",
            "--backend",
            "fake-grounding",
            "--model",
            "fake",
            "--stats-out",
            str(tmp_path / "s.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "dropped: {'answerable_closed_book': 2}" in res.output
    assert json.loads((tmp_path / "s.json").read_text())["written"] == 4


@pytest.mark.parametrize(
    "bad", [dict(k=0), dict(max_closed_book=1.5), dict(action="keep"), dict(rule="nope")]
)
def test_bad_options_are_rejected(bad):
    with pytest.raises(LongmillError):
        GroundingConfig(**bad)


def test_a_folder_without_samples_is_an_error(tmp_path, fake):
    import pyarrow as pa

    (tmp_path / "x").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "x" / "part-00000.parquet")
    with pytest.raises(LongmillError, match="not a sample shard folder"):
        ground(tmp_path / "x", tmp_path / "g", GroundingConfig(), gen_config())


def test_a_tiny_qwen2_on_cpu_end_to_end(shards, tmp_path, tiny_qwen2):
    """The real hf backend: a random tiny model answers nothing, so nothing is dropped and both rates are 0."""
    gen = GenerateConfig(
        model=str(tiny_qwen2),
        backend="hf",
        temperature=0.7,
        max_tokens=3,
        backend_option="device=cpu",
        batch_size=8,
    )
    stats = ground(shards, tmp_path / "g", GroundingConfig(k=2), gen)
    rs = rows_of(tmp_path / "g")
    assert len(rs) == 6 and stats["dropped"] == {} and stats["generation_failed"] == {}
    assert all(r["closed_book_pass_rate"] == 0.0 and r["context_pass_rate"] == 0.0 for r in rs)
    for name in ("closed_book.jsonl", "context.jsonl"):
        lines = (tmp_path / "g" / "grounding" / name).read_text().splitlines()
        assert len(lines) == 6 and all(len(json.loads(x)["completions"]) == 2 for x in lines)


def test_ground_writes_no_secret_to_any_file(shards, tmp_path, monkeypatch):
    """URL credentials and an API key reach the server (a real loopback one) but no file: not the stats,
    not the --stats-out copy, not the rollouts' meta files."""
    from curriculum.cli import main

    from ..cli import files_holding, run_cli
    from ..eval.fake_server import FakeServer

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeServer() as server:
        creds = server.url.replace("http://", "http://grounder:pa55-ground-word@")
        for name, auth in (
            ("creds", ["--backend-option", f"url={creds}"]),
            ("key", ["--backend-option", f"url={server.url},api_key=sk-ground-987654"]),
        ):
            args = [
                "ground",
                "--input",
                shards,
                "--out",
                tmp_path / name,
                "--stats-out",
                tmp_path / f"{name}.json",
            ]
            args += ["--k", "2", "--backend", "openai", "--model", "served", "--max-tokens", "8", *auth]
            proc = run_cli(main, *map(str, args), prog_name="python -m curriculum")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert "pa55-ground-word" not in proc.stderr + proc.stdout and "sk-ground" not in proc.stderr
        sent = {r.headers["Authorization"] for r in server.requests}
    assert len(sent) == 2 and "Bearer sk-ground-987654" in sent  # the Basic one and the key
    assert files_holding(tmp_path, "pa55-ground-word", "sk-ground-987654") == []
    stats = json.loads((tmp_path / "creds.json").read_text())
    assert (
        stats["generation"]["backend_options"]["url"].startswith("http://***@127.0.0.1")
        and stats["read"] == 6
    )
    assert (
        json.loads((tmp_path / "key" / "stats.json").read_text())["generation"]["backend_options"]["api_key"]
        == "***"
    )


def test_ground_refuses_its_own_input_and_an_unfinished_run(shards, fake, tmp_path):
    import shutil

    before = {p.name: p.read_bytes() for p in shards.iterdir() if p.is_file()}
    for out, how in ((shards, "is the input"), (shards / "grounded", "lies inside the input")):
        with pytest.raises(LongmillError, match=how):
            ground(shards, out, GroundingConfig(k=4), gen_config())
    assert {p.name: p.read_bytes() for p in shards.iterdir() if p.is_file()} == before
    assert not (shards / "grounded").exists() and not (shards / "grounding").exists()
    killed = tmp_path / "killed"
    shutil.copytree(shards, killed)
    (killed / "stats.json").unlink()  # a generator run that was stopped before its end
    with pytest.raises(LongmillError, match="incomplete: it has no stats.json"):
        ground(killed, tmp_path / "g", GroundingConfig(k=4), gen_config())
    assert not (tmp_path / "g").exists() and FakeBackend.calls == []


def test_ground_fails_when_every_generation_failed(shards, fake, tmp_path, monkeypatch):
    from curriculum.cli import main

    from ..cli import run_cli

    monkeypatch.setattr(FakeBackend, "plan", {q: (None, None) for q in FakeBackend.plan})
    args = ["ground", "--input", shards, "--out", tmp_path / "g", "--k", "4", "--backend", "fake-grounding"]
    proc = run_cli(main, *map(str, [*args, "--model", "fake"]), prog_name="python -m curriculum")
    assert proc.returncode == 2
    assert "every closed book generation failed (6 of 6 samples)" in proc.stderr
    assert not list((tmp_path / "g").glob("part-*.parquet")) and not (tmp_path / "g" / "stats.json").exists()


def test_a_second_ground_into_a_folder_being_written_fails(shards, fake, tmp_path):
    from datagen.shards import OutputLock

    with OutputLock(tmp_path / "g"):
        with pytest.raises(LongmillError, match="being written by another run"):
            ground(shards, tmp_path / "g", GroundingConfig(k=4), gen_config())
    assert FakeBackend.calls == [] and not (tmp_path / "g" / "grounding").exists()
