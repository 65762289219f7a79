#!/usr/bin/env bash
# One GPU check of longmill's training path: at most 8 minutes on one 80-141 GB GPU with PyTorch, transformers
# and TRL installed (pip install -e ".[pipeline]"; vLLM optional: its part is skipped when it is absent).
#
#   bash benchmarks/gpu_check.sh                      # results in ./gpu_check_out, or in $OUT when it is set
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh      # every part on CPU at tiny shapes: checks the script itself
#
# Parts (each timed; a part that fails or runs out of time is recorded and the next one runs):
#   env       the device and the versions of torch, transformers, TRL, vLLM, flash-attn
#   tiny      one GRPO step of tiny-qwen2 (scripted rollouts, a forced dynamic-sampling refill): peak memory beside
#             `train plan`'s estimate, and the attention path each SDPA call took (kernel, mask, is_causal)
#   small     the same for a Qwen2.5-0.5B-shaped model at 8,000 + 512 tokens
#   vllm      one GRPO step of tiny-qwen2 with colocated vLLM rollouts in sleep mode (skipped without vLLM)
#   sp        sequence parallelism over 2 GPUs (NCCL): sp_size 2 against 1, log-probs, loss and gradients
#             (tests/train/sp_equivalence.py; skipped with fewer than 2 GPUs and in the dry run)
#   bench     benchmarks/grpo_step_bench.py at 20K/40K/60K on a Qwen2.5-7B-shaped model, TRL's padded batches
# Output in $OUT: gpu_check.log (everything), results.json (one object per part), summary.md (a table to paste
# into benchmarks/RESULTS.md beside the planner's figures).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
DRY="${GPU_CHECK_DRY:-0}"
PY="${PYTHON:-python}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
RESULTS="$OUT/results.json"
SUMMARY="$OUT/summary.md"
export TRL_EXPERIMENTAL_SILENCE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
dry_flag=()
if [[ "$DRY" == "1" ]]; then dry_flag=(--dry); fi

: >"$LOG"
: >"$OUT/parts.jsonl"
T0=$(date +%s)
printf '| part | status | seconds |\n|---|---|---|\n' >"$OUT/parts.md"

# run_part NAME BUDGET_SECONDS COMMAND...: runs COMMAND with a timeout (its budget, or what is left of the
# whole check's), appends its output to the log, keeps its JSON lines, and records status and time
run_part() {
    local name="$1" budget="$2"
    shift 2
    local left=$((BUDGET_S - ($(date +%s) - T0)))
    local start status rc
    start=$(date +%s)
    if ((left < 10)); then
        status="skipped (the check's ${BUDGET_S} s are spent)"
    else
        ((budget > left)) && budget=$left
        echo "=== $name (budget ${budget} s): $*" >>"$LOG"
        set +e
        timeout --kill-after=10 "$budget" "$@" >"$OUT/.part.out" 2>>"$LOG"
        rc=$?
        set -e
        cat "$OUT/.part.out" >>"$LOG"
        grep '^{"part"' "$OUT/.part.out" >>"$OUT/parts.jsonl" || true
        case $rc in
            0) status="ok" ;;
            3) status="skipped" ;;
            124 | 137) status="timed out after ${budget} s" ;;
            *) status="failed (exit $rc)" ;;
        esac
    fi
    local secs=$(($(date +%s) - start))
    echo "=== $name: $status in ${secs} s" | tee -a "$LOG"
    printf '| %s | %s | %s |\n' "$name" "$status" "$secs" >>"$OUT/parts.md"
}

run_part env 60 "$PY" benchmarks/gpu_check.py env "${dry_flag[@]}"
if [[ "$DRY" != "1" ]] && ! grep -q '"gpu_memory_gib": [0-9]' "$OUT/parts.jsonl"; then
    echo "no CUDA GPU: nothing to check (GPU_CHECK_DRY=1 checks the script on CPU)" | tee -a "$LOG"
    exit 1
fi
run_part tiny 90 "$PY" benchmarks/gpu_check.py step --model tiny-qwen2 "${dry_flag[@]}"
run_part small 120 "$PY" benchmarks/gpu_check.py step --model qwen2.5-0.5b --prompt-length 8000 \
    --completion-length 512 "${dry_flag[@]}"
run_part vllm 120 "$PY" benchmarks/gpu_check.py vllm "${dry_flag[@]}"
run_part sp 120 "$PY" benchmarks/gpu_check.py sp "${dry_flag[@]}"
if [[ "$DRY" == "1" ]]; then
    run_part bench 240 "$PY" benchmarks/grpo_step_bench.py --cpu-check --json "$OUT/.bench.json"
else
    run_part bench 300 "$PY" benchmarks/grpo_step_bench.py --lengths 20k,40k,60k --json "$OUT/.bench.json"
fi
if [[ -f "$OUT/.bench.json" ]]; then
    "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps({"part": "bench", **d}))' \
        "$OUT/.bench.json" >>"$OUT/parts.jsonl"
fi

"$PY" - "$OUT" "$DRY" "$(($(date +%s) - T0))" <<'PYEOF'
import json, sys
from pathlib import Path

out, dry, seconds = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
parts = [json.loads(line) for line in (out / "parts.jsonl").read_text().splitlines() if line.strip()]
(out / "results.json").write_text(json.dumps({"dry": dry, "seconds": seconds, "parts": parts}, indent=2))
lines = [f"GPU check{' (dry run on CPU)' if dry else ''}: {seconds} s in all", "", (out / "parts.md").read_text()]
env = next((p for p in parts if p["part"] == "env"), {})
lines.append(f"device: {env.get('device')}; torch {env.get('torch')}, transformers {env.get('transformers')}, "
             f"TRL {env.get('trl')}, vLLM {env.get('vllm')}, flash-attn {env.get('flash_attn')}\n")
steps = [p for p in parts if p["part"] == "step"]
if steps:
    lines += ["| model | row (prompt, completion) | peak (GiB) | planner (GiB) | planner / peak | SDPA kernels | "
              "T x T masks | refill rounds |", "|---|---|---|---|---|---|---|---|"]
    for p in steps:
        row = max(p["rows"], key=lambda r: r[2] + r[3]) if p["rows"] else [0, 0, 0, 0]
        lines.append(f"| {p['model']} | {row[2]:,} + {row[3]:,} | {p['peak_gib']} | {p['plan_gib']} | "
                     f"{p['plan_over_peak']} | {p['kernels']} | {p['square_masks']} | {p['refill_rounds']} |")
    lines.append("")
for p in parts:
    if p["part"] == "vllm":
        lines.append(f"vLLM: {p.get('skipped') or p}\n")
    if p["part"] == "sp":
        lines.append(f"sequence parallelism (2 GPUs): {p.get('skipped') or p}\n")
bench = next((p for p in parts if p["part"] == "bench"), None)
if bench:
    lines += ["| prompt | tokens | step (s) | peak (GiB) | planner (GiB) | planner / peak |", "|---|---|---|---|---|---|"]
    for r in bench["rows"]:
        lines.append(f"| {r['prompt']:,} | {r['tokens']:,} | {r['step_s']:.2f} | {r['peak_gib']:.2f} | "
                     f"{r['plan_gib']:.2f} | {r['plan_gib'] / r['peak_gib']:.3f} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
rm -f "$OUT/.part.out" "$OUT/.bench.json" "$OUT/parts.jsonl" "$OUT/parts.md"
