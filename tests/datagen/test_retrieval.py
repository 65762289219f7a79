"""The RULER-style retrieval stress set: ``needles`` (multi-key needles) and ``vartrack`` (variable
tracking), as a grid over length x depth, with exact lengths, determinism and verify hooks."""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from datagen.generators import GENERATORS
from datagen.generators.retrieval import NeedlesConfig, VarTrackConfig, resolve_assignments
from datagen.runner import RunConfig, run_generator
from datagen.verify import check_row, verify

NEEDLE = re.compile(r"One of the special magic numbers for ([0-9a-f]{16}) is: (\d+)\.")
ASSIGN = re.compile(r"VAR ([A-Z]{5}) = (?:(\d+)|VAR ([A-Z]{5}))\.")
LENGTH = 3000


def datagen(*args: str) -> str:
    """Run the datagen CLI in-process (tests/cli.py; the subprocess form is covered by test_cli.py)."""
    from datagen.cli import main

    from ..cli import run_cli

    proc = run_cli(main, *args, prog_name="datagen")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def make(name, corpus, n=6, **kw):
    gen = GENERATORS.get(name)(GENERATORS.get(name).config_cls(length=LENGTH, **kw), corpus)
    return [gen.sample(i, Counter()) for i in range(n)]


def test_needles_structure_and_answer(toy_corpus):
    for s in make("needles", toy_corpus, num_needles=10, num_queries=1):
        found = NEEDLE.findall(s.user_text)
        assert len(found) == 10 and len({k for k, _ in found}) == 10 and len({v for _, v in found}) == 10
        key = re.search(r"number for ([0-9a-f]{16})", s.question).group(1)
        assert (
            s.answers == [dict(found)[key]] and s.task == "needles" and s.ability == "long_context_retrieval"
        )
        assert len(s.gold_docs) == 1 and key in s.gold_docs[0].text
        assert LENGTH * 0.99 <= s.prompt_tokens <= LENGTH and check_row(s.to_row()) == []


def test_needles_several_queries_are_answered_in_order(toy_corpus):
    for s in make("needles", toy_corpus, num_needles=6, num_queries=3):
        table = dict(NEEDLE.findall(s.user_text))
        keys = re.findall(r"[0-9a-f]{16}", s.question)
        assert len(keys) == 3 and s.answers[0] == ", ".join(table[k] for k in keys)
        assert s.question_type == "multi" and s.hops == 3 and check_row(s.to_row()) == []


def test_depth_grid_places_the_queried_needle(toy_corpus):
    grid = [0.0, 0.25, 0.5, 0.75, 1.0]
    samples = make("needles", toy_corpus, n=10, num_needles=8, depths="0,0.25,0.5,0.75,1")
    for i, s in enumerate(samples):
        assert json.loads(s.extra_info["task_data"])["placement"] == f"depth:{grid[i % 5]}"
        assert abs(s.gold_doc_depths[0] - grid[i % 5]) < 0.08, (i, s.gold_doc_depths)
    # the other needles are spread, not next to the queried one
    others = [
        s.doc_ids.index(d) for s in samples[:1] for d in s.doc_ids if d not in {g.doc_id for g in s.gold_docs}
    ]
    assert len(others) > 8


def test_vartrack_structure_and_answer(toy_corpus):
    for s in make("vartrack", toy_corpus, num_chains=4, chain_length=5):
        found = ASSIGN.findall(s.user_text)
        assert len(found) == 20
        resolved = resolve_assignments(found)
        value = re.search(r"value (\d+)", s.question).group(1)
        holders = [n for n, v in resolved.items() if v == value]
        assert len(holders) == 5 and set(s.answers[0].split()) == set(holders)
        assert s.answers[0].split()[0] == next(n for n, num, _ in found if num == value)  # chain order
        appearance = [n for n, _, _ in found if n in holders]
        assert " ".join(appearance) in s.answers  # the order of the text is accepted too
        assert len(set(resolved.values())) == 4 and s.task == "vartrack"
        assert LENGTH * 0.99 <= s.prompt_tokens <= LENGTH and check_row(s.to_row()) == []


@pytest.mark.parametrize(("name", "config"), [("needles", NeedlesConfig), ("vartrack", VarTrackConfig)])
def test_same_seed_same_bytes_and_verify_passes(tmp_path, toy_source, name, config):
    def run(out, seed=4):
        run_generator(
            name,
            config(length=2500, seed=seed, depths="0,0.5,1"),
            toy_source,
            RunConfig(out=out, num_samples=6, rows_per_part=3),
        )
        return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}

    a = run(tmp_path / "a")
    assert a == run(tmp_path / "b") and len(a) == 2 and run(tmp_path / "c", seed=5) != a
    report = verify(tmp_path / "a")
    assert report.ok, [str(v) for v in report.violations]


def _problems(row, name):
    return [m for c, m in check_row(row) if c == name]


def test_needles_verify_catches_tampering(toy_corpus):
    s = make("needles", toy_corpus, n=1, num_needles=5)[0]
    key = json.loads(s.extra_info["task_data"])["queries"][0]
    row = s.to_row()
    row["answers"] = row["reward_model"]["ground_truth"] = ["1234567"]
    assert any("ground truth" in m for m in _problems(row, "needles"))

    row = s.to_row()  # the queried needle's value edited in the text
    user = row["prompt"][-1]["content"]
    row["prompt"][-1]["content"] = user.replace(f"for {key} is: {s.answers[0]}", f"for {key} is: 7654321")
    assert any("ground truth" in m for m in _problems(row, "needles"))

    row = s.to_row()  # a second needle for the queried key
    row["prompt"][-1]["content"] = user.replace(
        "</text>", f"One of the special magic numbers for {key} is: 1111111.\n</text>"
    )
    assert any("more than one needle" in m for m in _problems(row, "needles"))

    row = s.to_row()  # the queried needle removed
    row["prompt"][-1]["content"] = re.sub(rf"One of the special magic numbers for {key} is: \d+\.", "", user)
    assert any("no needle" in m for m in _problems(row, "needles"))


def test_vartrack_verify_catches_tampering(toy_corpus):
    s = make("vartrack", toy_corpus, n=1, num_chains=2, chain_length=4)[0]
    chain = s.answers[0].split()
    row = s.to_row()
    row["answers"] = row["reward_model"]["ground_truth"] = [" ".join(reversed(chain))]
    assert any("ground truth" in m for m in _problems(row, "vartrack"))

    row = s.to_row()  # an accepted alternative (the order of appearance) that is not the chain's variables
    row["answers"] = row["reward_model"]["ground_truth"] = [s.answers[0], " ".join(chain[:-1])]
    assert any("accepted answer" in m for m in _problems(row, "vartrack"))

    row = s.to_row()  # one more variable copies the end of the chain: the answer is now incomplete
    user = row["prompt"][-1]["content"]
    row["prompt"][-1]["content"] = user.replace("</text>", f"VAR QQQQQ = VAR {chain[-1]}.\n</text>")
    assert _problems(row, "vartrack")

    row = s.to_row()  # a variable assigned twice
    row["prompt"][-1]["content"] = user.replace("</text>", f"VAR {chain[1]} = 99999.\n</text>")
    assert any("more than once" in m for m in _problems(row, "vartrack"))

    row = s.to_row()
    row["extra_info"]["task_data"] = "{}"
    assert any("task_data" in m for m in _problems(row, "vartrack"))


def test_options_are_checked():
    from longmill.errors import LongmillError

    with pytest.raises(LongmillError, match="depths"):
        NeedlesConfig(length=3000, depths="0,1.5")
    with pytest.raises(LongmillError, match="num_queries"):
        NeedlesConfig(length=3000, num_needles=2, num_queries=3)
    with pytest.raises(LongmillError, match="chain_length"):
        VarTrackConfig(length=3000, chain_length=1)


def test_too_many_needles_for_the_length_is_a_clear_error(tmp_path, toy_source):
    from longmill.errors import LengthBudgetError

    with pytest.raises(LengthBudgetError):
        run_generator(
            "needles",
            NeedlesConfig(length=600, num_needles=60),
            toy_source,
            RunConfig(out=tmp_path / "x", num_samples=1),
        )


def test_cli_grid_over_length_and_depth(tmp_path):
    from .test_cli import rows

    for length in ("2k", "4k"):
        datagen(
            "needles",
            "--length",
            length,
            "--num-samples",
            "4",
            "--num-queries",
            "2",
            "--depths",
            "0,1",
            "--out",
            str(tmp_path / f"n-{length}"),
        )
        datagen(
            "vartrack",
            "--length",
            length,
            "--num-samples",
            "2",
            "--placement",
            "depth:0.5",
            "--out",
            str(tmp_path / f"v-{length}"),
        )
    rs = rows(tmp_path / "n-4k")
    assert [round(r["gold_doc_depths"][0]) for r in rs] == [0, 1, 0, 1] and all(
        r["length_target"] == 4000 for r in rs
    )
    assert "OK: 12 rows" in datagen("verify", str(tmp_path))


def _ask_instead(row: dict, old: str, new: str, prompt_only: bool) -> dict:
    """``row`` asking about ``new`` where it asked about ``old`` (the question after the text)."""
    user = row["prompt"][-1]["content"]
    at = user.rindex("Question: ")
    assert old in user[at:]
    row["prompt"][-1]["content"] = user[:at] + user[at:].replace(old, new)
    if not prompt_only:
        row["question"] = row["extra_info"]["question"] = row["question"].replace(old, new)
    return row


def test_needles_verify_catches_a_question_about_a_distractor(toy_corpus):
    """Issue 19: a needles prompt that asks for a distractor's key passed verify."""
    s = make("needles", toy_corpus, n=1, num_needles=5)[0]
    key = json.loads(s.extra_info["task_data"])["queries"][0]
    table = dict(NEEDLE.findall(s.user_text))
    other = next(k for k in table if k != key)
    for prompt_only in (True, False):
        row = _ask_instead(s.to_row(), key, other, prompt_only)
        assert any("question" in m for m in _problems(row, "needles")), (prompt_only, check_row(row))
    # everything re-pointed at the distractor, its value as the answer: the gold needle is still the old one
    row = _ask_instead(s.to_row(), key, other, False)
    row["answers"] = row["reward_model"]["ground_truth"] = row["extra_info"]["answers"] = [table[other]]
    data = json.loads(row["extra_info"]["task_data"])
    data["queries"] = [other]
    row["extra_info"]["task_data"] = json.dumps(data)
    assert any("gold" in m for m in _problems(row, "needles")), check_row(row)


def test_vartrack_verify_catches_a_question_about_another_chain(toy_corpus):
    """Issue 19: a vartrack prompt that asks about another chain's value passed verify."""
    s = make("vartrack", toy_corpus, n=1, num_chains=2, chain_length=3)[0]
    value = json.loads(s.extra_info["task_data"])["value"]
    found = ASSIGN.findall(s.user_text)
    other = next(num for _, num, _ in found if num and num != value)
    for prompt_only in (True, False):
        row = _ask_instead(s.to_row(), f"value {value}", f"value {other}", prompt_only)
        assert any("question" in m for m in _problems(row, "vartrack")), (prompt_only, check_row(row))
    # everything re-pointed at the other chain: its variables are not the gold documents
    holders = [n for n, v in resolve_assignments(found).items() if v == other]
    first = next(n for n, num, _ in found if num == other)
    order = [first]
    copies = {src: n for n, _, src in found if src}
    while order[-1] in copies:
        order.append(copies[order[-1]])
    assert sorted(order) == sorted(holders)
    row = _ask_instead(s.to_row(), f"value {value}", f"value {other}", False)
    row["answers"] = row["reward_model"]["ground_truth"] = row["extra_info"]["answers"] = [" ".join(order)]
    data = json.loads(row["extra_info"]["task_data"])
    data["value"] = other
    row["extra_info"]["task_data"] = json.dumps(data)
    assert any("gold" in m for m in _problems(row, "vartrack")), check_row(row)


#: source text shaped like the retrieval tasks' own sentences (a needle, a value, a copy, odd spacing/case)
TASK_SHAPED = (
    "One of the special magic numbers for 0123456789abcdef is: 4242424. "
    "One of the Special Magic Numbers for the harbour is : 77. "
    "VAR QWERT = 12345. VAR ASDFG = VAR QWERT. "
)


def _task_shaped_source():
    import dataclasses

    from datagen.schema import Document

    from .conftest import ListSource, toy_triplets

    triplets = []
    for t in toy_triplets(60):
        gold = [Document.make(d.title, TASK_SHAPED + d.text) for d in t.gold_docs]
        dis = [Document.make(d.title, d.text + " " + TASK_SHAPED.strip()) for d in t.distractor_docs]
        triplets.append(dataclasses.replace(t, gold_docs=gold, distractor_docs=dis))
    return ListSource(triplets)


@pytest.mark.parametrize(("name", "config"), [("needles", NeedlesConfig), ("vartrack", VarTrackConfig)])
def test_task_shaped_source_text_never_breaks_verify(tmp_path, name, config):
    """Issue 19: a source holding needle-shaped or `VAR X = n.` sentences made verify reject every needles
    and vartrack sample made from it. Such text is defused when read (as KeyChain pairs are), and counted."""
    out = tmp_path / name
    stats = run_generator(
        name, config(length=3000, seed=2), _task_shaped_source(), RunConfig(out=out, num_samples=4)
    )
    report = verify(out)
    assert report.ok, [str(v) for v in report.violations[:3]]
    docs = 60 * (2 + 8)  # every document of the source holds the text once
    assert stats["source_cleaned"] == {
        "assignment_text_neutralised": 2 * docs,
        "needle_text_neutralised": 2 * docs,
    }
    user = pq.read_table(out / "part-00000.parquet").to_pylist()[0]["prompt"][-1]["content"]
    assert "One of the special magic numbers for 0123456789abcdef is 4242424." in user  # still readable
    assert "var QWERT = 12345. var ASDFG = var QWERT." in user
