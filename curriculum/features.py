"""Cheap difficulty features of a sample, always computed.

- length: ``prompt_tokens``;
- structure: ``hops``, ``num_chains``, ``chain_hops``;
- position: the mean gold depth and how close it is to the middle (long-context models lose the middle);
- retrieval: the BM25 rank of each gold document among the sample's documents, with the true question
  as query (``bm25s``); a gold document that ranks low is harder to find;
- shortcut: the answer's lexical overlap with the question (comparison questions name their answer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from datagen.generators import GENERATORS
from eval.reward import normalize_answer

log = logging.getLogger(__name__)


def bm25_gold_ranks(question: str, docs: list[str], gold_idx: list[int]) -> list[int]:
    """1-based BM25 rank of each gold document among ``docs`` (ties rank optimistically).

    Args:
        question: the query.
        docs: every document of the sample, in context order.
        gold_idx: positions of the gold documents in ``docs``.
    """
    import bm25s

    if not docs or not gold_idx:
        return []
    corpus = bm25s.tokenize(docs, stopwords="en", show_progress=False, return_ids=True)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    query = bm25s.tokenize([question], stopwords="en", show_progress=False, return_ids=False)[0]
    if not query:
        return [1] * len(gold_idx)
    scores = np.asarray(retriever.get_scores(query))
    return [int((scores > scores[g]).sum()) + 1 for g in gold_idx]


def answer_question_overlap(answers: Iterable[str], question: str) -> float:
    """The largest share of an answer's words that also occur in the question (0..1).

    Example:
        >>> answer_question_overlap(["Velora Quint"], "Who was born first, Velora Quint or Ada Lark?")
        1.0
    """
    q = set(normalize_answer(question).split())
    best = 0.0
    for a in answers:
        words = normalize_answer(a).split()
        if words:
            best = max(best, sum(w in q for w in words) / len(words))
    return best


def sample_documents(row: dict[str, Any]) -> list[str]:
    """The sample's documents as its generator defines them (:meth:`Generator.documents`: KeyChain's pairs
    removed), cut at the carried ``doc_offsets``."""
    return GENERATORS.get(str(row["generator"])).documents(row)


def features(row: dict[str, Any]) -> dict[str, Any]:
    """The feature record of one sample row."""
    depths = list(row["gold_doc_depths"] or [])
    mean_depth = float(np.mean(depths)) if depths else 0.5
    docs = sample_documents(row)
    pos = {d: i for i, d in enumerate(row["doc_ids"])}
    gold_idx = [pos[g["doc_id"]] for g in row["gold_docs"] if g["doc_id"] in pos]
    ranks = bm25_gold_ranks(row["question"], docs, gold_idx)
    n = max(len(docs) - 1, 1)
    return {
        "uid": row["uid"],
        "prompt_tokens": int(row["prompt_tokens"]),
        "hops": int(row["hops"]),
        "num_chains": int(row["num_chains"]),
        "chain_hops": int(row["chain_hops"]),
        "gold_depth": mean_depth,
        "middleness": 1.0 - 2.0 * abs(mean_depth - 0.5),
        "bm25_rank_mean": float(np.mean(ranks)) if ranks else 1.0,
        "bm25_rank_worst": int(max(ranks)) if ranks else 1,
        "bm25_rank_pct": float(np.mean([(r - 1) / n for r in ranks])) if ranks else 0.0,
        "answer_overlap": answer_question_overlap(row["answers"], row["question"]),
        **GENERATORS.get(str(row["generator"])).features(row),
    }
