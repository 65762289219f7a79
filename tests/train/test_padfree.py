"""The padding-free training forward (train/padfree.py) inside a real GRPO step with TRL's own batching:
no T x T attention mask at any micro-step, and the same log-probs, loss and gradients as TRL's padded forward."""

from __future__ import annotations

import pytest
import torch

from train.padfree import padding_free_logps, real_token_rows
from train.stepcheck import AttentionProbe, StepSettings, TinyShape, make_trainer, write_model

# The GPU profile's batching per rank (train/configs/grpo-gpu-qwen2.5-7b.yaml): 4 prompts x 8 completions per
# generation batch, one row per micro-step, 8 micro-steps per optimiser step; prompts of different lengths (TRL
# pads them on the left), completions of different lengths (padded on the right), and a quarter of them
# truncated at max_completion_length (masked out: mask_truncated_completions).
PROFILE = StepSettings(
    prompt_lengths=(61, 47, 70, 52),
    completion_lengths=(24, 9, 17, 24, 3, 12, 20, 6),
    max_completion_length=24,
    num_generations=8,
    per_device_train_batch_size=1,
    gradient_accumulation_steps=8,
    steps_per_generation=32,
    max_steps=1,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model(TinyShape(), tmp_path_factory.mktemp("padfree") / "model")


def _probe_step(model_dir, tmp_path, padding_free: bool) -> tuple[AttentionProbe, object]:
    settings = StepSettings(**{**PROFILE.__dict__, "padding_free": padding_free})
    trainer = make_trainer(model_dir, settings, tmp_path / f"run-{padding_free}")
    probe = AttentionProbe()
    with probe():
        trainer.train()
    return probe, trainer


def test_a_grpo_step_at_the_profiles_batching_passes_no_square_mask(model_dir, tmp_path):
    probe, trainer = _probe_step(model_dir, tmp_path, padding_free=True)
    sdpa = [c for c in probe.calls if c.kind == "sdpa"]
    layers = TinyShape().num_hidden_layers
    # the scoring pass (32 rows, no grad) and 8 micro-steps (forward and recompute, with grad) all ran here
    assert sum(not c.grad for c in sdpa) == 32 * layers
    assert sum(c.grad for c in sdpa) == 8 * 2 * layers
    assert not [c for c in probe.calls if c.square_mask]
    assert all(c.mask_shape is None and c.is_causal and c.enable_gqa for c in sdpa)
    assert all(c.key_shape[1] == TinyShape().num_key_value_heads for c in sdpa)  # K/V not repeated
    # every forward saw a row's real tokens only: no length is the padded width of the generation batch
    widths = {70 + 24}
    lengths = {c.query_shape[2] for c in sdpa}
    assert not lengths & widths and max(lengths) <= 70 + 23
    assert trainer.state.global_step == 1


def test_the_padded_path_is_what_the_probe_would_catch(model_dir, tmp_path):
    probe, _ = _probe_step(model_dir, tmp_path, padding_free=False)
    square = [c for c in probe.calls if c.kind == "sdpa" and c.square_mask]
    assert square and all(c.mask_shape == (1, 1, 94, 94) and c.mask_dtype == "torch.bool" for c in square)
    assert all(c.key_shape[1] == TinyShape().num_attention_heads for c in square)  # K/V repeated


def _scored_batch(model_dir, tmp_path, settings=PROFILE):
    trainer = make_trainer(model_dir, settings, tmp_path / "scored")
    rows = [trainer.train_dataset[i] for i in range(32)]
    rows = [r for r in rows[:4] for _ in range(settings.num_generations)]
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = settings.gradient_accumulation_steps  # set by train()
    batch = trainer._generate_and_score_completions(rows)
    return trainer, batch


def test_log_probs_loss_and_gradients_equal_the_padded_path(model_dir, tmp_path):
    trainer, batch = _scored_batch(model_dir, tmp_path)
    mask = batch["completion_mask"].bool()
    assert (~mask).any() and (mask.sum(1) == 0).any()  # right padding and masked (truncated) rows
    assert (batch["prompt_mask"] == 0).any()  # left padding
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    out = {}
    with torch.no_grad():
        for pf in (True, False):
            trainer.padding_free = pf
            out[pf] = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, att, width, compute_entropy=True
            )
    assert torch.allclose(out[True][0][mask], out[False][0][mask], atol=2e-5)
    assert torch.allclose(out[True][1][mask], out[False][1][mask], atol=2e-5)
    # the scoring pass's old log-probs (padding-free) match TRL's padded forward too
    assert torch.allclose(batch["old_per_token_logps"][mask], out[False][0][mask], atol=2e-5)

    # the loss and its gradients, micro-batch by micro-batch (1 row, 2 rows, the whole batch)
    for rows in (slice(0, 1), slice(8, 10), slice(0, 32)):
        micro = {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in batch.items()}
        losses, grads = {}, {}
        for pf in (True, False):
            trainer.padding_free = pf
            trainer.model.zero_grad(set_to_none=True)
            loss = trainer.compute_loss(trainer.model, micro)
            loss.backward()
            losses[pf] = loss.detach()
            grads[pf] = torch.cat(
                [p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]
            )
        assert torch.allclose(losses[True], losses[False], rtol=1e-4, atol=1e-6), rows
        assert torch.allclose(grads[True], grads[False], rtol=1e-3, atol=1e-6), rows


def test_packed_rows_equal_rows_one_by_one(model_dir, tmp_path):
    """The flash-attention mode (rows packed with restarting position_ids) computes the same log-probs; on CPU
    transformers turns packed positions into a block-diagonal mask, so this checks the packing, not the kernel."""
    trainer, batch = _scored_batch(model_dir, tmp_path)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    att = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    width = batch["completion_ids"].size(1)
    mask = batch["completion_mask"].bool()
    with torch.no_grad():
        rows, _ = padding_free_logps(trainer.model, ids, att, width, mode="rows")
        packed, _ = padding_free_logps(trainer.model, ids, att, width, mode="packed", batch_size=8)
    assert torch.allclose(rows[mask], packed[mask], atol=2e-5)
    assert (rows[~mask] == 0).all() and (packed[~mask] == 0).all()


def test_real_token_rows_reads_trl_padding():
    att = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]])
    rows = list(real_token_rows(att, logits_to_keep=3))
    assert [r.tokens.tolist() for r in rows] == [[1, 2, 3, 4], [0, 1, 2], [2, 3, 4, 5]]
    assert [r.completion_columns.tolist() for r in rows] == [[0, 1], [], [0, 1, 2]]
    with pytest.raises(ValueError, match="unknown padding-free mode"):
        padding_free_logps(torch.nn.Linear(1, 1), att, att, 3, mode="bogus")
