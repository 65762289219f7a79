"""``datagen inspect``: one sample with its chain and gold documents marked.

Marks come from the structure carried in the row (``gold_docs``, ``chains``), located in the text by
their exact strings; nothing is inferred from markers in the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.generators.keychain import pair_text
from datagen.shards import iter_rows
from longmill.errors import LongmillError


@dataclass
class Mark:
    start: int
    end: int
    kind: str  # "gold", "chain", "decoy"
    label: str


def load_row(path: str | Path, index: int) -> dict[str, Any]:
    """Row ``index`` of a Parquet file (or of the concatenated parts of a folder)."""
    from datagen.shards import list_parts

    if index < 0:
        raise LongmillError(f"--row must be >= 0, got {index}")
    for n, (part, _, row) in enumerate(iter_rows(list_parts(path))):
        if "prompt" not in row or "chains" not in row:
            what = (
                "a triplet shard (made by datagen triplets)"
                if "distractor_docs" in row
                else "not a sample shard"
            )
            raise LongmillError(
                f"{part} is {what}; inspect shows samples made by datagen keychain or longqa, e.g. "
                f"`datagen keychain --source triplets --input {Path(part).parent} --length 8k --out DIR`, "
                "then `datagen inspect DIR`"
            )
        if n == index:
            return row
    raise LongmillError(f"{path}: has fewer rows than requested (row index out of range)")


def _user_text(row: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(row["prompt"]) if m["role"] == "user")


def _pair_spans(text: str, chain: dict[str, Any]) -> list[tuple[int, int] | None]:
    """(start, end) of each hop's pair of ``chain`` in ``text``, in hop order (None if absent)."""
    keys = list(chain["keys"])
    spans: list[tuple[int, int] | None] = []
    for i, k in enumerate(keys):
        p = pair_text(k, keys[i + 1] if i + 1 < len(keys) else chain["target"])
        at = text.find(p)
        spans.append((at, at + len(p)) if at >= 0 else None)
    return spans


def marks(row: dict[str, Any]) -> list[Mark]:
    """Where the gold documents and every chain pair sit in the user message."""
    text = _user_text(row)
    out: list[Mark] = []
    for g in row["gold_docs"]:
        # Pairs may sit inside a gold document, so mark its opening words, which locate it.
        probe = g["text"][:80]
        at = text.find(probe)
        if at >= 0:
            out.append(Mark(at, at + len(probe), "gold", f"gold: {g['title']}"))
    for c in row["chains"]:
        kind = "chain" if c["is_true"] else "decoy"
        spans = _pair_spans(text, c)
        for i, span in enumerate(spans):
            if span is not None:
                out.append(Mark(span[0], span[1], kind, f"{kind} hop {i + 1}/{len(spans)}"))
    return sorted(out, key=lambda m: m.start)


def outline(row: dict[str, Any]) -> dict[str, Any]:
    """A compact description: metadata, gold documents with depths, chains with their hop depths."""
    text = _user_text(row)
    n = max(len(text), 1)
    doc_pos = {d: i + 1 for i, d in enumerate(row["doc_ids"])}
    return {
        "uid": row["uid"],
        "data_source": row["data_source"],
        "question": row["question"],
        "answers": list(row["answers"]),
        "prompt_tokens": row["prompt_tokens"],
        "length_target": row["length_target"],
        "tokenizer": row["tokenizer"],
        "num_docs": row["num_docs"],
        "gold": [
            {"title": g["title"], "position": doc_pos.get(g["doc_id"]), "depth": d}
            for g, d in zip(row["gold_docs"], row["gold_doc_depths"], strict=False)
        ],
        "chain_head": row["chain_head"],
        "chains": [
            {
                "is_true": c["is_true"],
                "target": c["target"],
                "hop_depths": [round(s[0] / n, 3) if s else None for s in _pair_spans(text, c)],
            }
            for c in row["chains"]
        ],
    }
