"""Shared fixtures. Everything here is made by the tests themselves: no downloads."""

from __future__ import annotations

import os

import pytest

# Tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly on machines without CUDA."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a dependency
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """Where presets (tiny-qwen2) are materialised for this test session."""
    return tmp_path_factory.mktemp("longmill-cache")


@pytest.fixture(scope="session")
def tiny_qwen2(model_cache):
    """The folder of the tiny-qwen2 preset: random weights, Qwen2.5 tokenizer and chat template."""
    from eval.models import materialize_preset

    return materialize_preset("tiny-qwen2", cache_dir=model_cache)


@pytest.fixture(scope="session")
def hf_qwen_tokenizer(tiny_qwen2):
    """An independent Qwen2.5 tokenizer: Hugging Face tokenizers + transformers' chat templating."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_qwen2))
