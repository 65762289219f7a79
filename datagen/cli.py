"""The ``datagen`` command line (also ``python -m datagen``).

Generator commands (``keychain``, ``longqa``) are built from the generators' config dataclasses, so
every option has the same name as its config field and params.yaml key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from datagen.generators import GENERATORS
from datagen.runner import RunConfig, run_generator, run_triplets
from datagen.sources import SOURCES, get_source
from longmill.cliutil import (
    FlexibleCommand,
    FlexibleGroup,
    dataclass_options,
    fields_of,
    friendly_errors,
    parse_kv,
    progress_bar,
    raw_value,
    setup_logging,
    typed_options,
)
from longmill.errors import LongmillError
from longmill.io import atomic_write_json
from longmill.rng import check_seed

SOURCE_HELP = (
    "Source of triplets: " + ", ".join(SOURCES.names()) + ". 'synthetic' needs no --input; "
    "'triplets' reads a folder written by `datagen triplets`."
)


STATS_OUT_HELP = (
    "Also write stats.json to this path (for `dvc metrics`, which wants metrics outside outputs)."
)


def source_options(fn):
    """--source/--input/--source-opt/--map/--limit, shared by every command that reads a source."""
    fn = click.option("--stats-out", type=click.Path(path_type=Path), default=None, help=STATS_OUT_HELP)(fn)
    fn = click.option(
        "--limit", type=int, default=None, help="Read at most this many triplets from the source."
    )(fn)
    fn = click.option(
        "--map",
        "mapping",
        multiple=True,
        metavar="FIELD=COLUMN",
        help="Column mapping for the jsonl/parquet/hf sources, e.g. --map question=query "
        "--map answers=gold (repeatable).",
    )(fn)
    fn = click.option(
        "--source-opt",
        "source_opts",
        multiple=True,
        metavar="KEY=VALUE",
        help="A source option, e.g. --source-opt num_triplets=5000 for synthetic, "
        "--source-opt split=dev (repeatable).",
    )(fn)
    fn = click.option(
        "--input",
        "input_",
        type=str,
        default=None,
        help="Input file, folder or glob (not needed for --source synthetic).",
    )(fn)
    fn = click.option("--source", type=str, default="synthetic", show_default=True, help=SOURCE_HELP)(fn)
    return fn


def make_source(
    source: str,
    input_: str | None,
    source_opts: tuple[str, ...],
    mapping: tuple[str, ...],
    limit: int | None,
    strict: bool,
):
    if limit is not None and limit < 1:
        raise LongmillError(
            f"--limit must be a positive number of triplets, got {limit}; leave it out to read all"
        )
    options: dict[str, Any] = parse_kv(source_opts, "--source-opt")
    if "seed" in options:  # a source's own seed (synthetic) must be checked before it reaches numpy
        try:
            check_seed(int(options["seed"]), "--source-opt seed")
        except ValueError:
            raise LongmillError(
                f"--source-opt seed must be a whole number >= 0, got {options['seed']!r}"
            ) from None
    if mapping:
        options["map"] = parse_kv(mapping, "--map")
    return get_source(source, input_, strict=strict, limit=limit, options=options)


@click.group(
    cls=FlexibleGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.option("-v", "--verbose", count=True, help="-v for progress messages, -vv for debugging.")
def main(verbose: int) -> None:
    """Make verifiable long-context tasks (KeyChain, long QA) from multi-hop QA, as Parquet shards.

    \b
    Examples:
      datagen triplets --source hotpotqa --input hotpot_dev_distractor_v1.json --out data/triplets/hotpotqa
      datagen keychain --source hotpotqa --input hotpot_dev_distractor_v1.json --length 60k \\
          --num-samples 50 --seed 1 --out data/keychain-60k
      datagen keychain --source synthetic --length 20k --num-samples 200 --out data/kc-20k
      datagen verify data/keychain-60k
      datagen inspect data/keychain-60k/part-00000.parquet --row 0
      datagen list
    """
    setup_logging(verbose)


@main.command()
@source_options
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Output folder for the triplet shards."
)
@click.option("--rows-per-part", type=int, default=1000, show_default=True, help="Triplets per Parquet part.")
@click.option("--strict", is_flag=True, help="Fail on the first malformed record instead of skipping it.")
@friendly_errors
def triplets(source, input_, source_opts, mapping, limit, stats_out, out, rows_per_part, strict):
    """Normalise a source into question-context-answer triplet shards.

    \b
    Examples:
      datagen triplets --source hotpotqa --input hotpot_dev_distractor_v1.json --out data/triplets/hotpotqa
      datagen triplets --source musique --input musique_ans_v1.0_dev.jsonl --out data/triplets/musique
      datagen triplets --source jsonl --input mine.jsonl --map question=q --map answers=golds --out data/t
      datagen triplets --source synthetic --source-opt num_triplets=2000 --out data/triplets/synthetic
    """
    src = make_source(source, input_, source_opts, mapping, limit, strict)
    with progress_bar(None, f"triplets {source}", unit="triplet") as bar:
        stats = run_triplets(src, out, rows_per_part=rows_per_part, progress=bar.update)
    if stats_out:
        atomic_write_json(stats_out, stats)
    click.echo(
        f"wrote {stats['triplets']} triplets in {stats['parts']} part(s) to {out} "
        f"(skipped: {stats['skipped'] or 'none'})"
    )


def _generator_command(name: str) -> click.Command:
    gen_cls = GENERATORS.get(name)
    cfg_cls = gen_cls.config_cls

    @source_options
    @dataclass_options(cfg_cls)
    @click.option(
        "--out",
        type=click.Path(path_type=Path),
        default=None,
        help=f"Output folder for the shards; default: data/{name}-LENGTH (LENGTH as typed, e.g. "
        f"data/{name}-60k).",
    )
    @dataclass_options(RunConfig, exclude=("out",))
    @friendly_errors
    def command(source, input_, source_opts, mapping, limit, stats_out, out, **kw):
        length = str(raw_value("length", kw["length"])).strip()
        run = RunConfig(out=out or Path("data") / f"{name}-{length}", **fields_of(RunConfig, kw))
        config = cfg_cls(**fields_of(cfg_cls, kw))
        config.check_given(set(typed_options(cfg_cls, kw)))
        check_seed(config.seed)
        src = make_source(source, input_, source_opts, mapping, limit, run.strict)
        if out is None:
            click.echo(f"no --out given: writing to {run.out}", err=True)
        total = sum(len(run.part_range(p)) for p in run.my_parts())
        with progress_bar(total, f"{name} {length}") as bar:
            stats = run_generator(name, config, src, run, progress=bar.update)
        if stats_out and stats["parts_done"] == stats["parts"]:
            atomic_write_json(stats_out, stats)
        pt = stats.get("prompt_tokens") or {}
        click.echo(
            f"wrote {stats['written']} of {stats['requested']} samples to {run.out} "
            f"(parts done {stats['parts_done']}/{stats['parts']}; prompt tokens min {pt.get('min')}, "
            f"median {pt.get('median')}, max {pt.get('max')}; skipped: {stats['skipped'] or 'none'})"
        )

    doc = (gen_cls.__doc__ or "").strip().splitlines()[0]
    examples = {
        "keychain": "datagen keychain --source hotpotqa --input hotpot_dev_distractor_v1.json --length 60k "
        "--num-samples 50 --seed 1 --out data/kc-60k\n  datagen keychain --source synthetic --length 20k "
        "--hops 3 --num-chains 4 --uuid-format short --out data/kc-20k\n  datagen keychain --source triplets "
        "--input data/triplets/musique --length 64ki --num-shards 8 --shard-index 3 --out data/kc-64ki",
        "longqa": "datagen longqa --source musique --input musique_ans_v1.0_dev.jsonl --length 40k --placement middle "
        "--out data/qa-40k\n  datagen longqa --source synthetic --length 20k --tokenizer cl100k --out data/qa-20k",
        "aggregation": "datagen aggregation --length 20k --num-items 12 --out data/agg-20k\n  datagen aggregation "
        "--length 8k --ops count,sum --world-seed 3 --out data/agg-8k",
        "needles": "datagen needles --length 32k --num-needles 16 --num-queries 2 --depths 0,0.25,0.5,0.75,1 "
        "--out data/needles-32k\n  (one command per length gives the length x depth grid)",
        "vartrack": "datagen vartrack --length 16k --num-chains 4 --chain-length 5 --depths 0,0.5,1 "
        "--out data/vt-16k",
    }.get(name, "")
    help_text = (
        f"{doc}\n\nEvery sample's rendered prompt (chat template and generation prompt included) has between "
        "L*(1-tolerance) and L tokens. Lengths: 60k = 60,000, 64ki = 65,536. Re-running with the same "
        "options resumes, skipping finished parts; the same seed gives byte-identical shards."
        f"\n\n\b\nExamples:\n  {examples}"
    )
    return FlexibleCommand(
        name, callback=command, params=getattr(command, "__click_params__", []), help=help_text
    )


for _name in GENERATORS.names():
    _cmd = _generator_command(_name)
    _cmd.params.reverse()
    main.add_command(_cmd)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--max-violations", type=int, default=50, show_default=True, help="How many violations to print."
)
@friendly_errors
def verify(folder, max_violations):
    """Re-derive every chain from the text alone and re-measure every length.

    Checks, per row: the rendered prompt's token count equals prompt_tokens and lies in
    [L*(1-tolerance), L]; the gold documents are in the text; for long-QA and KeyChain rows, an accepted
    answer (or alias) occurs in the gold documents' text (yes/no answers, and sources whose answers need not
    be text of the documents, are counted, not failed); for KeyChain rows, the chain that starts
    at the head key named in the instructions resolves to exactly the question, has chain_hops keys,
    keys are unique, and the text's pairs equal the carried chains. Exits 1 on any violation.

    \b
    Example:
      datagen verify data/keychain-60k
    """
    from datagen.shards import list_parts
    from datagen.verify import verify as run_verify

    list_parts(folder)
    with progress_bar(None, "verify", unit="row") as bar:
        report = run_verify(folder, progress=bar.update)
    for v in report.violations[:max_violations]:
        click.secho(str(v), fg="red", err=True)
    if report.answers:
        a = report.answers
        click.echo(
            f"answers: {a.get('found', 0)} found in their gold documents, {a.get('yes_no', 0)} yes/no, "
            f"{a.get('not_extractive', 0)} from sources whose answers need not be text of the documents "
            f"(not checked), {a.get('missing', 0)} missing"
        )
    if report.ok:
        click.echo(
            f"OK: {report.rows} rows in {report.files} file(s) ({report.keychain_rows} KeyChain), no violations"
        )
    else:
        click.echo(f"FAILED: {len(report.violations)} violation(s) in {report.rows} rows: {report.checks}")
        sys.exit(1)


@main.command(name="inspect")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--row", type=int, default=0, show_default=True, help="Row index (0-based).")
@click.option("--full", is_flag=True, help="Print the whole prompt with marks, not only the outline.")
@click.option("--json", "as_json", is_flag=True, help="Print the outline as JSON.")
@friendly_errors
def inspect_(file, row, full, as_json):
    """Show one sample: its question, answers, gold documents and chains, marked.

    \b
    Examples:
      datagen inspect data/keychain-60k/part-00000.parquet --row 3
      datagen inspect data/keychain-60k --row 0 --full | less -R
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from datagen.inspect import load_row, marks, outline

    r = load_row(file, row)
    o = outline(r)
    if as_json:
        click.echo(json.dumps(o, indent=2, ensure_ascii=False))
        return
    console = Console()
    t = Table(show_header=False, box=None)
    for k in (
        "uid",
        "data_source",
        "question",
        "answers",
        "prompt_tokens",
        "length_target",
        "tokenizer",
        "num_docs",
        "chain_head",
    ):
        t.add_row(f"[bold]{k}", str(o[k]))
    console.print(t)
    for g in o["gold"]:
        console.print(
            f"[green]gold[/] document {g['position']} of {o['num_docs']} at depth {g['depth']}: {g['title']}"
        )
    for c in o["chains"]:
        style = "magenta" if c["is_true"] else "yellow"
        label = "TRUE chain" if c["is_true"] else "decoy chain"
        console.print(f"[{style}]{label}[/] -> {c['target']!r}  hop depths {c['hop_depths']}")
    if full:
        text = next(m["content"] for m in reversed(r["prompt"]) if m["role"] == "user")
        styled = Text(text)
        for m in marks(r):
            styled.stylize(
                {"gold": "bold green", "chain": "bold magenta", "decoy": "yellow"}[m.kind], m.start, m.end
            )
        console.rule("prompt")
        console.print(styled)


@main.command(name="list")
def list_() -> None:
    """List the sources, generators, tokenizers and document templates."""
    from datagen.prompts import DOC_TEMPLATES
    from datagen.tokenizers import tokenizer_names

    for title, names in (
        ("sources", SOURCES.names()),
        ("generators", GENERATORS.names()),
        ("tokenizers", tokenizer_names()),
        ("document templates", DOC_TEMPLATES.names()),
    ):
        click.echo(f"{title}: {', '.join(names)}")


def run() -> None:  # pragma: no cover - console entry point
    try:
        main(prog_name="datagen")
    except LongmillError as e:
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
