"""DAPO's dynamic sampling, online, as a small extension of TRL's GRPOTrainer.

A group whose completions are all right or all wrong teaches nothing. :class:`DynamicSamplingGRPOTrainer`
finds such groups by **correctness** (the reward's accuracy, as DAPO's ``filter_groups.metric=acc`` and
QwenLong-L1 filter; the shaped reward would count a group as informative when only the overlong penalty
varies), and replaces them with groups generated from fresh prompts for up to ``dynamic_sampling_rounds``
extra generation rounds per generation batch:

- refills are drawn by :class:`RefillSampler` from the stage's rows with the stage's weights (retrospective
  samples by difficulty), seeded per rank, from a per-rank share of the rows, and never a prompt already in
  this generation batch or drawn before in it;
- groups still without signal after the last round are left out of the loss and of its token normaliser
  (their advantages are zeroed and their tokens not counted), as DAPO drops them;
- TRL's metrics are logged once per generation batch (those of the batch as sampled), beside
  ``dynamic_sampling/*`` shares;
- the sampler's state is saved with every checkpoint and restored on resume.

The trainer also scores every micro-batch padding-free (:mod:`train.padfree`: no T x T attention mask, in
the scoring pass and in the loss) and keeps activation offload through TRL's re-enabling of gradient
checkpointing (:mod:`train.checkpointing`).

Everything else (clip-higher, token-level loss, no KL, masking truncated completions, vLLM importance
sampling) is TRL's own, set through GRPOConfig. Ranks generate in lockstep: every rank runs the same number
of extra rounds (the most any rank needs), so the collectives inside generation stay matched.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from trl import GRPOTrainer

from train.checkpointing import hold_checkpointing_options
from train.padfree import padding_free_logps
from train.sequence_parallel import (
    check_model,
    install_attention,
    new_groups,
    sequence_parallel_logps,
)

log = logging.getLogger(__name__)

#: Output keys with one row per completion and a token axis, padded on the right.
_RIGHT_PADDED = (
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "sampling_per_token_logps",
    "ref_per_token_logps",
    "importance_sampling_ratio",
    "tool_mask",
)
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


def no_signal_groups(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """A bool per group: True when the group's known values (NaN = unknown) are all equal, or fewer than two.

    Example:
        >>> no_signal_groups(torch.tensor([1., 1., 0., 1., float("nan"), 0., float("nan"), float("nan")]), 2).tolist()
        [True, False, True, True]
    """
    v = values.view(-1, group_size).float()
    known = ~torch.isnan(v)
    hi = torch.where(known, v, torch.full_like(v, -float("inf"))).max(dim=1).values
    lo = torch.where(known, v, torch.full_like(v, float("inf"))).min(dim=1).values
    return (known.sum(dim=1) < 2) | ((hi - lo).abs() < 1e-6)


class RefillSampler:
    """Draws refill prompts for dynamic sampling: weighted, seeded per rank, without repeats within a batch.

    Rank ``r`` of ``world`` draws only rows ``i`` with ``i % world == r``, so no two ranks refill with the
    same prompt, and its generator is seeded by ``(seed, rank)``, so ranks draw different sequences.

    Args:
        weights: one non-negative weight per dataset row (the stage's mix; see
            :func:`train.backends.trl.refill_weights`).
        seed: the run's seed.
        rank: this process's index.
        world: the number of processes.
    """

    def __init__(self, weights: Sequence[float], seed: int, rank: int = 0, world: int = 1):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("refill weights must be one finite, non-negative number per row")
        self.weights = w
        self.rank, self.world = int(rank), int(world)
        self.rng = np.random.default_rng([int(seed), 7919, self.rank])
        self.draws = 0
        own = np.arange(len(w)) % self.world == self.rank
        self.pool = np.flatnonzero(own) if own.any() else np.arange(len(w))

    def draw(self, n: int, exclude: set[int]) -> list[int]:
        """Up to ``n`` distinct row indices, none in ``exclude``, with probability proportional to weight."""
        cand = np.array([i for i in self.pool if i not in exclude], dtype=np.int64)
        if n <= 0 or cand.size == 0:
            return []
        w = self.weights[cand]
        if w.sum() <= 0:
            w = np.ones_like(w)
        positive = int((w > 0).sum())
        k = min(n, positive)
        picked = self.rng.choice(cand, size=k, replace=False, p=w / w.sum())
        self.draws += k
        return [int(i) for i in picked]

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "draws": self.draws,
            "rank": self.rank,
            "world": self.world,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.draws = int(state.get("draws", 0))


class _ShortNoneRewardWarning(logging.Filter):
    """TRL logs every column of a row whose rewards are all None (a 60K-token prompt included): keep it short."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith("All reward functions returned None"):
            record.msg = (
                "All reward functions returned None for a completion (e.g. the judge failed); it gets no "
                "advantage. Row contents omitted (%d characters)."
            )
            record.args = (len(msg),)
        return True


_NONE_FILTER = _ShortNoneRewardWarning()


def replace_groups(
    out: dict[str, Any],
    new: dict[str, Any],
    dst: list[int],
    src: list[int],
    group_size: int,
    pad_token_id: int,
) -> dict[str, Any]:
    """``out`` with groups ``dst`` replaced by groups ``src`` of ``new`` (tensors re-padded to fit)."""
    unknown = (set(out) | set(new)) - _SUPPORTED
    if unknown:
        raise NotImplementedError(
            f"dynamic sampling cannot merge generation outputs with {sorted(unknown)} "
            "(multimodal or tool-calling batches); set dynamic_sampling_rounds=0"
        )
    rows_dst = torch.cat([torch.arange(g * group_size, (g + 1) * group_size) for g in dst])
    rows_src = torch.cat([torch.arange(g * group_size, (g + 1) * group_size) for g in src])
    merged = dict(out)
    for key in out:
        if key == "num_items_in_batch" or out[key] is None or new.get(key) is None:
            continue
        a, b = out[key], new[key]
        if key in _LEFT_PADDED or key in _RIGHT_PADDED:
            side = "left" if key in _LEFT_PADDED else "right"
            fill = (
                pad_token_id if key in ("prompt_ids", "completion_ids") else (1 if key == "tool_mask" else 0)
            )
            width = max(a.size(1), b.size(1)) if a.dim() > 1 else 0
            a, b = _pad_to(a, width, side, fill), _pad_to(b, width, side, fill)
        a = a.clone()
        a[rows_dst.to(a.device)] = b[rows_src.to(b.device)]
        merged[key] = a
    return merged


class DynamicSamplingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with DAPO's dynamic sampling (online group filtering and replacement).

    Args:
        dynamic_sampling_rounds: extra generation rounds per generation batch to replace groups without
            signal (0 disables; DAPO's ``max_num_gen_batches`` plays this role in verl).
        dynamic_sampling_metric: ``accuracy`` (the reward functions' ``last_accuracy``, falling back to the
            reward when none reports it) or ``reward``.
        refill_weights: one weight per training row for refills; default uniform.
        padding_free: score micro-batches from their real tokens only (:func:`train.padfree.padding_free_logps`);
            default: the config's ``padding_free``, else on.
        sp_size: Ulysses sequence parallelism in the training forward over groups of this many ranks
            (:mod:`train.sequence_parallel`); default: the config's ``sp_size``, else 1.
        *args, **kwargs: as for :class:`trl.GRPOTrainer`.
    """

    STATE_FILE = "dynamic_sampling_rank{rank}.json"

    def __init__(
        self,
        *args: Any,
        dynamic_sampling_rounds: int = 2,
        dynamic_sampling_metric: str = "accuracy",
        refill_weights: Sequence[float] | None = None,
        padding_free: bool | None = None,
        sp_size: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.padding_free = bool(
            getattr(self.args, "padding_free", True) if padding_free is None else padding_free
        )
        self.sp_size = int(getattr(self.args, "sp_size", 1) if sp_size is None else sp_size)
        self.sp = None
        if self.sp_size > 1:
            from longmill.errors import LongmillError

            if not self.padding_free:
                raise LongmillError(
                    f"sp_size={self.sp_size} needs padding_free: true (the group shares its rows' real tokens)"
                )
            check_model(self.model, self.sp_size)
            install_attention()
            self.sp = new_groups(self.sp_size)
        if self.args.gradient_checkpointing:
            hold_checkpointing_options(self.model, self.args.gradient_checkpointing_kwargs)
        self.dynamic_sampling_rounds = int(dynamic_sampling_rounds)
        self.dynamic_sampling_metric = dynamic_sampling_metric
        n = len(self.train_dataset) if self.train_dataset is not None else 0
        weights = list(refill_weights) if refill_weights is not None else [1.0] * n
        if len(weights) != n:
            raise ValueError(f"refill_weights has {len(weights)} entries for {n} training rows")
        self.refill_sampler = RefillSampler(
            weights, int(self.args.seed), self.accelerator.process_index, self.accelerator.num_processes
        )
        cols = self.train_dataset.column_names if n else []
        self._uid_index = {u: i for i, u in enumerate(self.train_dataset["uid"])} if "uid" in cols else {}
        self._signal: torch.Tensor | None = None
        self._warned_fallback = False
        logging.getLogger("trl.trainer.grpo_trainer").addFilter(_NONE_FILTER)

    # -- padding-free scoring -----------------------------------------------------------------------------

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **extra,
    ):
        """TRL's scoring, from each micro-batch's real tokens (text-only batches; others go to TRL's own).

        With ``sp_size`` > 1 the training forward (gradients on) runs over the rank's sequence-parallel group
        (:func:`train.sequence_parallel.sequence_parallel_logps`); scoring without gradients stays on the rank.
        """
        text_only = not compute_aux_loss and all(v is None for v in extra.values())
        if self.sp is not None and torch.is_grad_enabled() and text_only:
            with self.accelerator.autocast():
                logps, entropies = sequence_parallel_logps(
                    model, input_ids, attention_mask, logits_to_keep, self.sp, compute_entropy=compute_entropy
                )
            return logps, entropies, None
        if not self.padding_free or not text_only:
            return super()._get_per_token_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                batch_size=batch_size,
                compute_entropy=compute_entropy,
                compute_aux_loss=compute_aux_loss,
                **extra,
            )
        with self.accelerator.autocast():
            logps, entropies = padding_free_logps(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                compute_entropy=compute_entropy,
                batch_size=batch_size,
            )
        return logps, entropies, None

    # -- the per-completion value groups are filtered on -------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        n = len(prompts)
        local = rewards_per_func[
            self.accelerator.process_index * n : (self.accelerator.process_index + 1) * n
        ]
        signal = None
        if self.dynamic_sampling_metric == "accuracy":
            for f in self.reward_funcs:
                acc = getattr(f, "last_accuracy", None)
                if acc is not None and len(acc) == n:
                    signal = torch.tensor(
                        [float("nan") if a is None else float(a) for a in acc],
                        dtype=torch.float32,
                        device=local.device,
                    )
                    break
            if signal is None and not self._warned_fallback:
                log.warning(
                    "no reward function reports last_accuracy; dynamic sampling filters on the reward"
                )
                self._warned_fallback = True
        if signal is None:
            w = self.reward_weights.to(local.device)
            signal = (local * w.unsqueeze(0)).nansum(dim=1)
            signal[torch.isnan(local).all(dim=1)] = float("nan")
        self._signal = signal
        return rewards_per_func

    def _score(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], torch.Tensor]:
        out = super()._generate_and_score_completions(inputs)
        return out, self._signal

    # -- refills -------------------------------------------------------------------------------------------

    def _batch_rows(self, inputs: list[dict[str, Any]]) -> set[int]:
        """Dataset rows of this generation batch on every rank (refills must not repeat them)."""
        from accelerate.utils import gather_object

        uids = sorted({x.get("uid") for x in inputs if x.get("uid") is not None})
        if self.accelerator.num_processes > 1:
            uids = gather_object(uids)
        return {self._uid_index[u] for u in uids if u in self._uid_index}

    def _fresh_prompts(self, n_groups: int, exclude: set[int]) -> tuple[list[dict[str, Any]], list[int]]:
        """Rows for ``n_groups`` refill groups, each repeated ``num_generations`` times (as TRL batches them).

        When this rank's share of the stage runs out, already-seen rows fill the rest (a rare, logged case).
        """
        idx = self.refill_sampler.draw(n_groups, exclude)
        if len(idx) < n_groups:
            log.warning(
                "dynamic sampling: only %d unused prompts left for %d refill groups; repeating some",
                len(idx),
                n_groups,
            )
            idx += self.refill_sampler.draw(n_groups - len(idx), set(idx))
            while len(idx) < n_groups:
                idx.append(idx[len(idx) % max(len(idx), 1)] if idx else 0)
        rows = [dict(self.train_dataset[i]) for i in idx]
        return [r for r in rows for _ in range(self.num_generations)], idx

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out, signal = self._score(inputs)
        if not self.model.training or self.dynamic_sampling_rounds <= 0:
            return out
        g = self.num_generations
        if len(inputs) % g:
            raise ValueError(
                f"dynamic sampling needs whole groups on each process: {len(inputs)} rows per process is "
                f"not a multiple of num_generations={g}; adjust per_device_train_batch_size or "
                "steps_per_generation"
            )
        metrics = self._metrics["train"]
        kept_lengths = {k: len(v) for k, v in metrics.items()}
        empty = no_signal_groups(signal, g)
        n_groups = empty.numel()
        filtered = int(empty.sum())
        replaced = rounds = 0
        device = out["advantages"].device
        exclude = self._batch_rows(inputs)
        while rounds < self.dynamic_sampling_rounds:
            need = torch.tensor([int(empty.sum())], device=device)
            most = int(self.accelerator.gather(need).max())
            if most == 0:
                break
            rounds += 1
            if int(empty.sum()):
                prompts, drawn = self._fresh_prompts(most, exclude)
                exclude.update(drawn)
            else:
                # Nothing to refill here, but TRL gathers rewards across ranks inside generation, so this rank
                # generates as many groups as the neediest one; it re-uses its own prompts for that rather than
                # spending its refill sampler's draws (and share of the stage) on groups it would throw away.
                prompts = [inputs[i % len(inputs)] for i in range(most * g)]
            fresh, fresh_signal = self._score(prompts)
            usable = [i for i, z in enumerate(no_signal_groups(fresh_signal, g).tolist()) if not z]
            holes = [i for i, z in enumerate(empty.tolist()) if z]
            k = min(len(usable), len(holes))
            if k:
                out = replace_groups(out, fresh, holes[:k], usable[:k], g, self.processing_class.pad_token_id)
                empty[torch.tensor(holes[:k], device=empty.device)] = False
                replaced += k
        # TRL's metrics once per generation batch: drop what the refill rounds appended.
        for key in list(metrics):
            if key not in kept_lengths:
                del metrics[key]
            else:
                del metrics[key][kept_lengths[key] :]
        remaining = int(empty.sum())
        rows_out = empty.repeat_interleave(g).to(device)
        if remaining:  # DAPO drops them: no advantage, and their tokens leave the normaliser
            out["advantages"] = out["advantages"].masked_fill(rows_out, 0.0)
        if rounds or remaining:
            loss_mask = (
                out["completion_mask"]
                if out.get("tool_mask") is None
                else out["completion_mask"] * out["tool_mask"]
            )
            loss_mask = loss_mask * (~rows_out).unsqueeze(1).to(loss_mask.dtype)
            out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        stats = torch.tensor(
            [filtered, replaced, n_groups, rounds, remaining], dtype=torch.float32, device=device
        )
        total = self.accelerator.gather(stats).view(-1, 5).sum(dim=0).tolist()
        metrics["dynamic_sampling/filtered_share"].append(total[0] / max(total[2], 1))
        metrics["dynamic_sampling/replaced_share"].append(total[1] / max(total[2], 1))
        metrics["dynamic_sampling/remaining_share"].append(total[4] / max(total[2], 1))
        metrics["dynamic_sampling/rounds"].append(total[3] / self.accelerator.num_processes)
        return out

    # -- checkpointing the sampler ----------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        os.makedirs(folder, exist_ok=True)  # each rank writes its own file (as transformers' RNG states)
        from longmill.io import atomic_write_json

        atomic_write_json(
            os.path.join(folder, self.STATE_FILE.format(rank=self.accelerator.process_index)),
            self.refill_sampler.state_dict(),
        )

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.load_refill_state(checkpoint)

    def load_refill_state(self, checkpoint: str) -> None:
        """Restore this rank's refill sampler from ``checkpoint`` (done on resume)."""
        path = os.path.join(checkpoint, self.STATE_FILE.format(rank=self.accelerator.process_index))
        if os.path.exists(path):
            with open(path) as f:
                self.refill_sampler.load_state_dict(json.load(f))
        else:
            log.warning(
                "%s: no dynamic sampling state for rank %d; refills restart from the seed",
                checkpoint,
                self.accelerator.process_index,
            )
