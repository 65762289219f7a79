"""``hf``: generation with transformers ``generate`` (CPU or GPU); the fallback when vLLM is absent."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval.backends.base import BACKENDS, GenerationBackend, Messages, Progress, SamplingParams

log = logging.getLogger(__name__)


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` up to the first stop string (HF generate has no string stops of its own here)."""
    if not stop:
        return text
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=-1)
    return text if cut < 0 else text[:cut]


@dataclass
class HFOptions:
    """Options of the ``hf`` backend.

    Args:
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        batch_size: prompts per ``generate`` call.
        attn_implementation: e.g. ``sdpa`` or ``flash_attention_2``.
        yarn_factor: YaRN rope scaling factor for contexts beyond the native window.
        yarn_original_max: the native window YaRN scales from.
        cache_dir: where presets are materialised.
    """

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 4
    attn_implementation: str | None = None
    yarn_factor: float | None = None
    yarn_original_max: int = 32_768
    cache_dir: str | None = None


class HFBackend(GenerationBackend):
    """Batched ``model.generate`` on a causal LM.

    Args:
        model: a preset name (``tiny-qwen2``), a local folder or a hub id.
        **options: see :class:`HFOptions`.
        model_obj: an already loaded model (with ``tokenizer_obj``) instead of loading ``model``.
        tokenizer_obj: its tokenizer.
    """

    name = "hf"
    Options = HFOptions

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 4,
        attn_implementation: str | None = None,
        yarn_factor: float | None = None,
        yarn_original_max: int = 32_768,
        cache_dir: str | None = None,
        model_obj: Any = None,
        tokenizer_obj: Any = None,
    ):
        from eval.models import load_causal_lm

        if model_obj is not None:
            self.model, self.tokenizer = model_obj, tokenizer_obj
        else:
            self.model, self.tokenizer = load_causal_lm(
                model,
                dtype=dtype,
                device=device,
                attn_implementation=attn_implementation,
                yarn_factor=yarn_factor,
                yarn_original_max=yarn_original_max,
                cache_dir=cache_dir,
            )
        self.model.eval()
        self.batch_size = max(1, int(batch_size))
        self.failed = 0

    def _generate_batch(
        self, batch: Sequence[Messages], n: int, sampling: SamplingParams, seed: int
    ) -> list[list[str]]:
        import torch

        tok = self.tokenizer
        texts = [tok.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False) for p in batch]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        sample = sampling.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=sampling.max_tokens, do_sample=sample, pad_token_id=tok.pad_token_id
        )
        if sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, num_return_sequences=n)
        else:  # greedy decoding gives the same completion n times; generate it once
            kwargs.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(**enc, **kwargs)
        decoded = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        decoded = [cut_at_stop(t, sampling.stop) for t in decoded]
        per = n if sample else 1
        return [decoded[i * per : (i + 1) * per] * (1 if sample else n) for i in range(len(batch))]

    def generate(
        self,
        prompts: Sequence[Messages],
        n: int = 1,
        sampling: SamplingParams | None = None,
        progress: Progress | None = None,
    ) -> list[list[str] | None]:
        sampling = sampling or SamplingParams()
        out: list[list[str] | None] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            try:
                out.extend(self._generate_batch(batch, n, sampling, sampling.seed + start))
            except (RuntimeError, ValueError) as e:  # e.g. CUDA out of memory on a long batch
                log.warning("hf generation failed for prompts %d..%d: %s", start, start + len(batch) - 1, e)
                self.failed += len(batch)
                out.extend([None] * len(batch))
            if progress:
                progress(len(batch))
        return out

    def close(self) -> None:
        self.model = None


BACKENDS.add("hf", HFBackend)
