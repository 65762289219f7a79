"""OpenRLHF's custom reward function for longmill shards.

Pass this file as OpenRLHF's ``--remote_rm_url`` (OpenRLHF loads ``reward_func`` from a local ``.py``
path), with ``--input_key prompt --label_key answers --apply_chat_template``. Each query is the prompt
followed by the response; the reward is longmill's default rule (exact match of the extracted answer
against every accepted answer; sub-EM would reward listing candidates).
"""

from __future__ import annotations

import json
from typing import Any

from eval.reward import exact_match, extract_answer


def _answers(label: Any) -> list[str]:
    if isinstance(label, str):
        try:
            parsed = json.loads(label)
        except json.JSONDecodeError:
            return [label]
        return [str(a) for a in parsed] if isinstance(parsed, list) else [str(parsed)]
    return [str(a) for a in label]


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """Rewards for a batch, in OpenRLHF's format.

    Args:
        queries: prompt + response texts.
        prompts: the prompt texts (a prefix of each query).
        labels: the ``answers`` column (a list of accepted answers, or its JSON text).

    Returns:
        ``{"rewards": tensor, "scores": tensor, "extra_logs": {...}}``.
    """
    import torch

    scores = []
    for q, p, label in zip(queries, prompts, labels, strict=True):
        response = q[len(p) :] if q.startswith(p) else q
        scores.append(exact_match(extract_answer(response), _answers(label)))
    t = torch.tensor(scores, dtype=torch.float32)
    return {"rewards": t, "scores": t, "extra_logs": {"accuracy": t.mean().unsqueeze(0)}}
