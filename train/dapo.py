"""DAPO's dynamic sampling, online, as a small extension of TRL's GRPOTrainer.

TRL computes group-relative advantages; a group whose rewards are all equal (all right, all wrong)
has zero advantage and teaches nothing. :class:`DynamicSamplingGRPOTrainer` replaces such groups with
groups generated from fresh prompts, for up to ``dynamic_sampling_rounds`` extra generation rounds per
generation batch, and logs the share it filtered. Everything else (clip-higher, token-level loss, no
KL, masking truncated completions) is TRL's own, set through GRPOConfig.

Ranks generate in lockstep: every rank runs the same number of extra rounds (the most any rank needs),
so the collective operations inside generation stay matched on multi-GPU runs.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from trl import GRPOTrainer

log = logging.getLogger(__name__)

#: Output keys with one row per completion and a token axis, padded on the right.
_RIGHT_PADDED = ("completion_ids", "completion_mask", "old_per_token_logps", "sampling_per_token_logps",
                 "ref_per_token_logps", "importance_sampling_ratio", "tool_mask")
#: Left-padded prompt keys.
_LEFT_PADDED = ("prompt_ids", "prompt_mask")
_ROW_KEYS = ("advantages",)
_SUPPORTED = set(_RIGHT_PADDED) | set(_LEFT_PADDED) | set(_ROW_KEYS) | {"num_items_in_batch"}


def _pad_to(t: torch.Tensor, width: int, side: str, value: float) -> torch.Tensor:
    if t.dim() < 2 or t.size(1) >= width:
        return t
    pad = torch.full((t.size(0), width - t.size(1)), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t], dim=1) if side == "left" else torch.cat([t, pad], dim=1)


def zero_variance_groups(advantages: torch.Tensor, group_size: int) -> torch.Tensor:
    """A bool per group: True when every advantage in the group is zero (equal rewards, or unscorable)."""
    return (advantages.view(-1, group_size).abs() < 1e-6).all(dim=1)


def replace_groups(out: dict[str, Any], new: dict[str, Any], dst: list[int], src: list[int], group_size: int,
                   pad_token_id: int) -> dict[str, Any]:
    """``out`` with groups ``dst`` replaced by groups ``src`` of ``new`` (tensors re-padded to fit)."""
    unknown = (set(out) | set(new)) - _SUPPORTED
    if unknown:
        raise NotImplementedError(f"dynamic sampling cannot merge generation outputs with {sorted(unknown)} "
                                  "(multimodal or tool-calling batches); set dynamic_sampling_rounds=0")
    rows_dst = torch.cat([torch.arange(g * group_size, (g + 1) * group_size) for g in dst])
    rows_src = torch.cat([torch.arange(g * group_size, (g + 1) * group_size) for g in src])
    merged = dict(out)
    for key in out:
        if key == "num_items_in_batch" or out[key] is None or new.get(key) is None:
            continue
        a, b = out[key], new[key]
        if key in _LEFT_PADDED or key in _RIGHT_PADDED:
            side = "left" if key in _LEFT_PADDED else "right"
            fill = pad_token_id if key in ("prompt_ids", "completion_ids") else (1 if key == "tool_mask" else 0)
            width = max(a.size(1), b.size(1)) if a.dim() > 1 else 0
            a, b = _pad_to(a, width, side, fill), _pad_to(b, width, side, fill)
        a = a.clone()
        a[rows_dst.to(a.device)] = b[rows_src.to(b.device)]
        merged[key] = a
    return merged


class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with DAPO's dynamic sampling (online group filtering and replacement).

    Args:
        dynamic_sampling_rounds: extra generation rounds per generation batch to replace zero-variance
            groups (0 disables; DAPO's ``max_num_gen_batches`` plays this role in verl).
        *args, **kwargs: as for :class:`trl.GRPOTrainer`.
    """

    def __init__(self, *args: Any, dynamic_sampling_rounds: int = 2, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dynamic_sampling_rounds = int(dynamic_sampling_rounds)
        self._refill_generator = torch.Generator().manual_seed(int(self.args.seed) + 7919)

    def _fresh_prompts(self, n_groups: int) -> list[dict[str, Any]]:
        """``n_groups`` random training rows, each repeated ``num_generations`` times (as TRL batches them)."""
        idx = torch.randint(len(self.train_dataset), (n_groups,), generator=self._refill_generator).tolist()
        rows = [self.train_dataset[i] for i in idx]
        return [dict(r) for r in rows for _ in range(self.num_generations)]

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training or self.dynamic_sampling_rounds <= 0:
            return out
        g = self.num_generations
        if len(inputs) % g:
            raise ValueError(f"dynamic sampling needs whole groups on each process: {len(inputs)} rows per process is "
                             f"not a multiple of num_generations={g}; adjust per_device_train_batch_size or "
                             "steps_per_generation")
        zero = zero_variance_groups(out["advantages"], g)
        n_groups = zero.numel()
        filtered = int(zero.sum())
        replaced = rounds = 0
        device = out["advantages"].device
        while rounds < self.dynamic_sampling_rounds:
            need = torch.tensor([int(zero.sum())], device=device)
            most = int(self.accelerator.gather(need).max())
            if most == 0:
                break
            rounds += 1
            fresh = super()._generate_and_score_completions(self._fresh_prompts(most))
            usable = [i for i, z in enumerate(zero_variance_groups(fresh["advantages"], g).tolist()) if not z]
            holes = [i for i, z in enumerate(zero.tolist()) if z]
            k = min(len(usable), len(holes))
            if k:
                out = replace_groups(out, fresh, holes[:k], usable[:k], g, self.processing_class.pad_token_id)
                zero[torch.tensor(holes[:k], device=zero.device)] = False
                replaced += k
        if rounds:
            loss_mask = out["completion_mask"] if out.get("tool_mask") is None else out["completion_mask"] * out["tool_mask"]
            out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        stats = torch.tensor([filtered, replaced, n_groups, rounds], dtype=torch.float32, device=device)
        total = self.accelerator.gather(stats).view(-1, 4).sum(dim=0).tolist()
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/filtered_share"].append(total[0] / max(total[2], 1))
        metrics["dynamic_sampling/replaced_share"].append(total[1] / max(total[2], 1))
        metrics["dynamic_sampling/rounds"].append(total[3] / self.accelerator.num_processes)
        return out
