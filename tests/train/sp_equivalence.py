"""Run by tests/train/test_sequence_parallel.py under torchrun (2 CPU ranks, gloo): sp_size 2 against sp_size 1.

For each model folder given, every rank builds longmill's GRPO trainer with ``sp_size: 2`` and scripted rollouts
of its own (prompt lengths differ between ranks and within a batch, so prompts are left-padded, completions are
right-padded, and completions of ``max_completion_length`` tokens are truncated and masked out), scores a
generation batch with TRL's own ``_generate_and_score_completions``, then for several micro-batches computes, with
gradients on, the per-token log-probs and entropies, TRL's loss and its parameter gradients twice: through the
group (sequence parallel) and on the rank alone (padding-free, sp_size 1). The gradients of each path are summed
over the ranks (what DDP averages) and compared.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from train.padfree import _row_inputs, real_token_rows
from train.stepcheck import ScriptedRollout, StepSettings, make_trainer

SETTINGS = StepSettings(
    completion_lengths=(17, 3, 24, 9),
    max_completion_length=24,
    num_generations=4,
    per_device_train_batch_size=1,
    gradient_accumulation_steps=8,
    steps_per_generation=8,
    gradient_checkpointing=True,
    extra={"sp_size": 2, "ddp_backend": "nccl" if torch.cuda.is_available() else "gloo"},
)
#: Each micro-step's (first row, rows) on rank 0 and on rank 1 (TRL gathers per-row metrics: equal row counts).
#: Completions are long next to prompts, so the shard boundary of a one-row micro-batch falls inside its completion;
#: then truncated (masked) rows alone, four rows each, the whole batch.
MICRO = (
    ((0, 1), (1, 1)),
    ((1, 1), (0, 1)),
    ((2, 1), (6, 1)),
    ((0, 4), (4, 4)),
    ((0, 8), (0, 8)),
)


def grads(model) -> torch.Tensor:
    g = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    dist.all_reduce(g)
    return g


def check(model_dir: str, out: Path) -> None:
    rank = dist.get_rank() if dist.is_initialized() else int(__import__("os").environ["RANK"])
    rollout = ScriptedRollout(
        prompt_lengths=(5 + 3 * rank, 4 + rank),
        completion_lengths=SETTINGS.completion_lengths,
        max_completion_length=SETTINGS.max_completion_length,
        vocab_size=4000,
        num_generations=SETTINGS.num_generations,
        seed=rank,
    )
    trainer = make_trainer(model_dir, SETTINGS, out / f"rank{rank}", rollout=rollout)
    assert trainer.sp is not None and trainer.sp.size == 2
    device = trainer.accelerator.device
    trainer.model.to(device)  # on GPUs: this rank's own device
    group = trainer.sp
    rows = [trainer.train_dataset[i] for i in range(2)]
    rows = [r for r in rows for _ in range(SETTINGS.num_generations)]
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = SETTINGS.gradient_accumulation_steps
    batch = trainer._generate_and_score_completions(rows)
    mask_all = batch["completion_mask"].bool()
    assert (~mask_all).any() and (mask_all.sum(1) == 0).any() and (batch["prompt_mask"] == 0).any()
    odd = foreign = straddling = 0
    for pair in MICRO:
        start, n = pair[rank]
        micro = {
            k: (v[start : start + n] if isinstance(v, torch.Tensor) and v.dim() > 0 else v)
            for k, v in batch.items()
        }
        ids = torch.cat([micro["prompt_ids"], micro["completion_ids"]], 1)
        att = torch.cat([micro["prompt_mask"], micro["completion_mask"]], 1)
        width = micro["completion_ids"].size(1)
        mask = micro["completion_mask"].bool()
        real = list(real_token_rows(att, width))
        lengths = [_row_inputs(ids, r)[0].numel() for r in real]
        packed = sum(lengths)
        total = torch.tensor([packed % 2, int(mask.sum())], device=device)
        dist.all_reduce(total)
        odd += int(total[0])
        # the group runs this rank's rows as one sequence split in two: which rank computes each scored token
        share, end = -(-packed // 2), 0
        for r, length in zip(real, lengths, strict=True):
            end += length
            lo, hi = end - r.scored - 1, end - 2
            if r.scored:
                foreign += sum(1 for j in range(lo, hi + 1) if j // share != rank)
                straddling += int(lo < share <= hi)
        res = {}
        for sp in (True, False):
            trainer.sp = group if sp else None
            model.zero_grad(set_to_none=True)
            logps, ents, _ = trainer._get_per_token_logps_and_entropies(
                model, ids, att, width, compute_entropy=True
            )
            loss = trainer.compute_loss(model, micro)
            loss.backward()
            res[sp] = (logps.detach(), ents.detach(), loss.detach(), grads(model))
        (lp, en, lo, gr), (lp1, en1, lo1, gr1) = res[True], res[False]
        where = f"{Path(model_dir).name} rank {rank} micro-step {pair}"
        assert torch.allclose(lp[mask], lp1[mask], atol=2e-5), (where, (lp - lp1).abs().max())
        assert (lp[~mask] == 0).all(), where
        assert torch.allclose(en[mask], en1[mask], atol=2e-5), where
        assert torch.allclose(lo, lo1, rtol=1e-4, atol=1e-6), (where, lo, lo1)
        assert (gr.abs().sum() > 0) == (int(total[1]) > 0), where  # masked rows alone: no gradient
        assert torch.allclose(gr, gr1, rtol=1e-3, atol=1e-6), (where, (gr - gr1).abs().max())
    assert odd, "no micro-batch had a group length not divisible by sp_size"
    assert foreign and straddling, (
        "no scored token was computed on the other rank, or none straddled the boundary"
    )
    trainer.sp = group
    print("SP-EQUIVALENT", Path(model_dir).name, rank, flush=True)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    for folder in sys.argv[2:]:
        check(folder, out / Path(folder).name)
    dist.barrier()
    print("RANK-DONE", dist.get_rank(), flush=True)
