"""``vllm``: offline generation with vLLM on GPU (optional: ``pip install 'longmill[gpu]'``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval.backends.base import BACKENDS, GenerationBackend, Messages, Progress, SamplingParams
from longmill.errors import LongmillError

log = logging.getLogger(__name__)


def require_vllm() -> Any:
    """Import vLLM, or say how to get it (it needs a CUDA GPU)."""
    try:
        import vllm
    except ImportError as e:
        raise LongmillError(
            "the vllm backend needs vLLM and a CUDA GPU: pip install 'longmill[gpu]'. On CPU use --backend hf, "
            "or --backend openai against a `vllm serve` endpoint on another machine"
        ) from e
    return vllm


def rope_overrides(path: str, yarn_factor: float, yarn_original_max: int) -> dict[str, Any]:
    """``hf_overrides`` that turn on YaRN for a model folder, in the config's own rope format."""
    from transformers import AutoConfig

    from eval.models import set_rope, yarn_rope

    config = AutoConfig.from_pretrained(path)
    set_rope(config, yarn_rope(yarn_factor, yarn_original_max))
    key = "rope_parameters" if hasattr(config, "rope_parameters") else "rope_scaling"
    return {key: getattr(config, key), "max_position_embeddings": int(yarn_original_max * yarn_factor)}


@dataclass
class VLLMOptions:
    """Options of the ``vllm`` backend.

    Args:
        tensor_parallel_size: GPUs to shard the model over.
        gpu_memory_utilization: the share of GPU memory vLLM may take.
        max_model_len: the context window (prompt + completion); default the model's.
        dtype: ``auto``, ``bfloat16``, ``float16``.
        yarn_factor: YaRN rope scaling factor (Qwen2.5 uses 4.0 over 32,768 for 128K).
        yarn_original_max: the native window YaRN scales from.
        enforce_eager: disable CUDA graphs (less memory, slower).
        batch_size: prompts per ``LLM.chat`` call, so that progress can be reported (vLLM batches
            within a call).
        cache_dir: where presets are materialised.
        seed: the engine's seed.
    """

    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    yarn_factor: float | None = None
    yarn_original_max: int = 32_768
    enforce_eager: bool = False
    batch_size: int = 64
    cache_dir: str | None = None
    seed: int = 0


class VLLMBackend(GenerationBackend):
    """vLLM's offline ``LLM.chat`` with continuous batching.

    Args:
        model: a preset name, a local folder or a hub id.
        **options: see :class:`VLLMOptions`.
    """

    name = "vllm"
    Options = VLLMOptions

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        yarn_factor: float | None = None,
        yarn_original_max: int = 32_768,
        enforce_eager: bool = False,
        batch_size: int = 64,
        cache_dir: str | None = None,
        seed: int = 0,
    ):
        vllm = require_vllm()
        from eval.models import resolve_model

        path = resolve_model(model, cache_dir=cache_dir)
        kwargs: dict[str, Any] = dict(
            model=path,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            seed=seed,
        )
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if yarn_factor:
            kwargs["hf_overrides"] = rope_overrides(path, yarn_factor, yarn_original_max)
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)
        self.chunk = max(1, batch_size)

    def generate(
        self,
        prompts: Sequence[Messages],
        n: int = 1,
        sampling: SamplingParams | None = None,
        progress: Progress | None = None,
    ) -> list[list[str] | None]:
        s = sampling or SamplingParams()
        params = self._vllm.SamplingParams(
            n=n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed, stop=s.stop
        )
        out: list[list[str] | None] = []
        for start in range(0, len(prompts), self.chunk):
            batch = [list(p) for p in prompts[start : start + self.chunk]]
            results = self.llm.chat(batch, params, use_tqdm=False)
            out.extend([[c.text for c in r.outputs] for r in results])
            if progress:
                progress(len(batch))
        return out

    def close(self) -> None:
        self.llm = None


BACKENDS.add("vllm", VLLMBackend)
