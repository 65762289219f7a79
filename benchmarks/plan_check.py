"""The memory planner against measured peaks: one GRPO micro-step of small Qwen2-shaped models, on CPU.

Each row runs longmill's GRPO trainer (TRL's GRPOTrainer underneath: its padding, masking of truncated
completions, scoring pass, micro-batch split, DAPO loss and backward) on a random model with scripted rollouts
(``train/stepcheck.py``), and measures the micro-step's peak with the PyTorch profiler's memory events (the
allocator's own running total; not the process's RSS). The row is the second micro-step of the second
optimiser step, so gradients and AdamW states exist, as they do in a long run. Beside it,
``train.plan.estimate`` for the same row (one process, ``device="cpu"``: TRL's torch fallback of the LM head),
without the GPU-only terms (runtime, vLLM, DeepSpeed buffers). Every row must land within 15%.

Rows cover 2-8 layers, 2K-16K tokens, TRL's padded forward (left-padded prompts, right-padded completions)
and longmill's padding-free one, gradient checkpointing on and off, activation offload (measured as on a GPU:
the offloaded copies are kept outside the allocator), a reference model (beta > 0), fp32 and bf16, and sequence parallelism: a row with ``sp_size`` 2 runs on two gloo
ranks under torchrun, each rank measuring its own micro-step against the planner's per-rank estimate.

    python benchmarks/plan_check.py                  # every row (about 15 minutes on 2 CPU cores)
    python benchmarks/plan_check.py --quick          # the small rows only (about 3 minutes)
    python benchmarks/plan_check.py --write-results  # also append the table to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOLERANCE = 0.15


def rows(quick: bool) -> list[tuple[str, object, object]]:
    from train.stepcheck import StepSettings, TinyShape

    def shape(layers: int, h: int, inter: int, heads: int, kv: int, vocab: int) -> TinyShape:
        return TinyShape(h, inter, layers, heads, kv, vocab)

    run = StepSettings.two_groups

    s2 = shape(2, 256, 1024, 8, 2, 1024)
    s4 = shape(4, 256, 1024, 8, 2, 1024)
    s8 = shape(8, 128, 512, 4, 2, 1024)
    small = [
        ("2 layers, 2K, padding-free", s2, run(1800, 256)),
        ("2 layers, 2K, TRL padded", s2, run(1800, 256, padding_free=False)),
        ("8 layers, 2K, padding-free", s8, run(1800, 256)),
        ("8 layers, 2K, TRL padded", s8, run(1800, 256, padding_free=False)),
        ("8 layers, 2K, no checkpointing", s8, run(1800, 256, gradient_checkpointing=False)),
        ("8 layers, 2K, offload", s8, run(1800, 256, activation_offload=True)),
        ("8 layers, 2K, beta 0.04 (reference model)", s8, run(1800, 256, beta=0.04)),
        ("2 layers, 2K, bf16, padding-free", s2, run(1800, 256, bf16=True)),
    ]
    if quick:
        return small + sp_rows()
    return (
        small
        + sp_rows()
        + [
            ("4 layers, 4K, padding-free", s4, run(3600, 512)),
            ("4 layers, 4K, offload", s4, run(3600, 512, activation_offload=True)),
            ("4 layers, 4K, no checkpointing", s4, run(3600, 512, gradient_checkpointing=False)),
            ("2 layers, 8K, TRL padded", s2, run(7400, 800, padding_free=False)),
            ("2 layers, 8K, padding-free", s2, run(7400, 800)),
            ("2 layers, 8K, I 4096, padding-free", shape(2, 256, 4096, 8, 2, 1024), run(7400, 800)),
            ("2 layers, 16K, padding-free", s2, run(15000, 1400)),
        ]
    )


def sp_rows() -> list[tuple[str, object, object]]:
    """Rows run on two ranks (torchrun, gloo) with sequence parallelism; every rank is measured."""
    from train.stepcheck import StepSettings, TinyShape

    sp = {"sp_size": 2, "ddp_backend": "gloo"}
    s2 = TinyShape(256, 1024, 2, 8, 2, 1024)
    i4 = TinyShape(256, 4096, 2, 8, 2, 1024)  # a wide MLP: the peak moves to the layers, which SP divides

    return [
        (
            "2 layers, 4K, padding-free, sp_size 2 (per rank)",
            s2,
            StepSettings.two_groups(3600, 512, extra=sp),
        ),
        (
            "2 layers, 8K, I 4096, padding-free, sp_size 2 (per rank)",
            i4,
            StepSettings.two_groups(7400, 800, extra=sp),
        ),
    ]


def _sp_worker(index: int) -> None:
    """One sequence-parallel row on this rank (run under torchrun): print its measurement as one JSON line."""
    import json

    import torch.distributed as dist

    from train.stepcheck import check_plan_row

    label, shape, settings = sp_rows()[index]
    rank = int(os.environ["RANK"])
    r = check_plan_row(shape, settings, label, workdir=Path(os.environ["PLAN_CHECK_WORK"]) / f"rank{rank}")
    head, layer = r.phase_ratios()
    print(
        "SPROW "
        + json.dumps(
            {
                "rank": rank,
                "tokens": r.tokens,
                "peak": r.measured_peak,
                "planned": r.planned,
                "ratio": r.ratio,
                "at": "LM head" if r.estimate.head_phase >= r.estimate.layer_phase else "layers",
                "head": head,
                "layer": layer,
            }
        ),
        flush=True,
    )
    if dist.is_initialized():
        dist.barrier()


def run_sp_row(index: int) -> list[dict]:
    """Launch :func:`_sp_worker` on 2 CPU ranks; every rank's measurement."""
    import json
    import socket
    import tempfile

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="plancheck-sp-") as work:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PLAN_CHECK_WORK": work,
            "ACCELERATE_USE_CPU": "true",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
             str(Path(__file__).resolve()), "--sp-worker", str(index)],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
    found = [json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("SPROW ")]
    if proc.returncode or len(found) != 2:
        raise SystemExit(f"sequence-parallel row {index} failed:\n{proc.stderr[-3000:]}")
    return sorted(found, key=lambda r: r["rank"])


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the small rows (2K tokens)")
    ap.add_argument("--only", default=None, help="run the rows whose label contains this text")
    ap.add_argument("--write-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    ap.add_argument("--sp-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    from train.stepcheck import check_plan_row

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.sp_worker is not None:
        _sp_worker(args.sp_worker)
        return
    sp_labels = [label for label, _, _ in sp_rows()]
    mib = 2**20
    lines = [
        "| row | layers | h | tokens | dtype | measured peak (MiB) | planner (MiB) | planner / measured | at | "
        "activations: head / layers (planner / measured) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    worst = 0.0
    t0 = time.perf_counter()
    for label, shape, settings in rows(args.quick):
        if args.only and args.only not in label:
            continue
        if label in sp_labels:
            for r in run_sp_row(sp_labels.index(label)):
                worst = max(worst, abs(r["ratio"] - 1))
                line = (
                    f"| {label}, rank {r['rank']} | {shape.num_hidden_layers} | {shape.hidden_size} | "
                    f"{r['tokens']:,} | {'bf16' if settings.bf16 else 'fp32'} | {r['peak'] / mib:,.1f} | "
                    f"{r['planned'] / mib:,.1f} | {r['ratio']:.3f} | {r['at']} | {r['head']:.3f} / {r['layer']:.3f} |"
                )
                lines.append(line)
                print(line, flush=True)
            continue
        r = check_plan_row(shape, settings, label)
        head, layer = r.phase_ratios()
        worst = max(worst, abs(r.ratio - 1))
        line = (
            f"| {label} | {shape.num_hidden_layers} | {shape.hidden_size} | {r.tokens:,} | "
            f"{'bf16' if settings.bf16 else 'fp32'} | {r.measured.peak / mib:,.1f} | {r.planned / mib:,.1f} | "
            f"{r.ratio:.3f} | {'LM head' if r.estimate.head_phase >= r.estimate.layer_phase else 'layers'} | "
            f"{head:.3f} / {layer:.3f} |"
        )
        lines.append(line)
        print(line, flush=True)
    verdict = f"every row within {TOLERANCE:.0%}: {'yes' if worst <= TOLERANCE else 'NO'} (worst {worst:.1%})"
    print(verdict)
    if args.write_results:
        cmd = "python benchmarks/plan_check.py" + (" --quick" if args.quick else "")
        head = (
            f"\n## Planner against measured peaks ({datetime.date.today().isoformat()}, commit {commit()})\n\n"
            f"`{cmd}` on {platform.machine()} CPU ({os.cpu_count()} cores), torch {torch.__version__}, "
            f"{time.perf_counter() - t0:.0f} s. Peak = the most bytes PyTorch's allocator held during the "
            "micro-step (profiler memory events); planner = `train.plan.estimate` for the same row without the "
            'GPU-only terms (`device="cpu"`, one process).\n\n'
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(head + "\n".join(lines) + "\n\n" + verdict + "\n")
    if worst > TOLERANCE:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
