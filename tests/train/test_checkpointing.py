"""Activation offload (and every_n_layers) hold through TRL's re-enabling of gradient checkpointing."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM
from trl.models.utils import disable_gradient_checkpointing

from train.checkpointing import hold_checkpointing_options, split_checkpointing_kwargs
from train.stepcheck import StepSettings, TinyShape, host_offload, make_trainer, write_model


def test_offload_is_active_during_every_loss_of_a_grpo_run(tmp_path):
    """TRL turns checkpointing off around each scoring pass and back on with the raw kwargs
    (trl/models/utils.py:397-414); the layers must still run under save_on_cpu in the loss afterwards."""
    shape = TinyShape()
    model_dir = write_model(shape, tmp_path / "model")
    settings = StepSettings(
        activation_offload=True,
        prompt_lengths=(40, 33),
        completion_lengths=(10, 7),
        max_completion_length=11,
        num_generations=2,
        gradient_accumulation_steps=2,
        steps_per_generation=2,
        max_steps=2,
    )
    trainer = make_trainer(model_dir, settings, tmp_path / "run")
    packs_per_loss: list[int] = []
    leaked: list[str] = []
    for layer in trainer.model.model.layers:  # a layer must never receive checkpointing options as keywords
        layer.register_forward_pre_hook(
            lambda m, a, kw: leaked.extend(k for k in ("offload", "every_n_layers") if k in kw),
            with_kwargs=True,
        )
    with host_offload() as stats:
        compute_loss = trainer.compute_loss

        def probed(*args, **kwargs):
            before = stats["packs"]
            loss = compute_loss(*args, **kwargs)
            packs_per_loss.append(stats["packs"] - before)
            return loss

        trainer.compute_loss = probed
        trainer.train()
    # 4 micro-steps, 2 scoring passes (each toggling checkpointing); one layer input offloaded per layer and loss
    assert packs_per_loss == [shape.num_hidden_layers] * 4
    assert not leaked
    assert trainer.model.is_activation_checkpointing


def test_every_n_layers_and_offload_survive_trls_toggle():
    model = AutoModelForCausalLM.from_config(TinyShape(num_hidden_layers=4).config())
    kwargs = {"use_reentrant": False, "offload": True, "every_n_layers": 2}
    assert split_checkpointing_kwargs(kwargs) == (
        {"use_reentrant": False},
        {"offload": True, "every_n_layers": 2},
    )
    assert hold_checkpointing_options(model, kwargs)
    model.train()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    with disable_gradient_checkpointing(model, kwargs):  # what TRL does around a scoring pass
        assert not model.is_activation_checkpointing
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [True, False, True, False]
    func = model.model.layers[0]._gradient_checkpointing_func
    assert func.keywords == {"use_reentrant": False}  # offload and every_n_layers are not checkpoint keywords
    assert "checkpoint_func" in func.func.__qualname__  # transformers' save_on_cpu wrapper
    # nothing to hold: the model is left as it is
    plain = AutoModelForCausalLM.from_config(TinyShape().config())
    assert not hold_checkpointing_options(plain, {"use_reentrant": False, "offload": False})
    assert "gradient_checkpointing_enable" not in vars(plain)
    assert torch.is_grad_enabled()
