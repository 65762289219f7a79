"""Warm-up SFT: targets cite the evidence and end in the answer format; teacher traces are rejection-sampled."""

from __future__ import annotations

import json
import re

import pytest

from datagen.sources import get_source
from eval.reward import extract_answer
from train.config import SFTConfig
from train.sft import build_sft_examples, run_sft, sft_example

from ..eval.fake_server import Action, FakeServer


def test_targets_cite_evidence_by_document_number(small_triplets):
    t = next(get_source("triplets", str(small_triplets)).iter_triplets())
    ex = sft_example(t, 0, seed=0, distractors=3)
    prompt, target = ex["prompt"][0]["content"], ex["completion"][0]["content"]
    assert extract_answer(target) == t.answers[0]
    for f in t.supporting_facts:
        n = int(re.search(rf"Document (\d+) \({re.escape(f.title)}\)", target).group(1))
        assert f"Document {n}:\nTitle: {f.title}\n" in prompt and f.text in target
    assert prompt.count("Document ") == len(t.gold_docs) + 3 and f"Question: {t.question}" in prompt


@pytest.mark.slow
def test_sft_runs_and_saves_a_model(tmp_path, small_triplets, tiny_qwen2):
    summary = run_sft(
        small_triplets,
        tmp_path / "sft",
        SFTConfig(
            model=str(tiny_qwen2), max_steps=2, per_device_train_batch_size=1, max_examples=8, logging_steps=1
        ),
    )
    assert summary["steps"] == 2 and summary["targets"] == {"template_target": 8}
    assert (tmp_path / "sft" / "final" / "model.safetensors").exists()
    assert (tmp_path / "sft" / "final" / "tokenizer.json").exists()
    logged = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in logged)


def test_teacher_traces_kept_only_when_the_reward_accepts_them(tmp_path, small_triplets):
    triplets = list(get_source("triplets", str(small_triplets), limit=6).iter_triplets())
    right = {t.question: t.answers[0] for t in triplets[::2]}

    def teacher(body):
        user = body["messages"][-1]["content"]
        q = re.search(r"Question: (.*)\n", user).group(1)
        return Action.ok(f"Looking at the documents... Therefore, the answer is {right.get(q, 'Nobody')}.")

    from train.sft import apply_teacher

    with FakeServer(rule=teacher) as server:
        config = SFTConfig(
            max_examples=6,
            teacher_model="teacher",
            teacher_backend="openai",
            teacher_backend_option=[f"url={server.url}"],
            teacher_k=2,
        )
        examples = build_sft_examples(small_triplets, config)
        counts = apply_teacher(examples, config, tmp_path)
    assert counts == {"teacher_accepted": 3, "template_target": 3}
    kept = [e for e in examples if e["completion"][0]["content"].startswith("Looking at the documents")]
    assert len(kept) == 3 and all(e["question"] in right for e in kept)


def test_sft_on_something_that_is_not_triplets_says_so(tmp_path, small_curriculum):
    from longmill.errors import LongmillError

    with pytest.raises(LongmillError, match="is not a triplet shard"):
        build_sft_examples(small_curriculum / "stage-1", SFTConfig())
    with pytest.raises(LongmillError, match="no such folder"):
        build_sft_examples(tmp_path / "missing", SFTConfig())
