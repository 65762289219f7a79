"""Activation checkpointing that keeps its options through TRL's toggling (``offload``, ``every_n_layers``).

transformers 5's Trainer reads ``offload`` and ``every_n_layers`` out of ``activation_checkpointing_kwargs``
(alias ``gradient_checkpointing_kwargs``) and passes them to ``activation_checkpointing_enable`` as arguments
(``transformers/trainer.py:1503-1515``); with ``offload`` the checkpoint function runs each layer under
``torch.autograd.graph.save_on_cpu`` (``modeling_utils.py:3160-3168``). TRL 1.16 turns checkpointing off
around every no-grad scoring pass and back on with the raw kwargs: ``disable_gradient_checkpointing``
(``trl/models/utils.py:397-414``, used at ``trl/trainer/grpo_trainer.py:2634``) and
``unwrap_model_for_generation`` (``trl/models/utils.py:136-154``) call
``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs)``. There ``offload`` is no argument any
more: it lands in ``functools.partial(checkpoint, offload=True, ...)`` (``modeling_utils.py:3170``),
``torch.utils.checkpoint`` passes it on to the decoder layer as a keyword its ``**kwargs`` swallows, and from
the first generation on the layers' inputs stay on the GPU, silently.

:func:`hold_checkpointing_options` makes the model's re-enabling keep the options: it sets an instance-level
``gradient_checkpointing_enable`` (the entry point both TRL and transformers call; transformers routes
``activation_checkpointing_enable`` through an override, ``modeling_utils.py:3140-3149, 3215-3217``) that
strips ``offload`` and ``every_n_layers`` from whatever kwargs it gets and re-applies them as arguments.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Keys of ``activation_checkpointing_kwargs`` that are ``activation_checkpointing_enable`` arguments, not
#: ``torch.utils.checkpoint`` keywords.
ENABLE_ARGS = ("offload", "every_n_layers")


def split_checkpointing_kwargs(kwargs: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(checkpoint keywords, enable arguments)`` of an ``activation_checkpointing_kwargs`` dict."""
    kw = dict(kwargs or {})
    return kw, {k: kw.pop(k) for k in ENABLE_ARGS if k in kw}


def hold_checkpointing_options(model: Any, kwargs: dict[str, Any] | None) -> bool:
    """Make every later ``gradient_checkpointing_enable`` call on ``model`` keep ``offload``/``every_n_layers``.

    Returns True when there was an option to hold (nothing changes otherwise).

    Args:
        model: a transformers ``PreTrainedModel`` (the trainer's unwrapped model).
        kwargs: the run's ``activation_checkpointing_kwargs`` (``gradient_checkpointing_kwargs``).
    """
    _, held = split_checkpointing_kwargs(kwargs)
    if not held.get("offload"):
        held.pop("offload", None)
    if held.get("every_n_layers") in (None, 1):
        held.pop("every_n_layers", None)
    if not held or not hasattr(model, "activation_checkpointing_enable"):
        return False

    def gradient_checkpointing_enable(gradient_checkpointing_kwargs=None, **kw):
        plain, _ = split_checkpointing_kwargs(gradient_checkpointing_kwargs)
        args = {**{k: kw[k] for k in ENABLE_ARGS if k in kw}, **held}
        # the class's own method, with this instance override lifted for the call (it would route back here)
        del model.gradient_checkpointing_enable
        try:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=plain or None, **args)
        finally:
            model.gradient_checkpointing_enable = gradient_checkpointing_enable

    model.gradient_checkpointing_enable = gradient_checkpointing_enable
    if model.is_activation_checkpointing:
        gradient_checkpointing_enable(kwargs)  # re-apply now, in case the options were already lost
    log.info("activation checkpointing keeps %s through TRL's re-enabling", held)
    return True


__all__ = ["ENABLE_ARGS", "hold_checkpointing_options", "split_checkpointing_kwargs"]
