"""Generation backends behind one interface (:class:`GenerationBackend`): ``hf``, ``vllm``, ``openai``.

vLLM is imported only when the ``vllm`` backend is built, so everything else works on CPU without it.
"""

from eval.backends import hf, openai, vllm  # noqa: F401  (registers them)
from eval.backends.base import BACKENDS, GenerationBackend, SamplingParams, get_backend

__all__ = ["BACKENDS", "GenerationBackend", "SamplingParams", "get_backend"]
