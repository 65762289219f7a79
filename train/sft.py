"""Warm-up SFT on short triplets (QwenLong-L1's first stage), with TRL's SFTTrainer.

Each triplet becomes a short long-QA prompt (its gold documents and a few of its own distractors, in
longmill's template) and a target that cites the supporting evidence by document number and ends in the
reward's answer format. Optionally, a teacher model's completions replace the template targets where the
reward accepts them (rejection sampling).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datagen.prompts import ANSWER_PREFIX, DOC_TEMPLATES, longqa_pieces
from datagen.schema import Triplet
from datagen.shards import check_complete
from datagen.sources import get_source
from longmill.errors import LongmillError
from longmill.io import atomic_write_json
from longmill.manifest import load_heldout, normalize_question
from longmill.rng import sample_rng
from longmill.stats import Stats
from train.callbacks import MetricsLogger
from train.config import SFTConfig
from train.rewards import HybridQAReward

log = logging.getLogger(__name__)


def sft_example(t: Triplet, index: int, seed: int, distractors: int = 3) -> dict[str, Any]:
    """A conversational prompt-completion example for triplet ``t``."""
    rng = sample_rng(seed, "sft", index)
    extra = [t.distractor_docs[i] for i in rng.permutation(len(t.distractor_docs))[:distractors]]
    docs = list(t.gold_docs) + extra
    docs = [docs[i] for i in rng.permutation(len(docs))]
    template = DOC_TEMPLATES.get("default")
    head, tail = longqa_pieces(t.question)
    body = "".join(
        template.render_header(i + 1) + template.render_body(d.title, d.text) for i, d in enumerate(docs)
    )
    number = {d.title: i + 1 for i, d in enumerate(docs)}
    lines = ["The question needs these facts from the text:"]
    for f in t.supporting_facts:
        where = f"Document {number[f.title]} ({f.title})" if f.title in number else f.title
        lines.append(f'- {where}: "{f.text}"')
    if len(lines) == 1:  # formats without supporting facts: cite the gold documents
        lines += [f"- Document {number[d.title]} ({d.title})" for d in t.gold_docs]
    lines.append(f"Putting these together answers the question. {ANSWER_PREFIX} {t.answers[0]}.")
    return {
        "prompt": [{"role": "user", "content": head + body + tail}],
        "completion": [{"role": "assistant", "content": "\n".join(lines)}],
        "answers": list(t.answers),
        "question": t.question,
        "source_id": t.id,
    }


def build_sft_examples(
    data: str | Path, config: SFTConfig, heldout: str | Path | None = None
) -> list[dict[str, Any]]:
    """Examples from triplet shards (``datagen triplets`` output).

    Args:
        data: triplet shards.
        config: the SFT settings.
        heldout: the curriculum's ``heldout.json``: triplets whose id, question or any gold fact (fact
            keys) it lists are left out, so no SFT target asks, answers or cites a held-out fact.
    """
    check_complete(data)
    ids, questions, facts = load_heldout(heldout) if heldout else (set(), set(), set())
    src = get_source("triplets", str(data), limit=None if heldout else config.max_examples)
    kept = (
        t
        for t in src.iter_triplets()
        if t.id not in ids
        and normalize_question(t.question) not in questions
        and not facts.intersection(t.fact_keys or ())
    )
    examples = []
    for i, t in enumerate(kept):
        if config.max_examples is not None and i >= config.max_examples:
            break
        examples.append(sft_example(t, i, config.seed, config.distractors))
    if not examples:
        raise LongmillError(
            f"{data}: no triplets to fine-tune on"
            + (f" outside the held-out set {heldout}" if heldout else "")
        )
    return examples


def apply_teacher(examples: list[dict[str, Any]], config: SFTConfig, out: Path) -> Stats:
    """Replace template targets with teacher completions the reward accepts; returns counts."""
    from eval.data import EvalItem
    from eval.run import GenerateConfig, generate_predictions
    from eval.scoring import read_predictions

    gen = GenerateConfig(
        model=config.teacher_model or "",
        backend=config.teacher_backend,
        n=config.teacher_k,
        temperature=0.7,
        max_tokens=config.teacher_max_tokens,
        seed=config.seed,
        backend_option=list(config.teacher_backend_option),
    )
    items = [
        EvalItem(
            uid=f"sft-{i}",
            data_source="sft",
            prompt=e["prompt"],
            question=e["question"],
            answers=e["answers"],
        )
        for i, e in enumerate(examples)
    ]
    generate_predictions(items, gen, out / "teacher.jsonl")
    preds = read_predictions(out / "teacher.jsonl")
    reward = HybridQAReward("em")  # sub-EM would accept listed candidates as targets
    counts = Stats()
    for item, ex in zip(items, examples, strict=True):
        comps = preds.get(item.uid) or []
        scores = (
            reward(comps, answers=[ex["answers"]] * len(comps), question=[ex["question"]] * len(comps))
            if comps
            else []
        )
        accepted = [c for c, s in zip(comps, scores, strict=True) if s == 1.0]
        if accepted:
            ex["completion"] = [{"role": "assistant", "content": accepted[0]}]
            counts.add("teacher_accepted")
        else:
            counts.add("template_target")
    return counts


def run_sft(
    data: str | Path,
    out: str | Path,
    config: SFTConfig,
    metrics_dir: str | Path | None = None,
    heldout: str | Path | None = None,
) -> dict[str, Any]:
    """``python -m train sft``: fine-tune ``config.model`` and save it to ``out/final``.

    Args:
        data: triplet shards.
        out: the run folder.
        config: the SFT settings.
        metrics_dir: also write the training log CSV here as sft.csv (for `dvc plots`).
        heldout: the curriculum's held-out file; its questions are not trained on.
    """
    from accelerate import PartialState
    from datasets import Dataset
    from trl import SFTTrainer

    from eval.models import load_causal_lm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    examples = build_sft_examples(data, config, heldout)
    counts = (
        apply_teacher(examples, config, out) if config.teacher_model else Stats(template_target=len(examples))
    )
    model, tokenizer = load_causal_lm(
        config.model, dtype="bfloat16" if config.bf16 else "float32", device="cpu"
    )
    ds = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    args = config.derive(output_dir=str(out))  # the user's TRL settings, writing into OUT
    state = PartialState()

    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
        callbacks=[
            MetricsLogger(
                out,
                phase=0,
                csv_copy=Path(metrics_dir) / "sft.csv" if metrics_dir else None,
                is_main=state.is_main_process,
            )
        ],
    )
    result = trainer.train()
    final = out / "final"
    trainer.save_model(str(final))  # every rank (sharded states are gathered collectively)
    summary = {
        "examples": len(examples),
        "targets": counts.to_dict(),
        "steps": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "checkpoint": str(final),
        "model": config.model,
        # what the warm-up trained on, so that a held-out check reads the run, not only its inputs
        "heldout": str(heldout) if heldout else None,
        "source_ids": sorted(e["source_id"] for e in examples),
    }
    if state.is_main_process:
        tokenizer.save_pretrained(str(final))
        atomic_write_json(out / "summary.json", summary)
    state.wait_for_everyone()
    return summary
