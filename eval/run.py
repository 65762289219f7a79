"""Evaluation runs: generate predictions with a backend, then score and report them.

Predictions are appended to ``DIR/predictions.jsonl`` as prompts finish, so an interrupted run resumes
where it stopped. Resuming only reuses what matches: ``DIR/predictions.meta.json`` records what produced
the predictions (model, backend, sampling, and a fingerprint of the data), every line records a digest of
the prompt it answered, and a run with other settings or other data is refused (or, with
``regenerate``, starts anew after moving the old file aside). A prompt whose generation failed is not
written, so the next run retries it; a run that ends with failures says so (see :func:`health_problems`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.shards import OutputLock, check_output_path
from datagen.sources.base import SkipCounter
from eval.backends.base import (
    SamplingParams,
    backend_options,
    get_backend,
    option_names,
    parse_option_items,
    split_option_items,
)
from eval.data import EvalItem, load_items
from eval.judge import JudgeConfig, judge_from_spec, make_judge
from eval.report import write_report, write_summary
from eval.scoring import read_prediction_records, read_predictions, score
from longmill.errors import LongmillError
from longmill.io import atomic_write_bytes, atomic_write_json
from longmill.types import Progress

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    """What to generate with: the generation spec (backend, model, backend options) and the sampling.

    The backend's options (url, api_key_env, timeout, device, dtype, max_model_len, yarn_factor, ...) are
    its own: each backend declares them with their defaults in its ``Options`` dataclass
    (:class:`eval.backends.hf.HFOptions`, :class:`eval.backends.vllm.VLLMOptions`,
    :class:`eval.backends.openai.OpenAIOptions`), and they are given here as ``backend_option`` items.

    Args:
        model: a preset (tiny-qwen2), a local folder, a hub id, or for ``openai`` the served model name.
        backend: ``hf`` (transformers, CPU or GPU), ``vllm`` (GPU) or ``openai`` (an OpenAI-compatible server).
        n: completions per prompt (pass@k needs n >= k; use a temperature > 0 for n > 1).
        temperature: sampling temperature (0 = greedy).
        top_p: nucleus sampling mass.
        max_tokens: the most tokens per completion.
        seed: sampling seed.
        batch_size: prompts per call (hf) or per progress step (vllm, openai).
        backend_option: the backend's options as KEY=VALUE, comma-separated or repeated (e.g.
            url=http://127.0.0.1:8000/v1,api_key_env=MY_KEY,timeout=30 for openai; device=cpu for hf;
            dtype=bfloat16,max_model_len=72000,yarn_factor=4 for vllm); an unknown key is an error that
            suggests the closest.
    """

    model: str = "tiny-qwen2"
    backend: str = "hf"
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0
    batch_size: int = 4
    backend_option: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.backend_option = split_option_items(self.backend_option)
        parse_option_items(self.backend, self.backend_option)  # an unknown backend or option: "did you mean"
        if self.n < 1:
            raise LongmillError(f"--n must be >= 1, got {self.n}")
        if self.n > 1 and self.temperature == 0:
            log.warning(
                "n=%d completions with temperature 0 are identical; pass --temperature > 0 for pass@k", self.n
            )

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens, seed=self.seed
        )

    def backend_options(self) -> dict[str, Any]:
        """The backend's options: ``backend_option`` (KEY=VALUE), then ``batch_size`` and ``seed`` where the
        backend takes them, then the backend's own defaults."""
        explicit = parse_option_items(self.backend, self.backend_option)
        opts = backend_options(self.backend, explicit, defaults_from=self, what="--backend-option")
        return {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}

    def identity(self) -> dict[str, Any]:
        """What decides the completions: a resumed run must match these exactly.

        The sampling, and the backend options that change what the model computes (:data:`OPTION_IDENTITY`;
        None where the backend has no such option). The model folder's files (names, sizes, modification
        times) are fingerprinted, so a retrained model saved to the same path does not pass for the old one.
        Batch size, device, URL and concurrency only change how the work is done, and are left out.
        """
        ident: dict[str, Any] = {name: getattr(self, name) for name in IDENTITY_FIELDS}
        options = self.backend_options()
        ident |= {name: options.get(name) for name in OPTION_IDENTITY}
        if ident["yarn_factor"] is None:
            ident.pop("yarn_original_max")
        ident["model_files"] = model_fingerprint(self.model)
        return ident

    def summary(self) -> dict[str, Any]:
        """Every setting, for reports, with the backend's options in force (the writers mask keys and
        URL credentials: :func:`longmill.secrets.redact`)."""
        return dataclasses.asdict(self) | {"backend_options": self.backend_options()}


#: The GenerateConfig fields that decide what a completion is (see :meth:`GenerateConfig.identity`).
IDENTITY_FIELDS = ("model", "backend", "n", "temperature", "top_p", "max_tokens", "seed")
#: The backend options that decide what a completion is (recorded as None by a backend without them).
OPTION_IDENTITY = ("dtype", "max_model_len", "yarn_factor", "yarn_original_max")


def model_fingerprint(model: str) -> str | None:
    """A digest of a local model folder's file names, sizes and modification times; None for other names."""
    path = Path(model)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def prompt_digest(prompt: list[dict[str, str]]) -> str:
    """A short digest of a chat prompt; each prediction line carries the digest of the prompt it answers.

    Example:
        >>> prompt_digest([{"role": "user", "content": "hi"}])
        '4e79873118cd9be7'
    """
    text = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def data_fingerprint(digests: dict[str, str]) -> str:
    """A digest of the items a predictions file answers: every uid with the digest of its prompt.

    Example:
        >>> data_fingerprint({"a": "4e79873118cd9be7"})
        '0a05100919be7d65'
    """
    return hashlib.sha256("".join(f"{u}:{d}\n" for u, d in sorted(digests.items())).encode()).hexdigest()[:16]


def meta_path(predictions: Path) -> Path:
    """Where the record of what produced ``predictions`` lives: ``X.jsonl`` -> ``X.meta.json``."""
    return predictions.with_name(predictions.stem + ".meta.json")


@dataclass
class JudgeFlags:
    """The judge and the pass@k rule, as command-line flags (training's config spells the judge the same way).

    Args:
        judge_url: an OpenAI-compatible judge endpoint with /v1, e.g. http://127.0.0.1:8001/v1 from
            `vllm serve Qwen/Qwen2.5-1.5B-Instruct --port 8001`; none disables the judge.
        judge_model: the judge model: the served name (openai) or a path, hub id or preset (hf).
        judge_backend: any generation backend: openai (the default when judge_url is given), hf or vllm
            (in-process).
        judge_backend_option: options of the judge's backend as KEY=VALUE, comma-separated, e.g.
            timeout=20,max_retries=3,max_wait=600,api_key_env=JUDGE_KEY for openai (seconds per attempt,
            retries, seconds all judge calls may take, the variable holding the key); the same keys as
            --backend-option (its help lists them by backend). Defaults: eval.judge.JudgeConfig's.
        judge_cache: a JSONL file caching verdicts across runs.
        max_judge_failures: the largest share of judge calls that may fail (0.05 = 5%); above it the run
            exits with status 1 after writing its report. Failed calls keep their rule score.
        pass_metric: what counts as correct for pass@k: em, sub_em, max_em_judge, ... (default max_em_judge
            with a judge, else em).
    """

    judge_url: str | None = None
    judge_model: str | None = None
    judge_backend: str | None = None
    judge_backend_option: list[str] = field(default_factory=list)
    judge_cache: str | None = None
    max_judge_failures: float = 0.05
    pass_metric: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_judge_failures <= 1.0:
            raise LongmillError(
                f"--max-judge-failures is a share of judge calls in [0, 1], got {self.max_judge_failures}"
            )

    def judge_config(self) -> JudgeConfig | None:
        return judge_from_spec(
            self.judge_backend, self.judge_model, self.judge_url, self.judge_backend_option, self.judge_cache
        )


def generate_predictions(
    items: list[EvalItem],
    gen: GenerateConfig,
    path: Path,
    progress: Progress | None = None,
    *,
    regenerate: bool = False,
    data: str | None = None,
) -> dict[str, Any]:
    """Append completions for items not yet in ``path`` (resume); returns generation counts.

    Args:
        items: the prompts.
        gen: the model, backend and sampling.
        path: the predictions file; ``path.with_suffix(".meta.json")`` records what produced it.
        progress: called with the number of prompts finished.
        regenerate: when the file was made with other settings or data, move it aside (to ``*.old``)
            and start anew instead of refusing.
        data: where the items came from, recorded in the meta file.

    Raises:
        LongmillError: the file holds predictions made with other settings or for other prompts (and
            ``regenerate`` is off), or it holds a uid twice.

    A prompt whose generation fails is not written, so the next run retries it; ``failed`` counts them.
    """
    path = Path(path)
    ident = gen.identity()
    digests = {it.uid: prompt_digest(it.prompt) for it in items}
    if path.exists() and path.stat().st_size:
        problem = _resume_problem(path, ident, digests)
        if problem and not regenerate:
            raise LongmillError(
                f"{problem}. Pass --regenerate to move the old predictions aside (to "
                f"{path.name}.old) and generate anew, or write into another --out"
            )
        if problem:
            log.warning("%s; moving it to %s.old and generating anew (--regenerate)", problem, path.name)
            for p in (path, meta_path(path)):
                if p.exists():
                    p.replace(p.with_name(p.name + ".old"))
    done: set[str] = set()
    if path.exists():
        _drop_torn_tail(path)
        records = read_prediction_records(path)
        failed_before = [rec for _, rec in records if rec["completions"] is None]
        if failed_before:  # written by an older longmill: retry those prompts now
            keep = b"".join(
                (json.dumps(rec, ensure_ascii=False) + "\n").encode()
                for _, rec in records
                if rec["completions"] is not None
            )
            atomic_write_bytes(path, keep)
            log.info("%s: %d prompt(s) recorded as failed are generated again", path, len(failed_before))
        done = {rec["uid"] for _, rec in records if rec["completions"] is not None}
    fingerprint = data_fingerprint(digests)
    atomic_write_json(
        meta_path(path),
        {
            "format": 1,
            "generation": ident,
            "data": data,
            "data_fingerprint": fingerprint,
            "items": len(items),
        },
    )
    todo = [it for it in items if it.uid not in done]
    if progress and len(todo) < len(items):
        progress(len(items) - len(todo))
    counts = {"resumed": len(items) - len(todo), "generated": 0, "failed": 0}
    if not todo:
        return counts
    backend = get_backend(gen.backend, gen.model, **gen.backend_options())
    try:
        with open(path, "a", encoding="utf-8") as f:
            step = max(1, gen.batch_size)
            for start in range(0, len(todo), step):
                chunk = todo[start : start + step]
                outs = backend.generate(
                    [it.prompt for it in chunk], n=gen.n, sampling=gen.sampling(), progress=progress
                )
                for it, comps in zip(chunk, outs, strict=True):
                    if comps is None:  # not written: the next run retries it
                        counts["failed"] += 1
                        continue
                    counts["generated"] += 1
                    rec = {"uid": it.uid, "completions": comps, "prompt_sha": digests[it.uid]}
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
    finally:
        backend.close()
    # The backend's own counters (and its HTTP client's), for stats.json; backends without them add nothing.
    for key, owner in (("backend", backend), ("http", getattr(backend, "client", None))):
        if isinstance(getattr(owner, "stats", None), dict):
            counts[key] = owner.stats
    if counts["failed"]:
        log.warning(
            "%d of %d prompts failed to generate; they are not recorded, and running the same command "
            "again retries them",
            counts["failed"],
            len(todo),
        )
    return counts


def _resume_problem(path: Path, ident: dict[str, Any], digests: dict[str, str]) -> str | None:
    """Why the predictions in ``path`` must not be reused for this run, or None when they may."""
    meta_file = meta_path(path)
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        before = meta["generation"]
        if not isinstance(before, dict):
            raise TypeError("'generation' is not an object")
    except FileNotFoundError:
        return (
            f"{path} holds predictions but {meta_file.name} is missing, so nothing says what produced them "
            "(an older longmill or another tool wrote it)"
        )
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return f"{meta_file} is unreadable ({e}), so nothing says what produced {path.name}"
    # An option the backend does not take cannot have changed its completions: runs made before the
    # options moved into the backends recorded GenerateConfig's own fields (dtype "auto" for openai).
    inert = set(OPTION_IDENTITY) - set(option_names(ident["backend"]))
    diffs = [
        f"{k}: {before.get(k)!r} then, {ident.get(k)!r} now"
        for k in sorted(set(before) | set(ident))
        if before.get(k) != ident.get(k) and k not in inert
    ]
    if diffs:
        return f"{path} was generated with other settings ({'; '.join(diffs)})"
    records = read_prediction_records(path)
    changed = [
        rec["uid"]
        for _, rec in records
        if rec["uid"] in digests and rec.get("prompt_sha") not in (None, digests[rec["uid"]])
    ]
    if changed:
        return (
            f"{path} answers other prompts: {len(changed)} uid(s) now have a different prompt (first: "
            f"{changed[0]}); the data changed since"
        )
    if meta.get("data_fingerprint") != data_fingerprint(digests):
        # Other items than recorded. A larger or smaller --limit of the same data keeps one set inside
        # the other; predictions for other data answer uids this data lacks while it has uids they lack.
        recorded = {rec["uid"] for _, rec in records}
        foreign = sorted(recorded - digests.keys())
        if foreign and digests.keys() - recorded:
            return (
                f"{path} holds predictions for other data: {len(foreign)} of its {len(recorded)} uid(s) "
                f"are not among the {len(digests)} items of this --data (first: {foreign[0]}), and "
                f"{len(digests.keys() - recorded)} item(s) have no prediction there (it was made for "
                f"{meta.get('data')!r}, data fingerprint {meta.get('data_fingerprint')})"
            )
    return None


def run_eval(
    data: str,
    out: str | Path,
    gen: GenerateConfig,
    judge: JudgeConfig | None = None,
    limit: int | None = None,
    tokenizer: str = "qwen2.5",
    progress_factory: Callable[[int, str], Any] | None = None,
    pass_metric: str | None = None,
    *,
    regenerate: bool = False,
    max_judge_failures: float | None = None,
) -> dict[str, Any]:
    """``python -m eval run``: generate into ``out/predictions.jsonl``, then score and report.

    Prompts whose generation failed are reported as ``generation_failed`` (and listed in ``problems``);
    the next run with the same settings retries them. The run holds ``out``'s lock
    (:class:`datagen.shards.OutputLock`), so a second run into the same folder fails at once.
    """
    out = Path(out)
    check_output_path(out, [data])
    with OutputLock(out):
        return _run_eval(
            data,
            out,
            gen,
            judge,
            limit,
            tokenizer,
            progress_factory,
            pass_metric,
            regenerate=regenerate,
            max_judge_failures=max_judge_failures,
        )


def _run_eval(
    data: str,
    out: Path,
    gen: GenerateConfig,
    judge: JudgeConfig | None,
    limit: int | None,
    tokenizer: str,
    progress_factory: Callable[[int, str], Any] | None,
    pass_metric: str | None,
    *,
    regenerate: bool,
    max_judge_failures: float | None,
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    items, skips = load_items(data, tokenizer=tokenizer, limit=limit)
    bar = progress_factory(len(items), "generate") if progress_factory else None
    predictions = out / "predictions.jsonl"
    gen_counts = generate_predictions(
        items, gen, predictions, progress=bar.update if bar else None, regenerate=regenerate, data=str(data)
    )
    if bar:
        bar.close()
    unreadable = SkipCounter()
    preds = (
        read_predictions(predictions, unreadable)
        if predictions.exists() and predictions.stat().st_size
        else {}
    )
    config = {
        "data": str(data),
        "generation": gen.summary(),
        "judge": _judge_summary(judge),
        "input_skipped": skips.as_dict(),
        "predictions_skipped": unreadable.as_dict(),
        "generation_counts": gen_counts,
    }
    for it in items:  # not written: failed in this run (the next run retries them)
        preds.setdefault(it.uid, None)
    return score_run(
        items, preds, out, judge, config, progress_factory, pass_metric, max_judge_failures=max_judge_failures
    )


def score_run(
    items: list[EvalItem],
    predictions: str | Path | dict[str, list[str] | None],
    out: str | Path,
    judge: JudgeConfig | None,
    config: dict[str, Any],
    progress_factory: Callable[[int, str], Any] | None = None,
    pass_metric: str | None = None,
    *,
    max_judge_failures: float | None = None,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Score predictions (a predictions.jsonl, or ``{uid: completions}``) and write the report into ``out``.

    Args:
        max_judge_failures: the largest share of judge calls allowed to fail; more is listed in the
            metrics' ``problems`` (None: no limit). Failed calls keep their rule score either way.
        allow_partial: items without a prediction are scored over what there is, and the report states
            the coverage; off, they are listed in ``problems`` (the CLI exits non-zero).

    Raises:
        LongmillError: the predictions file is empty or holds a uid twice.
    """
    if isinstance(predictions, dict):
        preds = predictions
    else:
        unreadable = SkipCounter()
        preds = read_predictions(predictions, unreadable)
        config = dict(config) | {"predictions_skipped": unreadable.as_dict()}
        if not preds:
            raise LongmillError(
                f"{predictions}: the predictions file is empty; nothing to score. Expected one "
                'line per prompt: {"uid": ..., "completions": [...]}'
            )
    j = make_judge(judge) if judge else None
    try:
        bar = progress_factory(0, "judge") if (progress_factory and j) else None
        scored = score(items, preds, j, progress=bar.update if bar else None, pass_metric=pass_metric)
        if bar:
            bar.close()
    finally:
        if j:
            j.close()
    config = dict(config) | {"max_judge_failures": max_judge_failures, "allow_partial": allow_partial}
    metrics = write_report(scored, out, config)
    problems = health_problems(metrics, max_judge_failures, allow_partial=allow_partial)
    if problems:
        metrics["problems"] = problems
        write_summary(metrics, out)
    return metrics


def health_problems(
    metrics: dict[str, Any], max_judge_failures: float | None = None, *, allow_partial: bool = False
) -> list[str]:
    """What makes a run's numbers untrustworthy or incomplete; the CLI exits non-zero when any.

    Example:
        >>> health_problems({"counts": {"judge_calls": 10, "judge_failed": 2, "generation_failed": 0},
        ...                  "overall": {"max_em_judge": 0.4, "max_em_judge_bound": 0.6}}, 0.05)[0][:38]
        'the judge failed on 2 of 10 calls (20%'
        >>> health_problems({"counts": {"samples": 12, "missing_predictions": 6}, "overall": {"n": 6},
        ...                  "primary_metric": "em"})[0][:47]
        '6 of 12 items have no prediction (first: n/a); '
    """
    c, o = metrics.get("counts", {}), metrics.get("overall", {})
    problems = []
    missing = c.get("missing_predictions", 0)
    if missing and not allow_partial:
        first = (c.get("missing_predictions_first") or ["n/a"])[0]
        m = metrics.get("primary_metric", "em")
        problems.append(
            f"{missing} of {c.get('samples')} items have no prediction (first: {first}); "
            f"{m} = {_fmt(o.get(m))} covers only the {o.get('n', 0)} scored. Generate the missing ones, "
            "or pass --allow-partial to score part of the data on purpose (the report states the coverage)"
        )
    calls, failed = c.get("judge_calls", 0), c.get("judge_failed", 0)
    if max_judge_failures is not None and calls and failed / calls > max_judge_failures:
        problems.append(
            f"the judge failed on {failed} of {calls} calls ({failed / calls:.0%}), more than "
            f"--max-judge-failures {max_judge_failures:g}: max_em_judge = {_fmt(o.get('max_em_judge'))} counts "
            f"those at their rule score; had they all been YES it would be {_fmt(o.get('max_em_judge_bound'))}. "
            "Check the judge server and re-run (verdicts already given are cached with --judge-cache)"
        )
    if c.get("generation_failed"):
        problems.append(
            f"{c['generation_failed']} prompt(s) failed to generate and are not scored; run the same "
            "command again to retry them"
        )
    return problems


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _drop_torn_tail(path: Path) -> None:
    """Cut an incomplete last line (a killed run) so that appends start on a fresh line."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _judge_summary(judge: JudgeConfig | None) -> dict[str, Any] | None:
    return None if judge is None else judge.summary()
