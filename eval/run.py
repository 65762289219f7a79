"""Evaluation runs: generate predictions with a backend, then score and report them.

Predictions are appended to ``DIR/predictions.jsonl`` one prompt at a time, so an interrupted run
resumes where it stopped (prompts already answered are skipped).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.errors import LongmillError
from eval.backends.base import SamplingParams, get_backend
from eval.data import EvalItem, load_items
from eval.judge import JudgeConfig, make_judge
from eval.report import write_report
from eval.scoring import read_predictions, score

log = logging.getLogger(__name__)
Progress = Callable[[int], None]


@dataclass
class GenerateConfig:
    """What to generate with.

    Args:
        model: a preset (tiny-qwen2), a local folder, a hub id, or for ``openai`` the served model name.
        backend: ``hf`` (transformers, CPU or GPU), ``vllm`` (GPU) or ``openai`` (an OpenAI-compatible server).
        n: completions per prompt (pass@k needs n >= k; use a temperature > 0 for n > 1).
        temperature: sampling temperature (0 = greedy).
        top_p: nucleus sampling mass.
        max_tokens: the most tokens per completion.
        seed: sampling seed.
        batch_size: prompts per call (hf) or per progress step (vllm, openai).
        url: for ``openai``, the base URL with /v1 (e.g. http://127.0.0.1:8000/v1).
        api_key: for ``openai``, a bearer token.
        device: for ``hf``: auto, cpu or cuda.
        dtype: for ``hf``/``vllm``: auto, bfloat16, float16 or float32.
        tensor_parallel_size: for ``vllm``: GPUs per model.
        gpu_memory_utilization: for ``vllm``.
        max_model_len: for ``vllm``: the context window (prompt + completion).
        yarn_factor: YaRN rope scaling for contexts beyond the native window (hf, vllm).
        yarn_original_max: the native window YaRN scales from.
    """

    model: str = "tiny-qwen2"
    backend: str = "hf"
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0
    batch_size: int = 4
    url: str | None = None
    api_key: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    yarn_factor: float | None = None
    yarn_original_max: int = 32_768

    def __post_init__(self) -> None:
        if self.n < 1:
            raise LongmillError(f"--n must be >= 1, got {self.n}")
        if self.n > 1 and self.temperature == 0:
            log.warning("n=%d completions with temperature 0 are identical; pass --temperature > 0 for pass@k",
                        self.n)

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              seed=self.seed)

    def backend_options(self) -> dict[str, Any]:
        if self.backend == "hf":
            return dict(device=self.device, dtype=self.dtype, batch_size=self.batch_size,
                        yarn_factor=self.yarn_factor, yarn_original_max=self.yarn_original_max)
        if self.backend == "vllm":
            return dict(tensor_parallel_size=self.tensor_parallel_size, dtype=self.dtype, seed=self.seed,
                        gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
                        yarn_factor=self.yarn_factor, yarn_original_max=self.yarn_original_max,
                        chunk=max(self.batch_size, 16))
        if self.backend == "openai":
            if not self.url:
                raise LongmillError("--backend openai needs --url, e.g. http://127.0.0.1:8000/v1 (`vllm serve MODEL`)")
            return dict(url=self.url, api_key=self.api_key)
        return {}


@dataclass
class JudgeFlags:
    """The judge and the pass@k rule, as command-line flags.

    Args:
        judge_url: an OpenAI-compatible judge endpoint with /v1, e.g. http://127.0.0.1:8001/v1 from
            `vllm serve Qwen/Qwen2.5-1.5B-Instruct --port 8001`; none disables the judge.
        judge_model: the judge model: the served name (openai) or a path, hub id or preset (hf).
        judge_backend: openai (the default when judge_url is given) or hf (in-process).
        judge_api_key: a bearer token for the judge endpoint.
        judge_cache: a JSONL file caching verdicts across runs.
        pass_metric: what counts as correct for pass@k: em, sub_em, max_em_judge, ... (default max_em_judge
            with a judge, else em).
    """

    judge_url: str | None = None
    judge_model: str | None = None
    judge_backend: str | None = None
    judge_api_key: str | None = None
    judge_cache: str | None = None
    pass_metric: str | None = None

    def judge_config(self) -> JudgeConfig | None:
        return judge_from_options(self.judge_backend, self.judge_url, self.judge_model, self.judge_api_key,
                                  self.judge_cache)


def judge_from_options(backend: str | None, url: str | None, model: str | None, api_key: str | None = None,
                       cache: str | None = None, device: str = "cpu") -> JudgeConfig | None:
    """A judge config from CLI flags, or None when no judge was asked for."""
    if not url and backend != "hf":
        if model:
            raise LongmillError("--judge-model needs --judge-url (an OpenAI-compatible server) or --judge-backend hf")
        return None
    kw: dict[str, Any] = {"backend": backend or "openai", "url": url, "api_key": api_key, "cache_path": cache,
                          "device": device}
    if model:
        kw["model"] = model
    return JudgeConfig(**kw)


def generate_predictions(items: list[EvalItem], gen: GenerateConfig, path: Path,
                         progress: Progress | None = None) -> dict[str, Any]:
    """Append completions for items not yet in ``path`` (resume); returns generation counts."""
    done: set[str] = set()
    if path.exists():
        done = set(read_predictions(path))
        _drop_torn_tail(path)
    todo = [it for it in items if it.uid not in done]
    if progress and done:
        progress(len(items) - len(todo))
    counts = {"resumed": len(items) - len(todo), "generated": 0, "failed": 0}
    if not todo:
        return counts
    backend = get_backend(gen.backend, gen.model, **gen.backend_options())
    try:
        with open(path, "a", encoding="utf-8") as f:
            step = max(1, gen.batch_size)
            for start in range(0, len(todo), step):
                chunk = todo[start:start + step]
                outs = backend.generate([it.prompt for it in chunk], n=gen.n, sampling=gen.sampling(),
                                        progress=progress)
                for it, comps in zip(chunk, outs, strict=True):
                    rec: dict[str, Any] = {"uid": it.uid, "completions": comps}
                    if comps is None:
                        rec["error"] = "generation failed (see the log)"
                        counts["failed"] += 1
                    else:
                        counts["generated"] += 1
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
    finally:
        backend.close()
    return counts


def _drop_torn_tail(path: Path) -> None:
    """Cut an incomplete last line (a killed run) so that appends start on a fresh line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def run_eval(data: str, out: str | Path, gen: GenerateConfig, judge: JudgeConfig | None = None,
             limit: int | None = None, tokenizer: str = "qwen2.5", progress_factory: Callable[[int, str], Any] | None = None,
             pass_metric: str | None = None) -> dict[str, Any]:
    """``python -m eval run``: generate into ``out/predictions.jsonl``, then score and report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items, skips = load_items(data, tokenizer=tokenizer, limit=limit)
    bar = progress_factory(len(items), "generate") if progress_factory else None
    gen_counts = generate_predictions(items, gen, out / "predictions.jsonl", progress=bar.update if bar else None)
    if bar:
        bar.close()
    config = {"data": str(data), "generation": dataclasses.asdict(gen) | {"api_key": None},
              "judge": _judge_summary(judge), "input_skipped": skips.as_dict(), "generation_counts": gen_counts}
    return score_run(items, out / "predictions.jsonl", out, judge, config, progress_factory, pass_metric)


def score_run(items: list[EvalItem], predictions: str | Path, out: str | Path, judge: JudgeConfig | None,
              config: dict[str, Any], progress_factory: Callable[[int, str], Any] | None = None,
              pass_metric: str | None = None) -> dict[str, Any]:
    """Score a predictions file against ``items`` and write the report into ``out``."""
    preds = read_predictions(predictions)
    j = make_judge(judge) if judge else None
    try:
        bar = progress_factory(0, "judge") if (progress_factory and j) else None
        scored = score(items, preds, j, progress=bar.update if bar else None, pass_metric=pass_metric)
        if bar:
            bar.close()
    finally:
        if j:
            j.close()
    return write_report(scored, out, config)


def _judge_summary(judge: JudgeConfig | None) -> dict[str, Any] | None:
    if judge is None:
        return None
    return {"backend": judge.backend, "model": judge.model, "url": judge.url}
