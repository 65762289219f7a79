"""``python -m curriculum``: build staged datasets from synthesized shards."""

from __future__ import annotations

import json
from pathlib import Path

import click

from curriculum.build import CurriculumConfig, build_curriculum
from curriculum.grounding import GroundingConfig
from eval.backends.base import add_options_help
from eval.run import GenerateConfig
from longmill.cliutil import (
    FlexibleGroup,
    dataclass_options,
    fields_of,
    friendly_errors,
    progress_bar,
    setup_logging,
)
from longmill.io import atomic_write_json


@click.group(
    cls=FlexibleGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option("-v", "--verbose", count=True, help="-v for progress messages, -vv for debugging.")
def main(verbose: int) -> None:
    """Stage synthesized samples into a length curriculum with difficulty scores (QwenLong-L1).

    \b
    Examples:
      python -m curriculum build --input data/kc-20k data/kc-40k data/kc-60k --out data/curriculum
      python -m curriculum build --input data/kc-* data/qa-* --out data/curriculum --bins 20k,40k,60k \\
          --retro-share 0.25 --eval-share 0.05 --difficulty-model Qwen/Qwen2.5-7B-Instruct \\
          --difficulty-backend vllm --k 8
      python -m curriculum show data/curriculum
    """
    setup_logging(verbose)


@main.command()
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    help="A folder of sample shards (repeat the option, or list several after one --input).",
)
@click.argument("more_inputs", nargs=-1)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--stats-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write stats.json to this path (for `dvc metrics`, which wants metrics outside outputs).",
)
@click.option(
    "--heldout-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write heldout.json (the held-out source ids and questions) to this path, for the SFT "
    "stage (`python -m train sft --heldout PATH`).",
)
@dataclass_options(CurriculumConfig)
@friendly_errors
def build(inputs, more_inputs, out, stats_out, heldout_out, **kw):
    """Bin samples by measured length, score difficulty, filter, add retrospective samples, hold out eval.

    Writes OUT/stage-1 .. OUT/stage-K (one per bin, Parquet shards in the sample schema with difficulty
    filled), OUT/eval (held-out source questions), OUT/heldout.json (their source ids and questions, which
    no training stage may use), OUT/manifest.json (counts, histograms, retrospective shares and uids, seeds,
    the sha256 of every shard) and OUT/stats.json (figures for `dvc metrics`). A rebuild replaces OUT's
    curriculum only once it has succeeded.

    \b
    Examples:
      python -m curriculum build --input data/kc-20k data/kc-40k data/kc-60k --out data/curriculum
      python -m curriculum build --input data/synth --out data/curriculum --bins 20k,40k,60k --eval-share 0.05
      python -m curriculum build --input data/kc-* data/qa-* --out data/curriculum --retro-share 0.25 \\
          --difficulty-model Qwen/Qwen2.5-7B-Instruct --difficulty-backend vllm --k 8
      python -m curriculum build --input data/synth --out data/curriculum --heldout-out data/heldout.json
    """
    config = CurriculumConfig(**fields_of(CurriculumConfig, kw))
    manifest = build_curriculum(
        [*inputs, *more_inputs], out, config, progress_factory=lambda n, d: progress_bar(n or None, d)
    )
    if stats_out:
        atomic_write_json(stats_out, json.loads((Path(out) / "stats.json").read_text()))
    if heldout_out:
        atomic_write_json(heldout_out, json.loads((Path(out) / "heldout.json").read_text()))
    for s in manifest["stages"]:
        click.echo(
            f"{s['name']}: {s['rows']} samples ({s['own']} in {s['bin'][0]}<tokens<={s['bin'][1]}, "
            f"{s['retro']} retrospective = {s['retro_share']:.1%}), mean difficulty {s['difficulty_mean']:.3f}"
        )
    click.echo(
        f"eval: {manifest['eval']['rows']} samples from {manifest['eval']['source_questions']} held-out "
        f"questions; dropped: {manifest['dropped']}; wrote {out}/manifest.json"
    )


add_options_help(build, "difficulty_backend_option")  # each backend declares its options; the help lists them


@main.command()
@click.option(
    "--input",
    "input_",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="A folder of sample shards (a generator's output, or a curriculum stage).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option(
    "--stats-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write stats.json to this path (for `dvc metrics`).",
)
@dataclass_options(GroundingConfig)
@dataclass_options(GenerateConfig, exclude=("n",), defaults={"temperature": 0.7})
@friendly_errors
def ground(input_, out, stats_out, **kw):
    """Knowledge grounding (QwenLong-L1.5): drop or flag samples a model answers without their context.

    Puts each question alone to the model k times (closed book) and, unless --no-with-context, the full
    prompt k times; records closed_book_pass_rate and context_pass_rate per row, drops (or, with --action
    flag, marks in grounding_flag) rows whose closed-book rate exceeds --max-closed-book, and counts what
    was dropped and why in OUT/stats.json. Failed generations keep their row with a null rate.

    \b
    Examples:
      python -m curriculum ground --input data/kc-20k --out data/kc-20k-grounded --model tiny-qwen2 --k 4
      python -m curriculum ground --input data/qa-20k --out data/qa-20k-g --backend vllm \\
          --model Qwen/Qwen2.5-7B-Instruct --k 8 --max-closed-book 0.125 --action flag
    """
    from curriculum.grounding import ground as run_ground

    config = GroundingConfig(**fields_of(GroundingConfig, kw))
    gen = GenerateConfig(**fields_of(GenerateConfig, kw), n=config.k)
    stats = run_ground(input_, out, config, gen, progress_factory=lambda n, d: progress_bar(n or None, d))
    if stats_out:
        atomic_write_json(stats_out, stats)
    click.echo(
        f"read {stats['read']}, wrote {stats['written']} to {out}; dropped: {stats['dropped'] or 'none'}; "
        f"flagged: {stats['flagged'] or 'none'}; generation failed: {stats['generation_failed'] or 'none'}"
    )


add_options_help(ground, "backend_option")


@main.command()
@click.argument("folder", type=click.Path(exists=True, path_type=Path))
@friendly_errors
def show(folder: Path) -> None:
    """Summarise a built curriculum's manifest (after checking its shards' hashes).

    \b
    Example:
      python -m curriculum show data/curriculum
    """
    from longmill.manifest import check

    m = check(folder)
    click.echo(
        json.dumps(
            {
                "bins": m["bins"],
                "difficulty_source": m["difficulty_source"],
                "dropped": m["dropped"],
                "stages": [
                    {
                        k: s[k]
                        for k in (
                            "name",
                            "rows",
                            "own",
                            "retro",
                            "retro_share",
                            "max_prompt_length",
                            "difficulty_mean",
                        )
                    }
                    for s in m["stages"]
                ],
                "eval_rows": m["eval"]["rows"],
            },
            indent=2,
        )
    )
