"""The memory planner's arithmetic against hand-computed cases, its search, its check before `train grpo`,
and the GPU profile fitting at 60K."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from longmill.errors import LongmillError
from train.plan import (
    GIB,
    ModelShape,
    PlanSettings,
    batch_warnings,
    check_plan,
    estimate,
    largest_fitting,
    model_state_bytes,
    plan_settings,
    read_plan_yaml,
    resolve_shape,
)

ROOT = Path(__file__).resolve().parents[2]
# h=4, I=8, 2 layers, 2 heads of width 2, 1 KV head (kv_dim 2), vocabulary 10, untied, no biases.
TOY = ModelShape(
    "toy",
    hidden_size=4,
    intermediate_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=10,
    tie_word_embeddings=False,
    attention_bias=False,
)


def test_parameter_counts_match_the_published_models():
    # toy layer: q 16 + k,v 2*4*2 + o 16 + MLP 3*4*8 + norms 8 = 152; embeddings and head 2*40; final norm 4
    assert TOY.layer_params == 152 and TOY.params == 80 + 2 * 152 + 4
    # Qwen2.5-7B: 28 x 233,057,792 + 2 x 152,064 x 3,584 + 3,584 (HF lists 7.62B)
    q7 = resolve_shape("Qwen/Qwen2.5-7B-Instruct")
    assert (
        q7.layer_params
        == 3584 * 3584 * 2 + 2 * 3584 * 512 + 3584 + 1024 + 3 * 3584 * 18944 + 2 * 3584
        == 233_057_792
    )
    assert q7.params == 7_615_616_512
    assert resolve_shape("qwen2.5-1.5b").params == 1_543_714_304  # tied embeddings; HF lists 1.54B
    assert resolve_shape("qwen2.5-32b").params == 32_763_876_352  # HF lists 32.8B
    assert q7.kv_bytes_per_token == 2 * 28 * 512 * 2


def test_model_states_follow_zero_fsdp_and_torch_adamw():
    n, g = 1000, 8
    assert model_state_bytes(n, "ddp", g) == (2000, 2000, 4000)  # torch AdamW's moments in the weights' bf16
    assert model_state_bytes(n, "ddp", g, "fp32") == (4000, 4000, 8000)
    assert model_state_bytes(n, "zero1", g) == (2000, 2000, 1500)
    assert model_state_bytes(n, "zero2", g) == (2000, 250, 1500)
    assert model_state_bytes(n, "zero3", g) == (250, 250, 1500)
    assert model_state_bytes(n, "zero3", g, "fp32") == (500, 500, 1000)  # no fp32 master copy needed
    assert model_state_bytes(n, "fsdp", g) == (500, 500, 1000)


def _toy(**kw) -> PlanSettings:
    base = dict(
        prompt_length=6,
        completion_length=4,
        num_gpus=2,
        sharding="zero3",
        gpu_memory_gib=1,
        rollout="vllm-server",
    )
    return PlanSettings(**{**base, **kw})


def test_toy_terms_by_hand_padding_free_bf16_on_cuda():
    """Every term of the estimate, computed by hand for TOY (h 4, q 4, kv 2, I 8, 2 layers, 2 heads, V 10),
    T = 10 tokens (4 of completion), bf16 (a = 2), ZeRO-3 over 2 GPUs."""
    e = estimate(TOY, _toy(reduce_bucket_size=100))
    assert (e.weights, e.gradients, e.optimizer) == (2 * 388 / 2, 2 * 388 / 2, 12 * 388 / 2)
    assert e.reference_model == 0
    assert e.gathered_params == 2 * 2 * 152  # two layers' bf16 parameters (a layer outweighs the embedding)
    assert e.reduce_bucket == 100 * 2
    assert e.activation_checkpoints == 2 * 10 * 4 * 2  # L x T x h x a
    assert e.rope == 2 * 10 * 2 * 2  # cos and sin: T x head_dim x a each
    assert e.attention == 0  # padding-free: no mask
    assert e.final_norm == 10 * (4 * 4 + 2 * 2 * 4)  # fp32 upcast 4h, normalised and output 2 x a h
    # Triton head on the 4 completion positions: fp32 gradients of input and head, the 4 x 32768 bf16 buffer,
    # bf16 copies of both gradients, the compact input copy and log_z/entropy
    assert e.logits == (4 + 10) * 4 * 4 + 4 * 32768 * 2 + (4 + 10) * 4 * 2 + 4 * (4 * 2 + 16)
    # one layer per token: norm1 (4h + 2ah) 32, attention (2aq + 2a kv + 4 heads) 32, norm2 32, 6aI 96; x T;
    # plus the gradient flowing in (a h T)
    assert e.recompute == (32 + 32 + 32 + 96) * 10 + 2 * 4 * 10
    assert e.runtime == 2 * GIB and e.vllm_training == 0 == e.vllm_generation
    held = 160 + 80 + 0
    assert e.head_phase == held + 320 + e.logits and e.layer_phase == held + 2000
    assert e.peak_phase == "LM head backward"
    assert e.training_peak == 388 + 388 + 2328 + 608 + 200 + 2 * GIB + e.head_phase
    assert "no mask, is_causal=True" in e.attention_path


def test_toy_terms_of_trls_padded_forward_offload_checkpointing_eager_and_the_reference_model():
    pf = estimate(TOY, _toy())
    padded = estimate(TOY, _toy(padding_free=False))
    assert padded.attention == 10 * 10  # the (1, 1, T, T) boolean mask, held all along
    # k and v repeated over the query heads (2 a q instead of 2 a kv per token), and SDPA's additive copy of the mask
    assert padded.recompute == pf.recompute + (2 * 2 * 4 - 2 * 2 * 2) * 10 + 10 * 10 * 2
    assert "boolean mask, K/V repeated" in padded.attention_path and any(
        "padding_free" in n for n in padded.notes
    )
    offload = estimate(TOY, _toy(activation_offload=True))
    assert (
        offload.activation_checkpoints == 0 and offload.recompute == pf.recompute + 2 * 4 * 10
    )  # the input back
    no_ckpt = estimate(TOY, _toy(gradient_checkpointing=False))
    # every layer keeps norms 2 x (4h + 2ah), attention 2aq + 2a kv + 4 heads, and the MLP's four tensors 4aI
    assert no_ckpt.activation_checkpoints == 2 * 10 * (2 * 32 + (16 + 8 + 8) + 4 * 2 * 8)
    assert no_ckpt.recompute == 10 * (2 * 2 * 8 + 2 * 4)  # the MLP's backward adds two gradients and the flow
    eager = estimate(TOY, _toy(attn_implementation="eager"))
    assert eager.recompute == pf.recompute + (2 + 4) * 2 * 10 * 10 and "eager" in eager.attention_path
    ref = estimate(TOY, _toy(beta=0.04))
    assert ref.reference_model == 2 * 388 / 2 and ref.training_peak == pf.training_peak + 388
    assert (
        estimate(TOY, _toy(beta=0.04, sharding="zero2")).reference_model == 2 * 388
    )  # not sharded below ZeRO-3
    assert (
        estimate(TOY, _toy(sharding="fsdp")).reduce_bucket
        == 0
        == estimate(TOY, _toy(sharding="ddp")).reduce_bucket
    )
    flash = estimate(TOY, _toy(attn_implementation="flash_attention_2", per_device_train_batch_size=2))
    assert flash.attention == 0 and "varlen" in flash.attention_path


def test_toy_lm_head_of_the_cpu_fallback_and_rows_one_by_one():
    """device=cpu: TRL's torch fallback scores all T - 1 positions and holds 29 bytes per tile element."""
    e = estimate(TOY, _toy(dtype="fp32", device="cpu", sharding="ddp", num_gpus=1))
    assert e.logits == (9 + 10) * 4 * 4 + 9 * 32768 * 4 + 9 * 10 * 29 + 9 * 16
    assert e.runtime == 0 and (e.weights, e.gradients, e.optimizer) == (4 * 388, 4 * 388, 8 * 388)
    # padding-free rows run one at a time: two rows hold two rows' checkpoints but recompute one row at a time
    two = estimate(
        TOY, _toy(dtype="fp32", device="cpu", sharding="ddp", num_gpus=1, per_device_train_batch_size=2)
    )
    assert two.activation_checkpoints == 2 * e.activation_checkpoints and two.recompute == e.recompute
    batched = estimate(
        TOY,
        _toy(
            dtype="fp32",
            device="cpu",
            sharding="ddp",
            num_gpus=1,
            per_device_train_batch_size=2,
            padding_free=False,
        ),
    )
    assert batched.attention == 2 * 100 and batched.recompute > 2 * e.recompute  # TRL batches the rows


def test_gpu_profile_at_60k_padding_free_and_trls_padded_forward():
    q7 = resolve_shape("qwen2.5-7b-instruct")
    s = PlanSettings(
        prompt_length=60_000,
        completion_length=10_000,
        per_device_train_batch_size=1,
        num_gpus=8,
        sharding="zero3",
        gpu_memory_gib=80,
        vllm_gpu_memory_utilization=0.35,
        vllm_enable_sleep_mode=True,
    )
    e = estimate(q7, s)
    # by hand, in bytes: states 16 x 7,615,616,512 / 8; the LM head gathered twice over (2 x 2 x V x h); DeepSpeed's
    # reduce bucket 5e8 x 2; runtime 2 GiB; vLLM asleep 1 GiB; checkpoints 28 x 70,000 x 3,584 x 2; cos/sin
    # 2 x 70,000 x 128 x 2; the last layer: 70,000 x 301,168 (norms 2 x 28,672, attention 16,496, MLP 227,328)
    # plus the gradient 70,000 x 3,584 x 2
    expected = (
        15_231_233_024
        + 2_179_989_504
        + 1_000_000_000
        + 2 * GIB
        + GIB
        + 14_049_280_000
        + 35_840_000
        + 70_000 * 301_168
        + 501_760_000
    )
    assert e.training_peak == expected and round(expected / GIB, 2) == 53.37
    assert e.peak_phase == "last layer backward" and e.fits
    assert e.generation_peak == 15_231_233_024 + 2 * GIB + 0.35 * 80 * GIB
    assert (
        int(e.vllm_kv_capacity_tokens) == (int(0.35 * 80 * GIB) - 15_231_233_024 - GIB) // 57_344 == 239_951
    )
    padded = estimate(q7, replace(s, padding_free=False))
    # TRL's padded forward adds the 70,000^2 boolean mask, its bf16 additive copy, and K/V repeated 7 times
    assert padded.training_peak - e.training_peak == 70_000**2 * 3 + 70_000 * 2 * 2 * (3584 - 512)
    assert round(padded.training_peak / GIB, 2) == 67.86
    old = estimate(
        q7, PlanSettings(60_000, 10_000, per_device_train_batch_size=8, vllm_enable_sleep_mode=False)
    )
    assert not old.fits and old.vllm_training == 0.35 * 80 * GIB


def test_largest_fitting_is_the_edge():
    q7 = resolve_shape("qwen2.5-7b")
    s = PlanSettings(60_000, 10_000)
    best = largest_fitting(q7, s, "prompt_length", lo=1000, hi=4_000_000, step=1000)
    assert best is not None and best % 1000 == 0
    assert (
        estimate(q7, PlanSettings(best, 10_000)).fits
        and not estimate(q7, PlanSettings(best + 1000, 10_000)).fits
    )
    # padding-free rows run one by one, so a micro-batch of 3 rows adds only their checkpoints; TRL's batched
    # padded forward fits one
    assert largest_fitting(q7, s, "per_device_train_batch_size", hi=64) == 3
    assert not estimate(q7, PlanSettings(60_000, 10_000, per_device_train_batch_size=4)).fits
    assert largest_fitting(q7, replace(s, padding_free=False), "per_device_train_batch_size", hi=64) == 1
    assert (
        largest_fitting(q7, PlanSettings(60_000, 10_000, gpu_memory_gib=16), "prompt_length", lo=1000) is None
    )


def test_vllm_share_too_small_for_one_sequence_is_reported():
    e = estimate(resolve_shape("qwen2.5-7b"), PlanSettings(60_000, 10_000, vllm_gpu_memory_utilization=0.2))
    assert any("less than one sequence of 70,000" in n for n in e.notes)


def test_batch_warnings_name_whole_groups_and_clip_higher():
    assert any(
        "clip-higher never acts" in w
        for w in batch_warnings(
            PlanSettings(1, 1, per_device_train_batch_size=8, gradient_accumulation_steps=4)
        )
    )
    assert batch_warnings(PlanSettings(1, 1, gradient_accumulation_steps=8, steps_per_generation=32)) == []
    ws = batch_warnings(PlanSettings(1, 1, num_gpus=3, gradient_accumulation_steps=1, steps_per_generation=2))
    assert any("not a multiple of num_generations" in w for w in ws) and any("whole groups" in w for w in ws)


def test_shapes_from_folders_and_presets(tmp_path):
    cfg = {
        "model_type": "qwen2",
        "hidden_size": 4,
        "intermediate_size": 8,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": 10,
        "tie_word_embeddings": False,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert resolve_shape(str(tmp_path)).layer_params == 152 + 4 + 2 * 2  # Qwen2's q, k, v biases
    assert resolve_shape("tiny-qwen2").hidden_size == 64
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{}")
    with pytest.raises(LongmillError, match="has no 'hidden_size'"):
        resolve_shape(str(tmp_path / "bad"))
    with pytest.raises(LongmillError, match="qwen2.5-7b-instruct"):
        resolve_shape("no/such-model")


@pytest.mark.parametrize(
    "path,section", [("train/configs/grpo-gpu-qwen2.5-7b.yaml", None), ("profiles/gpu-qwen2.5-7b.yaml", "rl")]
)
def test_shipped_gpu_configs_fit_every_stage_on_8x80gb(tmp_path, path, section):
    file = ROOT / path
    if section:
        file = tmp_path / "rl.yaml"
        file.write_text(yaml.safe_dump(yaml.safe_load((ROOT / path).read_text())[section]))
    values = read_plan_yaml(file)
    assert values["vllm_enable_sleep_mode"] is True and values["per_device_train_batch_size"] == 1
    q7 = resolve_shape("qwen2.5-7b-instruct")
    for length in (20_000, 40_000, 60_000):
        s = plan_settings(length, values, num_gpus=8, sharding="zero3", gpu_memory_gib=80)
        assert s.completion_length == 10_000 and estimate(q7, s).fits, length
        assert batch_warnings(s) == []


def test_check_plan_warns_before_a_launch_that_cannot_fit(small_curriculum):
    old = SimpleNamespace(
        model="Qwen/Qwen2.5-7B-Instruct",
        rollout="vllm-colocate",
        per_device_train_batch_size=8,
        gradient_accumulation_steps=4,
        num_generations=8,
        max_completion_length=10_000,
        gradient_checkpointing=True,
        attn_implementation="flash_attention_2",
        vllm_gpu_memory_utilization=0.35,
        beta=0.0,
    )
    ws = check_plan(old, [20_000, 60_000], gpu_memory_gib=80, num_gpus=8, sharding="zero3")
    assert any("prompts of 60,000 tokens" in w and "per GPU" in w for w in ws)
    assert any("clip-higher never acts" in w for w in ws)
    new = SimpleNamespace(
        **{
            **vars(old),
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 8,
            "steps_per_generation": 32,
            "vllm_enable_sleep_mode": True,
        }
    )
    assert check_plan(new, [20_000, 40_000, 60_000], gpu_memory_gib=80, num_gpus=8, sharding="zero3") == []
    # prompt lengths from the curriculum's manifest (300 and 400 tokens): nothing to warn about
    assert check_plan(new, curriculum=small_curriculum, gpu_memory_gib=80, num_gpus=8, sharding="zero3") == []
    # unknown model: planning is skipped, never an error
    assert (
        check_plan(SimpleNamespace(**{**vars(new), "model": "org/unknown"}), [60_000], gpu_memory_gib=80)
        == []
    )


def test_plan_cli_prints_components_and_json():
    from train.cli import main

    r = CliRunner().invoke(
        main,
        [
            "plan",
            "--config",
            str(ROOT / "train/configs/grpo-gpu-qwen2.5-7b.yaml"),
            "--model",
            "qwen2.5-7b-instruct",
            "--prompt-length",
            "60k",
            "--completion-length",
            "10000",
            "--num-gpus",
            "8",
            "--sharding",
            "zero3",
        ],
    )
    assert r.exit_code == 0, r.output
    for needle in (
        "attention path: sdpa: padding-free rows, no mask",
        "activation checkpoints",
        "one layer recomputed",
        "final norm (all positions)",
        "LM head (TRL chunked)",
        "DeepSpeed reduce bucket",
        "vLLM while training",
        "53.37 GiB of 80.00: fits",
        "largest prompt that fits",
    ):
        assert needle in r.output, needle
    r = CliRunner().invoke(
        main,
        [
            "plan",
            "--config",
            str(ROOT / "train/configs/grpo-gpu-qwen2.5-7b.yaml"),
            "--prompt-length",
            "20k,60k",
            "--per-device-train-batch-size",
            "8",
            "--json",
        ],
    )
    reports = json.loads(r.output)
    assert [x["settings"]["prompt_length"] for x in reports] == [20_000, 60_000]
    assert reports[1]["settings"]["per_device_train_batch_size"] == 8 and not reports[1]["fits"]
    r = CliRunner().invoke(main, ["plan", "--prompt-length", "60k", "--activation-offload", "--json"])
    assert json.loads(r.output)[0]["gib"]["activation_checkpoints"] == 0
    r = CliRunner().invoke(main, ["plan", "--model", "nope/nope"])
    assert r.exit_code != 0 and "cannot plan" in r.output


# -- the GPU install (constraints/gpu.txt) ------------------------------------------------------------------


def _check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_gpu_install", ROOT / "benchmarks" / "check_gpu_install.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_constraints_agree_with_trl_and_the_cpu_pins():
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    pins = _check_module().constraints(ROOT / "constraints" / "gpu.txt")
    cpu = _check_module().constraints(ROOT / "constraints" / "cpu.txt")
    assert pins["torch"] == cpu["torch"]  # one torch for the CPU tests and the GPU install
    assert pins["trl"] == md.version("trl")  # the TRL the code is tested against
    trl_vllm = next(Requirement(r) for r in md.requires("trl") if r.startswith("vllm"))
    assert trl_vllm.specifier.contains(Version(pins["vllm"]))  # TRL supports this vLLM
    gpu_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "gpu"
    ]
    assert not any(Requirement(r).name == "flash-attn" for r in gpu_extra)  # a source build: a separate step
    assert all(Requirement(r).specifier.contains(Version(pins[Requirement(r).name])) for r in gpu_extra)


def test_install_check_finds_disagreements():
    check = _check_module().check

    def meta(name, version, *requires):
        return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}

    good = {
        "install": [
            meta("torch", "2.13.0+cu130"),
            meta("transformers", "5.24.0"),
            meta("vllm", "0.30.0", "torch==2.13.0", "transformers>=5.10.4"),
            meta("trl", "1.16.0", "transformers>=4.56.2", 'vllm<=0.31.0,>=0.22.0; extra == "vllm"'),
        ]
    }
    pins = {"torch": "2.13.0", "vllm": "0.30.0", "transformers": "5.24.0", "trl": "1.16.0"}
    assert check(good, pins) == []
    bad = {
        "install": [
            meta("torch", "2.12.0"),
            meta("transformers", "5.24.0"),
            meta("vllm", "0.33.0", "torch==2.13.0", "transformers<5.18"),
            meta("flash-attn", "2.8.0"),
            meta("trl", "1.16.0", 'vllm<=0.31.0,>=0.22.0; extra == "vllm"'),
        ]
    }
    problems = "\n".join(check(bad, pins))
    for needle in (
        "torch: would install 2.12.0",
        "vllm requires torch==2.13.0",
        "vllm requires transformers<5.18",
        "TRL supports vllm<=0.31.0,>=0.22.0",
        "flash-attn is in the resolution",
    ):
        assert needle in problems, needle


def test_train_grpo_warns_before_launching_a_plan_that_cannot_fit(tmp_path, small_curriculum, monkeypatch):
    import train.plan
    from train.cli import main

    model = tmp_path / "qwen7b-shape"  # a 7B config.json and no weights: the plan runs, the launch then fails
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "vocab_size": 152064,
                "tie_word_embeddings": False,
            }
        )
    )
    monkeypatch.setattr(train.plan, "_cuda_memory_gib", lambda: 80.0)  # as on an 80 GB GPU
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = CliRunner().invoke(
        main,
        [
            "grpo",
            "--curriculum",
            str(small_curriculum),
            "--out",
            str(tmp_path / "rl"),
            "--model",
            str(model),
            "--per-device-train-batch-size",
            "4096",
            "--rollout",
            "hf",
            "--max-steps",
            "1",
        ],
    )
    assert "warning: memory plan: prompts of 300 tokens" in r.output and "per GPU" in r.output
    assert r.output.index("warning: memory plan") < r.output.index("cannot load model")


@pytest.mark.slow
def test_grpo_step_bench_cpu_check_runs_trls_batches_and_matches_the_planner(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "grpo_step_bench.py"), "--cpu-check", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 256 |" in proc.stdout and "padded by TRL" in proc.stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert row["prompt"] == 256 and row["tokens"] in (256 + 32, 256 + 29) and row["padded_width"] == 288
    assert row["step_s"] > 0 and abs(row["plan_gib"] / row["peak_gib"] - 1) < 0.05


def test_one_route_into_the_plan_with_train_grpos_defaults(tmp_path):
    """A key the YAML or the flags leave out is planned as `train grpo` would run it (GRPOPhaseConfig's default),
    by every route: the CLI's, a config object's (train grpo's check) and the verl export's."""
    from train.config import GRPOPhaseConfig
    from train.plan import plan_settings, read_plan_yaml, settings_from_config

    cfg = tmp_path / "grpo.yaml"
    cfg.write_text("per_device_train_batch_size: 8\nmax_completion_length: 2000\nbeta: 0.04\n")
    s = plan_settings(20_000, read_plan_yaml(cfg), num_gpus=8, sharding="zero3")
    d = GRPOPhaseConfig(use_cpu=True)
    assert (s.per_device_train_batch_size, s.completion_length, s.beta) == (8, 2000, 0.04)
    assert s.gradient_checkpointing is bool(d.gradient_checkpointing) is True  # was planned off from a YAML
    assert (s.gradient_accumulation_steps, s.num_generations) == (
        d.gradient_accumulation_steps,
        d.num_generations,
    )
    assert s.vllm_gpu_memory_utilization == d.vllm_gpu_memory_utilization
    assert (
        s.padding_free is d.padding_free is True and s.rollout == "vllm-colocate"
    )  # rollout auto: vLLM on GPUs
    c = settings_from_config(
        GRPOPhaseConfig(use_cpu=True, max_completion_length=2000, beta=0.04, rollout="vllm-colocate"),
        20_000,
        num_gpus=8,
        sharding="zero3",
    )
    # the object's own resolutions differ, as they should: TRL sets steps_per_generation, and use_cpu means fp32
    assert (c.steps_per_generation, c.dtype) == (d.steps_per_generation, "fp32")
    assert replace(c, steps_per_generation=None, dtype="bf16") == s
    from train.cli import main

    r = CliRunner().invoke(main, ["plan", "--prompt-length", "20k"])
    assert r.exit_code == 0 and "completion 1,024 tokens, 8 per GPU" in r.output, r.output
