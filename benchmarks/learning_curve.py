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
``length_target``; the standard error is sqrt(p(1-p)/n). Nothing is tuned on the eval questions: they are
held out by the curriculum before SFT and RL see any data.

Examples:
    python benchmarks/learning_curve.py model --out models/smollm2-135m-instruct
    python benchmarks/learning_curve.py run --profile profiles/cpu-learning-smollm2.yaml --work runs/learning \
        --write-results
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


def accuracy_by_length(eval_dir: Path, data_dir: Path) -> dict[int, dict[str, float]]:
    """Mean ``em`` and its standard error per ``length_target`` of the scored samples in ``eval_dir``."""
    import polars as pl

    scored = pl.read_parquet(eval_dir / "samples.parquet").select(["uid", "em"])
    lengths = pl.read_parquet(sorted(data_dir.glob("*.parquet")), columns=["uid", "length_target"])
    df = scored.join(lengths, on="uid", how="inner")
    out: dict[int, dict[str, float]] = {}
    for row in (
        df.group_by("length_target").agg(pl.col("em").mean().alias("acc"), pl.len().alias("n")).to_dicts()
    ):
        p, n = float(row["acc"]), int(row["n"])
        out[int(row["length_target"])] = {
            "accuracy": p,
            "stderr": math.sqrt(p * (1 - p) / n) if n else 0.0,
            "n": n,
        }
    return dict(sorted(out.items()))


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


def render_table(
    acc: dict[str, dict[int, dict[str, float]]], rewards: dict[str, list[tuple[int, float]]]
) -> str:
    lengths = sorted({length for per in acc.values() for length in per})
    lines = [
        "| model | " + " | ".join(f"{length} tokens" for length in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for model in MODELS:
        if model not in acc:
            continue
        cells = []
        for length in lengths:
            c = acc[model].get(length)
            cells.append(f"{c['accuracy']:.3f} ± {c['stderr']:.3f} (n={c['n']})" if c else "-")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if rewards:
        lines += ["", "| phase | steps | first reward | last reward | mean reward |", "|---|---|---|---|---|"]
        for phase, rows in rewards.items():
            if rows:
                r = [v for _, v in rows]
                lines.append(f"| {phase} | {len(rows)} | {r[0]:.3f} | {r[-1]:.3f} | {sum(r) / len(r):.3f} |")
    return "\n".join(lines) + "\n"


def plot(
    acc: dict[str, dict[int, dict[str, float]]], rewards: dict[str, list[tuple[int, float]]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for model in MODELS:
        if model in acc and acc[model]:
            xs = sorted(acc[model])
            a.errorbar(
                xs,
                [acc[model][x]["accuracy"] for x in xs],
                yerr=[acc[model][x]["stderr"] for x in xs],
                marker="o",
                capsize=3,
                label=model,
            )
    a.set_xscale("log", base=2)
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
    acc: dict[str, dict[int, dict[str, float]]] = {}
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
        acc[m] = accuracy_by_length(out, work / "curriculum" / "eval")
    rewards = rl_rewards(work / "metrics" / "rl")
    wall = time.perf_counter() - t_start
    table = render_table(acc, rewards)
    plot(acc, rewards, work / "learning_curve.png")
    summary = {
        "profile": str(profile),
        "overrides": list(sets),
        "accuracy": {m: {str(k): v for k, v in a.items()} for m, a in acc.items()},
        "rewards": rewards,
        "timings_s": timings,
        "wall_s": wall,
        "machine": machine(),
    }
    (work / "learning_curve.json").write_text(json.dumps(summary, indent=2))
    (work / "learning_curve.md").write_text(table)
    click.echo(table)
    click.echo(
        "seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; wall {wall:.0f}"
    )
    if write_results:
        cmd = "python benchmarks/learning_curve.py " + shlex.join(sys.argv[1:])
        with open(RESULTS, "a") as f:
            f.write(
                f"\n### Learning curve run ({time.strftime('%Y-%m-%d', time.gmtime())})\n\n`{cmd}` on "
                f"{summary['machine']}; wall time {wall / 60:.1f} min "
                f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).\n\n{table}"
            )


if __name__ == "__main__":
    main()
