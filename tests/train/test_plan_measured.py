"""``train plan`` against peaks measured on CPU: each term of the planner is pinned by a measurement.

Every run is a real GRPO micro-step (train/stepcheck.py: longmill's trainer on TRL, scripted rollouts, the second
micro-step of the second optimiser step) whose peaks the PyTorch profiler's memory events give: at the LM head's
backward and at the decoder layers (``head_peak``, ``layer_peak``, both above the step's ``start``). A term is
pinned either by a phase that it is a visible part of, or by the difference between two runs that differ in that
term only. Tolerances are tight (the planner lands within a few hundred KiB of the allocator on these shapes),
so removing a term fails its test.
"""

from __future__ import annotations

from functools import cache

import pytest

from train.stepcheck import PlanCheck, StepSettings, TinyShape, check_plan_row

KIB = 1024
SMALL = TinyShape(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
)
DEEPER = TinyShape(**{**SMALL.__dict__, "num_hidden_layers": 3})
# h large against the 32,768-wide buffer of TRL's head, so that the final norm and the head's gradients show (and
# more tokens than h: with fewer, a layer's weight gradient, made before it is added to .grad, outweighs its
# activations, which the planner does not count; see docs/design.md, "Memory planning")
WIDE = TinyShape(
    hidden_size=1024,
    intermediate_size=256,
    num_hidden_layers=1,
    num_attention_heads=8,
    num_key_value_heads=2,
    vocab_size=128,
)


def _settings(prompt: int = 400, completion: int = 64, **kw) -> StepSettings:
    return StepSettings.two_groups(prompt, completion, **kw)


@cache
def run(name: str) -> PlanCheck:
    shape, settings = {
        "base": (SMALL, _settings()),
        "padded": (SMALL, _settings(padding_free=False)),
        "offload": (SMALL, _settings(activation_offload=True)),
        "beta": (SMALL, _settings(beta=0.04)),
        "no-ckpt": (SMALL, _settings(gradient_checkpointing=False)),
        "deeper": (DEEPER, _settings()),
        "longer": (SMALL, _settings(prompt=800)),
        "bf16": (SMALL, _settings(bf16=True)),
        "wide": (WIDE, _settings(prompt=1000, completion=64)),
    }[name]
    return check_plan_row(shape, settings, name)


def head(r: PlanCheck) -> tuple[float, float]:
    """(planned, measured) activations at the LM head's backward."""
    return r.estimate.head_phase, r.measured.head_peak - r.measured.start


def layer(r: PlanCheck) -> tuple[float, float]:
    """(planned, measured) activations at the decoder layers."""
    return r.estimate.layer_phase, r.measured.layer_peak - r.measured.start


def close(planned: float, measured: float, rel: float = 0.01, slack: float = 96 * KIB) -> bool:
    return abs(planned - measured) <= rel * abs(measured) + slack


def test_one_small_shape_both_phases_and_the_peak():
    """The fast check: a padding-free micro-step's peak, and each phase, as the planner has them."""
    r = run("base")
    assert r.measured.rows and r.tokens > 400
    assert abs(r.ratio - 1) < 0.15  # benchmarks/plan_check.py's bar; in fact within a fraction of a percent
    assert close(
        r.estimate.states, r.measured.start, 0.005
    )  # weights, gradients, AdamW (fp32: 4 + 4 + 8 bytes)
    assert close(*head(r)) and close(*layer(r))


@pytest.mark.slow
def test_reference_model_term():
    base, beta = run("base"), run("beta")
    assert beta.estimate.reference_model > 0
    assert close(beta.estimate.reference_model, beta.measured.start - base.measured.start, 0.01, 8 * KIB)
    assert close(*head(beta)) and close(*layer(beta))


@pytest.mark.slow
def test_checkpoint_term_per_layer_and_offload():
    base, deeper, offload = run("base"), run("deeper"), run("offload")
    # one more layer: one more checkpointed input, held at the head and at the layers
    one_layer = deeper.estimate.activation_checkpoints - base.estimate.activation_checkpoints
    assert one_layer > 0
    assert close(one_layer, head(deeper)[1] - head(base)[1], 0.02, 8 * KIB)
    assert close(one_layer, layer(deeper)[1] - layer(base)[1], 0.02, 8 * KIB)
    # offload: the checkpoints leave the device (measured as on a GPU), the recomputed input comes back
    assert offload.estimate.activation_checkpoints == 0
    assert close(base.estimate.activation_checkpoints, head(base)[1] - head(offload)[1], 0.02, 8 * KIB)
    # at the layers the recomputed layer's input is back on the device: one checkpoint less than all of them
    assert close(layer(base)[0] - layer(offload)[0], layer(base)[1] - layer(offload)[1], 0.02, 8 * KIB)
    assert close(*head(offload)) and close(*layer(offload))


@pytest.mark.slow
def test_trls_padded_forward_terms_mask_additive_copy_and_repeated_kv():
    base, padded = run("base"), run("padded")
    assert padded.estimate.attention > 0 and padded.tokens > base.tokens
    assert close(*layer(padded)) and close(*head(padded))
    # what the padded path adds at the layers: measured difference against the planned one
    assert close(layer(padded)[0] - layer(base)[0], layer(padded)[1] - layer(base)[1], 0.01, 8 * KIB)


@pytest.mark.slow
def test_without_checkpointing_every_layer_keeps_its_tensors():
    r = run("no-ckpt")
    assert close(*head(r)) and close(*layer(r))
    assert r.estimate.activation_checkpoints > 10 * run("base").estimate.activation_checkpoints


@pytest.mark.slow
def test_per_token_terms_grow_with_the_sequence():
    base, longer = run("base"), run("longer")
    assert longer.tokens > base.tokens + 300
    assert close(layer(longer)[0] - layer(base)[0], layer(longer)[1] - layer(base)[1], 0.01, 8 * KIB)
    assert close(head(longer)[0] - head(base)[0], head(longer)[1] - head(base)[1], 0.01, 8 * KIB)


@pytest.mark.slow
def test_final_norm_and_head_gradients_at_a_wide_model():
    r = run("wide")
    e = r.estimate
    assert e.final_norm > 0.05 * e.head_phase  # visible at this shape
    assert close(*head(r), 0.005, 32 * KIB) and close(*layer(r), 0.005, 32 * KIB)


@pytest.mark.slow
def test_bf16_terms():
    r = run("bf16")
    assert close(r.estimate.states, r.measured.start, 0.005)  # bf16 weights, gradients and AdamW moments
    assert close(*head(r)) and close(*layer(r))
