"""One table of completions, three consumers of the one reward module (eval/reward.py), identical scores.

Each row is run through eval's scorer (:func:`eval.scoring.score` with eval's judge), the TRL reward
(:class:`train.rewards.HybridQAReward`) and verl's ``compute_score`` from the file that ``VerlBackend`` copies
into its export, loaded by path in a ``python -I -S`` process (the standard library only, as in verl's
workers). The judge is a real HTTP server on loopback that answers each prediction as the table says. Every
path must give the table's expected value: max(EM, judge) with the judge (None where the judge's reply could
not be read: eval keeps the rule's score and counts the failure, TRL gives None, verl reports judge_failed),
and sub-EM and bounded sub-EM without it (eval has no bounded sub-EM metric). The judge must be asked
about the same predictions on every path.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from datagen.prompts import ANSWER_PREFIX
from eval.data import EvalItem
from eval.judge import JudgeConfig, make_judge
from eval.scoring import score
from train.backends.verl import REWARD_FILE, VerlBackend
from train.config import GRPOPhaseConfig
from train.rewards import HybridQAReward

from ..eval.fake_server import Action, FakeServer

#: completion, accepted answers, the judge's reply to its prediction (None: the judge must not be asked),
#: then the expected max(EM, judge) (None: the judge failed), sub-EM and bounded sub-EM (no judge).
TABLE = [
    (f"{ANSWER_PREFIX} Ed Wood.", ["Ed Wood", "Edward Wood"], None, 1.0, 1.0, 1.0),
    (f"{ANSWER_PREFIX} the Fab Four.", ["The Beatles"], "They are equivalent. [[YES]]", 1.0, 0.0, 0.0),
    (
        "Compared the two. [[NO]] is not an answer. The answer is Ringo.",
        ["The Beatles"],
        "[[NO]]",
        0.0,
        0.0,
        0.0,
    ),
    ("The answer is \\boxed{42}.", ["42"], None, 1.0, 1.0, 1.0),
    ("\\boxed{ed wood}", ["Ed Wood"], None, 1.0, 1.0, 1.0),
    (f"{ANSWER_PREFIX} The Beatles.", ["Beatles"], None, 1.0, 1.0, 1.0),
    ("So the final answer is: \\boxed{\\text{Marie Curie}}", ["Marie Curie"], None, 1.0, 1.0, 1.0),
    ("I am not sure.", ["Paris"], None, 0.0, 0.0, 0.0),  # no answer: the judge is not asked
    ("", ["Paris"], None, 0.0, 0.0, 0.0),
    (f"{ANSWER_PREFIX} (insert answer here)", ["Paris"], None, 0.0, 0.0, 0.0),
    (f"{ANSWER_PREFIX} yes.", ["yes"], None, 1.0, 1.0, 1.0),
    (f"{ANSWER_PREFIX} No.", ["yes"], "NO", 0.0, 0.0, 0.0),
    ("Answer: no\n", ["nobody"], "no.", 0.0, 0.0, 0.0),  # yes/no never match inside a word
    (f"{ANSWER_PREFIX} no, he did not.", ["no"], "NO", 0.0, 0.0, 0.0),  # yes/no answers match whole
    (f"<think>{ANSWER_PREFIX} Lyon.</think>{ANSWER_PREFIX} **Zürich**.", ["Zurich"], "YES", 1.0, 0.0, 0.0),
    (f"{ANSWER_PREFIX} Café au lait", ["café au lait"], None, 1.0, 1.0, 1.0),
    (f"{ANSWER_PREFIX} 東京", ["東京"], None, 1.0, 1.0, 1.0),
    (f"{ANSWER_PREFIX} Ed Wood, Tim Burton, Johnny Depp.", ["Ed Wood"], "**No**", 0.0, 1.0, 0.0),
    (f"{ANSWER_PREFIX} Ed Wood or Tim Burton", ["Ed Wood"], "Verdict: NO", 0.0, 1.0, 0.0),
    (f"{ANSWER_PREFIX} Ed Wood or Burton", ["Ed Wood"], "NO", 0.0, 1.0, 0.0),  # two extra words, one hedges
    (f"{ANSWER_PREFIX} Ed Wood (director).", ["Ed Wood"], "<think>same person</think>YES", 1.0, 1.0, 1.0),
    (f"{ANSWER_PREFIX} Lutetia.", ["Paris"], "maybe", None, 0.0, 0.0),  # unreadable: a failure, not a NO
    (f"{ANSWER_PREFIX} Lugdunum.", ["Paris"], "[[YES]] or [[NO]]", None, 0.0, 0.0),
]
QUESTION = "Which one?"

# Runs the exported file by path, as verl does, with no site-packages, PYTHONPATH or current directory.
VERL_RUNNER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("custom_module", sys.argv[1])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
url, rows = json.load(sys.stdin)
kw = {"judge_url": url, "judge_model": "judge", "judge_timeout": 10, "judge_max_retries": 0}
out = [[m.compute_score("keychain/x", c, g, {"question": q}, **kw) for c, g, q in rows]]
for rule in ("sub_em", "bounded_sub_em"):
    out.append([m.compute_score("keychain/x", c, g, {"question": q}, rule=rule)["score"] for c, g, q in rows])
out.append(sorted(k for k in sys.modules if k.split(".")[0] in ("datagen", "eval", "train", "numpy")))
print(json.dumps(out))
"""


def _judge_rule(body):
    user = body["messages"][-1]["content"]
    pred = re.search(r"^Prediction: (.*)$", user, re.MULTILINE).group(1)
    replies = {_prediction(c): r for c, _, r, *_ in TABLE if r is not None}
    return Action.ok(replies.get(pred, "no reply in the table"))


def _prediction(completion):
    from eval.reward import extract_answer

    return extract_answer(completion)


def _asked(server, since):
    return sorted(
        re.search(r"^Prediction: (.*)$", body["messages"][-1]["content"], re.MULTILINE).group(1)
        for body in server.bodies[since:]
    )


@pytest.fixture(scope="module")
def verl_copy(tmp_path_factory):
    out = tmp_path_factory.mktemp("verl-export")
    VerlBackend(GRPOPhaseConfig(output_dir=str(out / "unused")), out)
    return out / REWARD_FILE


def test_eval_trl_and_the_verl_copy_score_the_table_alike(verl_copy):
    completions = [row[0] for row in TABLE]
    golds = [row[1] for row in TABLE]
    want_judged = [row[3] for row in TABLE]
    want_sub, want_bounded = [row[4] for row in TABLE], [row[5] for row in TABLE]
    should_ask = sorted(_prediction(c) for c, _, r, *_ in TABLE if r is not None)
    items = [EvalItem(f"u{i}", "keychain/x", [], QUESTION, g) for i, g in enumerate(golds)]
    predictions = {f"u{i}": [c] for i, c in enumerate(completions)}

    with FakeServer(rule=_judge_rule) as server:
        judge_cfg = JudgeConfig(
            url=server.url, model="judge", backend_options={"timeout": 10, "max_retries": 0}
        )

        # eval's scorer: a failed judge call keeps the rule's score and is counted per row
        with make_judge(judge_cfg) as judge:
            rows = {r["uid"]: r for r in score(items, predictions, judge=judge).rows}
        eval_judged = [
            None if rows[f"u{i}"]["judge_failed"] else rows[f"u{i}"]["max_em_judge"]
            for i in range(len(TABLE))
        ]
        eval_sub = [rows[f"u{i}"]["sub_em"] for i in range(len(TABLE))]
        asked_eval = _asked(server, 0)

        # the TRL reward
        n = server.count()
        questions = [QUESTION] * len(TABLE)
        trl_judged = HybridQAReward("em", judge_cfg)(completions, answers=golds, question=questions)
        asked_trl = _asked(server, n)
        trl_sub = HybridQAReward("sub_em")(completions, answers=golds, question=questions)
        trl_bounded = HybridQAReward("bounded_sub_em")(completions, answers=golds, question=questions)

        # the file verl-config exports, in a standard-library-only interpreter
        n = server.count()
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", VERL_RUNNER, str(verl_copy)],
            input=json.dumps(
                [server.url, [[c, g, QUESTION] for c, g in zip(completions, golds, strict=True)]]
            ),
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
        assert proc.returncode == 0, proc.stderr
        verl_scores, verl_sub, verl_bounded, imported = json.loads(proc.stdout)
        asked_verl = _asked(server, n)

    verl_judged = [None if s["judge_failed"] else s["score"] for s in verl_scores]
    assert imported == []  # the copy needs nothing of longmill (nor numpy)
    assert [s["acc"] for s in verl_scores] == [s["score"] for s in verl_scores]
    for i, row in enumerate(TABLE):
        got = (eval_judged[i], trl_judged[i], verl_judged[i])
        assert got == (want_judged[i],) * 3, f"row {i} {row[0]!r}: eval, TRL, verl gave {got}"
        got = (eval_sub[i], trl_sub[i], verl_sub[i])
        assert got == (want_sub[i],) * 3, f"row {i} {row[0]!r} sub_em: eval, TRL, verl gave {got}"
        got = (trl_bounded[i], verl_bounded[i])
        assert got == (want_bounded[i],) * 2, f"row {i} {row[0]!r} bounded_sub_em: TRL, verl gave {got}"
    # the judge is asked where the rule missed and an answer was extracted, the same items on every path
    assert asked_eval == asked_trl == asked_verl == should_ask


def test_the_export_is_the_module_verbatim(verl_copy):
    import eval.reward

    assert verl_copy.read_bytes() == open(eval.reward.__file__, "rb").read()
