"""`eval run` resumes only what matches, retries failed prompts, and exits non-zero on untrustworthy runs.

In-process (click's CliRunner and run_eval) against the loopback OpenAI-compatible server, so no model
is loaded and every test is fast.
"""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from eval.cli import main
from eval.run import GenerateConfig, meta_path, run_eval
from longmill.errors import LongmillError

from .fake_server import Action, FakeServer


@pytest.fixture
def longbench(tmp_path):
    path = tmp_path / "hotpotqa.jsonl"
    recs = [
        {
            "input": f"Who founded company {i}?",
            "context": f"Company {i} was founded by Ada {i}. " * 5,
            "answers": [f"Ada {i}"],
            "dataset": "hotpotqa",
            "_id": f"lb{i}",
        }
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def gen(server: FakeServer, url: str | None = None, **overrides) -> GenerateConfig:
    options = dict(
        model="served",
        backend="openai",
        n=1,
        max_tokens=8,
        backend_option=[f"url={url or server.url}", "max_retries=0", "api_key_env="],
    )
    options.update(overrides)
    return GenerateConfig(**options)


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_matching_predictions_are_reused_and_recorded(tmp_path, server, longbench):
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server))
    assert server.count() == 4
    meta = json.loads(meta_path(out / "predictions.jsonl").read_text())
    assert meta["generation"]["model"] == "served" and meta["generation"]["temperature"] == 0.0
    assert meta["data"] == str(longbench) and meta["items"] == 4 and meta["data_fingerprint"]
    assert all(len(rec["prompt_sha"]) == 16 for rec in lines(out / "predictions.jsonl"))
    # Same settings (another batch size and URL do not matter): nothing is generated again.
    run_eval(str(longbench), out, gen(server, batch_size=1))
    assert server.count() == 4


@pytest.mark.parametrize(
    "change, field",
    [
        ({"model": "another-model"}, "model: 'served' then, 'another-model' now"),
        ({"temperature": 0.7}, "temperature: 0.0 then, 0.7 now"),
        ({"max_tokens": 99}, "max_tokens"),
        ({"n": 2, "temperature": 0.7}, "n: 1 then, 2 now"),
    ],
)
def test_predictions_made_otherwise_are_refused_or_regenerated(tmp_path, server, longbench, change, field):
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server))
    before = (out / "predictions.jsonl").read_text()
    with pytest.raises(LongmillError, match="--regenerate") as info:
        run_eval(str(longbench), out, gen(server, **change))
    assert field in str(info.value) and "other settings" in str(info.value)
    assert (out / "predictions.jsonl").read_text() == before  # nothing touched
    run_eval(str(longbench), out, gen(server, **change), regenerate=True)
    assert (out / "predictions.jsonl.old").read_text() == before  # moved aside, not lost
    assert (
        json.loads(meta_path(out / "predictions.jsonl").read_text())["generation"] | change
        == json.loads(meta_path(out / "predictions.jsonl").read_text())["generation"]
    )
    assert server.count() == 8


def test_a_model_retrained_into_the_same_folder_does_not_pass_for_the_old_one(tmp_path, server, longbench):
    """The model is a local folder; its weights are replaced (as a new training run saving to the same path
    would): the old predictions are refused, not reused as the new model's."""
    import os

    model = tmp_path / "runs" / "sft" / "final"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"old weights")
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server, model=str(model)))
    run_eval(str(longbench), out, gen(server, model=str(model)))  # the same folder, untouched: reused
    assert server.count() == 4
    st = (model / "model.safetensors").stat()
    (model / "model.safetensors").write_bytes(b"new weights")  # same size and name
    os.utime(model / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(LongmillError, match="--regenerate") as info:
        run_eval(str(longbench), out, gen(server, model=str(model)))
    assert "model_files" in str(info.value) and server.count() == 4


def test_changed_data_or_a_missing_record_is_refused(tmp_path, server, longbench):
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server))
    recs = [json.loads(x) for x in longbench.read_text().splitlines()]
    recs[2]["context"] = "Company 2 was founded by Bea 2. " * 5  # same uid, another prompt
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(LongmillError, match=r"1 uid\(s\) now have a different prompt \(first: lb2\)"):
        run_eval(str(changed), out, gen(server))
    meta_path(out / "predictions.jsonl").unlink()  # e.g. written by an older longmill
    with pytest.raises(LongmillError, match="predictions.meta.json is missing"):
        run_eval(str(longbench), out, gen(server))


def test_a_smaller_limit_reuses_the_matching_predictions(tmp_path, server, longbench):
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server), limit=2)
    m = run_eval(str(longbench), out, gen(server))
    assert server.count() == 4 and m["counts"]["generation_failed"] == 0 and m["overall"]["n"] == 4


def test_generation_failures_are_retried_and_the_run_exits_non_zero(tmp_path, server, longbench):
    down = {"company 1?": True}
    server.rule = lambda body: (
        Action.error(400) if down["company 1?"] and "company 1?" in body["messages"][-1]["content"] else None
    )
    out = tmp_path / "run"
    args = [
        "run",
        "--model",
        "served",
        "--backend",
        "openai",
        "--backend-option",
        f"url={server.url},max_retries=0",
        "--max-tokens",
        "8",
        "--data",
        str(longbench),
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "1 prompt(s) failed to generate" in res.output and "run the same command again" in res.output
    assert sorted(r["uid"] for r in lines(out / "predictions.jsonl")) == ["lb0", "lb2", "lb3"]  # not recorded
    m = json.loads((out / "metrics.json").read_text())
    assert m["counts"]["generation_failed"] == 1 and m["counts"]["missing_predictions"] == 0
    assert "failed to generate" in m["problems"][0] and "## Problems" in (out / "report.md").read_text()
    sent = server.count()
    down["company 1?"] = False
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert server.count() == sent + 1  # only the failed prompt was asked again
    assert sorted(r["uid"] for r in lines(out / "predictions.jsonl")) == ["lb0", "lb1", "lb2", "lb3"]
    assert "problems" not in json.loads((out / "metrics.json").read_text())


def test_failed_records_of_an_older_run_are_generated_again(tmp_path, server, longbench):
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server))
    recs = lines(out / "predictions.jsonl")
    recs[1] = {"uid": recs[1]["uid"], "completions": None, "error": "generation failed (see the log)"}
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = run_eval(str(longbench), out, gen(server))
    assert server.count() == 5 and m["counts"]["generation_failed"] == 0
    assert all(r["completions"] for r in lines(out / "predictions.jsonl"))


def test_eval_score_exits_non_zero_when_the_judge_fails_too_often(tmp_path, longbench):
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        "".join(
            json.dumps({"uid": f"lb{i}", "completions": [f"Therefore, the answer is Ada {i % 2}"]}) + "\n"
            for i in range(4)
        )
    )
    with FakeServer(default=Action.error(503, retry_after="0.01")) as judge:
        base = [
            "score",
            "--data",
            str(longbench),
            "--predictions",
            str(preds),
            "--judge-url",
            judge.url,
            "--judge-backend-option",
            "max_retries=1,timeout=2,api_key_env=LONGMILL_NO_KEY",
        ]
        res = CliRunner().invoke(
            main, [*base, "--out", str(tmp_path / "a")], env={"LONGMILL_NO_KEY": "k-123456"}
        )
        assert res.exit_code == 1, res.output
        assert (
            "judge failed on 2 of 2 calls (100%)" in res.output and "--max-judge-failures 0.05" in res.output
        )
        m = json.loads((tmp_path / "a" / "metrics.json").read_text())
        assert m["overall"]["max_em_judge"] == m["overall"]["em"] == 0.5  # the report is written all the same
        assert m["overall"]["max_em_judge_bound"] == 1.0
        assert judge.requests[0].headers["Authorization"] == "Bearer k-123456"
        assert "k-123456" not in (tmp_path / "a" / "metrics.json").read_text() + res.output
        res = CliRunner().invoke(
            main,
            [*base, "--out", str(tmp_path / "b"), "--max-judge-failures", "1"],
            env={"LONGMILL_NO_KEY": "k-123456"},
        )
        assert res.exit_code == 0, res.output
        assert "judge failed 2 of 2 calls" in res.output and "at most 1.000" in res.output
    res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "c"), "--max-judge-failures", "2"])
    assert res.exit_code == 2 and "share of judge calls" in res.output


def test_a_run_recorded_before_the_options_moved_into_the_backends_resumes(tmp_path, server, longbench):
    """Before, GenerateConfig recorded its own dtype ("auto") even for openai, which has no dtype option:
    an option the backend does not take cannot have changed its completions, so the run resumes. Settings
    that did change (here the backend) are still refused."""
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server))
    meta = out / "predictions.meta.json"
    record = json.loads(meta.read_text())
    assert record["generation"]["dtype"] is None
    record["generation"] |= {"dtype": "auto", "max_model_len": 4096}
    meta.write_text(json.dumps(record))
    asked = server.count()
    m = run_eval(str(longbench), out, gen(server))
    assert m["config"]["generation_counts"]["resumed"] == 4 and server.count() == asked
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["generation"]["backend_options"]["url"] == server.url
    record["generation"] |= {"backend": "vllm", "dtype": "bfloat16"}
    meta.write_text(json.dumps(record))
    with pytest.raises(LongmillError, match="backend: 'vllm' then, 'openai' now.*--regenerate"):
        run_eval(str(longbench), out, gen(server))


def test_credentials_in_urls_stay_out_of_the_report(tmp_path, server, longbench):
    url = server.url.replace("http://", "http://user:hunter22@")
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server, url=url))
    text = "".join(p.read_text() for p in out.glob("*.json*")) + (out / "report.md").read_text()
    assert "hunter22" not in text and "***@" in (out / "metrics.json").read_text()


def test_run_and_score_help_show_runnable_examples():
    for cmd in ("run", "score"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0 and "Examples:" in res.output and f"python -m eval {cmd} --" in res.output


def test_eval_run_writes_no_secret_to_any_file(tmp_path, server, longbench, monkeypatch):
    """`--backend-option api_key=KEY` and a judge URL with user:pass@: both reach the server, and neither
    reaches any file the run writes (nor its output)."""
    from ..cli import files_holding, run_cli

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.rule = lambda body: (
        None if "Prediction:" in str(body) else Action.ok("Therefore, the answer is Bea.")
    )
    judge_url = server.url.replace("http://", "http://judge:pa55-judge-word@")
    out = tmp_path / "run"
    args = [
        "-vv",
        "run",
        "--model",
        "served",
        "--backend",
        "openai",
        "--backend-option",
        f"url={server.url}",
        "--max-tokens",
        "8",
    ]
    args += ["--backend-option", "api_key=sk-gen-0123456789", "--data", longbench, "--out", out]
    args += [
        "--judge-url",
        judge_url,
        "--judge-cache",
        out / "judge.jsonl",
        "--judge-backend-option",
        "api_key_env=",
    ]
    proc = run_cli(main, *map(str, args), prog_name="python -m eval")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    auth = {r.headers["Authorization"].split()[0] for r in server.requests}
    assert server.requests[0].headers["Authorization"] == "Bearer sk-gen-0123456789" and auth == {
        "Bearer",
        "Basic",
    }
    written = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert {"metrics.json", "predictions.meta.json", "judge.jsonl", "report.md"} <= set(written)
    secrets = ("sk-gen-0123456789", "pa55-judge-word")
    assert files_holding(tmp_path, *secrets) == []
    assert not any(s in proc.stdout + proc.stderr for s in secrets)
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["generation"]["backend_option"] == [f"url={server.url}", "api_key=***"]
    assert m["config"]["generation"]["backend_options"]["api_key"] == "***"
    assert m["config"]["judge"]["url"].startswith("http://***@127.0.0.1")


def test_two_runs_into_one_out_cannot_both_write(tmp_path, server, longbench):
    """The second run fails at once while the first holds the folder; the first then finishes alone, with
    one line per uid."""
    import threading

    server.default = Action.ok("Therefore, the answer is Ada 0.", delay=0.5)
    out = tmp_path / "run"
    first = threading.Thread(target=run_eval, args=(str(longbench), out, gen(server, batch_size=1)))
    first.start()
    try:
        for _ in range(100):
            if server.count():
                break
            time.sleep(0.05)
        with pytest.raises(LongmillError, match="being written by another run"):
            run_eval(str(longbench), out, gen(server, batch_size=1))
    finally:
        first.join()
    assert sorted(r["uid"] for r in lines(out / "predictions.jsonl")) == ["lb0", "lb1", "lb2", "lb3"]
    assert server.count() == 4
    from datagen.shards import OutputLock

    with OutputLock(tmp_path / "scored"):  # `eval score` takes the same lock
        res = CliRunner().invoke(
            main,
            ["score", "--data", str(longbench), "--predictions", str(out / "predictions.jsonl"), "--out",
             str(tmp_path / "scored")],
        )  # fmt: skip
    assert res.exit_code == 2 and "being written by another run" in res.output
    assert not (tmp_path / "scored" / "metrics.json").exists()


def test_predictions_for_other_data_are_refused_or_regenerated(tmp_path, server, longbench):
    out = tmp_path / "run"
    run_eval(str(longbench), out, gen(server))
    recs = [json.loads(x) for x in longbench.read_text().splitlines()]
    other = tmp_path / "musique.jsonl"
    other.write_text(
        "".join(
            json.dumps(r | {"_id": f"mq{i}", "input": f"Where is {i}?"}) + "\n" for i, r in enumerate(recs)
        )
    )
    before = (out / "predictions.jsonl").read_bytes()
    with pytest.raises(
        LongmillError, match=r"predictions for other data: 4 of its 4 uid\(s\) .* \(first: lb0\)"
    ):
        run_eval(str(other), out, gen(server))
    assert (out / "predictions.jsonl").read_bytes() == before and server.count() == 4
    m = run_eval(str(other), out, gen(server), regenerate=True)
    assert m["overall"]["n"] == 4 and (out / "predictions.jsonl.old").read_bytes() == before
    assert sorted(r["uid"] for r in lines(out / "predictions.jsonl")) == ["mq0", "mq1", "mq2", "mq3"]


def test_a_duplicate_longbench_id_is_refused_up_front(tmp_path, server, longbench):
    text = longbench.read_text().splitlines()
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join([text[0], text[1], text[1].replace("Who founded", "Who ran"), text[2]]) + "\n")
    with pytest.raises(LongmillError, match=r"record 2: field '_id': 'lb1' is already the _id of record 1"):
        run_eval(str(dup), tmp_path / "run", gen(server))
    assert server.count() == 0 and not (tmp_path / "run" / "predictions.jsonl").exists()


def test_a_longbench_line_that_is_not_utf8_is_skipped_and_counted(tmp_path, server, longbench):
    from ..cli import run_cli

    raw = longbench.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(raw[0] + raw[1].replace(b"Ada 1", b"Ad\xe9 1") + raw[2] + raw[3])
    args = ["run", "--model", "served", "--backend", "openai", "--backend-option", f"url={server.url}"]
    args += ["--max-tokens", "8"]
    proc = run_cli(
        main, *args, "--data", str(bad), "--out", str(tmp_path / "run"), prog_name="python -m eval"
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["config"]["input_skipped"] == {"malformed:<line>": 1} and m["counts"]["samples"] == 3
    assert "record 1: field '<line>': not valid UTF-8" in proc.stderr
