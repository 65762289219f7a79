"""The learning-curve benchmark (benchmarks/learning_curve.py) and its CPU profile."""

from __future__ import annotations

import importlib.util
import json
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


def test_paired_difference_and_accuracy_per_length():
    import polars as pl

    lc = _bench()
    a = pl.DataFrame(
        {"uid": list("abcdef"), "length_target": [256] * 3 + [512] * 3, "em": [1.0, 1, 0, 1, 1, 1]}
    )
    b = pl.DataFrame(
        {"uid": list("fedcba"), "length_target": [512] * 3 + [256] * 3, "em": [0.0, 1, 1, 1, 0, 1]}
    )
    acc = lc.accuracy_by_length(a)
    assert acc["256"] == {
        "accuracy": pytest.approx(2 / 3),
        "stderr": pytest.approx((2 / 9 / 3) ** 0.5),
        "n": 3,
    }
    assert acc["all"]["n"] == 6 and acc["all"]["accuracy"] == pytest.approx(5 / 6)
    d = lc.paired_difference(a, b)  # joined on uid, not on row order: a-b per uid is 0,1,-1 | 0,0,1
    assert d["256"]["difference"] == pytest.approx(0.0) and d["512"]["difference"] == pytest.approx(1 / 3)
    assert d["256"]["stderr"] == pytest.approx(1 / 3**0.5)  # sd of (0, 1, -1) is 1
    assert d["all"] == {
        "difference": pytest.approx(1 / 6),
        "stderr": pytest.approx(d["all"]["stderr"]),
        "n": 6,
    }


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
    (work / "curriculum" / "eval").mkdir(parents=True)
    pl.DataFrame({"uid": ["a", "b", "c"], "length_target": [256, 256, 512]}).write_parquet(
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
    """The whole benchmark on a tiny random policy: triplets -> longqa x2 -> curriculum -> SFT -> 2 RL phases ->
    eval of base, SFT and RL; the table, plot and JSON are written and every model saw the same questions."""
    work = tmp_path / "work"
    results_before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    sets = [
        "sources.synthetic.source_opt=[num_triplets=30, min_hops=1, max_hops=1, comparison_share=0]",
        "lengths=[256, 384]",
        "curriculum.bins=256,384",
        "curriculum.eval_share=0.2",
        "longqa.num_samples=30",
        "sft.max_steps=2",
        "sft.max_examples=8",
        "sft.max_length=512",
        "rl.max_steps=1",
        "rl.per_device_train_batch_size=4",
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
    ] + [a for s in sets for a in ("--set", s)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((work / "learning_curve.json").read_text())
    acc = summary["accuracy"]
    assert set(acc) == {"base", "sft", "rl"}
    assert all(set(per) == {"256", "384", "all"} for per in acc.values())
    counts = {m: {k: v["n"] for k, v in per.items()} for m, per in acc.items()}
    assert counts["base"] == counts["sft"] == counts["rl"] and all(n > 0 for n in counts["base"].values())
    assert counts["base"]["all"] == counts["base"]["256"] + counts["base"]["384"]
    # paired differences on the same prompts agree with the per-model accuracies
    diffs = summary["differences"]
    assert set(diffs) == {"rl-sft", "rl-base", "sft-base"}
    for pair, per in diffs.items():
        x, y = pair.split("-")
        for length, d in per.items():
            assert d["n"] == counts[x][length]
            assert d["difference"] == pytest.approx(acc[x][length]["accuracy"] - acc[y][length]["accuracy"])
    assert sorted(summary["rewards"]) == ["phase-1", "phase-2"]
    assert all(len(rows) >= 1 for rows in summary["rewards"].values())
    assert (work / "learning_curve.png").stat().st_size > 0
    table = (work / "learning_curve.md").read_text()
    assert "| rl |" in table and "256 tokens" in table and "| rl − sft |" in table
    assert "RL beats SFT by more than the standard error at every length" in table
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
    # held-out questions never reach SFT or RL: the curriculum's heldout.json names them
    assert json.loads((work / "heldout.json").read_text())
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
