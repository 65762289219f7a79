"""The parts of ``benchmarks/gpu_check.sh`` (one GPU check of longmill's training path), one subcommand each.

Each part prints one JSON line (``{"part": ..., ...}``) that the shell script collects into ``results.json``;
exit status 3 means "skipped" (with the reason in the JSON). With ``--dry`` every part runs small shapes on CPU,
so that the script is checked where no GPU is.

    python benchmarks/gpu_check.py env
    python benchmarks/gpu_check.py step --model tiny-qwen2 [--dry]
    python benchmarks/gpu_check.py step --model qwen2.5-0.5b --prompt-length 8000 [--dry]
    python benchmarks/gpu_check.py vllm [--dry]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SKIPPED = 3


def emit(part: str, **fields: Any) -> None:
    print(json.dumps({"part": part, **fields}), flush=True)


def quiet() -> None:
    import logging
    import warnings

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)


def env(args: argparse.Namespace) -> int:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    emit(
        "env",
        device=torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.machine()})",
        gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        torch=torch.__version__,
        cuda_runtime=torch.version.cuda,
        transformers=ver("transformers"),
        trl=ver("trl"),
        vllm=ver("vllm"),
        flash_attn=ver("flash-attn"),
        dry=args.dry,
    )
    if not cuda and not args.dry:
        print("no CUDA GPU here: run with GPU_CHECK_DRY=1 to check the script on CPU", file=sys.stderr)
        return 1
    return 0


class RefillForcingReward:
    """Equal rewards in the first generation round (no group has signal, so dynamic sampling must refill),
    alternating rewards afterwards."""

    __name__ = "refill_forcing_reward"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        self.calls += 1
        if self.calls == 1:
            return [1.0] * len(completions)
        return [float(i % 2) for i in range(len(completions))]


def step(args: argparse.Namespace) -> int:
    """One GRPO optimiser step (scripted rollouts, a forced dynamic-sampling refill): the peak beside the plan,
    and the attention path each call took."""
    quiet()
    import torch

    from train.plan import GIB, PLAN_PRESETS, estimate, resolve_shape
    from train.stepcheck import (
        AttentionProbe,
        StepSettings,
        TinyShape,
        build_model,
        make_trainer,
        measure_micro_steps,
        plan_settings_for,
    )

    cuda = torch.cuda.is_available() and not args.dry
    if args.dry:
        shape = TinyShape() if args.model == "tiny-qwen2" else TinyShape(128, 512, 4, 4, 2, 2048)
        prompt, completion = 96, 16
    else:
        s = PLAN_PRESETS[args.model] if args.model in PLAN_PRESETS else resolve_shape(args.model)
        shape = TinyShape(
            s.hidden_size,
            s.intermediate_size,
            s.num_hidden_layers,
            s.num_attention_heads,
            s.num_key_value_heads,
            s.vocab_size,
            s.tie_word_embeddings,
        )
        prompt, completion = args.prompt_length, args.completion_length
    settings = StepSettings(
        prompt_lengths=(prompt, prompt - prompt // 8),
        completion_lengths=(completion, completion - completion // 4, completion // 2, completion),
        max_completion_length=completion,  # the first and last of each group are truncated (masked)
        num_generations=4,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=4,
        steps_per_generation=8,
        max_steps=1,
        bf16=cuda,
        extra={"dynamic_sampling_rounds": 1, "dynamic_sampling_metric": "reward", "optim": "sgd"},
    )
    model = build_model(
        shape, dtype=torch.bfloat16 if cuda else torch.float32, device="cuda" if cuda else "cpu"
    )
    probe = AttentionProbe()
    with tempfile.TemporaryDirectory() as out, probe():
        trainer = make_trainer(model, settings, out, reward=RefillForcingReward())
        steps = measure_micro_steps(trainer, [1, 2, 3], device="cuda" if cuda else "cpu")
    logs = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    worst = max(steps.values(), key=lambda m: m.peak)
    e = estimate(shape.plan_shape(args.model), plan_settings_for(worst, settings))
    planned = e.weights + e.gradients + max(e.head_phase, e.layer_phase)  # SGD: no optimiser states
    sdpa = [c for c in probe.calls if c.kind == "sdpa"]
    emit(
        "step",
        model=args.model,
        device="cuda" if cuda else "cpu",
        rows=worst.rows,
        peak_gib=round(worst.peak / GIB, 3),
        plan_gib=round(planned / GIB, 3),
        plan_over_peak=round(planned / worst.peak, 3),
        planned_path=e.attention_path,
        attention_calls=len(sdpa),
        kernels=dict(Counter(str(c.kernel) for c in sdpa)),
        square_masks=sum(c.square_mask for c in sdpa),
        is_causal=sum(bool(c.is_causal) for c in sdpa),
        refill_rounds=logs.get("dynamic_sampling/rounds"),
        replaced_share=logs.get("dynamic_sampling/replaced_share"),
        step_seconds=[round(m.seconds, 2) for m in steps.values()],
    )
    ok = not any(c.square_mask for c in sdpa) and (logs.get("dynamic_sampling/rounds") or 0) >= 1
    return 0 if ok else 1


def vllm(args: argparse.Namespace) -> int:
    """One GRPO step of tiny-qwen2 with colocated vLLM rollouts (sleep mode), when vLLM is installed."""
    import torch

    if args.dry or not torch.cuda.is_available():
        emit("vllm", skipped="no GPU (dry run)")
        return SKIPPED
    if importlib.util.find_spec("vllm") is None:
        emit("vllm", skipped="vllm is not installed")
        return SKIPPED
    quiet()
    from datasets import Dataset

    from eval.models import load_causal_lm, materialize_preset
    from train.config import GRPOPhaseConfig
    from train.dapo import DynamicSamplingGRPOTrainer
    from train.stepcheck import AlternatingReward

    folder = materialize_preset("tiny-qwen2")
    model, tok = load_causal_lm(str(folder), dtype="bfloat16", device="cuda", attn_implementation="sdpa")
    prompts = [[{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}] for i in range(16)]
    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOPhaseConfig(
            output_dir=out,
            model=str(folder),
            rollout="vllm-colocate",
            use_vllm=True,
            vllm_mode="colocate",
            vllm_gpu_memory_utilization=0.2,
            vllm_enable_sleep_mode=True,
            vllm_max_model_length=512,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            steps_per_generation=2,
            num_generations=4,
            max_completion_length=32,
            max_steps=1,
            bf16=True,
            gradient_checkpointing=True,
            report_to=[],
            save_strategy="no",
            dynamic_sampling_rounds=0,
        )
        trainer = DynamicSamplingGRPOTrainer(
            model=model,
            reward_funcs=[AlternatingReward()],
            args=cfg,
            train_dataset=Dataset.from_dict({"prompt": prompts, "uid": [f"u{i}" for i in range(16)]}),
            processing_class=tok,
            dynamic_sampling_rounds=0,
        )
        torch.cuda.reset_peak_memory_stats()
        trainer.train()
    free, total = torch.cuda.mem_get_info()
    emit(
        "vllm",
        steps=trainer.state.global_step,
        torch_peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3),
        device_used_after_gib=round((total - free) / 2**30, 3),
    )
    return 0


def sp(args: argparse.Namespace) -> int:
    """Sequence parallelism on 2 GPUs (NCCL): tests/train/sp_equivalence.py under torchrun, sp_size 2 against 1 on
    tiny-qwen2 and a model with one K/V head (log-probs, loss and gradients). Skipped with fewer than 2 GPUs."""
    import torch

    if args.dry:
        emit(
            "sp", skipped="dry run (tests/train/test_sequence_parallel.py runs the same check on 2 CPU ranks)"
        )
        return SKIPPED
    if torch.cuda.device_count() < 2:
        emit("sp", skipped=f"needs 2 GPUs, {torch.cuda.device_count()} here")
        return SKIPPED
    import socket
    import subprocess
    import time

    from eval.models import materialize_preset
    from train.stepcheck import TinyShape, write_model

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as work:
        gqa = write_model(TinyShape(num_key_value_heads=1), Path(work) / "gqa-kv1")
        with socket.socket() as s_:
            s_.bind(("127.0.0.1", 0))
            port = s_.getsockname()[1]
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
             str(root / "tests" / "train" / "sp_equivalence.py"), str(Path(work) / "out"),
             str(materialize_preset("tiny-qwen2")), str(gqa)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
    ok = proc.returncode == 0 and proc.stdout.count("SP-EQUIVALENT") == 4
    emit(
        "sp",
        ok=ok,
        gpus=2,
        seconds=round(time.time() - t0, 1),
        equivalent=proc.stdout.count("SP-EQUIVALENT"),
        error=None if ok else (proc.stderr[-1500:] or proc.stdout[-1500:]),
    )
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("env", "step", "vllm", "sp"):
        p = sub.add_parser(name)
        p.add_argument("--dry", action="store_true", help="small shapes on CPU")
        if name == "step":
            p.add_argument(
                "--model", default="tiny-qwen2", help="tiny-qwen2 or a planner preset (qwen2.5-0.5b)"
            )
            p.add_argument("--prompt-length", type=int, default=2000)
            p.add_argument("--completion-length", type=int, default=256)
    args = ap.parse_args()
    return {"env": env, "step": step, "vllm": vllm, "sp": sp}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
