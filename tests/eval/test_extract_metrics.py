"""Answer extraction and the QA metrics, checked against an independent reference and closed forms."""

from __future__ import annotations

import doctest
import itertools
import math
import re
import string
from collections import Counter

import pytest

import eval.metrics
import eval.reward
from datagen.prompts import ANSWER_FORMAT_INSTRUCTION
from eval.metrics import METRICS, pass_at_k
from eval.reward import exact_match, extract_answer, f1, f1_precision_recall, sub_exact_match


@pytest.mark.parametrize("module", [eval.metrics, eval.reward])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Therefore, the answer is Paris.", "Paris"),
        ("<think>Maybe Lyon. The answer is Lyon.</think>\nTherefore, the answer is **Paris**.", "Paris"),
        ("<think>The answer is Lyon</think>", None),  # reasoning only: nothing after </think>
        ("The answer is 5. Wait, no. Therefore, the answer is 6.", "6"),
        ("So the final answer is: \\boxed{42}", "42"),
        ("\\boxed{\\text{Marie Curie}}", "Marie Curie"),
        ("Reasoning...\nAnswer: Ed Wood\n", "Ed Wood"),
        ("**Answer:** *yes*", "yes"),
        ('Therefore, the answer is "The Beatles".', "The Beatles"),
        ("Therefore, the answer is (insert answer here).", None),
        ("I cannot tell from the text.", None),
        ("", None),
        (None, None),
        ("THEREFORE, THE ANSWER IS  Berlin !", "Berlin"),
        ("Answer: 1912\nAnswer: 1913", "1913"),
    ],
)
def test_extraction(text, expected):
    assert extract_answer(text) == expected


def test_prompt_format_and_extraction_share_one_phrase():
    """The instruction's own example answer extracts: prompts and the parser cannot drift apart."""
    example = ANSWER_FORMAT_INSTRUCTION.split('"')[1].replace("(insert answer here)", "Velora Quint")
    assert extract_answer(example) == "Velora Quint"


# An independent transcription of the official HotpotQA evaluation rules (hotpot_evaluate_v1.py),
# written out here so the library's implementation is checked against the spec, not against itself.
def ref_normalize(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def ref_f1(pred, gold):
    p, g = ref_normalize(pred), ref_normalize(gold)
    if p in ("yes", "no", "noanswer") and p != g:
        return (0, 0, 0)
    if g in ("yes", "no", "noanswer") and p != g:
        return (0, 0, 0)
    pt, gt = p.split(), g.split()
    same = sum((Counter(pt) & Counter(gt)).values())
    if same == 0:
        return (0, 0, 0)
    prec, rec = same / len(pt), same / len(gt)
    return (2 * prec * rec / (prec + rec), prec, rec)


EDGE_CASES = [
    ("The Beatles", "Beatles"),
    ("an apple", "apple"),
    ("A Tale of Two Cities", "Tale of Two Cities"),
    ("theatre", "atre"),  # "the" inside a word is not an article
    ("U.S.A.", "USA"),
    ("Saint-Étienne", "Saint Étienne"),
    ("Saint-Étienne", "SaintÉtienne"),
    ("café", "cafe"),
    ("Café", "café"),
    ("naïve", "naive"),
    ("“quoted”", "quoted"),  # non-ASCII punctuation stays
    ("yes", "yes."),
    ("Yes", "no"),
    ("no", "no answer"),
    ("noanswer", "no answer"),
    ("yes it is", "yes"),
    ("1,000", "1000"),
    ("3.14", "314"),
    ("  spaced   out ", "spaced out"),
    ("", "anything"),
    ("Marie Curie", "Curie"),
    ("Marie Skłodowska Curie", "Marie Curie"),
    ("the the", ""),
    ("New York City", "new york"),
]


@pytest.mark.parametrize(("pred", "gold"), EDGE_CASES)
def test_em_and_f1_agree_with_the_official_hotpotqa_rules(pred, gold):
    assert exact_match(pred, [gold]) == float(ref_normalize(pred) == ref_normalize(gold))
    assert f1_precision_recall(pred, gold) == pytest.approx(ref_f1(pred, gold))


def test_pinned_edge_case_values():
    assert exact_match("U.S.A.", ["USA"]) == 1.0
    assert exact_match("café", ["cafe"]) == 0.0  # no accent folding, as in the official script
    assert exact_match("“quoted”", ["quoted"]) == 0.0  # curly quotes are not ASCII punctuation
    assert f1("yes it is", ["yes"]) == 0.0 and f1("yes", ["yes."]) == 1.0
    assert exact_match("The Beatles", ["Rolling Stones", "the beatles"]) == 1.0  # the best alias wins


@pytest.mark.parametrize(
    ("pred", "golds", "value"),
    [
        ("It was Marie Curie in 1903", ["Marie Curie"], 1.0),
        ("Curie", ["Marie Curie"], 1.0),
        ("no", ["nobody"], 0.0),
        ("yes, definitely", ["yes"], 0.0),
        ("", ["x"], 0.0),
        (None, ["x"], 0.0),
        ("Paris, France", ["London", "Paris"], 1.0),
    ],
)
def test_sub_em(pred, golds, value):
    assert sub_exact_match(pred, golds) == value


def test_registry_records_direction_and_aggregation():
    for name in ("em", "sub_em", "f1", "precision", "recall"):
        m = METRICS.get(name)
        assert m.higher_is_better and m.aggregation == "mean"
    with pytest.raises(KeyError, match="did you mean 'sub_em'"):
        METRICS.get("subem")


def brute_force_pass_at_k(n, c, k):
    """The definition: the share of k-subsets of n samples that contain a correct one."""
    items = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    ("n", "c", "k"), [(n, c, k) for n in (1, 2, 5, 8) for c in range(n + 1) for k in (1, 2, n) if k <= n]
)
def test_pass_at_k_matches_the_closed_form_and_the_definition(n, c, k):
    closed = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_fraction_correct_and_bad_inputs_raise():
    assert pass_at_k(10, 7, 1) == pytest.approx(0.7)
    assert pass_at_k(200, 13, 100) == pytest.approx(1 - math.comb(187, 100) / math.comb(200, 100))
    for bad in ((4, 5, 1), (4, 2, 0), (2, 1, 3)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)
