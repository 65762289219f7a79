"""Padding-free training forward: per-token log-probs of TRL's padded GRPO batches without a T x T mask.

TRL 1.16 pads each rank's generation batch (prompts on the left, completions on the right, truncated
completions masked out entirely; ``trl/trainer/grpo_trainer.py:2442-2495``) and scores it in micro-batches
through ``_get_per_token_logps_and_entropies`` (``grpo_trainer.py:1419-1508``), which hands the padded
``attention_mask`` to the model. With SDPA, transformers then turns any padding into a ``(b, 1, T, T)`` mask
(``transformers/masking_utils.py:252-302, 517-548``), repeats K/V over the query heads
(``integrations/sdpa_attention.py:42-51, 118-127``), and PyTorch adds an additive copy of the mask, which
rules out the flash kernel. A one-row micro-batch carries padding too, since the row was padded to the
longest prompt and completion of its whole generation batch.

:func:`padding_free_logps` computes the same log-probs from the real tokens only:

- ``rows`` (any attention implementation): each row is cut down to its real tokens (causal attention never
  lets a real token see the padding after it, and the padding before it is only masked out) and run alone
  with ``attention_mask=None``; transformers then passes no mask and ``is_causal=True`` to SDPA
  (``masking_utils.py:290-291``, ``sdpa_attention.py:148``), and grouped K/V go to SDPA unrepeated
  (``enable_gqa``). Rows of a micro-batch run one after the other.
- ``packed`` (flash-attention implementations): the micro-batch's real tokens are concatenated into one row
  with ``position_ids`` restarting at 0 for each sequence; transformers' flash path derives the sequence
  boundaries from them and runs varlen flash attention (``modeling_flash_attention_utils.py:564-580,
  854-862``). With SDPA the same input makes transformers build a block-diagonal ``(1, 1, T, T)`` mask
  (``masking_utils.py:862-870, 991-1002``), so ``packed`` is never chosen for SDPA.

Positions start at 0 for every sequence here, as in generation; TRL's padded forward numbers a left-padded
prompt from its padding (``position_ids`` default to ``arange(T)``, ``modeling_qwen2.py:355-358``). RoPE
depends only on the distance between positions, so the log-probs agree to rounding.

A row whose completion is masked out entirely (``mask_truncated_completions``) adds nothing to the loss; it
still runs a forward, over its last two tokens only, so that every rank runs the same collectives
(ZeRO-3 gathers parameters in forward hooks) and the loss stays connected to the model.

This is the seam sequence parallelism builds on: :func:`real_token_rows` says which tokens of a padded batch
are real, :func:`padding_free_logps` takes the model call as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MODES = ("rows", "packed")
#: Attention implementations that run varlen attention from packed ``position_ids``.
VARLEN_ATTENTION = (
    "flash_attention_2",
    "flash_attention_3",
    "kernels-community/flash-attn",
    "flash_attention",
)


@dataclass(frozen=True)
class RealRow:
    """The real tokens of one row of a padded ``(prompt | completion)`` batch.

    Args:
        index: the row.
        tokens: the columns of its real tokens (prompt, then completion), in order.
        completion_columns: the completion columns (0-based within the completion) that are real; their
            log-probs are the ones the loss reads.
    """

    index: int
    tokens: torch.Tensor
    completion_columns: torch.Tensor

    @property
    def scored(self) -> int:
        return int(self.completion_columns.numel())


def real_token_rows(attention_mask: torch.Tensor, logits_to_keep: int) -> Iterator[RealRow]:
    """The real tokens of each row of TRL's padded batch (``attention_mask`` is ``cat(prompt_mask, completion_mask)``)."""
    T = attention_mask.size(1)
    keep = attention_mask.bool()
    for i in range(attention_mask.size(0)):
        tokens = keep[i].nonzero().squeeze(1)
        completion = keep[i, T - logits_to_keep :].nonzero().squeeze(1)
        yield RealRow(i, tokens, completion)


def choose_mode(model: torch.nn.Module) -> str:
    """``packed`` for flash-attention implementations (varlen kernels), ``rows`` otherwise."""
    impl = str(getattr(getattr(model, "config", None), "_attn_implementation", "") or "")
    return "packed" if impl in VARLEN_ATTENTION or impl.startswith("flash_attention") else "rows"


def _scatter_row(values: torch.Tensor, columns: torch.Tensor, width: int) -> torch.Tensor:
    """``values`` placed at ``columns`` of a zero row of ``width`` (differentiable; stays connected when empty)."""
    if columns.numel() == 0:
        return F.pad(values[:0], (0, width))
    return torch.zeros(width, dtype=values.dtype, device=values.device).index_copy(0, columns, values)


def _row_inputs(input_ids: torch.Tensor, row: RealRow) -> tuple[torch.Tensor, torch.Tensor]:
    ids = input_ids[row.index, row.tokens]
    if row.scored >= ids.numel():
        raise ValueError(
            f"row {row.index} has no prompt token before its completion; nothing predicts its first token"
        )
    if row.scored == 0:
        ids = ids[-2:]  # nothing to score: a token pair keeps the collectives and the graph
    labels = ids.clone()
    labels[: ids.numel() - row.scored] = -100  # only the completion is scored, as in TRL
    return ids, labels


def padding_free_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    *,
    compute_entropy: bool = False,
    mode: str | None = None,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropies) of the completion, shaped like TRL's: ``(B, logits_to_keep)``.

    ``model`` must carry TRL's fused LM head (``add_fused_lm_head``: ``model(..., labels=..., fused_lm_head=True)``
    returns ``log_probs``/``entropy``), as GRPOTrainer's policy and reference model do. Columns that are padding
    or masked out come back as 0 (the loss and every metric multiply them by the mask).

    Args:
        model: the policy or reference model.
        input_ids, attention_mask: TRL's ``cat(prompt, completion)`` batch and its mask.
        logits_to_keep: the completion width.
        compute_entropy: also return the entropies.
        mode: ``rows`` or ``packed`` (default: :func:`choose_mode`).
        batch_size: rows per packed forward (``packed`` only; default all).
    """
    mode = mode or choose_mode(model)
    if mode not in MODES:
        raise ValueError(f"unknown padding-free mode {mode!r}; valid: {', '.join(MODES)}")
    rows = list(real_token_rows(attention_mask, logits_to_keep))
    logps: list[torch.Tensor] = [None] * len(rows)  # type: ignore[list-item]
    ents: list[torch.Tensor] = [None] * len(rows)  # type: ignore[list-item]
    if mode == "rows":
        for row in rows:
            ids, labels = _row_inputs(input_ids, row)
            out = model(input_ids=ids[None], labels=labels[None], fused_lm_head=True)
            k = row.scored
            logps[row.index] = _scatter_row(
                out.log_probs[0, out.log_probs.size(1) - k :], row.completion_columns, logits_to_keep
            )
            if compute_entropy:
                ents[row.index] = _scatter_row(
                    out.entropy[0, out.entropy.size(1) - k :], row.completion_columns, logits_to_keep
                )
    else:
        step = batch_size or len(rows)
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            parts = [_row_inputs(input_ids, row) for row in chunk]
            ids = torch.cat([p[0] for p in parts])
            labels = torch.cat([p[1] for p in parts])
            positions = torch.cat([torch.arange(p[0].numel(), device=ids.device) for p in parts])
            out = model(
                input_ids=ids[None], position_ids=positions[None], labels=labels[None], fused_lm_head=True
            )
            # log_probs[j] scores token j + 1; a sequence starting at offset o with n tokens scores its last
            # k tokens at o + n - k - 1 ... o + n - 2
            end = 0
            for row, (row_ids, _) in zip(chunk, parts, strict=True):
                end += row_ids.numel()
                k = row.scored
                lo = end - k - 1
                logps[row.index] = _scatter_row(
                    out.log_probs[0, lo : lo + k], row.completion_columns, logits_to_keep
                )
                if compute_entropy:
                    ents[row.index] = _scatter_row(
                        out.entropy[0, lo : lo + k], row.completion_columns, logits_to_keep
                    )
    return torch.stack(logps), (torch.stack(ents) if compute_entropy else None)


__all__ = ["MODES", "RealRow", "choose_mode", "padding_free_logps", "real_token_rows"]
