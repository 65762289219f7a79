"""Reports: metrics.json (overall + group-bys), the per-sample table, plots and a Markdown summary.

Per-length and per-depth results come from group-bys over the per-sample table (polars), never from
metric names that encode lengths.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from eval.metrics import JUDGE_METRICS, METRICS
from eval.scoring import Scored
from longmill.io import atomic_write_bytes, atomic_write_json
from longmill.secrets import redact

log = logging.getLogger(__name__)

GROUP_KEYS = ("data_source", "task", "length_bin", "depth_bin")


def primary_metric(scored: Scored) -> str:
    """What the plots show: max(EM, judge) with a judge (QwenLong-L1's number), else EM."""
    return "max_em_judge" if scored.judged else "em"


def _table(scored: Scored) -> pl.DataFrame:
    schema_overrides = {name: pl.Float64 for name in scored.metric_names}
    return pl.DataFrame(scored.rows, schema_overrides=schema_overrides, infer_schema_length=None)


def _agg(df: pl.DataFrame, names: list[str], by: list[str] | None) -> list[dict[str, Any]]:
    # n is the number of samples every mean is taken over (no metric leaves a sample out); the judge's
    # failed calls are summed so that each group shows how much of it rests on rule scores.
    exprs = (
        [pl.len().alias("n")]
        + [pl.col(m).mean().alias(m) for m in names]
        + ([pl.col("judge_failed").sum().alias("judge_failed")] if "judge_failed" in df.columns else [])
    )
    out = df.group_by(by, maintain_order=True).agg(exprs) if by else df.select(exprs)
    if by and "length_tokens" in df.columns and "length_bin" in by:
        order = df.group_by("length_bin").agg(pl.col("length_tokens").min().alias("_len"))
        out = (
            out.join(order, on="length_bin", how="left")
            .sort(["_len", *[b for b in by if b != "length_bin"]], nulls_last=True)
            .drop("_len")
        )
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in out.to_dicts()]


def build_metrics(
    scored: Scored, config: dict[str, Any] | None = None, df: pl.DataFrame | None = None
) -> dict[str, Any]:
    """The content of metrics.json (``df``: the per-sample table, when the caller already built it)."""
    names = scored.metric_names
    df = _table(scored) if df is None else df
    overall = _agg(df, names, None)[0] if len(df) else {"n": 0}
    meta = {
        name: {
            "higher_is_better": METRICS.get(name).higher_is_better,
            "aggregation": METRICS.get(name).aggregation,
        }
        for name in METRICS.names()
    }
    meta.update(
        {
            name: {"higher_is_better": True, "aggregation": "mean over all samples", "doc": doc}
            for name, doc in JUDGE_METRICS.items()
            if scored.judged
        }
    )
    meta.update(
        {
            f"pass@{k}": {
                "higher_is_better": True,
                "aggregation": "mean of unbiased per-sample estimates",
                "correct_if": scored.counts.get("pass_metric"),
            }
            for k in scored.ks
        }
    )
    return {
        "overall": overall,
        "primary_metric": primary_metric(scored),
        "counts": scored.counts,
        "metrics": meta,
        "groups": _agg(df, names, list(GROUP_KEYS)) if len(df) else [],
        "by_length": _agg(df, names, ["length_bin"]) if len(df) else [],
        "by_source": _agg(df, names, ["data_source"]) if len(df) else [],
        "by_task": _agg(df, names, ["task"]) if len(df) else [],
        "by_task_length": _agg(df, names, ["task", "length_bin"]) if len(df) else [],
        "by_length_depth": _agg(df, names, ["length_bin", "depth_bin"]) if len(df) else [],
        "length_tokens": (
            df.group_by("length_bin").agg(pl.col("length_tokens").min()).sort("length_tokens").to_dicts()
            if len(df)
            else []
        ),
        "config": config or {},
    }


def write_report(scored: Scored, out: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write metrics.json, samples.parquet, plots/ and report.md into ``out``; returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = _table(scored)
    metrics = redact(build_metrics(scored, config, df))  # report.md is rendered from it too
    atomic_write_json(out / "metrics.json", metrics)
    tmp = out / ".samples.parquet.tmp"
    df.write_parquet(tmp)
    tmp.replace(out / "samples.parquet")
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    _write_plot_data(metrics, plots)
    if len(df):
        _plot_accuracy_vs_length(metrics, plots / "accuracy_vs_length.png")
        _plot_heatmap(metrics, plots / "length_depth_heatmap.png")
    atomic_write_bytes(out / "report.md", render_markdown(metrics).encode())
    return metrics


def write_summary(metrics: dict[str, Any], out: str | Path) -> None:
    """Rewrite metrics.json and report.md from ``metrics`` (after problems were added to it)."""
    out = Path(out)
    metrics = redact(metrics)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_bytes(out / "report.md", render_markdown(metrics).encode())


def _write_plot_data(metrics: dict[str, Any], plots: Path) -> None:
    """CSV series for `dvc plots`: accuracy (the primary metric) against length, per source."""
    m = metrics["primary_metric"]
    tokens = {r["length_bin"]: r.get("length_tokens") for r in metrics.get("length_tokens", [])}
    rows = [
        {
            "data_source": g["data_source"],
            "length_bin": g["length_bin"],
            "length_tokens": tokens.get(g["length_bin"]),
            "accuracy": g.get(m),
            "metric": m,
            "n": g["n"],
        }
        for g in _agg_source_length(metrics)
    ]
    schema = {
        "data_source": pl.Utf8,
        "length_bin": pl.Utf8,
        "length_tokens": pl.Int64,
        "accuracy": pl.Float64,
        "metric": pl.Utf8,
        "n": pl.Int64,
    }
    df = pl.DataFrame(rows, schema=schema).sort(["length_tokens", "data_source"], nulls_last=True)
    atomic_write_bytes(plots / "accuracy_by_length.csv", df.write_csv().encode())


def _agg_source_length(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Source x length means, weighted over depth bins, from the finest groups."""
    acc: dict[tuple[str, str], dict[str, float]] = {}
    m = metrics["primary_metric"]
    for g in metrics["groups"]:
        key = (g["data_source"], g["length_bin"])
        a = acc.setdefault(key, {"n": 0, "sum": 0.0, "known": 0})
        a["n"] += g["n"]
        if g.get(m) is not None:
            a["sum"] += g[m] * g["n"]
            a["known"] += g["n"]
    return [
        {"data_source": s, "length_bin": lb, "n": a["n"], m: (a["sum"] / a["known"]) if a["known"] else None}
        for (s, lb), a in acc.items()
    ]


def _plot_accuracy_vs_length(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = metrics["primary_metric"]
    series: dict[str, list[tuple[str, float]]] = {}
    for g in _agg_source_length(metrics):
        if g.get(m) is not None:
            series.setdefault(g["data_source"], []).append((g["length_bin"], g[m]))
    order = [r["length_bin"] for r in metrics["by_length"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for source, pts in sorted(series.items()):
        pts.sort(key=lambda p: order.index(p[0]))
        ax.plot([order.index(p[0]) for p in pts], [p[1] for p in pts], marker="o", label=source)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(m)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{m} against context length")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_heatmap(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = metrics["primary_metric"]
    cells = metrics["by_length_depth"]
    lengths = [r["length_bin"] for r in metrics["by_length"]]
    depths = sorted({c["depth_bin"] for c in cells})
    grid = np.full((len(lengths), len(depths)), np.nan)
    counts = np.zeros_like(grid, dtype=int)
    for c in cells:
        i, j = lengths.index(c["length_bin"]), depths.index(c["depth_bin"])
        counts[i, j] = c["n"]
        if c.get(m) is not None:
            grid[i, j] = c[m]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(depths), 1.4 + 0.6 * len(lengths)), dpi=100)
    # cells with no samples, or only unknown judge verdicts, are grey
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(depths)), depths)
    ax.set_yticks(range(len(lengths)), lengths)
    ax.set_xlabel("gold document depth")
    ax.set_ylabel("context length")
    for i in range(len(lengths)):
        for j in range(len(depths)):
            label = "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}"
            ax.text(
                j,
                i,
                f"{label}\nn={counts[i, j]}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if np.isnan(grid[i, j]) or grid[i, j] >= 0.6 else "white",
            )
    fig.colorbar(im, ax=ax, label=m)
    ax.set_title(f"{m}: length x depth")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def render_markdown(metrics: dict[str, Any]) -> str:
    """A short report: overall numbers, counts, and the per-length table."""
    m = metrics["primary_metric"]
    o = metrics["overall"]
    c = metrics["counts"]
    show = [k for k in ("em", "sub_em", "f1", "judge", "max_em_judge", "max_em_judge_bound") if k in o] + [
        k for k in o if k.startswith("pass@")
    ]
    lines = ["# Evaluation report", ""]
    if metrics.get("problems"):
        lines += ["## Problems", ""] + [f"- **{p}**" for p in metrics["problems"]] + [""]
    lines += [
        f"Primary metric: **{m}** = {_fmt(o.get(m))} over {o.get('n', 0)} samples{_coverage(c)}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(o.get(k))} |" for k in show]
    lines += ["", "Counts: " + ", ".join(f"{k} {v}" for k, v in c.items() if isinstance(v, int | str)), ""]
    if c.get("judge_failed"):
        share = c["judge_failed"] / c["judge_calls"] if c.get("judge_calls") else 0.0
        lines += [
            f"**{c['judge_failed']} of {c.get('judge_calls', '?')} judge call(s) failed** ({share:.1%}); "
            "those completions keep their rule score (EM) in every mean. Had every failed call been a YES, "
            f"max_em_judge would be at most {_fmt(o.get('max_em_judge_bound'))} "
            f"(it is {_fmt(o.get('max_em_judge'))}).",
            "",
        ]
    lines += ["## By length", "", "| length | n | " + " | ".join(show) + " |", "|---" * (len(show) + 2) + "|"]
    for r in metrics["by_length"]:
        lines.append(f"| {r['length_bin']} | {r['n']} | " + " | ".join(_fmt(r.get(k)) for k in show) + " |")
    lines += [
        "",
        "## By source",
        "",
        "| source | n | " + " | ".join(show) + " |",
        "|---" * (len(show) + 2) + "|",
    ]
    for r in metrics["by_source"]:
        lines.append(f"| {r['data_source']} | {r['n']} | " + " | ".join(_fmt(r.get(k)) for k in show) + " |")
    lines += ["", "## By task", "", "| task | n | " + " | ".join(show) + " |", "|---" * (len(show) + 2) + "|"]
    for r in metrics.get("by_task", []):
        lines.append(f"| {r['task']} | {r['n']} | " + " | ".join(_fmt(r.get(k)) for k in show) + " |")
    lines += ["", "Plots: `plots/accuracy_vs_length.png`, `plots/length_depth_heatmap.png`.", ""]
    return "\n".join(lines)


def _coverage(counts: dict[str, Any]) -> str:
    """`` of N items (coverage x%: partial)`` when some items were not scored, else nothing."""
    samples, missing = counts.get("samples"), counts.get("missing_predictions", 0)
    if not samples or not missing:
        return ""
    return (
        f" of {samples} items (coverage {counts.get('coverage', 0):.1%}: {missing} have no prediction; "
        "a partial score)"
    )


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
