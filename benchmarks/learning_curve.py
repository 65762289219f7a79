"""Does the recipe learn? Base vs warm-up SFT vs phased GRPO/DAPO on the same held-out questions.

Runs the pipeline's own commands with the values of a params profile (default
``profiles/cpu-learning-smollm2.yaml``): ``datagen triplets``, ``datagen longqa`` at every length (KeyChain is
left out: the benchmark measures long-context QA), ``python -m curriculum build`` (held-out split closed over
what questions ask, length bins, retrospective samples), then for each training seed (``--seeds 0,1``)
``python -m train sft`` on the training split only (``--heldout``) and ``python -m train grpo`` (one DAPO phase
per curriculum stage, rule reward), then ``python -m eval run`` with the base model (once) and each seed's SFT
and RL models on the curriculum's held-out eval split, and again on the same prompts with their gold documents
cut out (the no-evidence control: a model that still answers has memorised, not read). It writes
``WORK/learning_curve.md`` (accuracy per model per length, the mean over seeds and each seed, paired
differences, the control, reward per step per phase, the issue's done-when line), ``WORK/learning_curve.png``
and ``WORK/learning_curve.json`` (with the code commit and the exact command); ``--write-results`` also
appends the table to ``benchmarks/RESULTS.md``.

Accuracy is the eval's ``em`` (exact match of the extracted answer, what the rule reward pays). Its standard
error is clustered by source question: the eval holds each question at every length (and a paraphrase of a
held-out fact is the same question), so over all lengths the rows are not independent. Every model answers
the same prompts, so differences between models are paired: the clustered error of the per-prompt
differences. Per length, where each question appears once, both reduce to the usual sd/sqrt(n). With several
seeds, a model's figure is the mean over seeds of its per-prompt scores, and the seeds' spread is shown beside
it. Nothing is tuned on the eval questions: the curriculum holds them out before SFT and RL see any data.
``report`` re-scores a finished run without generating anything. ``run --resume`` reuses the steps an earlier
run in the same WORK made with the same commands on the same data (``WORK/steps.json``, see :class:`Steps`), so a
second seed can be added to a finished one, and a run that was stopped goes on where it stopped.

Examples:
    python benchmarks/learning_curve.py model --out models/smollm2-135m-instruct
    python benchmarks/learning_curve.py run --profile profiles/cpu-learning-smollm2.yaml --work runs/learning \
        --seeds 0,1 --write-results
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


def run_cmd(
    cmd: list[str],
    log_path: Path,
    timings: dict[str, float],
    name: str,
    output: Path | None = None,
    threads: int | None = None,
) -> None:
    """Run one pipeline command from the repository root; time it. The command line goes to ``log_path``, its
    output there too or to ``output`` (a step's own log, when steps run side by side); ``threads`` sets the
    command's ``OMP_NUM_THREADS`` (PyTorch's CPU threads)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log.info("%s: %s", name, shlex.join(cmd))
    t0 = time.perf_counter()
    with open(log_path, "ab") as f:
        f.write(f"$ {shlex.join(cmd)}\n".encode())
        f.flush()
    out_path = output or log_path
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "ab") as f:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
    if proc.returncode != 0:
        tail = out_path.read_text(errors="replace")[-3000:]
        raise click.ClickException(f"{name} failed (exit {proc.returncode}); see {out_path}:\n{tail}")


#: the columns of the held-out prompts that :func:`eval_rows` reads (``fact_keys`` where the shards have it)
PROMPT_COLUMNS = ("uid", "length_target", "source_id", "question", "fact_keys")


def prompt_columns(parts: list[Path]) -> list[str]:
    """Which of :data:`PROMPT_COLUMNS` the shards ``parts`` carry (shards written before the fact identity
    existed have no ``fact_keys``)."""
    import polars as pl

    names = set(pl.read_parquet_schema(parts[0]))
    return [c for c in PROMPT_COLUMNS if c in names or c != "fact_keys"]


def eval_rows(data_dir: Path) -> Any:
    """The held-out prompts of ``data_dir``: ``uid``, ``length_target`` and ``cluster``, the source question a
    prompt asks (:func:`longmill.manifest.question_groups`: the same source id, text or fact keys)."""
    import polars as pl

    from longmill.manifest import question_groups

    parts = sorted(data_dir.glob("*.parquet"))
    if not parts:
        raise click.ClickException(f"{data_dir} holds no held-out prompts (*.parquet)")
    df = pl.read_parquet(parts, columns=prompt_columns(parts))
    if "fact_keys" not in df.columns:  # shards written before the fact identity existed
        df = df.with_columns(pl.lit(None).alias("fact_keys"))
    groups = question_groups(df.select(["source_id", "question", "fact_keys"]).to_dicts())
    return df.select(["uid", "length_target"]).with_columns(pl.Series("cluster", groups, dtype=pl.Int64))


#: the uid suffix of a no-evidence control prompt (evaluated in the same run as the held-out prompts)
NO_EVIDENCE = "~no-evidence"


def scored_samples(eval_dir: Path, data: Any, control: bool = False) -> Any:
    """One row per scored held-out prompt: ``uid``, ``length_target``, ``cluster`` and ``em`` (0 or 1 for greedy
    n=1). ``data`` is :func:`eval_rows` of the prompts, or their folder. With ``control``, the scores of the
    same prompts without their gold documents (uids ending in :data:`NO_EVIDENCE`), under the plain uids.

    The evaluation must cover exactly those prompts: models compared on different prompts (an eval left from
    other data, or one that lost prompts) would make the table's comparisons meaningless.
    """
    import polars as pl

    rows = eval_rows(data) if isinstance(data, Path) else data
    scored = pl.read_parquet(eval_dir / "samples.parquet").select(["uid", "em"])
    is_control = pl.col("uid").str.ends_with(NO_EVIDENCE)
    scored = (
        scored.filter(is_control).with_columns(pl.col("uid").str.strip_suffix(NO_EVIDENCE))
        if control
        else scored.filter(~is_control)
    )
    missing = set(rows["uid"].to_list()) - set(scored["uid"].to_list())
    extra = set(scored["uid"].to_list()) - set(rows["uid"].to_list())
    if missing or extra:
        raise click.ClickException(
            f"{eval_dir / 'samples.parquet'} does not cover the held-out prompts"
            f"{' without their gold documents' if control else ''}: "
            f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(extra)} not in the data "
            f"(e.g. {sorted(extra)[:3]}); run the benchmark again"
        )
    return scored.join(rows, on="uid", how="inner")


def clustered_stderr(values: list[float], clusters: list[Any]) -> float:
    """The standard error of the mean of ``values``, clustered by ``clusters`` (the CR1 sandwich estimator).

    sqrt(G/(G-1) * sum_g (sum_{i in g} (x_i - mean))^2) / n over G clusters and n values. With one value per
    cluster it is the usual sd/sqrt(n) (sd with n-1); values that repeat a cluster do not shrink it the way
    independent ones would. Undefined (NaN) with fewer than two clusters: no error is better than a zero.

    >>> round(clustered_stderr([1.0, 0.0, 1.0, 0.0], ["a", "b", "c", "d"]), 6)  # sd 0.577 / 2
    0.288675
    >>> round(clustered_stderr([1.0, 1.0, 0.0, 0.0], ["a", "a", "b", "b"]), 6)  # 2 questions, not 4
    0.5
    >>> import math; math.isnan(clustered_stderr([1.0, 0.0], ["a", "a"]))
    True
    """
    n = len(values)
    totals: dict[Any, float] = {}
    mean = sum(values) / n if n else 0.0
    for v, c in zip(values, clusters, strict=True):
        totals[c] = totals.get(c, 0.0) + (v - mean)
    g = len(totals)
    if g < 2:
        return math.nan
    return math.sqrt(g / (g - 1) * sum(t * t for t in totals.values())) / n


def _by_length(df: Any) -> Any:
    """``(length, rows)`` for each ``length_target`` in increasing order, then ``("all", every row)``."""
    import polars as pl

    for length in sorted({int(x) for x in df["length_target"].to_list()}):
        yield str(length), df.filter(pl.col("length_target") == length)
    yield "all", df


def _clusters(df: Any) -> list[Any]:
    return df["cluster"].to_list() if "cluster" in df.columns else df["uid"].to_list()


def accuracy_by_length(df: Any) -> dict[str, dict[str, float]]:
    """Mean ``em`` and its standard error (clustered by source question) per ``length_target``, and over all
    lengths ("all"). ``n`` counts prompts, ``questions`` the clusters among them."""
    out: dict[str, dict[str, float]] = {}
    for key, part in _by_length(df):
        em, cl = part["em"].to_list(), _clusters(part)
        out[key] = {
            "accuracy": float(sum(em) / len(em)) if em else 0.0,
            "stderr": clustered_stderr(em, cl),
            "n": len(em),
            "questions": len(set(cl)),
        }
    return out


def paired_difference(a: Any, b: Any) -> dict[str, dict[str, float]]:
    """Accuracy of ``a`` minus that of ``b`` on the same prompts, per length and over all lengths.

    Both models answered the same held-out prompts, so the error is that of the per-prompt differences
    em_a - em_b, clustered by source question: per length (one prompt per question) that is
    sd(em_a - em_b)/sqrt(n); over all lengths a question's prompts move together, and the error says so.

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
        d = part["d"].to_list()
        out[key] = {
            "difference": float(sum(d) / len(d)) if d else 0.0,
            "stderr": clustered_stderr(d, _clusters(part)),
            "n": len(d),
        }
    return out


def mean_over_seeds(frames: list[Any]) -> Any:
    """One frame whose ``em`` is each prompt's mean over the seeds' frames (same prompts in each)."""
    import polars as pl

    if len(frames) == 1:
        return frames[0]
    stacked = pl.concat([f.select(["uid", "em"]) for f in frames])
    mean = stacked.group_by("uid").agg(pl.col("em").mean())
    return frames[0].drop("em").join(mean, on="uid", how="inner").sort("uid")


def seed_spread(per_seed: list[dict[str, dict[str, float]]], field: str) -> dict[str, float]:
    """Per length, max - min over seeds of ``field`` (0 with one seed)."""
    # in the seeds' order: a set's order would change from one process to the next (PYTHONHASHSEED)
    keys = dict.fromkeys(k for p in per_seed for k in p)
    return {
        k: max(p[k][field] for p in per_seed) - min(p[k][field] for p in per_seed)
        for k in keys
        if all(k in p for p in per_seed)
    }


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


#: the RL training signals the report averages per phase (TRL's log names, as ``train grpo`` writes them):
#: what tuning may read (never held-out scores): the reward, how many groups teach nothing (all rewards
#: equal), how often the clip acts, how long completions run and how many hit the length limit
SIGNALS = {
    "reward": "reward",
    "reward_std": "reward std",
    "frac_reward_zero_std": "groups all-equal",
    "dynamic_sampling/filtered_share": "filtered by dynamic sampling",
    "dynamic_sampling/remaining_share": "left all-equal after it",
    "clip_ratio/region_mean": "clipped tokens",
    "clip_ratio/high_mean": "clipped high",
    "entropy": "entropy",
    "completions/mean_length": "completion tokens",
    "completions/clipped_ratio": "truncated",
}


def rl_signals(metrics_dir: Path) -> dict[str, dict[str, Any]]:
    """Per phase: the number of logs and the mean over them of each :data:`SIGNALS` column that was logged
    (an empty cell is a step that did not log it, not a zero)."""
    import csv

    out: dict[str, dict[str, Any]] = {}
    for path in sorted(metrics_dir.glob("phase-*.csv")):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        means: dict[str, Any] = {"logs": sum(1 for r in rows if r.get("reward") not in (None, ""))}
        for key in SIGNALS:
            vals = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
            if vals:
                means[key] = sum(vals) / len(vals)
        out[path.stem] = means
    return out


PAIRS = (("rl", "sft"), ("rl", "base"), ("sft", "base"))
#: the issue's done-when (issue 18): RL beats base by this much at every trained length ...
DONE_VS_BASE = 0.20
#: ... and beats SFT over all lengths by more than this many clustered standard errors
DONE_VS_SFT_SE = 2.0


def _order(keys: Any) -> list[str]:
    return sorted((k for k in keys if k != "all"), key=int) + (["all"] if "all" in keys else [])


def done_when(diffs: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """The issue's test on the mean over seeds: RL >= base + 20 points at every trained length, and RL > SFT
    by more than two clustered standard errors over all lengths. A NaN error never passes.

    >>> d = {"rl-base": {"256": {"difference": 0.3}, "all": {"difference": 0.3}},
    ...      "rl-sft": {"all": {"difference": 0.10, "stderr": 0.04}}}
    >>> done_when(d)["passed"]
    True
    >>> d["rl-sft"]["all"]["stderr"] = 0.06
    >>> done_when(d)["passed"], done_when(d)["rl_vs_sft"]
    (False, False)
    """
    if "rl-base" not in diffs or "rl-sft" not in diffs:
        return {"passed": False, "why": "base, SFT and RL are not all evaluated"}
    trained = [x for x in diffs["rl-base"] if x != "all"]
    vs_base = bool(trained) and all(diffs["rl-base"][x]["difference"] >= DONE_VS_BASE for x in trained)
    pooled = diffs["rl-sft"]["all"]
    vs_sft = not math.isnan(pooled["stderr"]) and pooled["difference"] > DONE_VS_SFT_SE * pooled["stderr"]
    return {"rl_vs_base": vs_base, "rl_vs_sft": vs_sft, "passed": vs_base and vs_sft}


def _cell(c: dict[str, float], spread: float | None = None, key: str = "accuracy") -> str:
    sign = "+" if key == "difference" else ""
    text = f"{c[key]:{sign}.3f} ± {c['stderr']:.3f}"
    return text + (f" (seeds ±{spread / 2:.3f})" if spread else "")


def render_table(report: dict[str, Any]) -> str:
    """Markdown: the mean over seeds (accuracy, paired differences), each seed, the no-evidence control,
    reward per phase, and the issue's done-when line."""
    acc, diffs, seeds = report["accuracy"], report["differences"], report["seeds"]
    lengths = _order({length for per in acc.values() for length in per})
    head = " | ".join("all lengths" if x == "all" else f"{x} tokens" for x in lengths)
    rule = "|---|" + "---|" * len(lengths)

    def row(name: str, per: dict[str, Any], cell: Any) -> str:
        return f"| {name} | " + " | ".join(cell(per[x], x) if x in per else "-" for x in lengths) + " |"

    any_acc = next(iter(acc.values()), {})
    counts = ", ".join(
        f"{x}: {any_acc[x]['n']} prompts / {any_acc[x]['questions']} questions"
        for x in lengths
        if x in any_acc
    )
    several = len(seeds) > 1
    lines = [
        f"Held-out exact match{' (mean over training seeds ' + ', '.join(map(str, seeds)) + ')' if several else ''};"
        f" ± is the standard error clustered by source question{', (seeds ±h) half the range over seeds' if several else ''}."
        f" {counts}.",
        "",
        f"| model | {head} |",
        rule,
    ]
    spread = report.get("accuracy_spread", {})
    for model in MODELS:
        if model in acc:
            lines.append(row(model, acc[model], lambda c, x, m=model: _cell(c, spread.get(m, {}).get(x))))
    if diffs:
        dspread = report.get("differences_spread", {})
        lines += ["", f"| paired difference | {head} |", rule]
        for name, per in diffs.items():
            lines.append(
                row(
                    name.replace("-", " − "),
                    per,
                    lambda c, x, n=name: _cell(c, dspread.get(n, {}).get(x), key="difference"),
                )
            )
    if several:
        lines += ["", f"| each seed | {head} |", rule]
        for seed in seeds:
            for model in ("sft", "rl"):
                per = report["accuracy_by_seed"].get(model, {}).get(str(seed))
                if per:
                    lines.append(row(f"{model} (seed {seed})", per, lambda c, x: _cell(c)))
            per = report["differences_by_seed"].get("rl-sft", {}).get(str(seed))
            if per:
                lines.append(row(f"rl − sft (seed {seed})", per, lambda c, x: _cell(c, key="difference")))
    control = report.get("control", {})
    if control:
        lines += [
            "",
            "No-evidence control: the same held-out prompts with their gold documents cut out (the distractors stay).",
            "",
            f"| model, no evidence | {head} |",
            rule,
        ]
        for model in MODELS:
            if model in control:
                lines.append(row(model, control[model], lambda c, x: _cell(c)))
    rewards = report.get("rewards", {})
    if any(rewards.values()):
        lines += [
            "",
            "| seed | phase | reward logs (one per rollout batch) | first | last | mean |",
            "|---|---|---|---|---|---|",
        ]
        for seed, phases in rewards.items():
            for phase, rows in phases.items():
                if rows:
                    r = [v for _, v in rows]
                    lines.append(
                        f"| {seed} | {phase} | {len(rows)} | {r[0]:.3f} | {r[-1]:.3f} | {sum(r) / len(r):.3f} |"
                    )
    signals = report.get("signals", {})
    if any(signals.values()):
        lines += [
            "",
            "RL training signals, the mean over each phase's logs (shares are of groups, tokens or completions).",
            "",
            "| seed | phase | logs | " + " | ".join(SIGNALS.values()) + " |",
            "|---|---|---|" + "---|" * len(SIGNALS),
        ]
        for seed, phases in signals.items():
            for phase, means in phases.items():
                cells = [f"{means[k]:.3f}" if k in means else "-" for k in SIGNALS]
                lines.append(f"| {seed} | {phase} | {means['logs']} | " + " | ".join(cells) + " |")
    done = report.get("done_when")
    if done and "rl_vs_base" in done:
        pooled = diffs["rl-sft"]["all"]
        yn = {True: "yes", False: "no"}
        lines += [
            "",
            f"Done when (issue 18, on the mean over seeds): RL >= base + {DONE_VS_BASE * 100:.0f} points at every "
            f"trained length: **{yn[done['rl_vs_base']]}**; RL > SFT by more than {DONE_VS_SFT_SE:g} clustered "
            f"standard errors over all lengths ({pooled['difference']:+.3f} ± {pooled['stderr']:.3f}): "
            f"**{yn[done['rl_vs_sft']]}**. Both: **{yn[done['passed']]}**.",
        ]
    code = report.get("code")
    if code:
        lines += [
            "",
            f"Code: `{code['commit']}`{' with uncommitted changes' if code['dirty'] else ''}; "
            f"command: `{report.get('command', '?')}`.",
        ]
        for made in report.get("reused_code", []):
            lines.append(
                f"Reused from an earlier run in the same folder (the same commands on the same data): "
                f"{', '.join(made['steps'])}, made at `{made['commit']}`"
                f"{' with uncommitted changes' if made['dirty'] else ''}."
            )
    return "\n".join(lines) + "\n"


def plot(
    acc: dict[str, dict[str, dict[str, float]]],
    rewards: dict[str, dict[str, list[tuple[int, float]]]],
    path: Path,
    control: dict[str, dict[str, dict[str, float]]] | None = None,
) -> None:
    """Accuracy per model per length (mean over seeds, clustered errors; the no-evidence control dashed),
    and the reward per step of every phase, one line per seed and phase."""
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
    for model in MODELS:
        xs = [x for x in _order((control or {}).get(model, {})) if x != "all"]
        if xs:
            a.plot(
                [int(x) for x in xs],
                [control[model][x]["accuracy"] for x in xs],  # type: ignore[index]
                linestyle="--",
                marker="x",
                label=f"{model}, no evidence",
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
    for seed, phases in rewards.items():
        offset = 0
        for phase, rows in phases.items():
            if rows:
                label = phase if len(rewards) == 1 else f"seed {seed} {phase}"
                b.plot([offset + s for s, _ in rows], [r for _, r in rows], marker=".", label=label)
                offset += max(s for s, _ in rows)
    b.set_xlabel("RL step (phases in sequence)")
    b.set_ylabel("mean reward")
    b.set_title("Reward per step per phase")
    if any(rewards.values()):
        b.legend(fontsize="small")
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


def lock(folder: Path) -> None:
    """One writer per folder, as every pipeline command takes (``datagen.shards.OutputLock``): held until the
    command ends; a second ``run``, ``report`` or ``pack`` on the folder fails at once and names the holder."""
    from datagen.shards import OutputLock
    from longmill.errors import LongmillError

    try:
        click.get_current_context().with_resource(OutputLock(folder))
    except LongmillError as e:
        raise click.ClickException(str(e)) from None


def code_version() -> dict[str, Any]:
    """The commit the benchmark ran on, and whether tracked files differed from it."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def no_evidence_data(eval_dir: Path, out: Path) -> Path:
    """``out``: the held-out prompts of ``eval_dir`` as they are, plus each again with its gold documents cut
    out of the user message (by the rows' ``doc_offsets`` and ``doc_ids``; the distractors, instructions and
    question stay), re-measured with each row's tokenizer, under the uid plus :data:`NO_EVIDENCE` and the
    data source ``<generator>-no-evidence/<source>`` (so eval's own report keeps them apart). One eval run
    per model scores both: what a model answers without the evidence it did not read in the context."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datagen.schema import SAMPLE_SCHEMA, conform_samples
    from datagen.tokenizers import get_tokenizer

    rows = conform_samples(pa.concat_tables(pq.read_table(p) for p in sorted(eval_dir.glob("*.parquet"))))
    out_rows = []
    for r in rows.to_pylist():
        gold = {d["doc_id"] for d in r["gold_docs"]}
        user_i = max(i for i, m in enumerate(r["prompt"]) if m["role"] == "user")
        text, off = r["prompt"][user_i]["content"], r["doc_offsets"]
        keep = [i for i, d in enumerate(r["doc_ids"]) if d not in gold]
        pieces, new_off, pos = [text[: off[0]]], [], off[0]
        for i in keep:
            new_off.append(pos)
            pieces.append(text[off[i] : off[i + 1]])
            pos += off[i + 1] - off[i]
        pieces.append(text[off[-1] :])
        prompt = [dict(m) for m in r["prompt"]]
        prompt[user_i]["content"] = "".join(pieces)
        gen, _, source = r["data_source"].partition("/")
        r.update(
            uid=r["uid"] + NO_EVIDENCE,
            data_source=f"{gen}-no-evidence/{source}",
            prompt=prompt,
            prompt_tokens=get_tokenizer(r["tokenizer"]).count_messages(prompt),
            doc_ids=[r["doc_ids"][i] for i in keep],
            doc_offsets=new_off + [pos],
            num_docs=len(keep),
            gold_doc_depths=[],
        )
        out_rows.append(r)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pq.write_table(rows, out / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(out_rows, schema=SAMPLE_SCHEMA), out / "part-00001.parquet")
    return out


def parse_seeds(text: str | None, params: dict[str, Any]) -> list[int]:
    """``--seeds 0,1`` as a list; without it, the profile's SFT seed alone."""
    if not text:
        return [int(params.get("sft", {}).get("seed", 0))]
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"--seeds {text!r}: expected distinct integers, e.g. 0,1")
    return seeds


def model_dirs(work: Path, summary: dict[str, Any]) -> dict[str, dict[str, Path]]:
    """Where each model's run lives: ``{model: {seed: folder}}`` (base once, under seed "-")."""
    seeds = summary.get("seeds")
    out: dict[str, dict[str, Path]] = {"base": {"-": work}}
    for m in ("sft", "rl"):
        if seeds is None:  # a run written before --seeds: one seed, at the top of WORK
            out[m] = {str(summary.get("seed", 0)): work}
        else:
            out[m] = {str(s): work / f"seed-{s}" for s in seeds}
    return out


#: the run's record of what each step was made from: WORK/steps.json (see :class:`Steps`)
STEPS_FILE = "steps.json"


def tree_digest(paths: list[Path]) -> str:
    """A hash of the Parquet files under ``paths`` (names relative to each path, and bytes): equal digests mean
    the same data (the pipeline writes byte-identical shards for the same seed and inputs)."""
    import hashlib

    from longmill.io import file_digest

    h = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
        for p in files:
            h.update(str(p.relative_to(root)).encode() + b"\0")
            file_digest(p, into=h)
    return h.hexdigest()


class Steps:
    """The steps of one run and, with ``resume``, which of them an earlier run in the same WORK already made.

    Each step is a pipeline command with the steps it reads from. Its identity hashes its command (with the
    repository, WORK and the interpreter written as placeholders, so a run copied to another checkout keeps
    it) and the identities of those steps: a step is "made" when WORK/steps.json holds its identity, i.e.
    the same command on inputs made the same way. Data steps are cheap and deterministic: when their folder is
    gone they are made again, and the bytes must match the digest recorded (otherwise what was built on them
    does not belong to this data: the run stops). Training steps run only when a step that is not made yet
    needs their model: a seed whose evaluations are made needs no model folder. Without ``resume`` every step
    runs and the record starts afresh.
    """

    def __init__(
        self, work: Path, log_path: Path, timings: dict[str, float], resume: bool, code: dict[str, Any]
    ) -> None:
        self.work, self.log_path, self.timings, self.resume, self.code = work, log_path, timings, resume, code
        self.path = work / STEPS_FILE
        self.record: dict[str, Any] = {}
        if resume and self.path.exists():
            self.record = json.loads(self.path.read_text())
            earlier = work / "learning_curve.json"
            made_by = json.loads(earlier.read_text()).get("code") if earlier.exists() else None
            for entry in self.record.values():  # records written before each step kept its commit
                entry.setdefault("code", made_by)
        self.steps: dict[str, dict[str, Any]] = {}
        self.reused: list[str] = []
        self.always: set[str] = set()

    def _portable(self, cmd: list[str]) -> list[str]:
        # the interpreter first: a virtual environment inside the checkout (the README's set-up) would otherwise
        # read as {ROOT}/.venv/bin/python, and a run copied to a checkout whose interpreter lives elsewhere
        # would find none of its steps made
        subs = [(sys.executable, "{PYTHON}"), (str(self.work), "{WORK}"), (str(ROOT), "{ROOT}")]
        out = []
        for a in cmd:
            for old, new in subs:
                a = a.replace(old, new)
            out.append(a)
        return out

    def add(
        self,
        key: str,
        name: str,
        cmd: list[str],
        outputs: list[Path],
        deps: tuple[str, ...] = (),
        kind: str = "data",
        action: Any = None,
        always: bool = False,
    ) -> None:
        """Declare step ``key`` (``kind``: data, train or eval; ``action`` runs it instead of ``cmd``;
        ``always``: its outputs are needed even when every evaluation is made, e.g. by the report)."""
        import hashlib

        ident = {"cmd": self._portable(cmd), "deps": [self.steps[d]["identity"] for d in deps]}
        identity = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
        self.steps[key] = dict(
            name=name, cmd=cmd, outputs=outputs, deps=deps, kind=kind, action=action, identity=identity
        )
        if always:
            self.always.add(key)

    def reused_code(self) -> list[dict[str, Any]]:
        """The commits that made the reused steps: ``[{commit, dirty, steps}]``."""
        out: dict[str, dict[str, Any]] = {}
        for key in self.reused:
            code = self.record[key].get("code") or {"commit": "unknown", "dirty": False}
            ident = f"{code['commit']}{'+' if code['dirty'] else ''}"
            out.setdefault(ident, {**code, "steps": []})["steps"].append(key)
        return list(out.values())

    def made(self, key: str) -> bool:
        return self.record.get(key, {}).get("identity") == self.steps[key]["identity"]

    def _present(self, key: str) -> bool:
        return all(p.exists() for p in self.steps[key]["outputs"])

    def execute(self, jobs: int = 1) -> None:
        """Run the steps that are needed, in the order they were declared; with ``jobs`` > 1, up to that many
        at once as soon as the steps they read from are done (e.g. one seed's SFT beside another's, or beside
        the base evaluation), each with an equal share of the CPU threads and its output in WORK/logs/."""
        needed: set[str] = set()
        for key in reversed(list(self.steps)):
            s = self.steps[key]
            if s["kind"] == "eval" or key in needed or key in self.always:
                if not (self.made(key) and self._present(key)):
                    needed.add(key)
                    needed.update(s["deps"])
                elif s["kind"] != "eval":
                    needed.add(key)  # made and present: its outputs are read as they are
        todo: list[str] = []
        for key, s in self.steps.items():
            if self.made(key) and (key not in needed or self._present(key)):
                self.reused.append(key)  # its seconds count as long as it took when it was made
                self.timings[s["name"]] = self.timings.get(s["name"], 0.0) + self.record[key]["seconds"]
            elif key in needed:
                todo.append(key)
        if jobs <= 1:
            for key in todo:
                self._finish(key, self._run(key, None, None))
            return
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        threads = max(1, (os.cpu_count() or 1) // jobs)
        running: dict[Any, str] = {}
        failed: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            while todo or running:
                ready = [
                    k
                    for k in todo
                    if not any(d in todo or d in running.values() for d in self.steps[k]["deps"])
                ]
                while ready and len(running) < jobs and not failed:
                    key = ready.pop(0)
                    todo.remove(key)
                    out = self.work / "logs" / (key.replace("/", "_") + ".log")
                    running[pool.submit(self._run, key, out, threads)] = key
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = running.pop(fut)
                    try:
                        self._finish(key, fut.result())
                    except BaseException as e:  # the others finish (and are recorded) before it is raised
                        failed.append(e)
        if failed:
            raise failed[0]

    def _run(self, key: str, output: Path | None, threads: int | None) -> tuple[float, float]:
        """Run step ``key``; when it started (epoch seconds) and how long it took."""
        s = self.steps[key]
        started, t0 = time.time(), time.perf_counter()
        if s["action"] is not None:
            log.info("%s: %s", s["name"], shlex.join(s["cmd"]))
            s["action"]()
        else:
            run_cmd(s["cmd"], self.log_path, {}, s["name"], output, threads)
        return started, time.perf_counter() - t0

    def _finish(self, key: str, timing: tuple[float, float]) -> None:
        """Record step ``key`` as made (checking a data step's digest against the resumed record)."""
        from longmill.io import atomic_write_json

        s, (started, seconds) = self.steps[key], timing
        self.timings[s["name"]] = self.timings.get(s["name"], 0.0) + seconds
        digest = tree_digest(s["outputs"]) if s["kind"] == "data" else None
        before = self.record.get(key, {})
        if self.made(key) and before.get("digest") not in (None, digest):
            raise click.ClickException(
                f"{key}: made again, its data differs from the data the resumed run in {self.work} was built "
                f"on (digest {digest[:12]} != {before['digest'][:12]}); what was trained and evaluated "
                "on the old data cannot be reused: run without --resume, or in a new --work folder"
            )
        self.record[key] = {
            "identity": s["identity"],
            "command": self._portable(s["cmd"]),
            "seconds": round(seconds, 1),
            "started": round(started, 1),
            "digest": digest,
            "code": self.code,
        }
        atomic_write_json(self.path, self.record)


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
    "--seeds",
    default=None,
    help="Training seeds, e.g. 0,1: SFT and RL are trained and evaluated once per seed (sft.seed and rl.seed), "
    "on the same data, split and base evaluation. Default: the profile's sft.seed.",
)
@click.option(
    "--control/--no-control",
    default=True,
    show_default=True,
    help="Also evaluate every model on the held-out prompts with their gold documents cut out.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Reuse what an earlier run in WORK made with the same commands on the same data (WORK/steps.json): "
    "e.g. add --seeds 0,1 to a --seeds 0 run, or go on after an interruption. Training runs again only "
    "where an evaluation still needs its model.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Steps run at once where they do not read each other's outputs (e.g. two seeds' training, or a seed's "
    "training beside the base evaluation), each with OMP_NUM_THREADS = CPU cores / JOBS and its output in "
    "WORK/logs/. On a 2-core machine --jobs 2 runs two one-thread processes instead of one two-thread one.",
)
@click.option(
    "--write-results/--no-write-results", default=False, help="Append the figures to benchmarks/RESULTS.md."
)
def run(
    profile: Path,
    work: Path,
    sets: tuple[str, ...],
    model: str | None,
    models: str,
    seeds: str | None,
    control: bool,
    resume: bool,
    jobs: int,
    write_results: bool,
) -> None:
    """Run the profile end to end and evaluate base / SFT / RL on the same held-out questions.

    \b
    Examples:
      python benchmarks/learning_curve.py run --seeds 0,1 --write-results
      python benchmarks/learning_curve.py run --work runs/tiny --set sft.max_steps=2 --set rl.max_steps=1
      # one seed now, the second later (its data, split and base evaluation reused):
      python benchmarks/learning_curve.py run --seeds 0
      python benchmarks/learning_curve.py run --seeds 0,1 --resume --write-results
      # two seeds side by side on a 2-core machine, one thread each:
      python benchmarks/learning_curve.py run --seeds 0,1 --jobs 2
    """
    t_start = time.perf_counter()
    work = work.resolve()
    lock(work)
    command = "python benchmarks/learning_curve.py " + shlex.join(sys.argv[1:])
    code = code_version()
    params = apply_overrides(yaml.safe_load(profile.read_text()), sets)
    seed_list = parse_seeds(seeds, params)
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
    steps = Steps(work, logf, timings, resume, code)

    names = list(params["sources"])
    for name, src in params["sources"].items():
        out = work / "triplets" / name
        steps.add(
            f"triplets/{name}", "triplets", [*datagen, "triplets", *flags(src), "--out", str(out)], [out]
        )
    longqa = {**params["longqa"], "tokenizer": tokenizer}
    for name in params["source_names"]:
        for length in params["lengths"]:
            out = work / "synth" / f"longqa-{name}-{length}"
            cmd = [*datagen, "longqa", "--source", "triplets", "--input", str(work / "triplets" / name)]
            cmd += ["--length", str(length), *flags(longqa), "--out", str(out), "--overwrite"]
            steps.add(f"longqa/{name}-{length}", "longqa", cmd, [out], (f"triplets/{name}",))
    eval_data = work / "curriculum" / "eval"
    cmd = [py, "-m", "curriculum", "build", "--input", str(work / "synth"), "--out", str(work / "curriculum")]
    cmd += [*flags(params["curriculum"]), "--heldout-out", str(work / "heldout.json")]
    synth = tuple(k for k in steps.steps if k.startswith("longqa/"))
    steps.add(
        "curriculum", "curriculum", cmd, [work / "curriculum", work / "heldout.json"], synth, always=True
    )
    data_step = "curriculum"
    if control:  # the held-out prompts, and each again without its gold documents, in one eval per model
        src, eval_data = eval_data, work / "eval-data"
        steps.add(
            "eval-data",
            "eval-data",
            ["no_evidence_data", str(src), str(eval_data)],
            [eval_data],
            ("curriculum",),
            action=lambda: no_evidence_data(src, eval_data),
        )
        data_step = "eval-data"
    wanted = [m for m in models.split(",") if m]
    summary = {"command": command, "code": code, "seeds": seed_list, "control": control}
    dirs = model_dirs(work, summary)

    def evaluate(key: str, policy: Path, out: Path, name: str, dep: str | None) -> None:
        cmd = [py, "-m", "eval", "run", "--model", str(policy), "--data", str(eval_data)]
        cmd += ["--out", str(out / f"eval-{name}"), "--regenerate", *flags(params["eval"])]
        deps = (data_step,) + ((dep,) if dep else ())
        steps.add(key, f"eval-{name}", cmd, [out / f"eval-{name}" / "samples.parquet"], deps, kind="eval")

    if "base" in wanted:
        evaluate("eval/base", model_path, work, "base", None)
    for seed in seed_list:
        sd = work / f"seed-{seed}"
        cmd = [py, "-m", "train", "sft", "--data", str(work / "triplets"), "--model", str(model_path)]
        cmd += ["--out", str(sd / "sft"), *flags({**params["sft"], "seed": seed})]
        cmd += ["--metrics-dir", str(sd / "metrics" / "sft"), "--heldout", str(work / "heldout.json")]
        triplets = tuple(f"triplets/{n}" for n in names)
        steps.add(
            f"seed-{seed}/sft", "sft", cmd, [sd / "sft" / "final"], (*triplets, "curriculum"), kind="train"
        )
        cmd = [py, "-m", "train", "grpo", "--curriculum", str(work / "curriculum")]
        cmd += [
            "--model",
            str(sd / "sft" / "final"),
            "--out",
            str(sd / "rl"),
            *flags({**params["rl"], "seed": seed}),
        ]
        cmd += ["--metrics-dir", str(sd / "metrics" / "rl")]
        steps.add(
            f"seed-{seed}/rl",
            "rl",
            cmd,
            [sd / "rl" / "final"],
            ("curriculum", f"seed-{seed}/sft"),
            kind="train",
        )
        for m in ("sft", "rl"):
            if m in wanted:
                evaluate(f"seed-{seed}/eval-{m}", sd / m / "final", dirs[m][str(seed)], m, f"seed-{seed}/{m}")
    steps.execute(jobs)
    summary.update(
        profile=str(profile),
        overrides=list(sets),
        models=wanted,
        timings_s=timings,
        reused=steps.reused,
        reused_code=steps.reused_code(),
        wall_s=time.perf_counter() - t_start,
        machine=machine(),
    )
    report_work(work, summary, write_results)


#: what ``pack`` keeps of the held-out prompts: the columns :func:`eval_rows` reads, without the contexts
PACKED_PROMPTS = "heldout-prompts"


def held_out_prompts(work: Path) -> Path:
    """The folder of WORK's held-out prompts: the curriculum's eval split, or in a packed run (no data) the
    columns ``report`` needs of it, which ``pack`` wrote."""
    data = work / "curriculum" / "eval"
    return (
        data if any(data.glob("*.parquet")) or not (work / PACKED_PROMPTS).is_dir() else work / PACKED_PROMPTS
    )


def _load(work: Path, summary: dict[str, Any], control: bool = False) -> dict[str, dict[str, Any]]:
    """Every evaluated model's scored held-out prompts (or, with ``control``, the same prompts without their
    gold documents): ``{model: {seed: frame}}``."""
    data = eval_rows(held_out_prompts(work))
    out: dict[str, dict[str, Any]] = {}
    for m, per_seed in model_dirs(work, summary).items():
        if m not in summary["models"]:
            continue
        for seed, d in per_seed.items():
            if (d / f"eval-{m}" / "samples.parquet").exists():
                out.setdefault(m, {})[seed] = scored_samples(d / f"eval-{m}", data, control)
    return out


def score(work: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Accuracy and paired differences: the mean over seeds (with the seeds' spread) and each seed; the
    no-evidence control; rewards; the done-when test."""
    samples = _load(work, summary)
    mean = {m: mean_over_seeds(list(per.values())) for m, per in samples.items()}
    by_seed = {m: {s: accuracy_by_length(df) for s, df in per.items()} for m, per in samples.items()}
    diffs = {f"{x}-{y}": paired_difference(mean[x], mean[y]) for x, y in PAIRS if x in mean and y in mean}
    diffs_by_seed: dict[str, dict[str, Any]] = {}
    for x, y in PAIRS:
        if x in samples and y in samples:
            for s, df in samples[x].items():
                other = samples[y].get(s) if y != "base" else next(iter(samples[y].values()))
                if other is not None:
                    diffs_by_seed.setdefault(f"{x}-{y}", {})[s] = paired_difference(df, other)
    control = _load(work, summary, control=True) if summary.get("control") else {}
    rl_logs = {s: d / "metrics" / "rl" for s, d in model_dirs(work, summary).get("rl", {}).items()}
    rewards = {s: rl_rewards(d) for s, d in rl_logs.items()}
    signals = {s: rl_signals(d) for s, d in rl_logs.items()}
    return {
        "seeds": summary.get("seeds") or [summary.get("seed", 0)],
        "command": summary.get("command"),
        "code": summary.get("code"),
        "reused_code": summary.get("reused_code", []),
        "accuracy": {m: accuracy_by_length(df) for m, df in mean.items()},
        "accuracy_spread": {m: seed_spread(list(per.values()), "accuracy") for m, per in by_seed.items()},
        "accuracy_by_seed": by_seed,
        "differences": diffs,
        "differences_spread": {
            k: seed_spread(list(per.values()), "difference") for k, per in diffs_by_seed.items()
        },
        "differences_by_seed": diffs_by_seed,
        "control": {m: accuracy_by_length(mean_over_seeds(list(per.values()))) for m, per in control.items()},
        "rewards": rewards,
        "signals": signals,
        "done_when": done_when(diffs),
    }


def report_work(work: Path, summary: dict[str, Any], write_results: bool) -> None:
    """Score the evaluated models of ``work`` against each other; write the table, plot and JSON."""
    report = score(work, summary)
    table = render_table(report)
    plot(report["accuracy"], report["rewards"], work / "learning_curve.png", report["control"])
    (work / "learning_curve.json").write_text(json.dumps({**summary, **report}, indent=2))
    (work / "learning_curve.md").write_text(table)
    timings, wall = summary["timings_s"], summary["wall_s"]
    click.echo(table)
    click.echo(
        "seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; wall {wall:.0f}"
    )
    reuse_note = (
        " for this invocation; seconds per stage count the reused steps as long as they took when made"
        if summary.get("reused")
        else ""
    )
    if write_results:
        with open(RESULTS, "a") as f:
            f.write(
                f"\n### Learning curve run ({time.strftime('%Y-%m-%d', time.gmtime())})\n\n`{summary['command']}` on "
                f"{summary['machine']}; wall time {wall / 60:.1f} min{reuse_note} "
                f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).\n\n{table}"
            )


#: what ``pack`` copies of a run (it writes :data:`PACKED_PROMPTS` too): enough for ``report``, and for
#: ``run --resume`` to reuse every evaluation
PACKED = (
    STEPS_FILE,
    "learning_curve.json",
    "learning_curve.md",
    "learning_curve.png",
    "heldout.json",
    "eval-*/samples.parquet",
    "eval-*/metrics.json",
    "seed-*/eval-*/samples.parquet",
    "seed-*/eval-*/metrics.json",
    "seed-*/metrics/*/*.csv",
)


@main.command("pack")
@click.option("--work", type=click.Path(exists=True, path_type=Path), default=ROOT / "runs" / "learning")
@click.option("--to", "dest", type=click.Path(path_type=Path), required=True, help="A new folder.")
def pack_cmd(work: Path, dest: Path) -> None:
    """Copy the small part of a finished run that its results rest on into TO (no data, no models): the step
    record, every evaluation's scored samples and metrics, the training metrics, the report, and the held-out
    prompts' ids, lengths and questions without their contexts (``report --work TO`` re-scores from them).
    Commit TO, and a later session (on any machine) can add a seed to it:

    \b
      cp -r TO runs/learning
      python benchmarks/learning_curve.py run --work runs/learning --seeds 0,1 --resume --write-results

    which makes the data again (it must come out byte-identical to the recorded digests, or the run stops),
    reuses every evaluation made with the same command, and trains only the new seed.
    """
    lock(work)  # no run writes into what is being packed
    lock(dest)
    if not (work / "learning_curve.json").exists():
        raise click.ClickException(f"{work / 'learning_curve.json'} is missing: pack a run that finished")
    if dest.exists():
        raise click.ClickException(f"{dest} exists: pack into a new folder")
    prompts = sorted(held_out_prompts(work).glob("*.parquet"))
    if not prompts:
        raise click.ClickException(
            f"{work} holds no held-out prompts (curriculum/eval/*.parquet): nothing to pack"
        )
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # what the report clusters by, without the contexts (a few KiB where the prompts take MiB)
    import polars as pl

    (tmp / PACKED_PROMPTS).mkdir(parents=True)
    frame = pl.read_parquet(prompts, columns=prompt_columns(prompts))
    frame.write_parquet(tmp / PACKED_PROMPTS / "prompts.parquet")
    n = 1
    for pattern in PACKED:
        for src in sorted(work.glob(pattern)):
            target = tmp / src.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            n += 1
    tmp.replace(dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    click.echo(f"packed {n} files ({size / 1024:.0f} KiB) from {work} into {dest}")


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
    lock(work)
    path = work / "learning_curve.json"
    if not path.exists():
        raise click.ClickException(f"{path} is missing: `run` writes it when it finishes")
    summary = json.loads(path.read_text())
    summary.setdefault("models", list(MODELS))
    summary.setdefault("command", "python benchmarks/learning_curve.py run (command not recorded)")
    report_work(work.resolve(), summary, write_results)


if __name__ == "__main__":
    main()
