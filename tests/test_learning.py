"""The learning-curve benchmark (benchmarks/learning_curve.py) and its CPU profile."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "cpu-learning-smollm2.yaml"


def _bench():
    spec = importlib.util.spec_from_file_location("learning_curve", ROOT / "benchmarks" / "learning_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_difference_and_accuracy_per_length_are_clustered_by_question():
    """Three questions at two lengths. Expected values are worked out by hand below (not by the code under
    test): over all lengths the errors are the clustered ones, per length the usual sd/sqrt(n)."""
    import polars as pl

    lc = _bench()
    q = ["q1", "q2", "q3"] * 2
    a = pl.DataFrame(
        {"uid": [f"{x}@{n}" for n, x in zip([256] * 3 + [512] * 3, q, strict=True)], "length_target": [256] * 3 + [512] * 3,
         "cluster": q, "em": [1.0, 1, 0, 1, 1, 1]}
    )  # fmt: skip
    b = a.with_columns(pl.Series("em", [1.0, 0, 1, 0, 1, 0])).reverse()  # joined on uid, not on row order
    acc = lc.accuracy_by_length(a)
    # 256: em 1,1,0 -> p = 2/3, sd (n-1) = 0.577 -> 0.577/sqrt(3) = 1/3
    assert acc["256"] == {
        "accuracy": pytest.approx(2 / 3),
        "stderr": pytest.approx(1 / 3),
        "n": 3,
        "questions": 3,
    }
    # all: p = 5/6; per-question sums of (em - 5/6): 1/3, 1/3, -2/3 -> sqrt(3/2 * 2/3) / 6 = 1/6
    assert acc["all"] == {
        "accuracy": pytest.approx(5 / 6),
        "stderr": pytest.approx(1 / 6),
        "n": 6,
        "questions": 3,
    }
    d = lc.paired_difference(a, b)  # a - b per uid: 0, 1, -1 | 1, 0, 1
    assert d["256"] == {"difference": pytest.approx(0.0), "stderr": pytest.approx(1 / 3**0.5), "n": 3}
    assert d["512"] == {"difference": pytest.approx(2 / 3), "stderr": pytest.approx(1 / 3), "n": 3}
    # all: mean 1/3; per-question sums of (d - 1/3): 1/3, 1/3, -2/3 -> 1/6 (rows as independent: 1/3)
    assert d["all"] == {"difference": pytest.approx(1 / 6 * 2), "stderr": pytest.approx(1 / 6), "n": 6}


def test_a_question_asked_twice_does_not_shrink_its_error():
    lc = _bench()
    values, clusters = [1.0, 0.0, 1.0, 1.0, 0.0], ["a", "b", "c", "d", "e"]
    once = lc.clustered_stderr(values, clusters)
    assert once == pytest.approx((0.6 * 0.4 * 5 / 4) ** 0.5 / 5**0.5)  # sd with n-1, over sqrt(n)
    assert lc.clustered_stderr(values * 2, clusters * 2) == pytest.approx(once)  # 10 rows, still 5 questions
    assert (
        lc.clustered_stderr(values * 2, clusters + [c + "'" for c in clusters]) < once / 1.3
    )  # 10 questions
    assert math.isnan(lc.clustered_stderr([1.0, 0.0, 1.0], ["a", "a", "a"]))  # one question: no error


def test_seeds_are_averaged_per_prompt_and_the_done_when_line_reads_the_mean(tmp_path):
    """A finished two-seed run (eval outputs written by hand): the table's figures are the mean over seeds of
    each prompt's score, errors are clustered by source question (paraphrases of one fact are one question),
    each seed is reported, and the done-when line is a yes/no on the mean."""
    import polars as pl
    from click.testing import CliRunner

    lc = _bench()
    work = tmp_path / "work"
    (work / "curriculum" / "eval").mkdir(parents=True)
    qs = [(f"s{i}", f"Question {i}?", [f"f{i}"]) for i in range(8)] + [("s8", "Other words 0?", ["f0"])]
    rows = [
        {"uid": f"{sid}@{n}", "length_target": n, "source_id": sid, "question": q, "fact_keys": fk}
        for n in (256, 512)
        for sid, q, fk in qs
    ]
    pl.DataFrame(rows).write_parquet(work / "curriculum" / "eval" / "part-00000.parquet")
    uids = [r["uid"] for r in rows]

    def write(folder, em, control):
        folder.mkdir(parents=True)  # the eval scores each prompt, and each again without its gold documents
        ids = uids + [u + lc.NO_EVIDENCE for u in uids]
        pl.DataFrame({"uid": ids, "em": [float(x) for x in em + control]}).write_parquet(
            folder / "samples.parquet"
        )

    n = len(uids)
    write(work / "eval-base", [0] * n, [0] * n)
    write(work / "seed-0" / "eval-sft", [1, 0] * (n // 2), [0] * n)
    write(work / "seed-1" / "eval-sft", [0, 0] * (n // 2), [0] * n)
    write(work / "seed-0" / "eval-rl", [1] * n, [1] + [0] * (n - 1))
    write(work / "seed-1" / "eval-rl", [1, 1, 1, 0] * (n // 4) + [1] * (n % 4), [0] * n)
    # the RL training log of seed 0's first phase (as train grpo --metrics-dir writes it): two rollout batches
    # log the signals, a step between them logs only its loss (an empty cell is not a zero)
    (work / "seed-0" / "metrics" / "rl").mkdir(parents=True)
    (work / "seed-0" / "metrics" / "rl" / "phase-1.csv").write_text(
        "step,reward,frac_reward_zero_std,completions/clipped_ratio,loss\n"
        "1,0.25,0.5,0.125,0.1\n2,,,,0.2\n3,0.75,0.0,,0.3\n"
    )
    summary = {"models": ["base", "sft", "rl"], "seeds": [0, 1], "control": True, "timings_s": {}, "wall_s": 0.0,
               "machine": "m", "command": "python benchmarks/learning_curve.py run --seeds 0,1",
               "code": {"commit": "abc123", "dirty": True}}  # fmt: skip
    (work / "learning_curve.json").write_text(json.dumps(summary))
    res = CliRunner().invoke(lc.main, ["report", "--work", str(work)])
    assert res.exit_code == 0, res.output
    out = json.loads((work / "learning_curve.json").read_text())
    sft0 = [1, 0] * (n // 2)
    rl1 = [1, 1, 1, 0] * (n // 4) + [1] * (n % 4)
    assert out["accuracy"]["sft"]["all"]["accuracy"] == pytest.approx(sum(sft0) / n / 2)
    assert out["accuracy"]["rl"]["all"]["accuracy"] == pytest.approx((n + sum(rl1)) / n / 2)
    assert out["accuracy_by_seed"]["sft"]["0"]["all"]["accuracy"] == pytest.approx(sum(sft0) / n)
    assert out["accuracy_spread"]["sft"]["all"] == pytest.approx(sum(sft0) / n)
    # 18 prompts, 8 questions: s0 and its paraphrase s8 are one question, at both lengths
    assert out["accuracy"]["rl"]["all"]["n"] == 18 and out["accuracy"]["rl"]["all"]["questions"] == 8
    # the control: one prompt of 18 answered by one of two seeds without its evidence
    assert (
        out["control"]["rl"]["all"]["accuracy"] == pytest.approx(0.5 / n)
        and out["control"]["rl"]["all"]["n"] == n
    )
    d = out["differences"]["rl-sft"]["all"]
    per_prompt = [(1 + r) / 2 - s / 2 for r, s in zip(rl1, sft0, strict=True)]
    groups = [r["source_id"] if r["source_id"] != "s8" else "s0" for r in rows]
    assert d["difference"] == pytest.approx(sum(per_prompt) / n)
    assert d["stderr"] == pytest.approx(_cr1(per_prompt, groups))
    assert out["done_when"] == {"rl_vs_base": True, "rl_vs_sft": d["difference"] > 2 * d["stderr"],
                                "passed": d["difference"] > 2 * d["stderr"]}  # fmt: skip
    assert out["signals"]["0"]["phase-1"] == {
        "logs": 2, "reward": 0.5, "frac_reward_zero_std": 0.25, "completions/clipped_ratio": 0.125,
    }  # fmt: skip
    assert out["signals"]["1"] == {}
    table = (work / "learning_curve.md").read_text()
    assert "| 0 | phase-1 | 2 | 0.500 | - | 0.250 | - | - | - | - | - | - | 0.125 |" in table
    assert "| rl (seed 1) |" in table and "| rl − sft (seed 0) |" in table and "no evidence" in table
    assert "Done when (issue 18, on the mean over seeds)" in table
    assert (
        "Code: `abc123` with uncommitted changes; command: `python benchmarks/learning_curve.py run --seeds 0,1`"
        in table
    )


def _cr1(values, groups):
    """The clustered standard error written out independently of the benchmark's implementation."""
    import numpy as np

    v, g = np.asarray(values, dtype=float), np.asarray(groups)
    resid = v - v.mean()
    sums = np.array([resid[g == k].sum() for k in np.unique(g)])
    G = len(sums)
    return float(np.sqrt(G / (G - 1) * (sums**2).sum()) / len(v))


def test_report_refuses_a_work_folder_it_cannot_score_honestly(tmp_path):
    """No learning_curve.json: a one-line error. An eval that does not cover the held-out prompts (one lost,
    one from other data): refused with the file named, never scored on the prompts it happens to share."""
    import polars as pl
    from click.testing import CliRunner

    lc = _bench()
    work = tmp_path / "work"
    work.mkdir()
    res = CliRunner().invoke(lc.main, ["report", "--work", str(work)])
    assert res.exit_code == 1 and "learning_curve.json is missing" in res.output
    (work / "learning_curve.json").write_text(json.dumps({"models": ["base"]}))
    res = CliRunner().invoke(
        lc.main, ["report", "--work", str(work)]
    )  # no held-out prompts: named, not a trace
    assert res.exit_code == 1 and "curriculum/eval holds no held-out prompts (*.parquet)" in res.output
    (work / "curriculum" / "eval").mkdir(parents=True)
    pl.DataFrame(
        {
            "uid": ["a", "b", "c"],
            "length_target": [256, 256, 512],
            "source_id": ["x", "y", "x"],
            "question": ["Qx?", "Qy?", "Qx?"],
        }
    ).write_parquet(  # fmt: skip
        work / "curriculum" / "eval" / "part-00000.parquet"
    )
    for model, uids in (("base", ["a", "b", "c"]), ("sft", ["a", "b", "z"])):
        (work / f"eval-{model}").mkdir()
        pl.DataFrame({"uid": uids, "em": [1.0, 0.0, 1.0]}).write_parquet(
            work / f"eval-{model}" / "samples.parquet"
        )
    summary = {"models": ["base", "sft"], "timings_s": {}, "wall_s": 0.0, "machine": "m", "command": "c"}
    (work / "learning_curve.json").write_text(json.dumps(summary))
    res = CliRunner().invoke(lc.main, ["report", "--work", str(work)])
    assert res.exit_code == 1
    assert "eval-sft/samples.parquet does not cover the held-out prompts" in res.output
    assert "1 missing (e.g. ['c'])" in res.output and "1 not in the data (e.g. ['z'])" in res.output
    assert not (work / "learning_curve.md").exists()


def test_step_identity_does_not_depend_on_where_the_interpreter_lives(tmp_path, monkeypatch):
    """A run packed in one checkout resumes in another: the identity names the interpreter {PYTHON} whether
    it lives outside the checkout or in a virtual environment inside it (as the README sets up)."""
    lc = _bench()
    work = tmp_path / "work"
    identities = []
    for python in ("/opt/python/bin/python3", str(ROOT / ".venv" / "bin" / "python"), str(work / "py")):
        monkeypatch.setattr(lc.sys, "executable", python)
        steps = lc.Steps(work, tmp_path / "log", {}, False, {})
        steps.add("triplets/x", "triplets", [python, "-m", "datagen", "--out", str(work / "t")], [work / "t"])
        assert steps._portable(steps.steps["triplets/x"]["cmd"]) == [
            "{PYTHON}",
            "-m",
            "datagen",
            "--out",
            "{WORK}/t",
        ]
        identities.append(steps.steps["triplets/x"]["identity"])
    assert len(set(identities)) == 1


def test_resume_runs_what_changed_and_trains_only_the_models_those_evaluations_need(tmp_path):
    """The resume rules on in-process steps (data -> two seeds' training -> their evaluations): everything
    runs the first time; a resume after `pack` (no data, no models) makes the data again and runs nothing
    else; a changed evaluation runs again and trains its model first, leaving the other seed alone; data
    that comes out with other bytes stops the run."""
    lc = _bench()
    work, ran = tmp_path / "work", []

    def write(path: Path, text: str, needs: Path | None = None):
        def action():
            assert needs is None or needs.exists(), f"{path} needs {needs}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            ran.append(path.relative_to(work).parts[0] + "/" + path.name)

        return action

    def execute(eval_setting: dict[int, str], data: str = "rows", resume: bool = True):
        ran.clear()
        steps = lc.Steps(work, tmp_path / "log", {}, resume, {"commit": "c", "dirty": False})
        rows = work / "data" / "rows.txt"
        # always: the report reads it (as the curriculum's eval split)
        steps.add("data", "data", ["make", "data"], [rows], action=write(rows, data), always=True)
        for seed in (1, 2):
            model = work / f"seed-{seed}" / "model"
            steps.add(f"train-{seed}", "train", ["train", str(seed)], [model], ("data",), "train",
                      write(model, "weights", needs=rows))  # fmt: skip
            out = work / f"seed-{seed}" / "samples.txt"
            steps.add(f"eval-{seed}", "eval", ["eval", str(seed), eval_setting[seed]], [out],
                      ("data", f"train-{seed}"), "eval", write(out, "scores", needs=model))  # fmt: skip
        steps.execute()
        return steps

    execute({1: "a", 2: "a"}, resume=False)
    assert ran == [
        "data/rows.txt",
        "seed-1/model",
        "seed-1/samples.txt",
        "seed-2/model",
        "seed-2/samples.txt",
    ]
    for gone in ("data", "seed-1/model", "seed-2/model"):  # what `pack` leaves out
        shutil.rmtree(work / gone) if (work / gone).is_dir() else (work / gone).unlink()
    steps = execute({1: "a", 2: "a"})
    assert ran == ["data/rows.txt"] and set(steps.reused) == {"train-1", "train-2", "eval-1", "eval-2"}
    steps = execute({1: "b", 2: "a"})  # seed 1's evaluation changed: its model is gone, so it trains first
    assert ran == ["seed-1/model", "seed-1/samples.txt"]
    assert set(steps.reused) == {"data", "train-2", "eval-2"}  # seed 2 needs no model: its evaluation is made
    assert not (work / "seed-2" / "model").exists()
    (work / "data" / "rows.txt").unlink()
    with pytest.raises(click.ClickException, match="its data differs from the data the resumed run"):
        execute({1: "b", 2: "a"}, data="other rows")


def test_pack_keeps_what_the_results_rest_on_and_refuses_an_unfinished_run_or_an_existing_folder(tmp_path):
    import polars as pl
    from click.testing import CliRunner

    lc = _bench()
    work, dest = tmp_path / "work", tmp_path / "packed"
    files = {
        "steps.json": "{}",
        "heldout.json": "{}",
        "eval-base/samples.parquet": "s",
        "eval-base/metrics.json": "{}",
        "seed-0/eval-rl/samples.parquet": "s",
        "seed-0/metrics/rl/phase-1.csv": "step\n1\n",
        "seed-0/rl/phase-1/model.safetensors": "weights",  # models and data stay behind
        "curriculum/stage-1/part-0.parquet": "data",
    }
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    res = CliRunner().invoke(lc.main, ["pack", "--work", str(work), "--to", str(dest)])
    assert res.exit_code == 1 and "learning_curve.json is missing: pack a run that finished" in res.output
    assert not dest.exists()
    (work / "learning_curve.json").write_text("{}")
    res = CliRunner().invoke(lc.main, ["pack", "--work", str(work), "--to", str(dest)])
    assert res.exit_code == 1 and "holds no held-out prompts" in res.output and not dest.exists()
    prompts = pl.DataFrame(
        {"uid": ["a-256", "a-512"], "length_target": [256, 512], "source_id": ["a", "a"], "question": ["Q?"] * 2,
         "fact_keys": [["f"], ["f"]], "prompt": ["a long context " * 50] * 2}
    )  # fmt: skip
    (work / "curriculum" / "eval").mkdir(parents=True)
    prompts.write_parquet(work / "curriculum" / "eval" / "part-0.parquet")
    res = CliRunner().invoke(lc.main, ["pack", "--work", str(work), "--to", str(dest)])
    assert res.exit_code == 0, res.output
    kept = {str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file()}
    assert kept == set(files) - {
        "seed-0/rl/phase-1/model.safetensors",
        "curriculum/stage-1/part-0.parquet",
    } | {
        "learning_curve.json",
        "heldout-prompts/prompts.parquet",
    }
    # the report's clusters come out the same from the packed prompts, which carry no context
    assert pl.read_parquet(dest / "heldout-prompts" / "prompts.parquet").equals(prompts.drop("prompt"))
    assert lc.held_out_prompts(dest) == dest / "heldout-prompts"
    assert lc.eval_rows(lc.held_out_prompts(dest)).equals(lc.eval_rows(work / "curriculum" / "eval"))
    assert (dest / "seed-0" / "metrics" / "rl" / "phase-1.csv").read_text() == "step\n1\n"
    res = CliRunner().invoke(lc.main, ["pack", "--work", str(work), "--to", str(dest)])
    assert res.exit_code == 1 and "exists: pack into a new folder" in res.output
    assert {str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file()} == kept


def test_run_report_and_pack_refuse_a_folder_another_command_is_writing(tmp_path):
    """One writer per folder: while another process holds WORK (or pack's TO), each command fails at once,
    names the holder, and writes nothing."""
    from click.testing import CliRunner

    from datagen.shards import OutputLock

    lc = _bench()
    work, dest = tmp_path / "work", tmp_path / "packed"
    work.mkdir()
    (work / "learning_curve.json").write_text("{}")
    before = sorted(p.name for p in work.iterdir())
    for held, args in (
        # (unlocked, the run would stop at the unknown setting, also without writing)
        (work, ["run", "--profile", str(PROFILE), "--work", str(work), "--resume", "--set", "no.such=1"]),
        (work, ["report", "--work", str(work)]),
        (work, ["pack", "--work", str(work), "--to", str(dest)]),
        (dest, ["pack", "--work", str(work), "--to", str(dest)]),
    ):
        with OutputLock(held):
            res = CliRunner().invoke(lc.main, args)
        assert (
            res.exit_code == 1 and f"{held} is being written by another run (pid {os.getpid()}" in res.output
        )
        assert sorted(p.name for p in work.iterdir()) == before and not dest.exists()
    res = CliRunner().invoke(lc.main, ["report", "--work", str(work)])  # released: on to its own checks
    assert "is being written" not in res.output


def test_the_seed_spread_keeps_the_lengths_in_order_whatever_the_hash_seed():
    """learning_curve.json is the same bytes on every re-score: the spread's lengths come in the seeds' order,
    not a set's (which changes with PYTHONHASHSEED from one process to the next)."""
    code = (
        "import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('lc', sys.argv[1]); "
        "lc = importlib.util.module_from_spec(spec); spec.loader.exec_module(lc); "
        "per = [{k: {'accuracy': i / 10} for i, k in enumerate(['256', '512', '1024', 'all'])}] * 2; "
        "print(json.dumps(list(lc.seed_spread(per, 'accuracy'))))"
    )
    for hash_seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code, str(ROOT / "benchmarks" / "learning_curve.py")],
            capture_output=True, text=True, env=env, check=True,
        ).stdout  # fmt: skip
        assert json.loads(out) == ["256", "512", "1024", "all"], hash_seed


def test_flags_unpack_a_section_as_dvc_does():
    lc = _bench()
    assert lc.flags(
        {
            "max_steps": 8,
            "filter_extremes": True,
            "mask_truncated_completions": False,
            "source_opt": ["a=1", "b=2"],
            "judge_url": None,
        }
    ) == [
        "--max-steps",
        "8",
        "--filter-extremes",
        "--no-mask-truncated-completions",
        "--source-opt",
        "a=1",
        "--source-opt",
        "b=2",
    ]


def test_overrides_parse_yaml_values_and_name_bad_keys():
    lc = _bench()
    p = lc.apply_overrides(yaml.safe_load(PROFILE.read_text()), ("rl.max_steps=2", "lengths=[256, 384]"))
    assert p["rl"]["max_steps"] == 2 and p["lengths"] == [256, 384]
    with pytest.raises(click.BadParameter, match="expected section.key=value"):
        lc.apply_overrides(p, ("rl.max_steps",))
    with pytest.raises(click.BadParameter, match="'nope' is not a section"):
        lc.apply_overrides(p, ("nope.x=1",))


def test_profile_trains_on_single_document_lookups_measured_by_the_policys_tokenizer():
    p = yaml.safe_load(PROFILE.read_text())
    opts = dict(o.split("=", 1) for o in p["sources"]["synthetic"]["source_opt"])
    assert opts["min_hops"] == opts["max_hops"] == "1"
    assert p["longqa"]["tokenizer"] == f"hf:{p['model']}"
    assert max(p["lengths"]) <= 8192 - p["eval"]["max_tokens"]  # SmolLM2's window
    assert p["curriculum"]["bins"] == ",".join(map(str, p["lengths"]))


@pytest.mark.slow
def test_tiny_learning_run_evaluates_every_model_on_the_same_heldout_questions(tiny_qwen2, tmp_path):
    """The whole benchmark on a tiny random policy, one training seed (1, not the default; averaging over seeds
    is pinned by the hand-written two-seed test above): triplets -> longqa x2 -> curriculum ->
    per seed SFT -> 2 RL phases -> eval of base (once), SFT and RL, each also without its gold documents; the
    table, plot and JSON are written, every model saw the same questions, and what SFT and RL trained on
    holds no held-out question or fact."""
    import polars as pl

    work = tmp_path / "work"
    results_before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    sets = [
        "sources.synthetic.source_opt=[num_triplets=30, min_hops=1, max_hops=1, comparison_share=0]",
        "lengths=[256, 384]",
        "curriculum.bins=256,384",
        "curriculum.eval_share=0.2",
        "longqa.num_samples=30",
        "sft.max_steps=2",
        "sft.per_device_train_batch_size=1",  # the steps' cost is the 151,936-token head over every position
        "sft.max_examples=30",  # every triplet it may use: without --heldout, held-out ones would be among them
        "sft.max_length=512",
        "rl.max_steps=1",
        "rl.per_device_train_batch_size=2",  # one on-policy group of two: CPU scores every prompt token
        "rl.num_generations=2",
        "rl.steps_per_generation=1",
        "rl.max_completion_length=4",
        "rl.mask_truncated_completions=false",
        "rl.save_steps=1",
        "eval.max_tokens=4",
    ]
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "learning_curve.py"),
        "run",
        "--profile",
        str(PROFILE),
        "--work",
        str(work),
        "--model",
        str(tiny_qwen2),
        "--seeds",
        "1",
    ] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((work / "learning_curve.json").read_text())
    assert summary["seeds"] == [1] and summary["command"].endswith("--seeds 1 " + " ".join(
        f"--set '{s}'" if " " in s else f"--set {s}" for s in sets))  # fmt: skip
    assert len(summary["code"]["commit"]) == 40 and isinstance(summary["code"]["dirty"], bool)
    acc = summary["accuracy"]
    assert set(acc) == {"base", "sft", "rl"} and set(summary["accuracy_by_seed"]["rl"]) == {"1"}
    assert all(set(per) == {"256", "384", "all"} for per in acc.values())
    counts = {m: {k: v["n"] for k, v in per.items()} for m, per in acc.items()}
    assert counts["base"] == counts["sft"] == counts["rl"] and all(n > 0 for n in counts["base"].values())
    assert counts["base"]["all"] == counts["base"]["256"] + counts["base"]["384"]
    # paired differences on the same prompts agree with the per-model accuracies (mean over seeds, and per seed)
    diffs = summary["differences"]
    assert set(diffs) == {"rl-sft", "rl-base", "sft-base"}
    for pair, per in diffs.items():
        x, y = pair.split("-")
        for length, d in per.items():
            assert d["n"] == counts[x][length]
            assert d["difference"] == pytest.approx(acc[x][length]["accuracy"] - acc[y][length]["accuracy"])
    for seed in ("1",):
        d = summary["differences_by_seed"]["rl-sft"][seed]["all"]["difference"]
        by = summary["accuracy_by_seed"]
        assert d == pytest.approx(by["rl"][seed]["all"]["accuracy"] - by["sft"][seed]["all"]["accuracy"])
    assert set(summary["control"]) == {"base", "sft", "rl"}
    assert sorted(summary["rewards"]) == ["1"]
    assert all(sorted(p) == ["phase-1", "phase-2"] and all(p.values()) for p in summary["rewards"].values())
    assert set(summary["done_when"]) == {"rl_vs_base", "rl_vs_sft", "passed"}
    assert (work / "learning_curve.png").stat().st_size > 0
    table = (work / "learning_curve.md").read_text()
    assert "| rl |" in table and "256 tokens" in table and "| rl − sft |" in table and "(seed" not in table
    assert "Done when (issue 18, on the mean over seeds)" in table and "no evidence" in table
    # the control's prompts are the eval's without their gold documents
    ev = pl.read_parquet(work / "curriculum" / "eval" / "*.parquet")
    both = pl.read_parquet(work / "eval-data" / "*.parquet")
    assert both.height == 2 * ev.height and both.head(ev.height)["uid"].to_list() == ev["uid"].to_list()
    ne = both.tail(ev.height)
    assert [u + "~no-evidence" for u in ev["uid"].to_list()] == ne["uid"].to_list()
    assert set(ne["data_source"].to_list()) == {"longqa-no-evidence/synthetic"}
    for e, n in zip(ev.iter_rows(named=True), ne.iter_rows(named=True), strict=True):
        assert all(g["text"] not in n["prompt"][-1]["content"] for g in e["gold_docs"])
        assert all(g["text"] in e["prompt"][-1]["content"] for g in e["gold_docs"])
        assert n["question"] == e["question"] and e["question"] in n["prompt"][-1]["content"]
    # `report` re-scores the finished run without generating: the same figures
    before = (work / "learning_curve.md").read_text()
    (work / "learning_curve.md").unlink()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "learning_curve.py"), "report", "--work", str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "learning_curve.md").read_text() == before
    # held-out questions never reach SFT or RL: what each seed's SFT trained on, and the RL stages
    held = json.loads((work / "heldout.json").read_text())
    ids, facts = set(held["source_ids"]), set(held["fact_keys"])
    assert ids and facts
    triplet_facts = {
        r["id"]: set(r["fact_keys"])
        for r in pl.read_parquet(work / "triplets" / "*" / "*.parquet").to_dicts()
    }
    for seed in (1,):
        sft = json.loads((work / f"seed-{seed}" / "sft" / "summary.json").read_text())
        assert sft["source_ids"] and not set(sft["source_ids"]) & ids
        assert not any(triplet_facts[i] & facts for i in sft["source_ids"])
    stages = pl.read_parquet(work / "curriculum" / "stage-*" / "*.parquet")
    assert not set(stages["source_id"].to_list()) & ids
    assert not any(set(f) & facts for f in stages["fact_keys"].to_list())
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == results_before  # only --write-results appends


def test_readme_learning_commands_use_real_flags():
    from click.testing import CliRunner

    lc = _bench()
    readme = (ROOT / "README.md").read_text()
    lines = [x for x in readme.splitlines() if x.startswith("python benchmarks/learning_curve.py")]
    assert {x.split()[2] for x in lines} == {"model", "run", "report"}
    for line in lines:
        sub = line.split()[2]
        help_text = CliRunner().invoke(lc.main, [sub, "--help"]).output
        for flag in [t for t in line.split("#")[0].split() if t.startswith("--")]:
            assert flag in help_text, f"README uses {flag} with learning_curve.py {sub}"


TINY = [
    "sources.synthetic.source_opt=[num_triplets=30, min_hops=1, max_hops=1, comparison_share=0]",
    "lengths=[256]",
    "curriculum.bins=256",
    "curriculum.eval_share=0.2",
    "longqa.num_samples=30",
    "sft.max_steps=1",
    "sft.per_device_train_batch_size=1",
    "sft.max_examples=30",
    "sft.max_length=512",
    "eval.max_tokens=2",
]


def _tiny_run(work: Path, model: Path, seeds: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "learning_curve.py"), "run", "--profile", str(PROFILE)]
    cmd += ["--work", str(work), "--model", str(model), "--models", "base,sft", "--seeds", seeds]
    cmd += [a for s in TINY for a in ("--set", s)]  # then ``extra``: its --set overrides TINY's
    return subprocess.run([*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _commands(work: Path) -> list[str]:
    return [line for line in (work / "commands.log").read_text().splitlines() if line.startswith("$ ")]


@pytest.mark.slow
def test_jobs_keep_order_and_resume_adds_a_seed_reusing_only_what_was_made_the_same_way(tiny_qwen2, tmp_path):
    """``run --jobs 2``: two seeds' training and evaluations (and the base evaluation) run at once, one thread
    each, every step only after the steps it reads from ended, each step's output in its own log.
    ``run --resume``: a third seed is added to the finished run without evaluating the base model or the first
    seeds again; evaluations stay reused when their model folders and data are gone (``pack`` keeps neither:
    the data is made again, byte-identical); a changed setting evaluates again; data made again with other
    bytes stops the run. The resume rules themselves, training a model a changed evaluation needs included,
    are pinned in-process by test_resume_runs_what_changed_and_trains_only_the_models_those_evaluations_need.
    (One test: each tiny run costs ~10 s of imports per step, and the resume needs a finished run.)"""
    work = tmp_path / "work"
    proc = _tiny_run(work, tiny_qwen2, "1,2", "--jobs", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((work / "steps.json").read_text())
    assert {"eval/base", "seed-1/sft", "seed-2/sft", "seed-1/eval-sft", "seed-2/eval-sft"} <= set(record)
    deps = {"seed-1/sft": ["curriculum"], "seed-2/sft": ["curriculum"], "eval/base": ["eval-data"],
            "seed-1/eval-sft": ["seed-1/sft", "eval-data"], "seed-2/eval-sft": ["seed-2/sft", "eval-data"]}  # fmt: skip
    for key, before in deps.items():
        for dep in before:
            ended = record[dep]["started"] + record[dep]["seconds"]
            assert record[key]["started"] >= ended - 0.25, (
                f"{key} started before {dep} ended"
            )  # 0.1 s rounding
    spans = sorted((r["started"], r["started"] + r["seconds"]) for r in record.values())
    assert any(b[0] < a[1] - 0.5 for a, b in itertools.pairwise(spans)), "no two steps ran at once"
    assert (work / "logs" / "seed-2_sft.log").read_text().strip()
    first = _commands(work)
    assert len(first) == len(record) - 1  # every command line is logged (eval-data is no command)
    assert sum(" eval run " in c for c in first) == 3 and sum(" train sft " in c for c in first) == 2
    base_eval = (work / "eval-base" / "samples.parquet").read_bytes()

    proc = _tiny_run(work, tiny_qwen2, "1,2,3", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    added = _commands(work)[len(first) :]
    assert [c.split(" -m ")[1].split()[:2] for c in added] == [["train", "sft"], ["eval", "run"]]
    assert all("seed-3" in c for c in added)
    summary = json.loads((work / "learning_curve.json").read_text())
    assert {"eval/base", "seed-1/sft", "seed-1/eval-sft", "seed-2/eval-sft", "curriculum"} <= set(
        summary["reused"]
    )
    assert set(summary["accuracy_by_seed"]["sft"]) == {"1", "2", "3"}
    assert (work / "eval-base" / "samples.parquet").read_bytes() == base_eval

    md = (work / "learning_curve.md").read_text()
    assert "Reused from an earlier run in the same folder" in md and "eval/base" in md

    # what `pack` keeps (no models, no data) resumes elsewhere: the data is made again, nothing trains
    packed = tmp_path / "packed"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "learning_curve.py"), "pack", "--work", str(work), "--to", str(packed)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (packed / "seed-1" / "sft").exists() and not (packed / "curriculum").exists()
    (packed / "learning_curve.md").unlink()  # `report` re-scores the pack alone: the same table
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "learning_curve.py"), "report", "--work", str(packed)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (packed / "learning_curve.md").read_text() == (work / "learning_curve.md").read_text()
    work = tmp_path / "elsewhere"
    packed.rename(work)
    proc = _tiny_run(work, tiny_qwen2, "1,2,3", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = _commands(work)
    assert again and all(" datagen " in c or " curriculum build " in c for c in again)
    timings = json.loads((work / "learning_curve.json").read_text())["timings_s"]
    assert {"eval-base", "eval-sft", "sft"} <= set(timings)  # reused steps count as long as they took
    assert (
        json.loads((work / "learning_curve.json").read_text())["accuracy_by_seed"]
        == summary["accuracy_by_seed"]
    )

    # a changed eval setting evaluates again (that it trains the models it needs first is pinned in-process
    # by test_resume_runs_what_changed_and_trains_only_the_models_those_evaluations_need)
    before = len(_commands(work))
    proc = _tiny_run(work, tiny_qwen2, "1", "--resume", "--models", "base", "--set", "eval.max_tokens=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = _commands(work)[before:]
    assert [c.split(" -m ")[1].split()[:2] for c in changed] == [["eval", "run"]]
    assert "--max-tokens 3" in changed[0] and "eval-base" in changed[0]

    # data that comes out different from the recorded digest: what was built on it is not reused
    record = json.loads((work / "steps.json").read_text())
    record["curriculum"]["digest"] = "0" * 64
    (work / "steps.json").write_text(json.dumps(record))
    shutil.rmtree(work / "curriculum")
    proc = _tiny_run(work, tiny_qwen2, "1,2", "--resume")
    assert proc.returncode != 0 and "its data differs from the data the resumed run" in proc.stderr
