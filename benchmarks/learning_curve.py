"""Does the recipe learn? Base vs warm-up SFT vs phased GRPO/DAPO on the same held-out questions.

Runs the pipeline's own commands with the values of a params profile (default
``profiles/cpu-learning-smollm2.yaml``): ``datagen triplets``, ``datagen longqa`` at every length (KeyChain is
left out: the benchmark measures long-context QA), ``python -m curriculum build`` (held-out split, length bins,
retrospective samples), ``python -m train sft`` on the training split only (``--heldout``),
``python -m train grpo`` (one DAPO phase per curriculum stage, rule reward), then ``python -m eval run`` with
the base model, the SFT model and the final RL model on the curriculum's held-out eval split. It writes
``WORK/learning_curve.md`` (accuracy per model per length with its standard error, reward per step per phase),
``WORK/learning_curve.png`` and ``WORK/learning_curve.json``; ``--write-results`` also appends the table to
``benchmarks/RESULTS.md`` with the command, the machine and the wall time.

Accuracy is the eval's ``em`` (exact match of the extracted answer, what the rule reward pays), averaged per
``length_target`` and over all lengths; its standard error is sqrt(p(1-p)/n). Every model answers the same
prompts, so the differences between models (RL - SFT, RL - base, SFT - base) are paired, with the standard
error sd(em_a - em_b)/sqrt(n). Nothing is tuned on the eval questions: they are held out by the curriculum
before SFT and RL see any data. ``report`` re-scores a finished run without generating anything.

Examples:
    python benchmarks/learning_curve.py model --out models/smollm2-135m-instruct
    python benchmarks/learning_curve.py run --profile profiles/cpu-learning-smollm2.yaml --work runs/learning \
        --write-results
    python benchmarks/learning_curve.py report --work runs/learning    # the table and plot again
    # a quick look (fewer steps), same held-out questions:
    python benchmarks/learning_curve.py run --work runs/learning-small --set sft.max_steps=10 --set rl.max_steps=2
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_PROFILE = ROOT / "profiles" / "cpu-learning-smollm2.yaml"
PRESET = "smollm2-135m-instruct"
MODELS = ("base", "sft", "rl")

log = logging.getLogger("learning_curve")


def flags(section: dict[str, Any]) -> list[str]:
    """A params section as command flags, the way dvc.yaml's ``${section}`` unpacks it."""
    out: list[str] = []
    for k, v in section.items():
        name = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(name if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, list):
            for x in v:
                out += [name, str(x)]
        elif v is not None:
            out += [name, str(v)]
    return out


def apply_overrides(params: dict[str, Any], sets: tuple[str, ...]) -> dict[str, Any]:
    """``section.key=value`` overrides (values parsed as YAML), like ``dvc exp run -S``."""
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep:
            raise click.BadParameter(f"--set {s!r}: expected section.key=value, e.g. rl.max_steps=4")
        node = params
        *path, last = key.split(".")
        for p in path:
            if not isinstance(node.get(p), dict):
                raise click.BadParameter(f"--set {s!r}: {p!r} is not a section of the profile")
            node = node[p]
        node[last] = yaml.safe_load(value)
    return params


def materialize_model(out: Path) -> Path:
    """Copy the ``smollm2-135m-instruct`` preset's folder (built offline from its wheel) to ``out``."""
    from eval.models import resolve_model

    if (out / "config.json").exists():
        return out
    src = Path(resolve_model(PRESET))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    tmp.replace(out)
    return out


def run_cmd(cmd: list[str], log_path: Path, timings: dict[str, float], name: str) -> None:
    """Run one pipeline command from the repository root, its output to ``log_path``; time it."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log.info("%s: %s", name, shlex.join(cmd))
    t0 = time.perf_counter()
    with open(log_path, "ab") as f:
        f.write(f"$ {shlex.join(cmd)}\n".encode())
        f.flush()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise click.ClickException(f"{name} failed (exit {proc.returncode}); see {log_path}:\n{tail}")


def scored_samples(eval_dir: Path, data_dir: Path) -> Any:
    """One row per scored held-out prompt: ``uid``, ``length_target`` and ``em`` (0 or 1 for greedy n=1).

    The evaluation must cover exactly the prompts of ``data_dir``: models compared on different prompts (an
    eval left from other data, or one that lost prompts) would make the table's comparisons meaningless.
    """
    import polars as pl

    scored = pl.read_parquet(eval_dir / "samples.parquet").select(["uid", "em"])
    lengths = pl.read_parquet(sorted(data_dir.glob("*.parquet")), columns=["uid", "length_target"])
    missing = set(lengths["uid"].to_list()) - set(scored["uid"].to_list())
    extra = set(scored["uid"].to_list()) - set(lengths["uid"].to_list())
    if missing or extra:
        raise click.ClickException(
            f"{eval_dir / 'samples.parquet'} does not cover the held-out prompts of {data_dir}: "
            f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(extra)} not in the data "
            f"(e.g. {sorted(extra)[:3]}); run the benchmark again"
        )
    return scored.join(lengths, on="uid", how="inner")


def _by_length(df: Any) -> Any:
    """``(length, rows)`` for each ``length_target`` in increasing order, then ``("all", every row)``."""
    import polars as pl

    for length in sorted({int(x) for x in df["length_target"].to_list()}):
        yield str(length), df.filter(pl.col("length_target") == length)
    yield "all", df


def accuracy_by_length(df: Any) -> dict[str, dict[str, float]]:
    """Mean ``em`` and its standard error sqrt(p(1-p)/n) per ``length_target``, and over all lengths ("all")."""
    out: dict[str, dict[str, float]] = {}
    for key, part in _by_length(df):
        p, n = float(part["em"].mean()), part.height
        out[key] = {"accuracy": p, "stderr": math.sqrt(p * (1 - p) / n) if n else 0.0, "n": n}
    return out


def paired_difference(a: Any, b: Any) -> dict[str, dict[str, float]]:
    """Accuracy of ``a`` minus that of ``b`` on the same prompts, per length and over all lengths.

    Both models answered the same held-out prompts, so the standard error is the paired one:
    sd(em_a - em_b) / sqrt(n), which is smaller than the two unpaired errors combined when the models agree
    on most prompts.

    >>> import polars as pl
    >>> a = pl.DataFrame({"uid": ["x", "y", "z", "w"], "length_target": [1, 1, 1, 1], "em": [1.0, 1.0, 1.0, 0.0]})
    >>> b = pl.DataFrame({"uid": ["x", "y", "z", "w"], "length_target": [1, 1, 1, 1], "em": [1.0, 0.0, 1.0, 0.0]})
    >>> d = paired_difference(a, b)["all"]
    >>> d["difference"], round(d["stderr"], 3), d["n"]
    (0.25, 0.25, 4)
    """
    import polars as pl

    joined = a.join(b.select(["uid", pl.col("em").alias("em_b")]), on="uid", how="inner").with_columns(
        (pl.col("em") - pl.col("em_b")).alias("d")
    )
    out: dict[str, dict[str, float]] = {}
    for key, part in _by_length(joined):
        n = part.height
        sd = float(part["d"].std(ddof=1) or 0.0) if n > 1 else 0.0
        out[key] = {
            "difference": float(part["d"].mean() or 0.0),
            "stderr": sd / math.sqrt(n) if n else 0.0,
            "n": n,
        }
    return out


def rl_rewards(metrics_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Reward per logged step, per phase, from ``train grpo --metrics-dir``'s phase-K.csv files."""
    import csv

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(metrics_dir.glob("phase-*.csv")):
        rows = []
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if r.get("reward") not in (None, "") and r.get("step") not in (None, ""):
                    rows.append((int(float(r["step"])), float(r["reward"])))
        out[path.stem] = rows
    return out


PAIRS = (("rl", "sft"), ("rl", "base"), ("sft", "base"))


def _order(keys: Any) -> list[str]:
    return sorted((k for k in keys if k != "all"), key=int) + (["all"] if "all" in keys else [])


def render_table(
    acc: dict[str, dict[str, dict[str, float]]],
    diffs: dict[str, dict[str, dict[str, float]]],
    rewards: dict[str, list[tuple[int, float]]],
) -> str:
    """Markdown: accuracy per model per length, the paired differences, reward per phase, the issue's test."""
    lengths = _order({length for per in acc.values() for length in per})
    head = " | ".join("all lengths" if x == "all" else f"{x} tokens" for x in lengths)
    lines = [f"| model | {head} |", "|---|" + "---|" * len(lengths)]

    def row(name: str, per: dict[str, dict[str, float]], cell: Any) -> str:
        return f"| {name} | " + " | ".join(cell(per[x]) if x in per else "-" for x in lengths) + " |"

    for model in MODELS:
        if model in acc:
            lines.append(
                row(model, acc[model], lambda c: f"{c['accuracy']:.3f} ± {c['stderr']:.3f} (n={c['n']})")
            )
    if diffs:
        lines += ["", f"| paired difference | {head} |", "|---|" + "---|" * len(lengths)]
        for name, per in diffs.items():
            lines.append(
                row(name.replace("-", " − "), per, lambda c: f"{c['difference']:+.3f} ± {c['stderr']:.3f}")
            )
    if rewards:
        lines += [
            "",
            "| phase | reward logs (one per rollout batch) | first | last | mean |",
            "|---|---|---|---|---|",
        ]
        for phase, rows in rewards.items():
            if rows:
                r = [v for _, v in rows]
                lines.append(f"| {phase} | {len(rows)} | {r[0]:.3f} | {r[-1]:.3f} | {sum(r) / len(r):.3f} |")
    if "rl-base" in diffs and "rl-sft" in diffs:
        trained = [x for x in lengths if x != "all"]
        vs_base = all(diffs["rl-base"][x]["difference"] >= 0.20 for x in trained)
        vs_sft = all(diffs["rl-sft"][x]["difference"] > diffs["rl-sft"][x]["stderr"] for x in trained)
        pooled = diffs["rl-sft"]["all"]
        lines += [
            "",
            f"RL beats base by at least 20 points at every length: **{'yes' if vs_base else 'no'}**. "
            f"RL beats SFT by more than the standard error at every length: **{'yes' if vs_sft else 'no'}** "
            f"(over all lengths: {pooled['difference']:+.3f} ± {pooled['stderr']:.3f}).",
        ]
    return "\n".join(lines) + "\n"


def plot(
    acc: dict[str, dict[str, dict[str, float]]], rewards: dict[str, list[tuple[int, float]]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for model in MODELS:
        xs = [x for x in _order(acc.get(model, {})) if x != "all"]
        if xs:
            a.errorbar(
                [int(x) for x in xs],
                [acc[model][x]["accuracy"] for x in xs],
                yerr=[acc[model][x]["stderr"] for x in xs],
                marker="o",
                capsize=3,
                label=model,
            )
    a.set_xscale("log", base=2)
    ticks = sorted({int(x) for per in acc.values() for x in per if x != "all"})
    a.set_xticks(ticks, [str(t) for t in ticks])
    a.minorticks_off()
    a.set_xlabel("context length (tokens)")
    a.set_ylabel("held-out accuracy (EM)")
    a.set_ylim(-0.02, 1.02)
    a.set_title("Accuracy per model per length")
    a.legend()
    offset = 0
    for phase, rows in rewards.items():
        if rows:
            b.plot([offset + s for s, _ in rows], [r for _, r in rows], marker=".", label=phase)
            offset += max(s for s, _ in rows)
    b.set_xlabel("RL step (phases in sequence)")
    b.set_ylabel("mean reward")
    b.set_title("Reward per step per phase")
    if rewards:
        b.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), load average {os.getloadavg()[0]:.1f} at the end, no GPU"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The learning-curve benchmark."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


@main.command("model")
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "models" / PRESET, show_default=True)
def model_cmd(out: Path) -> None:
    """Materialise the smollm2-135m-instruct preset into OUT (the folder the profile names)."""
    click.echo(materialize_model(out))


@main.command("run")
@click.option(
    "--profile", type=click.Path(exists=True, path_type=Path), default=DEFAULT_PROFILE, show_default=True
)
@click.option(
    "--work", type=click.Path(path_type=Path), default=ROOT / "runs" / "learning", show_default=True
)
@click.option(
    "--set", "sets", multiple=True, help="Override a profile value, e.g. --set rl.max_steps=4 (repeatable)."
)
@click.option(
    "--model", default=None, help="Override the profile's model folder (its tokenizer measures lengths)."
)
@click.option("--models", default="base,sft,rl", show_default=True, help="Which models to evaluate.")
@click.option(
    "--write-results/--no-write-results", default=False, help="Append the figures to benchmarks/RESULTS.md."
)
def run(
    profile: Path, work: Path, sets: tuple[str, ...], model: str | None, models: str, write_results: bool
) -> None:
    """Run the profile end to end and evaluate base / SFT / RL on the same held-out questions."""
    t_start = time.perf_counter()
    params = apply_overrides(yaml.safe_load(profile.read_text()), sets)
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    logf = work / "commands.log"
    timings: dict[str, float] = {}
    if model is None:
        model_path = ROOT / params["model"]
        if model_path.name == PRESET:
            materialize_model(model_path)
    else:
        model_path = Path(model)
    model_path = model_path.resolve()
    tokenizer = f"hf:{model_path}"
    py = sys.executable
    datagen = [py, "-m", "datagen"]

    for name, src in params["sources"].items():
        run_cmd(
            [*datagen, "triplets", *flags(src), "--out", str(work / "triplets" / name)],
            logf,
            timings,
            "triplets",
        )
    longqa = {**params["longqa"], "tokenizer": tokenizer}
    for name in params["source_names"]:
        for length in params["lengths"]:
            run_cmd(
                [
                    *datagen,
                    "longqa",
                    "--source",
                    "triplets",
                    "--input",
                    str(work / "triplets" / name),
                    "--length",
                    str(length),
                    *flags(longqa),
                    "--out",
                    str(work / "synth" / f"longqa-{name}-{length}"),
                    "--overwrite",
                ],
                logf,
                timings,
                "longqa",
            )
    run_cmd(
        [
            py,
            "-m",
            "curriculum",
            "build",
            "--input",
            str(work / "synth"),
            "--out",
            str(work / "curriculum"),
            *flags(params["curriculum"]),
            "--heldout-out",
            str(work / "heldout.json"),
        ],
        logf,
        timings,
        "curriculum",
    )
    wanted = [m for m in models.split(",") if m]
    if "sft" in wanted or "rl" in wanted:
        run_cmd(
            [
                py,
                "-m",
                "train",
                "sft",
                "--data",
                str(work / "triplets"),
                "--model",
                str(model_path),
                "--out",
                str(work / "sft"),
                *flags(params["sft"]),
                "--metrics-dir",
                str(work / "metrics" / "sft"),
                "--heldout",
                str(work / "heldout.json"),
            ],
            logf,
            timings,
            "sft",
        )
    if "rl" in wanted:
        run_cmd(
            [
                py,
                "-m",
                "train",
                "grpo",
                "--curriculum",
                str(work / "curriculum"),
                "--model",
                str(work / "sft" / "final"),
                "--out",
                str(work / "rl"),
                *flags(params["rl"]),
                "--metrics-dir",
                str(work / "metrics" / "rl"),
            ],
            logf,
            timings,
            "rl",
        )
    policies = {"base": model_path, "sft": work / "sft" / "final", "rl": work / "rl" / "final"}
    for m in wanted:
        out = work / f"eval-{m}"
        run_cmd(
            [
                py,
                "-m",
                "eval",
                "run",
                "--model",
                str(policies[m]),
                "--data",
                str(work / "curriculum" / "eval"),
                "--out",
                str(out),
                "--regenerate",
                *flags(params["eval"]),
            ],
            logf,
            timings,
            f"eval-{m}",
        )
    wall = time.perf_counter() - t_start
    summary = {
        "command": "python benchmarks/learning_curve.py " + shlex.join(sys.argv[1:]),
        "profile": str(profile),
        "overrides": list(sets),
        "models": wanted,
        "timings_s": timings,
        "wall_s": wall,
        "machine": machine(),
    }
    report_work(work, summary, write_results)


def report_work(work: Path, summary: dict[str, Any], write_results: bool) -> None:
    """Score the evaluated models of ``work`` against each other; write the table, plot and JSON."""
    samples = {
        m: scored_samples(work / f"eval-{m}", work / "curriculum" / "eval")
        for m in summary["models"]
        if (work / f"eval-{m}" / "samples.parquet").exists()
    }
    acc = {m: accuracy_by_length(df) for m, df in samples.items()}
    diffs = {
        f"{x}-{y}": paired_difference(samples[x], samples[y])
        for x, y in PAIRS
        if x in samples and y in samples
    }
    rewards = rl_rewards(work / "metrics" / "rl")
    table = render_table(acc, diffs, rewards)
    plot(acc, rewards, work / "learning_curve.png")
    summary = {**summary, "accuracy": acc, "differences": diffs, "rewards": rewards}
    (work / "learning_curve.json").write_text(json.dumps(summary, indent=2))
    (work / "learning_curve.md").write_text(table)
    timings, wall = summary["timings_s"], summary["wall_s"]
    click.echo(table)
    click.echo(
        "seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; wall {wall:.0f}"
    )
    if write_results:
        with open(RESULTS, "a") as f:
            f.write(
                f"\n### Learning curve run ({time.strftime('%Y-%m-%d', time.gmtime())})\n\n`{summary['command']}` on "
                f"{summary['machine']}; wall time {wall / 60:.1f} min "
                f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).\n\n{table}"
            )


@main.command("report")
@click.option(
    "--work",
    type=click.Path(exists=True, path_type=Path),
    default=ROOT / "runs" / "learning",
    show_default=True,
)
@click.option(
    "--write-results/--no-write-results", default=False, help="Append the figures to benchmarks/RESULTS.md."
)
def report_cmd(work: Path, write_results: bool) -> None:
    """Re-score a finished run's evaluations (no generation): the table, plot and JSON again.

    Reads WORK/learning_curve.json for the command, machine and timings the run recorded.
    """
    path = work / "learning_curve.json"
    if not path.exists():
        raise click.ClickException(f"{path} is missing: `run` writes it when it finishes")
    summary = json.loads(path.read_text())
    summary.setdefault("models", [m for m in MODELS if (work / f"eval-{m}").exists()])
    summary.setdefault("command", "python benchmarks/learning_curve.py run (command not recorded)")
    report_work(work.resolve(), summary, write_results)


if __name__ == "__main__":
    main()
