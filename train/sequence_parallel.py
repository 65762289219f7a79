"""Sequence parallelism (Ulysses) for the GRPO training forward: a group of ranks shares its micro-batches.

TRL 1.16's ``GRPOConfig`` refuses ``parallelism_config.sp_size > 1``; longmill adds sequence parallelism in its own
trainer instead (:class:`train.dapo.DynamicSamplingGRPOTrainer`, ``sp_size``). Ranks form consecutive groups of
``sp_size`` (ranks 0..sp-1, sp..2sp-1, ...). Generation, rewards and the scoring pass stay per rank. In the training
forward (grad enabled), :func:`sequence_parallel_logps`:

1. takes each rank's micro-batch padding-free (:func:`train.padfree.real_token_rows`: its rows' real tokens),
   and gathers every rank's tokens over the group; then, member by member, the group runs one member's micro-batch
   together: its rows packed into one sequence (positions restarting at 0 for each row);
2. pads that sequence with a tail segment to a multiple of ``sp_size`` and gives each rank one contiguous
   ``1/sp_size`` of it; labels are shifted on the whole sequence first (``shift_labels``, which TRL's fused LM head
   scores unshifted), so a token whose successor lies on the next rank is still scored;
3. runs the model on that share. In every attention call (:func:`install_attention`), queries, keys and values
   go through an all-to-all from "my tokens, all heads" to "all tokens, my heads" (Ulysses), attention runs per
   row over the whole sequence (SDPA causal per row, or flash varlen from the restarting positions), and a second
   all-to-all brings the output back to "my tokens, all heads". Key/value heads fewer than ``sp_size`` are repeated
   (``repeat_interleave``) up to a multiple of ``sp_size``, which keeps each query head with its own key/value head;
4. gathers the per-token log-probs (and entropies) over the group and returns, on each rank, those of its own
   micro-batch, shaped as TRL's ``(B, logits_to_keep)``.

What one rank holds: a layer's recompute and backward, and the LM head's backward, cover ``1/sp_size`` of one
micro-batch's tokens at a time; the checkpointed layer inputs (and the final norm's saved tensors) of all
``sp_size`` shares stay until TRL's single backward, which adds up to one micro-batch per rank, as without sequence
parallelism (offload them with ``gradient_checkpointing_kwargs: {offload: true}``). ``train plan --sp-size`` counts
it this way.

The loss is then TRL's own, on each rank's own micro-batch, so clip-higher, the importance-sampling correction,
masking and the token normaliser (``num_items_in_batch``) mean what they mean without sequence parallelism.
The gather's backward sums the gradients every rank's loss sends to a token's log-prob (an all-reduce, then each
rank keeps its share), so rank ``s``'s parameter gradients are what the whole group's losses owe to shard ``s``;
DDP (or FSDP/ZeRO) then averages over all ``world`` ranks, which is the gradient of the same losses without
sequence parallelism. Every rank of a group must call the forward the same number of times: TRL runs the same
number of micro-steps on every rank.

The all-to-all is ``torch.distributed.all_to_all_single`` (gloo implements it on CPU in torch 2.13, NCCL on GPU); its
adjoint is itself, which is its backward. With gradient checkpointing the recompute repeats the all-to-alls in the
backward: the per-forward state travels as a keyword argument (``longmill_ulysses``), which transformers passes down
to the attention function and its checkpointing keeps for the recompute.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from longmill.errors import LongmillError
from train.padfree import VARLEN_ATTENTION, _row_inputs, _scatter_row, real_token_rows

log = logging.getLogger(__name__)

#: The keyword argument that carries a forward's :class:`UlyssesBatch` down to the attention function.
KWARG = "longmill_ulysses"
#: Attention implementations the Ulysses hook covers (others would silently ignore it: refused).
COVERED_ATTENTION = ("sdpa", *VARLEN_ATTENTION)


@dataclass(frozen=True)
class SPGroup:
    """This rank's sequence-parallel group.

    Args:
        group: the process group of the ``size`` consecutive ranks.
        rank: this process's index within the group.
        size: ``sp_size``.
    """

    group: Any
    rank: int
    size: int


def new_groups(sp_size: int) -> SPGroup:
    """Consecutive groups of ``sp_size`` ranks (every rank creates every group, as ``new_group`` requires).

    Raises:
        LongmillError: the world size is not a multiple of ``sp_size``, or no process group is initialised.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise LongmillError(
            f"sp_size={sp_size} needs a distributed launch (accelerate launch or torchrun with a multiple of "
            f"{sp_size} processes); this process has no process group"
        )
    world, rank = dist.get_world_size(), dist.get_rank()
    check_world(sp_size, world)
    mine = None
    for start in range(0, world, sp_size):
        g = dist.new_group(list(range(start, start + sp_size)))
        if start <= rank < start + sp_size:
            mine = SPGroup(g, rank - start, sp_size)
    assert mine is not None
    return mine


def check_world(sp_size: int, world: int) -> None:
    """Refuse a world size that ``sp_size`` does not divide."""
    if world % sp_size:
        raise LongmillError(
            f"sp_size={sp_size} must divide the number of processes ({world}): ranks form groups of sp_size, "
            f"and the data-parallel size is processes / sp_size"
        )


def kv_repeat(num_heads: int, num_kv_heads: int, sp_size: int) -> int:
    """How many times each key/value head is repeated so that heads split evenly over ``sp_size`` ranks.

    Raises:
        LongmillError: the query heads do not split over ``sp_size`` (any key/value head count then can: each
            is repeated up to ``lcm(num_kv_heads, sp_size)`` heads, which divides the query heads).

    Example:
        >>> kv_repeat(28, 4, 4), kv_repeat(4, 1, 2), kv_repeat(40, 8, 8)
        (1, 2, 1)
    """
    if num_heads % sp_size:
        raise LongmillError(
            f"sp_size={sp_size} does not divide the model's {num_heads} attention heads (Ulysses gives each rank "
            f"num_heads / sp_size of them); choose a divisor of {num_heads}"
        )
    # num_kv_heads * r = lcm(num_kv_heads, sp_size), which divides num_heads (both do): the grouping survives
    r = sp_size // math.gcd(num_kv_heads, sp_size)
    return r


def check_model(model: Any, sp_size: int) -> None:
    """Refuse a model the hook does not cover: its attention implementation, head counts or sliding windows."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    impl = str(getattr(cfg, "_attn_implementation", None) or "")
    if impl not in COVERED_ATTENTION:
        raise LongmillError(
            f"sp_size={sp_size} with attn_implementation={impl!r}: the Ulysses hook covers "
            f"{', '.join(COVERED_ATTENTION)}; set attn_implementation: sdpa (or a flash-attention one)"
        )
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or ["full_attention"])):
        raise LongmillError(
            f"sp_size={sp_size}: the model has sliding-window layers, which the Ulysses hook does not cover"
        )
    kv_repeat(cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", cfg.num_attention_heads), sp_size)


# -- collectives with their adjoints -------------------------------------------------------------------------


class _AllToAll(torch.autograd.Function):
    """Chunk ``j`` of dim 0 goes to rank ``j``; chunk ``i`` of the result came from rank ``i``. Self-adjoint."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        out = torch.empty_like(grad)
        dist.all_to_all_single(out, grad, group=ctx.group)
        return out, None


class _GatherTokens(torch.autograd.Function):
    """All-gather of equal shares along dim 0; the backward sums every rank's gradient and keeps this rank's share."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Any, rank: int, size: int) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.n = group, rank, x.size(0)
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x, group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None, None, None


def seq_to_heads(x: torch.Tensor, sp: SPGroup) -> torch.Tensor:
    """``(1, H, n, d)`` (this rank's tokens, all heads) -> ``(1, H/sp, sp*n, d)`` (all tokens, this rank's heads)."""
    _, H, n, d = x.shape
    y = _AllToAll.apply(x[0].reshape(sp.size, H // sp.size, n, d), sp.group)
    return y.permute(1, 0, 2, 3).reshape(H // sp.size, sp.size * n, d)[None]


def heads_to_seq(y: torch.Tensor, sp: SPGroup) -> torch.Tensor:
    """The inverse of :func:`seq_to_heads`: ``(1, h, sp*n, d)`` -> ``(1, h*sp, n, d)``."""
    _, h, N, d = y.shape
    n = N // sp.size
    z = _AllToAll.apply(y[0].reshape(h, sp.size, n, d).permute(1, 0, 2, 3), sp.group)
    return z.reshape(sp.size * h, n, d)[None]


# -- the attention hook -------------------------------------------------------------------------------------


@dataclass
class UlyssesBatch:
    """One forward's group sequence, for the attention hook.

    Args:
        sp: the group.
        lengths: the lengths of the segments of the group's packed sequence (rows, then the padding tail).
        position_ids: ``(N,)`` positions of the whole sequence (restarting at 0 for each segment).
    """

    sp: SPGroup
    lengths: list[int]
    position_ids: torch.Tensor

    def attend(self, module: Any, query, key, value, original, name: str, **kwargs: Any):
        sp = self.sp
        H, Hkv = query.size(1), key.size(1)
        r = kv_repeat(H, Hkv, sp.size)
        if r > 1:
            key, value = key.repeat_interleave(r, dim=1), value.repeat_interleave(r, dim=1)
        q, k, v = (seq_to_heads(t, sp) for t in (query, key, value))
        dropout = float(kwargs.get("dropout", 0.0) or 0.0)
        if name == "sdpa":
            outs, start = [], 0
            for n in self.lengths:
                end = start + n
                outs.append(
                    F.scaled_dot_product_attention(
                        q[:, :, start:end],
                        k[:, :, start:end],
                        v[:, :, start:end],
                        dropout_p=dropout,
                        is_causal=True,
                        scale=kwargs.get("scaling"),
                        enable_gqa=q.size(1) != k.size(1),
                    )
                )
                start = end
            out = torch.cat(outs, dim=2)
        else:  # varlen flash attention: transformers derives the rows from the restarting positions
            rest = {k_: v_ for k_, v_ in kwargs.items() if k_ != "position_ids"}
            out, _ = original(module, q, k, v, None, position_ids=self.position_ids[None], **rest)
            out = out.transpose(1, 2)  # (1, N, h, d) -> (1, h, N, d)
        return heads_to_seq(out, sp).transpose(1, 2).contiguous(), None


def _hooked(name: str, original: Any) -> Any:
    @functools.wraps(original)
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        batch = kwargs.pop(KWARG, None)
        if batch is None:
            return original(module, query, key, value, attention_mask, *args, **kwargs)
        return batch.attend(module, query, key, value, original, name, **kwargs)

    attention.longmill_ulysses_original = original
    return attention


def install_attention() -> None:
    """Wrap the covered attention functions of transformers' registry (once per process).

    A wrapped function is the original unless the forward carries a :class:`UlyssesBatch` (``longmill_ulysses``),
    so generation, the scoring pass and every other model in the process are unchanged.
    """
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    for name in COVERED_ATTENTION:
        if name not in ALL_ATTENTION_FUNCTIONS:
            continue
        fn = ALL_ATTENTION_FUNCTIONS[name]
        if getattr(fn, "longmill_ulysses_original", None) is None:
            AttentionInterface.register(name, _hooked(name, fn))


# -- the training forward -----------------------------------------------------------------------------------


def _gather_var(x: torch.Tensor, sp: SPGroup) -> list[torch.Tensor]:
    """Every rank's 1-D integer tensor of any length (no gradient)."""
    n = torch.tensor([x.numel()], device=x.device)
    sizes = [torch.empty_like(n) for _ in range(sp.size)]
    dist.all_gather(sizes, n, group=sp.group)
    most = int(max(int(s) for s in sizes))
    padded = torch.zeros(most, dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x
    parts = [torch.empty_like(padded) for _ in range(sp.size)]
    dist.all_gather(parts, padded, group=sp.group)
    return [p[: int(s)] for p, s in zip(parts, sizes, strict=True)]


def _group_sequence(
    ids: torch.Tensor, labels: torch.Tensor, lengths: list[int], size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """One member's packed rows, padded with a tail segment to a multiple of ``size``: ids, shifted labels
    (position j scores token j + 1 of its own row), positions (restarting per row) and segment lengths."""
    lengths = list(lengths)
    total = ids.numel()
    padded = -(-total // size) * size
    if padded > total:
        lengths.append(padded - total)
        ids = torch.cat([ids, ids.new_zeros(padded - total)])
        labels = torch.cat([labels, labels.new_full((padded - total,), -100)])
    shift = torch.full_like(labels, -100)
    positions = torch.cat([torch.arange(n, device=ids.device) for n in lengths])
    start = 0
    for n in lengths:
        shift[start : start + n - 1] = labels[start + 1 : start + n]
        start += n
    return ids, shift, positions, lengths


def sequence_parallel_logps(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    sp: SPGroup,
    *,
    compute_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropies) of this rank's micro-batch, computed by the whole group.

    The members' micro-batches go one after the other: for member ``j``, every rank runs its ``1/sp_size`` share of
    ``j``'s packed rows, and the log-probs are gathered. The graphs of all ``sp_size`` forwards stay for the one
    backward TRL runs (so the layers' checkpointed inputs add up to one micro-batch per rank, as without sequence
    parallelism), while a layer's recompute and the LM head's backward hold one share at a time. The gathered
    log-probs are concatenated before this rank takes its rows, so every rank's backward passes every gather in the
    same order (the gathers' all-reduces must match).

    Same contract as :func:`train.padfree.padding_free_logps` (``model`` carries TRL's fused LM head; columns that are
    padding or masked come back as 0); every rank of ``sp`` must call it together.
    """
    rows = list(real_token_rows(attention_mask, logits_to_keep))
    parts = [_row_inputs(input_ids, row) for row in rows]
    device = input_ids.device
    ids = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    lengths = torch.tensor([p[0].numel() for p in parts], dtype=torch.long, device=device)
    all_ids = _gather_var(ids, sp)
    all_labels = _gather_var(labels, sp)
    all_lengths = [[int(n) for n in x] for x in _gather_var(lengths, sp)]
    logps_parts, ent_parts, offset = [], [], 0
    for j in range(sp.size):
        g_ids, shift, positions, seg = _group_sequence(all_ids[j], all_labels[j], all_lengths[j], sp.size)
        if j < sp.rank:
            offset += g_ids.numel()
        share = g_ids.numel() // sp.size
        mine = slice(sp.rank * share, (sp.rank + 1) * share)
        out = model(
            input_ids=g_ids[mine][None],
            position_ids=positions[mine][None],
            attention_mask={"full_attention": None},  # no mask is built: attention runs per row in the hook
            shift_labels=shift[mine][None],
            fused_lm_head=True,
            **{KWARG: UlyssesBatch(sp, seg, positions)},
        )
        logps_parts.append(_GatherTokens.apply(out.log_probs[0], sp.group, sp.rank, sp.size))
        if compute_entropy:
            ent_parts.append(_GatherTokens.apply(out.entropy[0], sp.group, sp.rank, sp.size))
    logps_all = torch.cat(logps_parts)
    ents_all = torch.cat(ent_parts) if compute_entropy else None
    logps: list[torch.Tensor] = []
    ents: list[torch.Tensor] = []
    end = offset
    for row, (row_ids, _) in zip(rows, parts, strict=True):
        end += row_ids.numel()
        k = row.scored
        lo = end - k - 1
        logps.append(_scatter_row(logps_all[lo : lo + k], row.completion_columns, logits_to_keep))
        if ents_all is not None:
            ents.append(_scatter_row(ents_all[lo : lo + k], row.completion_columns, logits_to_keep))
    return torch.stack(logps), (torch.stack(ents) if compute_entropy else None)


__all__ = [
    "COVERED_ATTENTION",
    "KWARG",
    "SPGroup",
    "UlyssesBatch",
    "check_model",
    "check_world",
    "heads_to_seq",
    "install_attention",
    "kv_repeat",
    "new_groups",
    "seq_to_heads",
    "sequence_parallel_logps",
]
