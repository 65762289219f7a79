"""Benchmark: the GPU profile's GRPO training micro-step at 20K / 40K / 60K-token prompts, against the planner.

The micro-step is the trainer's own (``train/stepcheck.py``): longmill's GRPO trainer on TRL, with rollouts
scripted to the profile's shape, so the batch is what TRL builds: a group of completions per prompt padded into
one generation batch (completions of different lengths, right-padded), scored in a no-grad pass (old log-probs),
split into one-row micro-steps, and each micro-step runs TRL's DAPO loss (token-level, clip 0.2 / 0.28)
forward and backward through TRL's fused LM head, with gradient checkpointing, bf16 and SDPA. The model is
Qwen2.5-7B-shaped with random weights (built from the config numbers; nothing downloaded).

For each prompt length it reports the measured micro-step (the second of the run, so the gradients exist): wall
time and ``torch.cuda.max_memory_allocated``, and the planner's estimate for the same row and setting (one GPU,
bf16 weights and gradients, no optimiser states: the run uses SGD, since a 7B AdamW state needs sharding; no
runtime or vLLM terms, which ``max_memory_allocated`` does not see). ``--no-padding-free`` measures TRL's own
padded forward instead of longmill's padding-free one.

    python benchmarks/grpo_step_bench.py                     # 20k, 40k, 60k on one CUDA GPU (80 GB or more)
    python benchmarks/grpo_step_bench.py --write-results     # also append the table to benchmarks/RESULTS.md
    python benchmarks/grpo_step_bench.py --cpu-check         # a tiny shape on CPU: checks the script itself
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_length(shape, prompt: int, args) -> dict:
    import torch

    from train.plan import GIB, estimate
    from train.stepcheck import (
        StepSettings,
        build_model,
        make_trainer,
        measure_micro_steps,
        plan_settings_for,
    )

    completion = args.completion_length
    settings = StepSettings(
        prompt_lengths=(prompt,),
        # a group of two: one completion a tenth shorter (right padding); neither reaches the limit (truncated
        # completions are masked out, and the padding-free forward would skip them)
        completion_lengths=(completion, completion - completion // 10),
        max_completion_length=completion + 1,
        num_generations=2,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        steps_per_generation=2,
        max_steps=1,
        padding_free=args.padding_free,
        bf16=args.device == "cuda",
        extra={"optim": "sgd"},
    )
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build_model(shape, dtype=dtype, device=args.device)
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(model, settings, out)
        m = measure_micro_steps(trainer, [1], device=args.device)[1]
    del trainer, model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    e = estimate(shape.plan_shape(args.model_shape), plan_settings_for(m, settings))
    planned = e.weights + e.gradients + max(e.head_phase, e.layer_phase)  # SGD: no optimiser states
    pw, cw, pr, cr = m.rows[0]
    return {
        "prompt": prompt,
        "tokens": pr + cr if args.padding_free else pw + cw,
        "padded_width": pw + cw,
        "step_s": m.seconds,
        "peak_gib": m.peak / GIB,
        "start_gib": m.start / GIB,
        "plan_gib": planned / GIB,
        "plan_phase": e.peak_phase,
        "attention_path": e.attention_path,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model-shape", default="qwen2.5-7b", help="a planner preset (train/plan.py PLAN_PRESETS)"
    )
    ap.add_argument("--lengths", default="20k,40k,60k", help="prompt lengths")
    ap.add_argument("--completion-length", type=int, default=10_000)
    ap.add_argument(
        "--padding-free", action=argparse.BooleanOptionalAction, default=True, help="longmill's forward [on]"
    )
    ap.add_argument("--cpu-check", action="store_true", help="a tiny shape, 256 + 32 tokens, on CPU")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--write-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    from longmill.lengths import format_length, parse_lengths
    from train.plan import resolve_shape
    from train.stepcheck import TinyShape

    if args.cpu_check:
        args.model_shape, args.lengths, args.completion_length = "tiny-qwen2", "256", 32
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and not args.cpu_check:
        raise SystemExit(
            "no CUDA GPU: this benchmark measures GPU step time and memory; use --cpu-check to check "
            "the script on CPU"
        )
    s = resolve_shape(args.model_shape)
    shape = TinyShape(
        s.hidden_size,
        s.intermediate_size,
        s.num_hidden_layers,
        s.num_attention_heads,
        s.num_key_value_heads,
        s.vocab_size,
        s.tie_word_embeddings,
    )
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    rows = [bench_length(shape, n, args) for n in parse_lengths(args.lengths)]
    forward = "longmill's padding-free forward" if args.padding_free else "TRL's padded forward"
    lines = [
        f"GRPO micro-step through longmill's trainer on TRL, {args.model_shape} shape ({s.params / 1e9:.2f}B, random "
        f"{'bf16' if args.device == 'cuda' else 'fp32'} weights), a group of 2 completions of up to "
        f"{args.completion_length:,} tokens padded by TRL, 1 row per micro-step, gradient checkpointing, SDPA, "
        f"{forward}, SGD (no optimiser states); device: {device_name}",
        "",
        "| prompt | tokens in the row | padded width | step (s) | peak (GiB) | planner (GiB) | planner / peak | "
        "planner's peak phase |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {format_length(r['prompt'])} | {r['tokens']:,} | {r['padded_width']:,} | {r['step_s']:.2f} | "
            f"{r['peak_gib']:.2f} | {r['plan_gib']:.2f} | {r['plan_gib'] / r['peak_gib']:.3f} | {r['plan_phase']} |"
        )
    print("\n".join(lines), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name, "rows": rows}, indent=2))
    if args.write_results:
        path = ROOT / "benchmarks" / "RESULTS.md"
        stamp = datetime.date.today().isoformat()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"\n## {stamp}: `python benchmarks/grpo_step_bench.py`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
