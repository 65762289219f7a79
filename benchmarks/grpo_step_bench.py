"""Benchmark: the GPU profile's GRPO training micro-step at 20K / 40K / 60K-token prompts, against the planner.

The shape is the profile's (train/configs/grpo-gpu-qwen2.5-7b.yaml): a Qwen2.5-7B-shaped policy with random
weights (built from the config numbers, nothing downloaded), one sequence per GPU of prompt + a 10,000-token
completion, bf16, gradient checkpointing, SDPA attention, and TRL 1.16's fused LM head (log-probs in tiles;
the (tokens x vocab) logits are never materialised). For each prompt length it measures:

- **GRPO step**: what TRL does per micro-step when a generation batch is reused (steps_per_generation >
  gradient_accumulation_steps): a no-grad forward for the old log-probs, then the DAPO loss (token-level,
  clip-higher with epsilon 0.2 / 0.28, advantages +-1) forward and backward;
- **baseline**: one forward and backward of the plain NLL of the completion through the same fused head (an
  SFT step on the same tokens), measured in the same run, so the ratio shows what GRPO adds;
- **peak memory** (``torch.cuda.max_memory_allocated``) beside the planner's estimate for the same
  single-GPU setting (bf16 weights and gradients, no optimiser states: a 7B AdamW state needs sharding).

Rollouts (vLLM) are not part of it: they run in their own engine and the planner budgets them separately.

    python benchmarks/grpo_step_bench.py                     # 20k, 40k, 60k on one CUDA GPU (80 GB or more)
    python benchmarks/grpo_step_bench.py --write-results     # also append the table to benchmarks/RESULTS.md
    python benchmarks/grpo_step_bench.py --cpu-check         # tiny-qwen2 shape, 256 + 32 tokens: checks the script on CPU
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path


def build_model(shape_name: str, device: str, dtype, attn: str):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config
    from trl.trainer.utils import add_fused_lm_head

    from train.plan import resolve_shape

    s = resolve_shape(shape_name)
    config = Qwen2Config(
        hidden_size=s.hidden_size,
        intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_hidden_layers,
        num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_key_value_heads,
        vocab_size=s.vocab_size,
        tie_word_embeddings=s.tie_word_embeddings,
        max_position_embeddings=131_072,
        rope_theta=1_000_000.0,
        attn_implementation=attn,
        use_cache=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs",))
    return model, s


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def grpo_step(model, ids, labels, completion: int, eps: float = 0.2, eps_high: float = 0.28) -> float:
    """TRL's DAPO micro-step on one sequence: old log-probs (no grad), then the clipped token-level loss."""
    import torch

    with torch.no_grad():
        old = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs[:, -completion:]
    logps = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs[:, -completion:]
    adv = torch.where(torch.arange(completion, device=ids.device) % 2 == 0, 1.0, -1.0).unsqueeze(0)
    ratio = torch.exp(logps - old)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps_high) * adv)
    loss = per_token.mean()
    loss.backward()
    return float(loss.detach())


def baseline_step(model, ids, labels) -> float:
    loss = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
    loss.backward()
    return float(loss.detach())


def bench_length(model, shape, prompt: int, args) -> dict:
    import torch

    from train.plan import GIB, PlanSettings, estimate

    total = prompt + args.completion_length
    g = torch.Generator().manual_seed(prompt)
    ids = torch.randint(0, shape.vocab_size, (1, total), generator=g).to(args.device)
    labels = ids.clone()
    labels[:, :prompt] = -100  # only the completion is scored, as in TRL
    out = {"prompt": prompt, "tokens": total}
    for name, fn in (
        ("baseline", lambda: baseline_step(model, ids, labels)),
        ("grpo", lambda: grpo_step(model, ids, labels, args.completion_length)),
    ):
        times = []
        for i in range(args.repeats + 1):  # the first run warms up kernels and the allocator
            model.zero_grad(set_to_none=False)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            _sync(args.device)
            t0 = time.perf_counter()
            fn()
            _sync(args.device)
            if i:
                times.append(time.perf_counter() - t0)
        out[f"{name}_s"] = min(times)
        out[f"{name}_peak_gib"] = (
            torch.cuda.max_memory_allocated() / GIB if args.device == "cuda" else float("nan")
        )
    est = estimate(
        shape,
        PlanSettings(
            prompt_length=prompt,
            completion_length=args.completion_length,
            per_device_train_batch_size=1,
            num_gpus=1,
            sharding="ddp",
            gradient_checkpointing=True,
            attn_implementation=args.attn,
            rollout="vllm-server",
        ),
    )
    out["plan_gib"] = (
        est.weights + est.gradients + est.activation_checkpoints + est.recompute + est.attention + est.logits
    ) / GIB
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model-shape", default="qwen2.5-7b", help="a planner preset (train/plan.py PLAN_PRESETS)"
    )
    ap.add_argument("--lengths", default="20k,40k,60k", help="prompt lengths")
    ap.add_argument("--completion-length", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per length (after one warm-up)")
    ap.add_argument("--attn", default="sdpa", help="sdpa, or flash_attention_2 (needs flash-attn)")
    ap.add_argument("--cpu-check", action="store_true", help="tiny-qwen2 shape, 256 + 32 tokens on CPU")
    ap.add_argument("--write-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()

    import torch

    from datagen.lengths import format_length, parse_lengths

    if args.cpu_check:
        args.model_shape, args.lengths, args.completion_length = "tiny-qwen2", "256", 32
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and not args.cpu_check:
        raise SystemExit(
            "no CUDA GPU: this benchmark measures GPU step time and memory; use --cpu-check to check "
            "the script on CPU"
        )
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model, shape = build_model(args.model_shape, args.device, dtype, args.attn)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    rows = [bench_length(model, shape, n, args) for n in parse_lengths(args.lengths)]
    lines = [
        f"GRPO micro-step, {args.model_shape} shape ({shape.params / 1e9:.2f}B, random {str(dtype).removeprefix('torch.')} weights), 1 sequence "
        f"of prompt + {args.completion_length:,} completion tokens, gradient checkpointing, {args.attn}, TRL "
        f"fused LM head, no optimiser states; device: {device_name}",
        "",
        "| prompt | tokens | GRPO step (s) | baseline fwd+bwd (s) | step / baseline | GRPO peak (GiB) | "
        "baseline peak (GiB) | planner (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {format_length(r['prompt'])} | {r['tokens']:,} | {r['grpo_s']:.2f} | {r['baseline_s']:.2f} | "
            f"{r['grpo_s'] / r['baseline_s']:.2f} | {r['grpo_peak_gib']:.1f} | {r['baseline_peak_gib']:.1f} | "
            f"{r['plan_gib']:.1f} |"
        )
    print("\n".join(lines))
    if args.write_results:
        path = Path(__file__).parent / "RESULTS.md"
        stamp = datetime.date.today().isoformat()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"\n## {stamp}: `python benchmarks/grpo_step_bench.py`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
