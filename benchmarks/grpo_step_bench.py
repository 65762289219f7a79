"""Benchmark: GRPO step time and peak GPU memory at long prompt lengths.

A randomly initialised Qwen2.5-0.5B-shaped policy (preset ``qwen2.5-0.5b-random``), HF rollouts,
gradient checkpointing, KeyChain prompts at each length from the synthetic source. For each length it
prints the mean GRPO step time (generation + scoring + loss + backward, TRL's ``step_time``), the peak
GPU memory, and beside them a baseline measured in the same run on the same sequences: one forward and
backward pass of the policy, so the ratio shows what generation and GRPO bookkeeping add.

    python benchmarks/grpo_step_bench.py                          # 20k, 40k, 60k on a GPU
    python benchmarks/grpo_step_bench.py --write-results          # also append to benchmarks/RESULTS.md
    python benchmarks/grpo_step_bench.py --cpu-check              # tiny model, 1k tokens: checks the script on CPU
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path


def make_prompts(length: int, n: int):
    from collections import Counter

    from datagen.corpus import Corpus
    from datagen.generators import GENERATORS
    from datagen.sources import get_source

    corpus = Corpus.from_source(get_source("synthetic", options={"num_triplets": 500}))
    gen = GENERATORS.get("keychain")(GENERATORS.get("keychain").config_cls(length=length, seed=0), corpus)
    return [gen.sample(i, Counter()) for i in range(n)]


def bench_length(model_path: str, length: int, args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from train.dapo import DynamicSamplingGRPOTrainer

    samples = make_prompts(length, max(2, args.steps))  # one prompt (a group of completions) per step
    ds = Dataset.from_list([{"prompt": s.prompt, "answers": s.answers} for s in samples])
    tok = AutoTokenizer.from_pretrained(model_path)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=args.attn)

    class LengthReward:
        __name__ = "length"

        def __call__(self, completions, completion_ids, **kw):
            return [len(c) / 1000 for c in completion_ids]

    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(output_dir=out, per_device_train_batch_size=args.num_generations,
                         num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                         max_steps=args.steps, logging_steps=1, report_to="none", save_strategy="no",
                         gradient_checkpointing=True, bf16=args.device == "cuda", beta=0.0, loss_type="dapo",
                         use_cpu=args.device == "cpu", disable_tqdm=True)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer = DynamicSamplingGRPOTrainer(model=model, reward_funcs=[LengthReward()], args=cfg, train_dataset=ds,
                                             processing_class=tok, dynamic_sampling_rounds=0)
        trainer.train()
        steps = [h["step_time"] for h in trainer.state.log_history if "step_time" in h]
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")

        # Baseline: one forward + backward over the same number of full sequences.
        ids = tok.apply_chat_template(samples[0].prompt, add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        ids = torch.cat([ids, ids[:, : args.max_completion_length]], dim=1).repeat(args.num_generations, 1)
        ids = ids.to(trainer.model.device)
        trainer.model.train()
        times = []
        for _ in range(2):
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = trainer.model(input_ids=ids, labels=ids).loss
            loss.backward()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            trainer.model.zero_grad(set_to_none=True)
    return {"length": length, "prompt_tokens": samples[0].prompt_tokens, "step_s": statistics.mean(steps[1:] or steps),
            "peak_gib": peak, "fwd_bwd_s": min(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen2.5-0.5b-random")
    ap.add_argument("--lengths", default="20k,40k,60k")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--max-completion-length", type=int, default=256)
    ap.add_argument("--attn", default="sdpa", help="sdpa, or flash_attention_2 (needs flash-attn)")
    ap.add_argument("--cpu-check", action="store_true", help="tiny-qwen2 at 1k tokens on CPU (a check of the script)")
    ap.add_argument("--write-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()

    import torch

    from datagen.lengths import format_length, parse_lengths
    from eval.models import materialize_preset

    if args.cpu_check:
        args.preset, args.lengths, args.steps, args.max_completion_length = "tiny-qwen2", "1k", 2, 16
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and not args.cpu_check:
        raise SystemExit("no CUDA GPU: this benchmark measures GPU step time and memory; use --cpu-check to check "
                         "the script on CPU")
    model_path = str(materialize_preset(args.preset))
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    rows = [bench_length(model_path, n, args) for n in parse_lengths(args.lengths)]
    lines = [f"GRPO step, {args.preset}, HF rollouts, gradient checkpointing, {args.num_generations} completions "
             f"x {args.max_completion_length} tokens, device: {device_name}", "",
             "| length | prompt tokens | GRPO step (s) | peak memory (GiB) | fwd+bwd baseline (s) | step / baseline |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {format_length(r['length'])} | {r['prompt_tokens']} | {r['step_s']:.2f} | {r['peak_gib']:.1f} | "
                     f"{r['fwd_bwd_s']:.2f} | {r['step_s'] / r['fwd_bwd_s']:.1f} |")
    print("\n".join(lines))
    if args.write_results:
        path = Path(__file__).parent / "RESULTS.md"
        stamp = datetime.date.today().isoformat()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"\n## {stamp}: `python benchmarks/grpo_step_bench.py`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
