"""Memory planning for GRPO on GPUs: the expected peak per GPU, by component, before anything is launched.

``python -m train plan`` and :func:`check_plan` (called by ``train grpo``) use one estimate, written out in
:func:`estimate` and documented with its sources in ``docs/design.md`` ("Memory planning"). It counts
what TRL 1.16's GRPOTrainer and transformers 5.24's Qwen2 allocate on one GPU:

- **training**, one micro-step: the sharded model states (weights, gradients, AdamW), a reference model when
  beta > 0, ZeRO-3's gathered parameters and DeepSpeed's gradient reduce bucket, what vLLM keeps while asleep,
  the CUDA/NCCL runtime, and the activations at the micro-step's highest point, which is either the LM head's
  backward (every layer's checkpointed input, the final norm's saved tensors over all positions, TRL's chunked
  log-prob head) or the last decoder layer's recompute and backward (the checkpointed inputs plus one layer's
  saved tensors and gradients; in TRL's padded forward also the attention mask, its additive copy and K/V
  repeated over the query heads);
- **generation** (colocated vLLM): the model states plus vLLM's whole share
  (``vllm_gpu_memory_utilization`` x GPU memory), and during the weight sync, vLLM's weights plus one
  gathered parameter.

The activation terms are read off the code path (see :func:`estimate`) and checked against the peaks that the
PyTorch allocator reports for real GRPO micro-steps on CPU (``benchmarks/plan_check.py``; ``device="cpu"``
models TRL's torch fallback of the LM head, which CPUs run). The GPU-only terms (Triton head, runtime, vLLM,
DeepSpeed buffers) are read from those libraries' sources and not yet measured on a GPU
(``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from longmill.errors import LongmillError

log = logging.getLogger(__name__)

GIB = 2**30
SHARDINGS = ("zero3", "zero2", "zero1", "fsdp", "ddp")
ROLLOUTS = ("vllm-colocate", "vllm-server", "hf")
DTYPES = {"bf16": 2, "fp32": 4}
DEVICES = ("cuda", "cpu")

# TRL 1.16's fused LM head (trl/trainer/utils.py add_fused_lm_head -> trl/kernels/chunked_logprob.py) projects
# tiles of TOKEN_CHUNK_SIZE tokens into a buffer of _CHUNKED_LOGPROB_CHUNK_SIZE vocabulary entries (the buffer
# is that wide whatever the vocabulary: chunked_logprob.py:347, 413).
TRL_TOKEN_TILE = 4096
TRL_VOCAB_TILE = 32768
# Bytes per tile element that TRL's torch fallback of the head's backward (devices without Triton, such as CPUs;
# chunked_logprob.py:257-298) holds at its highest point: seven fp32 tile-sized temporaries and one bool.
TORCH_TILE_BYTES = 29
# DeepSpeed's default reduce_bucket_size in elements (deepspeed/runtime/zero/config.py:113); ZeRO allocates one
# bucket of it in the gradients' dtype (stage3.py:731-735, stage_1_and_2.py:2497-2506).
DEEPSPEED_REDUCE_BUCKET = 500_000_000
# CUDA context, NCCL buffers and the allocator's slack: a flat assumption per GPU.
RUNTIME_GIB = 2.0
# What colocated vLLM still holds on a GPU after ``sleep(level=2)`` (CUDA graphs, its own context).
VLLM_ASLEEP_GIB = 1.0
# vLLM's own activations for a prefill chunk (TRL sets max_num_batched_tokens=4096) and its sampler.
VLLM_WORKSPACE_GIB = 1.0
# Attention implementations that run varlen kernels (no mask tensor).
FLASH_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn")


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only config.json that memory depends on.

    Args:
        name: a label.
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
            vocab_size: as in config.json.
        tie_word_embeddings: the LM head shares the embedding matrix.
        max_position_embeddings: the native context window.
        head_dim: per-head width (default hidden_size // num_attention_heads).
        attention_bias: q, k and v projections have biases (Qwen2 does).
    """

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    head_dim: int | None = None
    attention_bias: bool = True

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_width

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_width

    @property
    def layer_params(self) -> int:
        h, kv, q = self.hidden_size, self.kv_dim, self.q_dim
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.attention_bias else 0)
        return attn + 3 * h * self.intermediate_size + 2 * h

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def params(self) -> int:
        """Every parameter: embeddings, layers, final norm, and the LM head unless tied."""
        head = 0 if self.tie_word_embeddings else self.embedding_params
        return self.embedding_params + head + self.num_hidden_layers * self.layer_params + self.hidden_size

    @property
    def kv_bytes_per_token(self) -> int:
        """bf16 K and V of every layer for one token (vLLM's KV cache)."""
        return 2 * self.num_hidden_layers * self.kv_dim * 2

    @classmethod
    def from_config(cls, cfg: dict[str, Any], name: str = "model") -> ModelShape:
        cfg = cfg.get("text_config", cfg)
        try:
            return cls(
                name=name,
                hidden_size=int(cfg["hidden_size"]),
                intermediate_size=int(cfg["intermediate_size"]),
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                num_attention_heads=int(cfg["num_attention_heads"]),
                num_key_value_heads=int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
                vocab_size=int(cfg["vocab_size"]),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
                head_dim=cfg.get("head_dim"),
                attention_bias=bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2")),
            )
        except KeyError as e:
            raise LongmillError(
                f"{name}: config.json has no {e.args[0]!r}; the planner needs a decoder-only "
                f"transformer config (hidden_size, intermediate_size, num_hidden_layers, ...)"
            ) from e


def _qwen25(name: str, h: int, i: int, layers: int, heads: int, kv: int, vocab: int, tie: bool) -> ModelShape:
    return ModelShape(name, h, i, layers, heads, kv, vocab, tie, 32768)


# The published config.json numbers of the Qwen2.5 family (huggingface.co/Qwen/<name>/blob/main/config.json),
# embedded so that planning needs no download. Instruct models share their base model's shape.
PLAN_PRESETS: dict[str, ModelShape] = {
    "qwen2.5-0.5b": _qwen25("qwen2.5-0.5b", 896, 4864, 24, 14, 2, 151936, True),
    "qwen2.5-1.5b": _qwen25("qwen2.5-1.5b", 1536, 8960, 28, 12, 2, 151936, True),
    "qwen2.5-7b": _qwen25("qwen2.5-7b", 3584, 18944, 28, 28, 4, 152064, False),
    "qwen2.5-14b": _qwen25("qwen2.5-14b", 5120, 13824, 48, 40, 8, 152064, False),
    "qwen2.5-32b": _qwen25("qwen2.5-32b", 5120, 27648, 64, 40, 8, 152064, False),
}
for _base in list(PLAN_PRESETS):
    PLAN_PRESETS[_base + "-instruct"] = replace(PLAN_PRESETS[_base], name=_base + "-instruct")


def resolve_shape(model: str) -> ModelShape:
    """A model's shape from a folder with config.json, a planner preset, a hub id of a preset, or a longmill preset.

    Raises:
        LongmillError: none of these; the message lists the presets.
    """
    path = Path(model)
    if (path / "config.json").exists():
        return ModelShape.from_config(json.loads((path / "config.json").read_text()), name=str(path))
    key = model.lower().rsplit("/", 1)[-1]
    if key in PLAN_PRESETS:
        return PLAN_PRESETS[key]
    from eval.models import PRESETS

    if model in PRESETS:
        return ModelShape.from_config({**PRESETS.get(model).config, "model_type": "qwen2"}, name=model)
    raise LongmillError(
        f"cannot plan for model {model!r}: give a folder with a config.json or one of "
        f"{', '.join(sorted(PLAN_PRESETS))}, {', '.join(PRESETS.names())}"
    )


@dataclass
class PlanSettings:
    """What a GRPO run puts on each GPU.

    Args:
        prompt_length: tokens of the longest prompt (the stage's bin edge).
        completion_length: max_completion_length.
        per_device_train_batch_size: sequences per GPU per micro-step.
        gradient_accumulation_steps: micro-steps per optimiser step (no memory effect; checked for whole groups).
        num_generations: the GRPO group size.
        steps_per_generation: micro-steps per generation batch (TRL's default: gradient_accumulation_steps).
        num_iterations: optimisation passes over each generation batch.
        num_gpus: training processes (one GPU each).
        sharding: zero3, zero2, zero1 (DeepSpeed), fsdp (FSDP2 with bf16 compute, fp32 shards) or ddp.
        gpu_memory_gib: memory of one GPU.
        gradient_checkpointing: keep only each layer's input and recompute the rest in backward.
        activation_offload: keep those layer inputs in pinned host memory instead (transformers >= 5's
            ``activation_checkpointing_kwargs={"offload": True}``, set in TRL as ``gradient_checkpointing_kwargs``;
            longmill's trainer keeps it through TRL's re-enabling, ``train/checkpointing.py``).
        attn_implementation: flash_attention_2, sdpa or eager.
        padding_free: longmill's padding-free forward (``train/padfree.py``); False plans TRL's padded forward.
        dtype: bf16 (weights and activations; the GPU profile) or fp32.
        device: cuda (TRL's Triton LM head, scoring only completion tokens) or cpu (its torch fallback, which
            scores every position; used to check the planner against CPU measurements).
        rollout: vllm-colocate, vllm-server (vLLM on other GPUs) or hf.
        vllm_gpu_memory_utilization: colocated vLLM's share of each GPU.
        vllm_enable_sleep_mode: vLLM frees its weights and KV cache while the policy trains.
        vllm_tensor_parallel_size: GPUs one colocated vLLM instance spans.
        beta: the KL coefficient; above 0 TRL keeps a reference model (sharded like the policy).
        reduce_bucket_size: DeepSpeed's ``reduce_bucket_size`` (elements; ZeRO stages only).
        sp_size: Ulysses sequence parallelism in the training forward (``train/sequence_parallel.py``): a layer's
            recompute and the LM head's backward hold ``1/sp_size`` of a micro-batch's tokens at a time.
    """

    prompt_length: int
    completion_length: int
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    num_generations: int = 8
    steps_per_generation: int | None = None
    num_iterations: int = 1
    num_gpus: int = 8
    sharding: str = "zero3"
    gpu_memory_gib: float = 80.0
    gradient_checkpointing: bool = True
    activation_offload: bool = False
    attn_implementation: str = "sdpa"
    padding_free: bool = True
    dtype: str = "bf16"
    device: str = "cuda"
    rollout: str = "vllm-colocate"
    vllm_gpu_memory_utilization: float = 0.35
    vllm_enable_sleep_mode: bool = True
    vllm_tensor_parallel_size: int = 1
    beta: float = 0.0
    reduce_bucket_size: int = DEEPSPEED_REDUCE_BUCKET
    sp_size: int = 1

    def __post_init__(self) -> None:
        if self.sharding not in SHARDINGS:
            raise LongmillError(f"unknown sharding {self.sharding!r}; valid: {', '.join(SHARDINGS)}")
        if self.rollout not in ROLLOUTS:
            raise LongmillError(
                f"unknown rollout {self.rollout!r} for planning; valid: {', '.join(ROLLOUTS)}"
            )
        if self.dtype not in DTYPES:
            raise LongmillError(f"unknown dtype {self.dtype!r} for planning; valid: {', '.join(DTYPES)}")
        if self.device not in DEVICES:
            raise LongmillError(f"unknown device {self.device!r} for planning; valid: {', '.join(DEVICES)}")
        if (
            min(self.prompt_length, self.completion_length, self.per_device_train_batch_size, self.num_gpus)
            < 1
        ):
            raise LongmillError(
                "prompt_length, completion_length, per_device_train_batch_size and num_gpus must be >= 1"
            )
        if self.sp_size < 1 or self.num_gpus % self.sp_size:
            raise LongmillError(f"sp_size={self.sp_size} must be >= 1 and divide num_gpus ({self.num_gpus})")
        if self.sp_size > 1 and not self.padding_free:
            raise LongmillError(f"sp_size={self.sp_size} needs the padding-free forward (padding_free)")


@dataclass
class Estimate:
    """Bytes per GPU by component, and the two phases' peaks (see :func:`estimate`).

    The training peak is ``weights + gradients + optimizer + reference_model + gathered_params + reduce_bucket
    + runtime + vllm_training`` plus the activations at the micro-step's highest point: ``activation_checkpoints
    + rope + attention`` (held throughout) plus either ``final_norm + logits`` (the LM head's backward) or
    ``recompute`` (the last layer's recompute and backward), whichever is larger (``peak_phase``).
    """

    weights: float
    gradients: float
    optimizer: float
    reference_model: float
    gathered_params: float
    reduce_bucket: float
    activation_checkpoints: float
    rope: float
    attention: float
    final_norm: float
    logits: float
    recompute: float
    runtime: float
    vllm_training: float
    vllm_generation: float
    weight_sync: float
    training_peak: float
    generation_peak: float
    peak: float
    gpu_memory: float
    peak_phase: str = ""
    attention_path: str = ""
    vllm_kv_capacity_tokens: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.peak <= self.gpu_memory

    @property
    def states(self) -> float:
        """Model states and buffers held all the time (what a micro-step starts from, without runtime or vLLM)."""
        return self.weights + self.gradients + self.optimizer + self.reference_model

    @property
    def head_phase(self) -> float:
        """Activations at the LM head's backward."""
        return self.activation_checkpoints + self.rope + self.attention + self.final_norm + self.logits

    @property
    def layer_phase(self) -> float:
        """Activations at the last decoder layer's recompute and backward."""
        return self.activation_checkpoints + self.rope + self.attention + self.recompute

    def components_gib(self) -> dict[str, float]:
        keys = (
            "weights",
            "gradients",
            "optimizer",
            "reference_model",
            "gathered_params",
            "reduce_bucket",
            "activation_checkpoints",
            "rope",
            "attention",
            "final_norm",
            "logits",
            "recompute",
            "runtime",
            "vllm_training",
            "vllm_generation",
            "weight_sync",
            "training_peak",
            "generation_peak",
            "peak",
            "gpu_memory",
        )
        return {k: getattr(self, k) / GIB for k in keys}


def model_state_bytes(
    n: int, sharding: str, num_gpus: int, dtype: str = "bf16"
) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes per GPU for ``n`` parameters trained with AdamW.

    DeepSpeed ZeRO in bf16 (Rajbhandari et al. 2020, section 3): bf16 weights 2n, bf16 gradients 2n, and fp32
    master weights, momentum and variance 12n; stage 1 shards the 12n, stage 2 also the gradients, stage 3 also
    the weights. FSDP2 with bf16 compute keeps fp32 parameter shards (4n), fp32 gradient shards (4n) and AdamW's
    two fp32 moments (8n), all sharded. DDP (and one process) trains the weights as loaded: torch's AdamW keeps
    its two moments in the parameters' dtype (``zeros_like(param)``), so bf16 holds 2n + 2n + 4n and fp32
    4n + 4n + 8n on every GPU. In fp32 ZeRO needs no master copy: 4n + 4n + 8n, sharded by stage.
    """
    g = num_gpus
    w = DTYPES[dtype]
    if sharding == "ddp":
        return (w * n, w * n, 2 * w * n)
    if sharding == "fsdp":
        return (4 * n / g, 4 * n / g, 8 * n / g)
    opt = (12 if w == 2 else 8) * n
    return {
        "zero1": (w * n, w * n, opt / g),
        "zero2": (w * n, w * n / g, opt / g),
        "zero3": (w * n / g, w * n / g, opt / g),
    }[sharding]


def attention_path(s: PlanSettings) -> str:
    """The attention path the estimate assumes, in words (``train plan`` prints it)."""
    impl = s.attn_implementation
    if impl == "eager":
        return "eager: (T x T) scores and probabilities per layer"
    if impl in FLASH_IMPLEMENTATIONS or impl.startswith("flash_attention"):
        if s.padding_free:
            return f"{impl}: padding-free, rows packed with restarting position_ids (varlen kernel), no mask"
        return f"{impl}: TRL's padded rows, unpadded inside attention from the padding mask (varlen kernel)"
    if s.padding_free:
        return "sdpa: padding-free rows, no mask, is_causal=True, grouped K/V not repeated (flash kernel on CUDA)"
    return (
        "sdpa: TRL's padded rows, a (b, 1, T, T) boolean mask, K/V repeated over the query heads, an additive "
        "mask per call (memory-efficient or math kernel on CUDA)"
    )


def _layer_peak_per_token(shape: ModelShape, a: int, *, padded_sdpa: bool) -> float:
    """Bytes per token one Qwen2 decoder layer holds at its backward's highest point (the MLP's backward),
    recomputed from its checkpointed input, beyond that input (modeling_qwen2.py:229-299, read with PyTorch's
    autograd: what each op saves).

    - input RMSNorm: the fp32 upcast of the input (4h; with fp32 activations the input itself, already held),
      the normalised product and its output in the activation dtype (2 x a h);
    - attention: q and k after RoPE, v, the SDPA output (a q + 2 a kv + a q) and SDPA's log-sum-exp
      (4 bytes x heads); TRL's padded forward repeats K and V over the query heads (``repeat_kv``,
      sdpa_attention.py:118-127), so k and v are a q each;
    - post-attention RMSNorm: the fp32 residual (4h) and again 2 x a h;
    - SwiGLU at its backward, at the larger of two moments: after the product's backward, gate, silu(gate), up
      and the gradients of the product, of silu and of up (6 a I); at the end, the gradient of the gate and the
      two gradients of the MLP's input, from up_proj and gate_proj, before they are summed (a I + 2 a h). The
      gate_proj weight gradient made then (h x I, before it is added to ``.grad``) is :func:`_weight_grad_bytes`.
    """
    h, q, kv, inter = shape.hidden_size, shape.q_dim, shape.kv_dim, shape.intermediate_size
    norm1 = (0 if a == 4 else 4 * h) + 2 * a * h
    norm2 = 4 * h + 2 * a * h
    kv_saved = 2 * a * (q if padded_sdpa else kv)
    attn = 2 * a * q + kv_saved + 4 * shape.num_attention_heads
    return norm1 + attn + norm2 + max(6 * a * inter, a * inter + 2 * a * h)


def _mlp_end_is_peak(shape: ModelShape) -> bool:
    return shape.intermediate_size + 2 * shape.hidden_size > 6 * shape.intermediate_size


def _weight_grad_bytes(shape: ModelShape, w: int) -> float:
    """The gate_proj weight gradient alive at the MLP backward's end (counted only when that moment is the peak)."""
    return shape.hidden_size * shape.intermediate_size * w if _mlp_end_is_peak(shape) else 0.0


def _sp_shape(shape: ModelShape, sp: int) -> ModelShape:
    """The shape whose per-token layer terms equal what Ulysses holds per rank: K/V heads repeated up to
    ``lcm(kv heads, sp)`` (train/sequence_parallel.py), each rank holding all tokens of 1/sp of the heads, which is
    as many bytes as 1/sp of the tokens with every head."""
    if sp <= 1:
        return shape
    from train.sequence_parallel import kv_repeat

    return replace(
        shape,
        num_key_value_heads=shape.num_key_value_heads
        * kv_repeat(shape.num_attention_heads, shape.num_key_value_heads, sp),
    )


def _layer_saved_per_token(shape: ModelShape, a: int, *, padded_sdpa: bool) -> float:
    """Bytes per token one decoder layer keeps from its forward to its backward without checkpointing."""
    h, q, kv, inter = shape.hidden_size, shape.q_dim, shape.kv_dim, shape.intermediate_size
    norms = 2 * (4 * h + 2 * a * h)
    attn = 2 * a * q + 2 * a * (q if padded_sdpa else kv) + 4 * shape.num_attention_heads
    return norms + attn + 4 * a * inter


def estimate(shape: ModelShape, s: PlanSettings) -> Estimate:
    """The expected peak memory per GPU of a GRPO run (TRL 1.16, colocated or server vLLM), by component.

    One micro-step of b = per_device_train_batch_size sequences of T = prompt + completion tokens and C
    completion tokens, activations of a bytes (bf16: 2, fp32: 4), h = hidden_size, L layers, V vocabulary:

    - model states: :func:`model_state_bytes`; with beta > 0 a reference model in the weights' dtype, sharded
      like the weights under ZeRO-3 and FSDP (TRL prepares it with DeepSpeed or FSDP, grpo_trainer.py:1180-1188);
    - gathered parameters (ZeRO-3, FSDP): the parameters of the layer being computed and the one prefetched,
      2 x a x max(layer, embedding) (the LM head is gathered whole for TRL's fused head); DeepSpeed's reduce
      bucket under ZeRO: ``reduce_bucket_size`` gradient elements;
    - held through forward and backward: with gradient checkpointing each layer's input (L x b x T x a h; 0 on
      the GPU when offloaded), without it every layer's saved tensors; RoPE's cos and sin (2 x T x head_dim x a
      per forward); in TRL's padded SDPA forward the (b, 1, T, T) boolean mask (masking_utils.py:517-548);
    - the LM head's backward (TRL's fused head, chunked_logprob.py:393-465) on top of the final RMSNorm's saved
      tensors over all T positions (fp32 upcast, normalised product, output: 4h + 2 a h per token): fp32
      gradients of the head (V x h x 4) and of its input (N x h x 4), the ``min(N, 4096) x 32768`` product buffer,
      and, on CUDA, bf16 copies of both gradients (Triton scores only the N = b x C completion positions); on
      CPU the torch fallback scores N = b x (T - 1) positions and holds 29 bytes per tile element;
    - the last layer's recompute and backward: :func:`_layer_peak_per_token` x T (x b in TRL's batched forward;
      longmill's padding-free rows run one at a time), the gradient flowing in (a h T), the recomputed input
      when offloaded (a h T), and in TRL's padded SDPA forward the additive mask SDPA keeps for backward
      (a x T x T per row);
    - eager attention (not checked): (a + 4) bytes x heads x T x T per layer for its scores and probabilities;
    - vLLM while training: ~1 GiB asleep (level 2), else its whole share; runtime: 2 GiB on CUDA (context, NCCL,
      allocator slack).

    Generation phase (vllm-colocate): model states + runtime + vLLM's share (utilization x GPU memory); during the
    weight sync (sleep mode: weights awake, KV cache not yet), model states + vLLM's bf16 weights (2 n / TP) +
    one gathered parameter.
    """
    n = shape.params
    h, V, L = shape.hidden_size, shape.vocab_size, shape.num_hidden_layers
    b, C = s.per_device_train_batch_size, s.completion_length
    T = s.prompt_length + s.completion_length
    a = DTYPES[s.dtype]
    cuda = s.device == "cuda"
    impl = s.attn_implementation
    flash = impl in FLASH_IMPLEMENTATIONS or impl.startswith("flash_attention")
    padded_sdpa = impl == "sdpa" and not s.padding_free
    # rows that are in flight together: TRL batches a micro-batch; longmill's padding-free rows go one by one
    # (packed flash rows are one sequence of b x T tokens)
    rows_at_once = 1 if s.padding_free and not flash else b
    tokens_at_once = b * T if s.padding_free and flash else rows_at_once * T
    sp = s.sp_size
    if sp > 1:  # the group runs one member's micro-batch at a time, packed, 1/sp of it on each rank
        tokens_at_once = -(-b * T // sp)

    weights, grads, optim = model_state_bytes(n, s.sharding, s.num_gpus, s.dtype)
    ref = 0.0
    if s.beta > 0:
        ref = a * n / (s.num_gpus if s.sharding in ("zero3", "fsdp") else 1)
    gathered = (
        a * 2 * max(shape.layer_params, shape.embedding_params) if s.sharding in ("zero3", "fsdp") else 0.0
    )
    bucket = float(s.reduce_bucket_size * a) if s.sharding.startswith("zero") else 0.0

    # held through forward and backward
    rope = b * 2 * T * shape.head_width * a
    attention = b * T * T if padded_sdpa else 0.0
    if s.gradient_checkpointing:
        checkpoints = 0.0 if s.activation_offload else L * b * T * h * a
    else:
        checkpoints = L * b * T * _layer_saved_per_token(shape, a, padded_sdpa=padded_sdpa)

    # the LM head's backward, on the final norm's saved tensors
    final_norm = b * T * (4 * h + 2 * a * h)
    n_row = C if cuda else T - 1  # positions the head scores per row
    N = n_row * (b if tokens_at_once > T else 1)  # in the backward under way
    if sp > 1:  # one member's micro-batch at a time, 1/sp of its positions on this rank
        N = -(-b * n_row // sp)
    n_tile, v_tile = min(N, TRL_TOKEN_TILE), min(V, TRL_VOCAB_TILE)
    head_grads = (N + V) * h * 4
    buffer = n_tile * TRL_VOCAB_TILE * a
    if cuda:  # Triton folds tiles in place; the fp32 gradients are copied to bf16 on return
        head_work = (N + V) * h * a if a < 4 else 0.0
        # every row's compact copy of its completion's hidden states, log_z and entropy (held until its backward)
        head_saved = b * n_row * (h * a + 16)
    else:  # the head reads a view of one row's hidden states, a copy of a batch's
        head_work = max(n_tile * v_tile * TORCH_TILE_BYTES, (N + V) * h * a if a < 4 else 0.0)
        head_saved = b * n_row * 16 + (N * h * a if N > n_row and sp == 1 else 0.0)
    logits = head_grads + buffer + head_work + head_saved

    # the last layer's recompute and backward
    if s.gradient_checkpointing:
        layer = _layer_peak_per_token(_sp_shape(shape, sp), a, padded_sdpa=padded_sdpa) * tokens_at_once
        layer += tokens_at_once * h * a * (2 if s.activation_offload else 1) + _weight_grad_bytes(shape, a)
    else:  # every layer's saved tensors are held already; the MLP's backward adds two gradients beyond them
        layer = tokens_at_once * (2 * a * shape.intermediate_size + a * h)
    if padded_sdpa:
        layer += rows_at_once * T * T * a
    if impl == "eager":
        scores = (a + 4) * shape.num_attention_heads * rows_at_once * T * T
        layer += scores if s.gradient_checkpointing else L * scores
    recompute = layer

    runtime = RUNTIME_GIB * GIB if cuda else 0.0
    states = weights + grads + optim + ref
    mem = s.gpu_memory_gib * GIB
    vllm_share = s.vllm_gpu_memory_utilization * mem if s.rollout == "vllm-colocate" else 0.0
    if s.rollout != "vllm-colocate":
        vllm_training = 0.0
    elif s.vllm_enable_sleep_mode:
        vllm_training = VLLM_ASLEEP_GIB * GIB
    else:
        vllm_training = vllm_share
    held = checkpoints + rope + attention
    head_phase, layer_phase = held + final_norm + logits, held + recompute
    peak_phase = "LM head backward" if head_phase >= layer_phase else "last layer backward"
    training_peak = states + gathered + bucket + runtime + vllm_training + max(head_phase, layer_phase)
    notes: list[str] = []
    kv_capacity = 0.0
    if s.rollout == "vllm-colocate":
        vllm_weights = 2 * n / s.vllm_tensor_parallel_size
        one_param = 2 * max(shape.embedding_params, h * shape.intermediate_size)
        weight_sync = (
            states + runtime + (vllm_weights if s.vllm_enable_sleep_mode else vllm_share) + one_param
        )
        generation_peak = max(states + runtime + vllm_share, weight_sync)
        kv_room = vllm_share - vllm_weights - VLLM_WORKSPACE_GIB * GIB
        kv_capacity = max(kv_room, 0.0) * s.vllm_tensor_parallel_size / shape.kv_bytes_per_token
        if kv_capacity < T:
            notes.append(
                f"vLLM's share ({s.vllm_gpu_memory_utilization:.2f} x {s.gpu_memory_gib:g} GiB) leaves KV cache "
                f"for {int(kv_capacity):,} tokens, less than one sequence of {T:,}: raise "
                f"vllm_gpu_memory_utilization or vllm_tensor_parallel_size"
            )
    else:
        weight_sync = 0.0
        generation_peak = states + runtime
        if s.rollout == "hf":
            notes.append("hf rollouts: HF generate's KV cache is not modelled; use vLLM on GPUs")
    if not s.gradient_checkpointing and T >= 8192:
        notes.append("gradient_checkpointing is off: every layer's activations stay in memory")
    if impl == "eager":
        notes.append(
            "eager attention materialises T x T scores; use sdpa (padding-free) or flash_attention_2"
        )
    if padded_sdpa:
        notes.append(
            f"TRL's padded forward with SDPA holds a {T:,} x {T:,} mask (plus an additive copy per layer call) and "
            "repeats K/V: set padding_free (longmill's default)"
        )
    peak = max(training_peak, generation_peak)
    return Estimate(
        weights,
        grads,
        optim,
        ref,
        gathered,
        bucket,
        checkpoints,
        rope,
        attention,
        final_norm,
        logits,
        recompute,
        runtime,
        vllm_training,
        vllm_share,
        weight_sync,
        training_peak,
        generation_peak,
        peak,
        mem,
        peak_phase,
        attention_path(s),
        kv_capacity,
        notes,
    )


def largest_fitting(
    shape: ModelShape, s: PlanSettings, name: str, lo: int = 1, hi: int = 1 << 24, step: int = 1
) -> int | None:
    """The largest value of setting ``name`` (an int, multiple of ``step``) that fits; None if even ``lo`` does not."""

    def fits(v: int) -> bool:
        return estimate(shape, replace(s, **{name: v * step})).fits

    lo_units, hi_units = max(1, lo // step), hi // step
    if not fits(lo_units):
        return None
    while lo_units < hi_units:  # memory grows with each of these settings, so bisection finds the edge
        mid = (lo_units + hi_units + 1) // 2
        if fits(mid):
            lo_units = mid
        else:
            hi_units = mid - 1
    return lo_units * step


def sp_sizes(shape: ModelShape, num_gpus: int) -> list[int]:
    """The sequence-parallel sizes a run of ``num_gpus`` processes can use with this model: divisors of the
    processes that also divide the attention heads (Ulysses splits them), smallest first."""
    return [d for d in range(1, num_gpus + 1) if num_gpus % d == 0 and shape.num_attention_heads % d == 0]


def smallest_sp_size(shape: ModelShape, s: PlanSettings) -> int | None:
    """The smallest ``sp_size`` at which ``s`` fits (None when none does, or the forward is not padding-free)."""
    if not s.padding_free:
        return 1 if estimate(shape, replace(s, sp_size=1)).fits else None
    for sp in sp_sizes(shape, s.num_gpus):
        if estimate(shape, replace(s, sp_size=sp)).fits:
            return sp
    return None


def batch_warnings(s: PlanSettings) -> list[str]:
    """TRL's batch rules and what clip-higher needs, as warnings."""
    out = []
    spg = s.steps_per_generation or s.gradient_accumulation_steps
    gen_batch = s.per_device_train_batch_size * s.num_gpus * spg
    if gen_batch % s.num_generations:
        out.append(
            f"the generation batch ({s.per_device_train_batch_size} x {s.num_gpus} GPUs x steps_per_generation "
            f"{spg} = {gen_batch}) is not a multiple of num_generations ({s.num_generations}); TRL refuses it"
        )
    step_batch = s.per_device_train_batch_size * s.num_gpus * s.gradient_accumulation_steps
    if step_batch % s.num_generations:
        out.append(
            f"an optimiser step holds {step_batch} completions, not whole groups of {s.num_generations}"
        )
    if spg <= s.gradient_accumulation_steps and s.num_iterations <= 1:
        out.append(
            "one optimiser step per generation batch (steps_per_generation <= gradient_accumulation_steps, "
            "num_iterations 1): the importance ratio stays 1 and clip-higher never acts"
        )
    return out


def plan_report(shape: ModelShape, s: PlanSettings) -> dict[str, Any]:
    """The estimate, the largest prompt length and batch that fit, and the warnings, as one JSON-able dict."""
    est = estimate(shape, s)
    return {
        "model": shape.name,
        "params": shape.params,
        "settings": asdict(s),
        "gib": {k: round(v, 2) for k, v in est.components_gib().items()},
        "fits": est.fits,
        "largest_prompt_length": largest_fitting(shape, s, "prompt_length", lo=1000, hi=4_000_000, step=1000),
        "largest_per_device_train_batch_size": largest_fitting(
            shape, s, "per_device_train_batch_size", hi=4096
        ),
        "smallest_sp_size": smallest_sp_size(shape, s),
        "vllm_kv_capacity_tokens": int(est.vllm_kv_capacity_tokens),
        "attention_path": est.attention_path,
        "peak_phase": est.peak_phase,
        "warnings": est.notes + batch_warnings(s),
    }


# -- the check before launching ----------------------------------------------------------------------------


def _launch_sharding() -> str:
    """The sharding ``accelerate launch`` set up for this process (its environment variables), else ddp."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return {"1": "zero1", "2": "zero2", "3": "zero3"}.get(
            os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3"), "ddp"
        )
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    return "ddp"


def _cuda_memory_gib() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / GIB
    except Exception:  # noqa: BLE001 - planning must never stop a run
        return None
    return None


def config_values(config: Any) -> dict[str, Any]:
    """The keys the plan reads, from a GRPO config object (longmill's GRPOPhaseConfig, or TRL's GRPOConfig), with
    ``rollout: auto`` resolved as the running process resolves it."""
    values = {k: getattr(config, k) for k in PLAN_INPUT_KEYS if getattr(config, k, None) is not None}
    if values.get("rollout") == "auto" and callable(getattr(config, "resolved_rollout", None)):
        values["rollout"] = config.resolved_rollout()
    return values


def settings_from_config(
    config: Any,
    prompt_length: int,
    *,
    num_gpus: int | None = None,
    sharding: str | None = None,
    gpu_memory_gib: float | None = None,
) -> PlanSettings:
    """PlanSettings for a GRPO config object: :func:`plan_settings` on :func:`config_values`."""
    return plan_settings(
        prompt_length,
        config_values(config),
        num_gpus=num_gpus,
        sharding=sharding,
        gpu_memory_gib=gpu_memory_gib,
    )


def check_plan(
    config: Any,
    prompt_lengths: list[int] | None = None,
    *,
    curriculum: str | Path | None = None,
    gpu_memory_gib: float | None = None,
    num_gpus: int | None = None,
    sharding: str | None = None,
) -> list[str]:
    """Warnings for a GRPO run that is not expected to fit its GPUs (empty when it fits or cannot be planned).

    Called by ``python -m train grpo`` before it launches. GPU memory, the number of processes and the sharding
    come from the running process (CUDA, ``WORLD_SIZE``, ``accelerate launch``'s environment) unless given;
    without a CUDA GPU and no ``gpu_memory_gib`` there is nothing to check. Prompt lengths come from
    ``prompt_lengths`` or the curriculum's manifest (each stage's ``max_prompt_length``).

    Args:
        config: a GRPO config (longmill's GRPOPhaseConfig or TRL's GRPOConfig).
        prompt_lengths: the stages' longest prompts.
        curriculum: a curriculum folder, read when ``prompt_lengths`` is None.
        gpu_memory_gib, num_gpus, sharding: override what is detected.
    """
    memory = gpu_memory_gib or _cuda_memory_gib()
    if memory is None:
        return []
    if prompt_lengths is None and curriculum is not None:
        from longmill.manifest import load_manifest

        prompt_lengths = [int(st["max_prompt_length"]) for st in load_manifest(curriculum)["stages"]]
    model = str(getattr(config, "model", None) or getattr(config, "model_name_or_path", "") or "")
    try:
        shape = resolve_shape(model)
    except LongmillError as e:
        log.info("memory plan skipped: %s", e)
        return []
    warnings: list[str] = []
    for length in sorted(set(prompt_lengths or [])):
        s = settings_from_config(config, length, num_gpus=num_gpus, sharding=sharding, gpu_memory_gib=memory)
        est = estimate(shape, s)
        if not est.fits:
            best = largest_fitting(shape, s, "prompt_length", lo=1000, hi=4_000_000, step=1000)
            warnings.append(
                f"memory plan: prompts of {length:,} tokens + {s.completion_length:,} completion tokens need about "
                f"{est.peak / GIB:.1f} GiB per GPU (training {est.training_peak / GIB:.1f}, generation "
                f"{est.generation_peak / GIB:.1f}) but a GPU has {memory:.1f} GiB; "
                + (
                    f"the longest prompt that fits with these settings is {best:,} tokens"
                    if best
                    else "not even 1,000-token prompts fit with these settings"
                )
                + ". See `python -m train plan` for the breakdown "
                "(per_device_train_batch_size 1, gradient_checkpointing, vllm_enable_sleep_mode, ZeRO-3/FSDP)."
            )
        warnings += [f"memory plan at {length:,} tokens: {n}" for n in est.notes]
    if prompt_lengths:
        s = settings_from_config(
            config, max(prompt_lengths), num_gpus=num_gpus, sharding=sharding, gpu_memory_gib=memory
        )
        warnings += [f"batch plan: {w}" for w in batch_warnings(s)]
    return warnings


PLAN_KEYS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "steps_per_generation",
    "num_iterations",
    "gradient_checkpointing",
    "attn_implementation",
    "rollout",
    "vllm_gpu_memory_utilization",
    "vllm_enable_sleep_mode",
    "vllm_tensor_parallel_size",
    "beta",
    "activation_offload",
    "padding_free",
    "sp_size",
)


# What the plan reads from a training config: PLAN_KEYS, and the keys it derives settings from.
PLAN_INPUT_KEYS = (
    *PLAN_KEYS,
    "max_completion_length",
    "use_vllm",
    "vllm_mode",
    "bf16",
    "activation_checkpointing",
    "gradient_checkpointing_kwargs",
    "activation_checkpointing_kwargs",
    "model_init_kwargs",
)


def training_defaults() -> dict[str, Any]:
    """``train grpo``'s defaults (:class:`train.config.GRPOPhaseConfig`, which extends TRL's GRPOConfig) for the
    keys the plan reads: the one set of defaults every route into the plan uses."""
    import dataclasses

    from train.config import GRPOPhaseConfig

    out: dict[str, Any] = {}
    for f in dataclasses.fields(GRPOPhaseConfig):
        if f.name in PLAN_INPUT_KEYS:
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
    return out


def read_plan_yaml(path: str | Path | None) -> dict[str, Any]:
    """The keys of a GRPO YAML config, or of a profile's ``rl`` section and ``model``, that the plan uses (others
    are ignored here; ``train grpo`` checks them). Keys the file leaves out are not filled in here:
    :func:`plan_settings` gives them ``train grpo``'s defaults."""
    if not path:
        return {}
    from train.config import read_yaml_mapping

    data = read_yaml_mapping(path)
    if isinstance(data.get("rl"), dict):  # a profile (params.yaml layout): its rl section and its model
        data = {**data["rl"], **({"model": data["model"]} if data.get("model") else {})}
    return {k: v for k, v in data.items() if k in (*PLAN_INPUT_KEYS, "model") and v is not None}


def profile_lengths(path: str | Path | None) -> list[int] | None:
    """A profile's stage lengths (``curriculum.bins``), or None for a GRPO YAML or no file."""
    if not path:
        return None
    from train.config import read_yaml_mapping

    data = read_yaml_mapping(path)
    bins = (data.get("curriculum") or {}).get("bins") if isinstance(data.get("rl"), dict) else None
    if bins is None:
        return None
    from longmill.lengths import parse_lengths

    return list(parse_lengths(bins if isinstance(bins, str) else ",".join(str(b) for b in bins)))


def plan_settings(
    prompt_length: int,
    values: dict[str, Any],
    *,
    num_gpus: int | None = None,
    sharding: str | None = None,
    gpu_memory_gib: float | None = None,
) -> PlanSettings:
    """The one route into :class:`PlanSettings`, for ``train plan``, ``train grpo``'s check before it launches and
    the verl export.

    Args:
        prompt_length: the stage's longest prompt.
        values: training-config keys (:data:`PLAN_INPUT_KEYS`, ``activation_offload``) from a YAML file, flags or
            a config object (:func:`config_values`); a key left out takes ``train grpo``'s default
            (:func:`training_defaults`). ``rollout: auto`` plans vLLM (``vllm_mode``), the GPU's rollout.
        num_gpus, sharding, gpu_memory_gib: the launch; by default the running process's (``WORLD_SIZE``,
            ``accelerate launch``'s DeepSpeed/FSDP environment) and 80 GiB.
    """
    v = {**training_defaults(), **{k: x for k, x in values.items() if x is not None}}
    rollout = v.get("rollout") or "auto"
    if values.get("use_vllm") is False and rollout == "auto":
        rollout = "hf"
    elif rollout == "auto":
        rollout = f"vllm-{v.get('vllm_mode') or 'colocate'}"
    attn = (
        v.get("attn_implementation")
        or (v.get("model_init_kwargs") or {}).get("attn_implementation")
        or "sdpa"
    )
    ckpt_kwargs = v.get("activation_checkpointing_kwargs") or v.get("gradient_checkpointing_kwargs") or {}
    offload = v.get("activation_offload")
    if offload is None:
        offload = isinstance(ckpt_kwargs, dict) and bool(ckpt_kwargs.get("offload", False))
    checkpointing = v.get("activation_checkpointing")
    return PlanSettings(
        prompt_length=prompt_length,
        completion_length=int(v["max_completion_length"]),
        per_device_train_batch_size=int(v["per_device_train_batch_size"]),
        gradient_accumulation_steps=int(v["gradient_accumulation_steps"]),
        num_generations=int(v["num_generations"]),
        steps_per_generation=v.get("steps_per_generation"),
        num_iterations=int(v["num_iterations"]),
        num_gpus=num_gpus or int(os.environ.get("WORLD_SIZE", "1")),
        sharding=sharding or _launch_sharding(),
        gpu_memory_gib=gpu_memory_gib or 80.0,
        gradient_checkpointing=bool(v["gradient_checkpointing"] if checkpointing is None else checkpointing),
        activation_offload=bool(offload),
        attn_implementation=str(attn),
        padding_free=bool(v["padding_free"]),
        dtype="fp32" if v.get("bf16") is False else "bf16",
        rollout=rollout,
        vllm_gpu_memory_utilization=float(v["vllm_gpu_memory_utilization"]),
        vllm_enable_sleep_mode=bool(v["vllm_enable_sleep_mode"]),
        vllm_tensor_parallel_size=int(v["vllm_tensor_parallel_size"]),
        beta=float(v["beta"]),
        sp_size=int(v["sp_size"]),
    )


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of one :func:`plan_report` (for the CLI)."""
    g, s = report["gib"], report["settings"]
    rows = [
        ("weights", g["weights"]),
        ("gradients", g["gradients"]),
        ("optimizer (AdamW)", g["optimizer"]),
        ("reference model", g["reference_model"]),
        ("gathered parameters", g["gathered_params"]),
        ("DeepSpeed reduce bucket", g["reduce_bucket"]),
        ("runtime (CUDA, NCCL)", g["runtime"]),
        ("vLLM while training", g["vllm_training"]),
        ("activation checkpoints", g["activation_checkpoints"]),
        ("RoPE cos/sin", g["rope"]),
        ("attention mask (held)", g["attention"]),
    ]
    head = [("final norm (all positions)", g["final_norm"]), ("LM head (TRL chunked)", g["logits"])]
    layer = [("one layer recomputed", g["recompute"])]
    at_head = report.get("peak_phase", "").startswith("LM head")
    lines = [
        f"{report['model']} ({report['params'] / 1e9:.2f}B parameters), prompt {s['prompt_length']:,} + "
        f"completion {s['completion_length']:,} tokens, {s['per_device_train_batch_size']} per GPU, "
        f"{s['num_gpus']} GPUs, {s['sharding']}, {s['dtype']}, {s['rollout']}"
        + (
            f" (utilization {s['vllm_gpu_memory_utilization']}, sleep {'on' if s['vllm_enable_sleep_mode'] else 'off'})"
            if s["rollout"] == "vllm-colocate"
            else ""
        ),
        f"  attention path: {report.get('attention_path', '')}",
    ]
    lines += [f"  {k:<28} {v:8.2f} GiB" for k, v in rows]
    lines += [f"  {'at the LM head backward:':<28}" + ("  (the peak)" if at_head else "")]
    lines += [f"    {k:<26} {v:8.2f} GiB" for k, v in head]
    lines += [f"  {'or at the last layer backward:':<28}" + ("" if at_head else "  (the peak)")]
    lines += [f"    {k:<26} {v:8.2f} GiB" for k, v in layer]
    lines += [
        f"  {'= training peak':<28} {g['training_peak']:8.2f} GiB",
        f"  {'generation peak':<28} {g['generation_peak']:8.2f} GiB  (vLLM share {g['vllm_generation']:.2f}, "
        f"weight sync {g['weight_sync']:.2f})",
        f"  {'PEAK per GPU':<28} {g['peak']:8.2f} GiB of {g['gpu_memory']:.2f}: "
        + ("fits" if report["fits"] else "DOES NOT FIT"),
        f"  largest prompt that fits: {report['largest_prompt_length'] or 0:,} tokens; largest "
        f"per_device_train_batch_size at this length: {report['largest_per_device_train_batch_size'] or 0}",
        "  smallest sp_size that fits: "
        + (str(report["smallest_sp_size"]) if report.get("smallest_sp_size") else "none")
        + f" (this plan: sp_size {s.get('sp_size', 1)})",
    ]
    if report["settings"]["rollout"] == "vllm-colocate":
        lines.append(f"  vLLM KV cache room: {report['vllm_kv_capacity_tokens']:,} tokens")
    lines += [f"  warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


__all__ = [
    "PLAN_PRESETS",
    "Estimate",
    "ModelShape",
    "PlanSettings",
    "batch_warnings",
    "check_plan",
    "estimate",
    "format_report",
    "largest_fitting",
    "plan_settings",
    "read_plan_yaml",
    "model_state_bytes",
    "plan_report",
    "profile_lengths",
    "resolve_shape",
    "settings_from_config",
    "config_values",
    "training_defaults",
    "smallest_sp_size",
    "sp_sizes",
]
