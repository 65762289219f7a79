"""``python -m eval``: generate and score, or score existing predictions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from datagen.shards import OutputLock, check_output_path
from eval.backends.base import add_options_help
from eval.run import GenerateConfig, JudgeFlags, run_eval, score_run
from longmill.cliutil import (
    FlexibleGroup,
    dataclass_options,
    fields_of,
    friendly_errors,
    progress_bar,
    setup_logging,
)


def _bar(total: int, desc: str) -> progress_bar:
    return progress_bar(total or None, desc, unit="prompt" if desc == "generate" else "call")


def _summary(metrics: dict, out: Path) -> str:
    m = metrics["primary_metric"]
    o = metrics["overall"]
    c = metrics["counts"]
    extra = ""
    if c.get("judge_failed"):
        extra = (
            f", judge failed {c['judge_failed']} of {c.get('judge_calls')} calls: counted at their rule score, "
            f"at most {o.get('max_em_judge_bound', 0):.3f} had they been YES"
        )
    val = o.get(m)
    of = f" of {c['samples']} (coverage {c.get('coverage', 0):.1%})" if c.get("missing_predictions") else ""
    return (
        f"{m} = {'n/a' if val is None else f'{val:.3f}'} over {o.get('n', 0)}{of} samples "
        f"(generation failed {c['generation_failed']}{extra}); wrote {out}/metrics.json, report.md, plots/"
    )


def _finish(metrics: dict, out: Path) -> None:
    """Print the summary; exit with status 1 when the run has problems (judge failures, failed prompts)."""
    click.echo(_summary(metrics, out))
    for problem in metrics.get("problems", []):
        click.secho(f"error: {problem}", fg="red", err=True)
    if metrics.get("problems"):
        sys.exit(1)


@click.group(
    cls=FlexibleGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option("-v", "--verbose", count=True, help="-v for progress messages, -vv for debugging.")
def main(verbose: int) -> None:
    """Evaluate models on long-context QA: generate, extract, score (EM, sub-EM, F1, judge, pass@k), report.

    \b
    Examples:
      python -m eval run --model tiny-qwen2 --backend hf --data data/curriculum/eval --n 1 --out runs/eval
      python -m eval run --model Qwen/Qwen2.5-7B-Instruct --backend vllm --data data/curriculum/eval \\
          --n 8 --temperature 0.7 --max-tokens 4096 --judge-url http://127.0.0.1:8001/v1 --out runs/eval-7b
      python -m eval run --model qwen --backend openai --backend-option url=http://127.0.0.1:8000/v1 \\
          --data LongBench/2wikimqa.jsonl --out runs/lb
      python -m eval score --data data/curriculum/eval --predictions runs/eval/predictions.jsonl --out runs/rescored
    """
    setup_logging(verbose)


@main.command()
@click.option(
    "--data", required=True, help="longmill sample shards (folder or .parquet), or a LongBench-style .jsonl."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--limit", type=int, default=None, help="Evaluate at most this many items.")
@click.option(
    "--tokenizer",
    default="qwen2.5",
    show_default=True,
    help="Measures LongBench prompt lengths for length bins.",
)
@click.option(
    "--regenerate",
    is_flag=True,
    help="If OUT/predictions.jsonl was made with another model, backend, "
    "sampling or data, move it aside (to predictions.jsonl.old) and generate anew instead of refusing.",
)
@dataclass_options(GenerateConfig)
@dataclass_options(JudgeFlags)
@friendly_errors
def run(data, out, limit, tokenizer, regenerate, **kw):
    """Generate predictions with a model, then score them and write the report.

    Writes OUT/predictions.jsonl (one line per prompt: {"uid", "completions": [k strings], "prompt_sha"}),
    OUT/predictions.meta.json (what produced them), OUT/metrics.json (overall, and every metric grouped by
    data_source x length bin x gold depth bin), OUT/samples.parquet, OUT/plots/ and OUT/report.md.

    Re-running resumes: prompts already answered with the same model, backend, sampling and prompts are
    skipped, and prompts that failed to generate are retried. Predictions made otherwise, or for other
    data, are refused (--regenerate moves them aside). One run at a time writes into OUT (a second fails
    at once). A failed judge call keeps the rule's score; the run exits with status 1 when prompts failed
    to generate or more than --max-judge-failures of the judge calls failed.

    \b
    Examples:
      python -m eval run --model tiny-qwen2 --backend hf --data data/curriculum/eval --n 2 \\
          --temperature 0.7 --max-tokens 32 --backend-option device=cpu --out runs/eval
      vllm serve Qwen/Qwen2.5-1.5B-Instruct --port 8001 &    # the judge
      export JUDGE_KEY=...                                  # only if the judge server wants one
      python -m eval run --model Qwen/Qwen2.5-7B-Instruct --backend vllm --data data/curriculum/eval \\
          --n 8 --temperature 0.7 --max-tokens 4096 --judge-url http://127.0.0.1:8001/v1 \\
          --judge-backend-option api_key_env=JUDGE_KEY,timeout=30 --max-judge-failures 0.02 --out runs/eval-7b
      python -m eval run --model qwen --backend openai --backend-option url=http://127.0.0.1:8000/v1 \\
          --data LongBench/2wikimqa.jsonl --out runs/lb --regenerate
    """
    gen = GenerateConfig(**fields_of(GenerateConfig, kw))
    flags = JudgeFlags(**fields_of(JudgeFlags, kw))
    metrics = run_eval(
        data,
        out,
        gen,
        flags.judge_config(),
        limit=limit,
        tokenizer=tokenizer,
        progress_factory=_bar,
        pass_metric=flags.pass_metric,
        regenerate=regenerate,
        max_judge_failures=flags.max_judge_failures,
    )
    _finish(metrics, out)


add_options_help(run, "backend_option")  # each backend declares its options; the help lists them


@main.command()
@click.option("--data", required=True, help="The items the predictions answer (shards or LongBench .jsonl).")
@click.option(
    "--predictions", type=click.Path(path_type=Path), required=True, help="predictions.jsonl to score."
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--limit", type=int, default=None, help="Score at most this many items.")
@click.option("--tokenizer", default="qwen2.5", show_default=True, help="Measures LongBench prompt lengths.")
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Score even when some items of --data have no prediction: the metrics then cover only the "
    "items that do, and the report states the coverage. Without it, missing predictions exit 1.",
)
@dataclass_options(JudgeFlags)
@friendly_errors
def score(data, predictions, out, limit, tokenizer, allow_partial, **kw):
    """Score existing predictions (e.g. from another tool) and write the report.

    Each line of --predictions is {"uid": ..., "completions": [k strings]}; "completions": null marks a prompt
    whose generation failed (counted, not scored). A uid given twice, or an empty file, is an error; a line
    that is not valid UTF-8 is skipped and counted (predictions_skipped). An item of --data without a
    prediction makes the command exit with status 1 (after writing the report) unless --allow-partial is
    given; predictions for uids that are not in --data are counted (unknown_uids) and ignored. A failed judge call
    keeps the rule's score, and the report gives the bound had every failed call been a YES; more than
    --max-judge-failures of failed calls makes the command exit with status 1 (after writing the report).

    \b
    Examples:
      python -m eval score --data data/curriculum/eval --predictions runs/eval/predictions.jsonl --out runs/rescored
      python -m eval score --data LongBench/hotpotqa.jsonl --predictions first-half.jsonl --out runs/half --allow-partial
      python -m eval score --data LongBench/hotpotqa.jsonl --predictions preds.jsonl --out runs/lb-judged \\
          --judge-url http://127.0.0.1:8001/v1 --judge-cache runs/judge_cache.jsonl \\
          --judge-backend-option timeout=20,max_retries=3 --max-judge-failures 0.01
    """
    from eval.data import load_items

    items, skips = load_items(data, tokenizer=tokenizer, limit=limit)
    flags = JudgeFlags(**kw)
    judge = flags.judge_config()
    config = {
        "data": str(data),
        "predictions": str(predictions),
        "input_skipped": skips.as_dict(),
        "judge": None if judge is None else judge.summary(),
    }
    check_output_path(out, [data])
    with OutputLock(out):  # one writer per folder
        metrics = score_run(
            items,
            predictions,
            out,
            judge,
            config,
            _bar,
            flags.pass_metric,
            max_judge_failures=flags.max_judge_failures,
            allow_partial=allow_partial,
        )
    _finish(metrics, out)


@main.command(name="show")
@click.argument("metrics_file", type=click.Path(exists=True, path_type=Path))
def show(metrics_file: Path) -> None:
    """Print a metrics.json as the Markdown report."""
    from eval.report import render_markdown

    click.echo(render_markdown(json.loads(metrics_file.read_text())))
