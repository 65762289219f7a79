"""GPU-only checks: vLLM generation and flash attention. They skip cleanly without CUDA (see conftest)."""

from __future__ import annotations

import pytest

from eval.backends.base import SamplingParams

pytestmark = pytest.mark.gpu


def test_vllm_backend_generates_n_completions(tiny_qwen2):
    pytest.importorskip("vllm")
    from eval.backends import get_backend

    with get_backend(
        "vllm", str(tiny_qwen2), gpu_memory_utilization=0.2, max_model_len=2048, enforce_eager=True
    ) as b:
        out = b.generate(
            [[{"role": "user", "content": "Hi"}]] * 3,
            n=2,
            sampling=SamplingParams(temperature=1.0, max_tokens=8),
        )
    assert len(out) == 3 and all(len(c) == 2 for c in out)


def test_vllm_backend_with_yarn(tiny_qwen2):
    pytest.importorskip("vllm")
    from eval.backends import get_backend

    with get_backend(
        "vllm",
        str(tiny_qwen2),
        yarn_factor=2.0,
        yarn_original_max=1024,
        max_model_len=2048,
        gpu_memory_utilization=0.2,
        enforce_eager=True,
    ) as b:
        out = b.generate([[{"role": "user", "content": "Hi"}]], n=1, sampling=SamplingParams(max_tokens=4))
    assert len(out[0]) == 1


def test_hf_backend_on_cuda_with_flash_attention(tiny_qwen2):
    pytest.importorskip("flash_attn")
    from eval.backends import get_backend

    b = get_backend(
        "hf", str(tiny_qwen2), device="cuda", dtype="bfloat16", attn_implementation="flash_attention_2"
    )
    out = b.generate(
        [[{"role": "user", "content": "Hi"}]], n=2, sampling=SamplingParams(temperature=1.0, max_tokens=4)
    )
    assert len(out[0]) == 2
