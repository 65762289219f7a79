"""The curriculum: bins by measured length, retrospective sampling, eval split, filtering, reproducibility."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curriculum.build as build_mod
from curriculum.build import CurriculumConfig, build_curriculum, retro_draw
from curriculum.features import answer_question_overlap, bm25_gold_ranks
from datagen.generators.base import GenConfig
from datagen.generators.keychain import KeyChainConfig
from datagen.runner import RunConfig, run_generator
from datagen.sources import get_source
from longmill.errors import LongmillError

BINS = [1500, 3000, 4500]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """KeyChain and long-QA shards at three lengths from one small synthetic source, so that the same
    source question occurs at several lengths."""
    root = tmp_path_factory.mktemp("synth")
    src = get_source("synthetic", options={"num_triplets": 50})
    out = []
    for length in BINS:
        for name, cfg in (
            ("keychain", KeyChainConfig(length=length, num_chains=2, hops=2, seed=1)),
            ("longqa", GenConfig(length=length, seed=1)),
        ):
            d = root / f"{name}-{length}"
            run_generator(name, cfg, src, RunConfig(out=d, num_samples=24))
            out.append(d)
    return out


def rows(folder):
    return [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("cur")
    m = build_curriculum(inputs, out, CurriculumConfig(bins=BINS, eval_share=0.15, seed=3, rows_per_part=20))
    return out, m


def test_stage_rows_are_inside_their_bin_except_retrospective_ones(built):
    out, m = built
    for k, s in enumerate(m["stages"]):
        lo, hi = ([0] + BINS)[k], BINS[k]
        retro = set(s["retro_uids"])
        rs = rows(out / s["name"])
        assert len(rs) == s["rows"] == s["own"] + s["retro"]
        own = [r for r in rs if r["uid"] not in retro]
        assert own and all(lo < r["prompt_tokens"] <= hi for r in own)
        assert all(r["prompt_tokens"] <= lo for r in rs if r["uid"] in retro)
        assert len({r["uid"] for r in rs}) == len(rs)  # no uid twice in a stage
        assert all(r["difficulty"] is not None and r["difficulty_source"] == "features:v1" for r in rs)
        assert s["max_prompt_length"] == hi and s["max_prompt_tokens"] <= hi


def test_retrospective_share_and_hardness(built):
    out, m = built
    assert m["stages"][0]["retro"] == 0
    for k, s in enumerate(m["stages"][1:], start=1):
        target = 0.25 * s["rows"]
        assert abs(s["retro"] - target) <= 1, (s["retro"], target)
        # Harder, on average, than the bins they were drawn from.
        earlier = [
            r
            for st in m["stages"][:k]
            for r in rows(out / st["name"])
            if r["uid"] not in set(st["retro_uids"])
        ]
        assert s["difficulty_mean_retro"] > np.mean([r["difficulty"] for r in earlier])


def test_eval_split_is_disjoint_by_uid_and_source_question(built, inputs):
    out, m = built
    ev = rows(out / "eval")
    assert ev and len(ev) == m["eval"]["rows"]
    train = [r for s in m["stages"] for r in rows(out / s["name"])]
    assert not {r["uid"] for r in ev} & {r["uid"] for r in train}
    assert not {r["source_id"] for r in ev} & {r["source_id"] for r in train}
    # The held-out questions occur at several lengths, and all their samples went to eval together.
    all_rows = [r for d in inputs for r in rows(d)]
    held = {r["source_id"] for r in ev}
    assert any(len({r["length_target"] for r in all_rows if r["source_id"] == s}) > 1 for s in held)
    assert sum(r["source_id"] in held for r in all_rows) == len(ev)


def test_rebuild_reproduces_the_manifest_hashes(built, inputs, tmp_path):
    out, m = built
    m2 = build_curriculum(
        inputs, tmp_path / "again", CurriculumConfig(bins=BINS, eval_share=0.15, seed=3, rows_per_part=20)
    )
    assert [s["shards"] for s in m2["stages"]] == [s["shards"] for s in m["stages"]]
    assert m2["eval"]["shards"] == m["eval"]["shards"]
    for s in m["stages"]:
        for sh in s["shards"]:
            assert hashlib.sha256((out / s["name"] / sh["file"]).read_bytes()).hexdigest() == sh["sha256"]
    m3 = build_curriculum(
        inputs, tmp_path / "other", CurriculumConfig(bins=BINS, eval_share=0.15, seed=4, rows_per_part=20)
    )
    assert [s["shards"] for s in m3["stages"]] != [s["shards"] for s in m["stages"]]


def test_manifest_and_stats(built):
    out, m = built
    s = m["stages"][1]
    assert sum(s["length_hist"]["counts"]) == s["rows"] and sum(s["difficulty_hist"]["counts"]) == s["rows"]
    assert s["by_source"] and set(s["by_source"]) <= {"keychain/synthetic", "longqa/synthetic"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["stages"]["stage-2"]["rows"] == s["rows"] and stats["eval_rows"] == m["eval"]["rows"]


def test_model_difficulty_filters_zero_and_one_pass_rates(inputs, tmp_path, monkeypatch):
    def fake_rates(items, gen, predictions, rule, progress=None):
        return {it.uid: [0.0, 0.5, 1.0, 0.25][i % 4] for i, it in enumerate(items)}

    monkeypatch.setattr(build_mod, "pass_rates", fake_rates)
    m = build_curriculum(
        inputs, tmp_path / "c", CurriculumConfig(bins=BINS, eval_share=0.0, difficulty_model="m", k=4)
    )
    assert m["dropped"]["solved"] > 0 and m["dropped"]["unsolved"] > 0
    for s in m["stages"]:
        rs = rows(tmp_path / "c" / s["name"])
        assert {r["difficulty"] for r in rs} <= {0.5, 0.75}
        assert all(r["difficulty_source"] == "pass_rate:m:k=4:sub_em" for r in rs)
    kept = build_curriculum(
        inputs,
        tmp_path / "d",
        CurriculumConfig(bins=BINS, eval_share=0.0, difficulty_model="m", k=4, filter_extremes=False),
    )
    assert (
        "solved" not in kept["dropped"]
        and sum(s["own"] for s in kept["stages"])
        == sum(s["own"] for s in m["stages"]) + m["dropped"]["solved"] + m["dropped"]["unsolved"]
    )


def test_difficulty_from_a_tiny_hf_model_end_to_end(inputs, tmp_path, tiny_qwen2):
    cfg = CurriculumConfig(
        bins=BINS,
        eval_share=0.0,
        difficulty_model=str(tiny_qwen2),
        difficulty_backend="hf",
        k=2,
        difficulty_max_tokens=3,
        difficulty_backend_option=["device=cpu"],
        difficulty_batch_size=8,
        filter_extremes=False,
    )
    m = build_curriculum(inputs[:2], tmp_path / "c", CurriculumConfig(**{**cfg.__dict__, "bins": [1500]}))
    rs = rows(tmp_path / "c" / "stage-1")
    assert rs and all(r["difficulty"] == 1.0 for r in rs)  # a random model answers nothing right
    assert m["difficulty_source"].startswith("pass_rate:") and all(
        r["difficulty_source"] == m["difficulty_source"] for r in rs
    )
    rollouts = (tmp_path / "c" / "difficulty" / "rollouts.jsonl").read_text().splitlines()
    assert len(rollouts) == len(rs) and all(len(json.loads(x)["completions"]) == 2 for x in rollouts)


def test_empty_bin_is_an_error_that_says_what_to_do(inputs, tmp_path):
    with pytest.raises(
        LongmillError, match=r"bin 2 \(1500 < prompt_tokens <= 2000\) has no training samples.*--length 2k"
    ):
        build_curriculum(inputs, tmp_path / "c", CurriculumConfig(bins=[1500, 2000, 4500]))


def test_shards_with_different_schemas_are_an_error(inputs, tmp_path):
    bad = tmp_path / "old"
    bad.mkdir()
    t = pq.read_table(next(inputs[0].glob("part-*.parquet")))
    t = t.drop_columns(["doc_offsets"]).replace_schema_metadata(t.schema.metadata)
    pq.write_table(t, bad / "part-00000.parquet")
    with pytest.raises(LongmillError, match="different schemas"):
        build_curriculum([inputs[0], bad], tmp_path / "c", CurriculumConfig(bins=[1500]))
    pq.write_table(pa.table({"x": [1]}), bad / "part-00000.parquet")
    with pytest.raises(LongmillError, match="not a sample shard"):
        build_curriculum([bad], tmp_path / "c", CurriculumConfig(bins=[1500]))


def test_a_difficulty_model_that_cannot_be_loaded(inputs, tmp_path):
    with pytest.raises(LongmillError, match="cannot load model"):
        build_curriculum(
            inputs[:1],
            tmp_path / "c",
            CurriculumConfig(
                bins=[1500], difficulty_model=str(tmp_path / "nope"), difficulty_backend_option="device=cpu"
            ),
        )


def test_retro_draw_is_weighted_and_without_replacement():
    rng = np.random.default_rng(0)
    cand = np.arange(100)
    w = np.r_[np.zeros(50), np.linspace(0.1, 1.0, 50)]
    picked, target = retro_draw(cand, w, own=30, share=0.25, rng=rng)
    assert target == 10 and len(picked) == 10 and len(set(picked)) == 10 and picked.min() >= 50
    picked, target = retro_draw(cand[:3], np.ones(3), own=300, share=0.5, rng=rng)
    assert target == 300 and len(picked) == 3  # capped by what exists


def test_bm25_and_overlap_features():
    docs = [
        "The weather in Paris is mild.",
        "Velora Quint was born in Tassbury in 1874.",
        "Rivers flow to the sea.",
    ]
    assert bm25_gold_ranks("Where was Velora Quint born?", docs, [1, 0]) == [1, 2]
    assert answer_question_overlap(["Tassbury"], "Where was Velora Quint born?") == 0.0
    assert answer_question_overlap(["no"], "Is it yes or no?") == 1.0


def curriculum_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m curriculum ARGS`, run in-process (tests/cli.py)."""
    from curriculum.cli import main

    from ..cli import run_cli

    return run_cli(main, *args, prog_name="python -m curriculum")


def test_cli(inputs, tmp_path):
    # End to end: `python -m curriculum` in a real subprocess (the other CLI checks run in-process).
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "curriculum",
            "build",
            "--input",
            *map(str, inputs),
            "--out",
            str(tmp_path / "c"),
            "--bins",
            "1500,3000,4500",
            "--retro-share",
            "0.2",
            "--eval-share",
            "0.1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "stage-3:" in proc.stdout and (tmp_path / "c" / "manifest.json").exists()
    proc = curriculum_cli("build", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "d"))
    assert proc.returncode == 2 and "no such folder" in proc.stderr


# -- issue 9: rebuilds, the manifest check, held-out means held out -------------------------------------

from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from datagen.runner import run_triplets  # noqa: E402
from longmill.manifest import check, load_heldout, normalize_question  # noqa: E402

ROOT = Path(__file__).parents[2]


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rebuild_with_fewer_bins_leaves_no_stale_stage(inputs, tmp_path):
    out = tmp_path / "c"
    build_curriculum(inputs, out, CurriculumConfig(bins=BINS, eval_share=0.15, seed=3))
    (out / "notes.txt").write_text("mine")  # not the curriculum's: kept
    m = build_curriculum(inputs, out, CurriculumConfig(bins=BINS[:2], eval_share=0.15, seed=3))
    assert (
        sorted(d.name for d in out.glob("stage-*"))
        == ["stage-1", "stage-2"]
        == [s["name"] for s in m["stages"]]
    )
    assert check(out)["bins"] == BINS[:2] and (out / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".c.*"))  # no staging folder or lock left behind


def test_a_failed_rebuild_leaves_the_previous_curriculum_intact(inputs, tmp_path, monkeypatch):
    out = tmp_path / "c"
    build_curriculum(inputs, out, CurriculumConfig(bins=BINS, eval_share=0.15, seed=3))
    before = tree(out)
    real = build_mod.write_stage

    def fail_on_eval(table, folder, rows_per_part):
        if folder.name == "eval":
            raise OSError(28, "No space left on device", str(folder))
        return real(table, folder, rows_per_part)

    monkeypatch.setattr(build_mod, "write_stage", fail_on_eval)
    with pytest.raises(OSError):
        build_curriculum(inputs, out, CurriculumConfig(bins=BINS, eval_share=0.15, seed=4))
    assert tree(out) == before
    check(out)


def test_the_manifest_check_catches_changed_extra_and_stale_shards(built, tmp_path):
    import shutil

    src, _ = built
    c = tmp_path / "c"
    shutil.copytree(src, c)
    check(c)
    part = c / "stage-2" / "part-00000.parquet"
    good = part.read_bytes()
    part.write_bytes(good + b"x")
    with pytest.raises(LongmillError, match=r"stage-2/part-00000.parquet does not match the sha256"):
        check(c)
    part.write_bytes(good)
    (c / "stage-2" / "part-00099.parquet").write_bytes(good)
    with pytest.raises(LongmillError, match="shards the manifest does not list"):
        check(c)
    (c / "stage-2" / "part-00099.parquet").unlink()
    shutil.copytree(c / "stage-1", c / "stage-9")
    with pytest.raises(LongmillError, match=r"stage folders the manifest does not list \(stage-9\)"):
        check(c)
    shutil.rmtree(c / "stage-9")
    (c / "heldout.json").write_text("{}")
    with pytest.raises(LongmillError, match="heldout.json is missing or does not match"):
        check(c)


def test_training_checks_the_manifest_before_it_starts(built, tmp_path):
    import shutil

    from train.config import GRPOPhaseConfig
    from train.phases import run_phases

    src, _ = built
    c = tmp_path / "c"
    shutil.copytree(src, c)
    part = c / "stage-1" / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(LongmillError, match="does not match the sha256"):
        run_phases(c, tmp_path / "rl", GRPOPhaseConfig(model="tiny-qwen2"))
    assert not (tmp_path / "rl").exists()


def _train_rows(out, m):
    return [r for s in m["stages"] for r in rows(out / s["name"])]


def test_held_out_questions_reach_training_neither_as_question_nor_as_decoy(built):
    out, m = built
    ev = rows(out / "eval")
    held_q = {normalize_question(r["question"]) for r in ev}
    ids, questions, _ = load_heldout(out / "heldout.json")
    assert held_q <= questions and {r["source_id"] for r in ev} <= ids
    train = _train_rows(out, m)
    assert not {normalize_question(r["question"]) for r in train} & questions
    decoys = {normalize_question(c["target"]) for r in train for c in r["chains"] if not c["is_true"]}
    assert decoys and not decoys & questions
    assert (
        m["dropped"]["heldout_decoy"] > 0
        and m["heldout"]["decoy_rows_dropped"] >= m["dropped"]["heldout_decoy"]
    )
    assert "train_rows_with_heldout_gold_as_distractor" in m["heldout"]


def test_a_held_out_question_under_another_source_id_is_held_out_too(inputs, tmp_path):
    """The same question text from a second source (another id) must not train while the first is evaluated."""
    dup = tmp_path / "dup"
    dup.mkdir()
    t = pq.read_table(next(inputs[1].glob("part-*.parquet")))
    d = t.to_pydict()
    d["source_id"] = [f"other:{s}" for s in d["source_id"]]
    d["uid"] = [f"{u}-dup" for u in d["uid"]]
    pq.write_table(pa.table(d, schema=t.schema), dup / "part-00000.parquet")
    m = build_curriculum([*inputs, dup], tmp_path / "c", CurriculumConfig(bins=BINS, eval_share=0.15, seed=3))
    questions = {normalize_question(r["question"]) for r in rows(tmp_path / "c" / "eval")}
    train = _train_rows(tmp_path / "c", m)
    assert questions and not {normalize_question(r["question"]) for r in train} & questions
    assert m["heldout"]["same_question_other_id"] > 0


def test_the_warm_up_sft_leaves_out_the_held_out_questions(built, tmp_path):
    from train.config import SFTConfig
    from train.sft import build_sft_examples

    out, m = built
    trip = tmp_path / "t"
    run_triplets(get_source("synthetic", options={"num_triplets": 50}), trip)
    ids, questions, facts = load_heldout(out / "heldout.json")
    everything = build_sft_examples(trip, SFTConfig(max_examples=None))
    assert {e["source_id"] for e in everything} & ids  # the triplets do hold the eval questions
    kept = build_sft_examples(trip, SFTConfig(max_examples=None), heldout=out / "heldout.json")
    assert kept and not {e["source_id"] for e in kept} & ids
    assert not {normalize_question(e["question"]) for e in kept} & questions
    fact_keys = {t.id: set(t.fact_keys) for t in get_source("triplets", str(trip)).iter_triplets()}
    assert facts and not any(fact_keys[e["source_id"]] & facts for e in kept)  # no held-out fact either
    through_fact = {i for i, f in fact_keys.items() if f & facts} - ids
    assert through_fact  # multi-hop questions through a held-out fact exist here, and are left out
    assert len(kept) == len(everything) - len(({e["source_id"] for e in everything} & ids) | through_fact)
    assert len(build_sft_examples(trip, SFTConfig(max_examples=5), heldout=out / "heldout.json")) == 5


def test_dvc_passes_the_held_out_file_from_curriculum_to_sft():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "--heldout-out data/heldout.json" in stages["curriculum"]["cmd"]
    assert "data/heldout.json" in stages["curriculum"]["outs"]
    assert (
        "--heldout data/heldout.json" in stages["sft"]["cmd"] and "data/heldout.json" in stages["sft"]["deps"]
    )


def test_an_incomplete_input_or_writing_into_the_input_is_refused(inputs, tmp_path):
    import shutil

    part = tmp_path / "kc"
    shutil.copytree(inputs[0], part)
    (part / "stats.json").unlink()
    with pytest.raises(LongmillError, match="incomplete: it has no stats.json"):
        build_curriculum([part], tmp_path / "c", CurriculumConfig(bins=[1500]))
    with pytest.raises(LongmillError, match="own input"):
        build_curriculum([inputs[0]], inputs[0].parent, CurriculumConfig(bins=[1500]))
    with pytest.raises(LongmillError, match="--seed must be a whole number"):
        build_curriculum([inputs[0]], tmp_path / "c", CurriculumConfig(bins=[1500], seed=-2))


def test_cli_help_has_examples_and_library_debug_logging_stays_quiet(inputs, tmp_path):
    proc = curriculum_cli("build", "--help")
    assert "Examples:" in proc.stdout and "python -m curriculum build --input" in proc.stdout
    for flags in ([], ["-v"]):
        proc = curriculum_cli(
            *flags,
            "build",
            "--input",
            str(inputs[0]),
            "--out",
            str(tmp_path / "c"),
            "--bins",
            "1500",
            "--eval-share",
            "0",
        )
        assert proc.returncode == 0, proc.stderr
        assert "Building index" not in proc.stderr and "DEBUG" not in proc.stderr


def test_a_second_build_into_a_locked_curriculum_fails_clearly(inputs, tmp_path):
    from datagen.shards import OutputLock

    with OutputLock(tmp_path / "c"):
        with pytest.raises(LongmillError, match="being written by another run"):
            build_curriculum(inputs[:1], tmp_path / "c", CurriculumConfig(bins=[1500]))
    assert not (tmp_path / "c").exists()


def test_the_warm_up_sft_refuses_triplets_of_an_unfinished_run(tmp_path):
    from train.config import SFTConfig
    from train.sft import build_sft_examples

    trip = tmp_path / "t"
    run_triplets(get_source("synthetic", options={"num_triplets": 10}), trip)
    (trip / "stats.json").unlink()
    with pytest.raises(LongmillError, match="incomplete: it has no stats.json"):
        build_sft_examples(trip, SFTConfig(max_examples=None))


def test_difficulty_backend_options_are_checked_by_the_backend_and_reach_it(inputs, tmp_path, monkeypatch):
    from longmill.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'max_rounds'"):
        CurriculumConfig(difficulty_backend="openai", difficulty_backend_option="max_round=3")
    with pytest.raises(UnknownNameError, match="did you mean 'vllm'"):
        CurriculumConfig(difficulty_backend="vlm")
    seen = {}

    def fake_rates(items, gen, predictions, rule, progress=None):
        seen.update(gen.backend_options())
        return {it.uid: 0.5 for it in items}

    monkeypatch.setattr(build_mod, "pass_rates", fake_rates)
    cfg = CurriculumConfig(
        bins=BINS,
        eval_share=0.0,
        difficulty_model="m",
        k=4,
        difficulty_backend="openai",
        difficulty_backend_option="url=http://127.0.0.1:9/v1,max_rounds=3,concurrency=2",
    )
    m = build_curriculum(inputs, tmp_path / "c", cfg)
    assert (seen["url"], seen["max_rounds"], seen["concurrency"]) == ("http://127.0.0.1:9/v1", 3, 2)
    assert m["config"]["difficulty_backend_option"] == [
        "url=http://127.0.0.1:9/v1",
        "max_rounds=3",
        "concurrency=2",
    ]


def every_row_accounted(m: dict) -> bool:
    """Every input row is a stage's own row, an eval row, or dropped for a counted reason (the filter base
    counts each drop; no step counts its own)."""
    rows_in = sum(i["rows"] for i in m["inputs"])
    return rows_in == sum(s["own"] for s in m["stages"]) + m["eval"]["rows"] + sum(m["dropped"].values())


def test_every_dropped_row_is_counted_under_its_reason(built, paraphrased, inputs, tmp_path, monkeypatch):
    _, m = built
    assert "difficulty_backend_option" not in m["config"]  # unset: older manifests keep their bytes
    assert m["dropped"]["above_last_bin"] == 0 and every_row_accounted(m)
    para = paraphrased[3]
    assert every_row_accounted(para) and para["dropped"]["heldout_decoy"] and para["dropped"]["heldout_fact"]
    monkeypatch.setattr(
        build_mod, "pass_rates", lambda items, *a, **k: {it.uid: i % 3 / 2 for i, it in enumerate(items)}
    )
    m = build_curriculum(
        inputs,  # the longest bin left out: its rows are above the last one
        tmp_path / "c",
        CurriculumConfig(bins=BINS[:2], eval_share=0.2, difficulty_model="m", k=4, task_balance=True),
    )
    assert m["dropped"]["above_last_bin"] == 48 and m["dropped"]["solved"] and m["dropped"]["unsolved"]
    assert "task_balance" in m["dropped"] and every_row_accounted(m)


# -- issue 18 §1: held out by fact, not by wording ----------------------------------------------------


@pytest.fixture(scope="module")
def paraphrased(tmp_path_factory):
    """A synthetic world dense enough that one fact is asked twice in other words under two ids (1-hop
    lookups) and multi-hop questions run through other questions' facts (2 hops), as long-QA and KeyChain
    rows (decoy chains), with the curriculum built over them."""
    root = tmp_path_factory.mktemp("para")
    trip = root / "triplets"
    opts = {"num_triplets": 80, "per_region": 80, "min_hops": 1, "max_hops": 2, "comparison_share": 0}
    run_triplets(get_source("synthetic", options=opts), trip)
    src = get_source("triplets", str(trip))
    for name, cfg, n in (
        ("longqa", GenConfig(length=1500, seed=1), 56),
        ("keychain", KeyChainConfig(length=1500, num_chains=6, hops=1, seed=1), 40),
    ):
        run_generator(name, cfg, src, RunConfig(out=root / name, num_samples=n))
    out = root / "cur"
    m = build_curriculum(
        [root / "longqa", root / "keychain"], out, CurriculumConfig(bins=[1500], eval_share=0.25, seed=5)
    )
    return trip, [root / "longqa", root / "keychain"], out, m


def test_no_held_out_fact_is_asked_answered_or_a_target_in_training(paraphrased):
    from train.config import SFTConfig
    from train.sft import build_sft_examples

    trip, inputs, out, m = paraphrased
    every = [r for d in inputs for r in rows(d)]
    ev, train = rows(out / "eval"), _train_rows(out, m)
    # the case this test is about is present: paraphrases across the split and questions through held facts
    rep = m["heldout"]
    assert rep["same_facts_other_wording"] > 0 and rep["fact_rows_dropped"] > 0
    by_facts = {}
    for r in every:
        by_facts.setdefault(frozenset(r["fact_keys"]), set()).add(normalize_question(r["question"]))
    assert any(len(qs) > 1 for qs in by_facts.values())
    # held facts, from the eval rows themselves (not from the build's own bookkeeping)
    held_sets = {frozenset(r["fact_keys"]) for r in ev}
    held_facts = set().union(*held_sets)
    held_q = {normalize_question(r["question"]) for r in ev}
    ids, questions, facts = load_heldout(out / "heldout.json")
    assert facts == held_facts and held_q <= questions
    # RL rows: no true question asks or goes through a held-out fact, in any wording
    assert train and not any(set(r["fact_keys"]) & held_facts for r in train)
    assert not {normalize_question(r["question"]) for r in train} & held_q
    # decoy chains: none asks a held-out question, by text or by facts
    decoys = [c for r in train for c in r["chains"] if not c["is_true"]]
    assert decoys and all(c["fact_keys"] for c in decoys)
    assert not any(frozenset(c["fact_keys"]) in held_sets for c in decoys)
    assert not any(normalize_question(c["target"]) in held_q for c in decoys)
    # every row is accounted for: evaluated, trained, or counted as dropped by the closure
    own = sum(s["own"] for s in m["stages"])
    dropped = m["dropped"].get("heldout_fact", 0) + m["dropped"].get("heldout_decoy", 0)
    assert len(ev) + own + dropped == len(every)
    # the SFT examples `train sft --heldout` builds: no held-out fact asked, answered or cited in a target
    triplets = {t.id: t for t in get_source("triplets", str(trip)).iter_triplets()}
    kept = build_sft_examples(trip, SFTConfig(max_examples=None), heldout=out / "heldout.json")
    assert kept and not any(set(triplets[e["source_id"]].fact_keys) & held_facts for e in kept)
    held_sentences = {s for r in ev for s in r["supporting_facts"]}
    targets = [e["completion"][0]["content"] for e in kept]
    assert held_sentences and not any(s in t for s in held_sentences for t in targets)
    assert not {normalize_question(e["question"]) for e in kept} & held_q


def test_a_decoy_asking_a_held_out_fact_in_other_words_is_dropped(paraphrased):
    """A decoy chain whose question is a held-out question in words no row uses (its source question was
    never sampled as a row, only drawn as a decoy) is recognised by its fact keys, not by its text."""
    from curriculum.build import hold_out

    _, inputs, _, _ = paraphrased
    table = pa.concat_tables(pq.read_table(p) for d in inputs for p in sorted(d.glob("part-*.parquet")))
    d = table.to_pylist()
    held = np.zeros(len(d), dtype=bool)
    target = next(i for i, r in enumerate(d) if r["task"] == "longqa")
    held[target] = True
    keychain = [
        i for i, r in enumerate(d) if r["num_chains"] > 1 and r["source_id"] != d[target]["source_id"]
    ]
    _, _, decoy, _ = hold_out(table, held)
    free = next(
        i for i in keychain if not decoy[i] and not set(d[i]["fact_keys"]) & set(d[target]["fact_keys"])
    )
    chain = next(c for c in d[free]["chains"] if not c["is_true"])
    chain["target"] = "Put another way: " + d[target]["question"].lower()  # a wording no row has
    chain["fact_keys"] = list(d[target]["fact_keys"])
    _, uses_fact, decoy, report = hold_out(pa.Table.from_pylist(d, schema=table.schema), held)
    assert decoy[free] and not uses_fact[free]
    assert report["report"]["decoy_rows_dropped"] >= 1


def test_without_fact_keys_a_decoy_naming_a_held_out_question_is_dropped_by_its_text(paraphrased):
    """Real sources carry no fact keys: a decoy chain that names a held-out question (in another case and
    punctuation) is recognised by its normalised text."""
    from curriculum.build import hold_out

    _, inputs, _, _ = paraphrased
    table = pa.concat_tables(pq.read_table(p) for d in inputs for p in sorted(d.glob("part-*.parquet")))
    d = table.to_pylist()
    for r in d:  # as a real source's rows: no fact identity anywhere
        r["fact_keys"] = None
        for c in r["chains"]:
            c["fact_keys"] = None
    held = np.zeros(len(d), dtype=bool)
    target = next(i for i, r in enumerate(d) if r["task"] == "longqa")
    held[target] = True
    plain = pa.Table.from_pylist(d, schema=table.schema)
    _, _, decoy, _ = hold_out(plain, held)
    free = next(
        i
        for i, r in enumerate(d)
        if r["num_chains"] > 1 and not decoy[i] and r["source_id"] != d[target]["source_id"]
    )
    chain = next(c for c in d[free]["chains"] if not c["is_true"])
    chain["target"] = d[target]["question"].upper().rstrip("?") + " ?"
    _, uses_fact, decoy, _ = hold_out(pa.Table.from_pylist(d, schema=table.schema), held)
    assert decoy[free] and not uses_fact.any()


def test_the_warm_up_sft_leaves_out_a_held_out_source_id_whatever_its_question(tmp_path):
    """heldout.json's source ids are a rule of their own: a triplet under a held-out id is left out even when
    its question text and facts are not listed (a source that reworded it between runs, say)."""
    from train.config import SFTConfig
    from train.sft import build_sft_examples

    trip = tmp_path / "t"
    run_triplets(get_source("synthetic", options={"num_triplets": 12}), trip)
    (tmp_path / "heldout.json").write_text(
        json.dumps({"source_ids": ["synthetic:0-3", "synthetic:0-7"], "questions": [], "fact_keys": []})
    )
    kept = build_sft_examples(trip, SFTConfig(max_examples=None), heldout=tmp_path / "heldout.json")
    ids = [e["source_id"] for e in kept]
    assert len(ids) == 10 and "synthetic:0-3" not in ids and "synthetic:0-7" not in ids
