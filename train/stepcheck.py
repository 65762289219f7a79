"""One real GRPO step at a chosen shape, on any device: its attention calls and its peak memory.

The padding-free forward (:mod:`train.padfree`), the memory planner (:mod:`train.plan`) and the offload guard
(:mod:`train.checkpointing`) are checked by running longmill's trainer (TRL's GRPOTrainer underneath) on a small
random Qwen2-shaped model whose rollouts are scripted: :class:`ScriptedRollout` is a TRL ``rollout_func``
that returns prompts and completions of given token lengths (completions end in EOS unless they are truncated
at ``max_completion_length``), so everything after generation is TRL's own: padding (prompts left,
completions right), masking truncated completions, the scoring pass, splitting the generation batch into
micro-steps, the loss and its backward.

- :class:`AttentionProbe` records every attention call (the transformers attention interface and PyTorch's
  ``scaled_dot_product_attention``): the mask it got, ``is_causal``, whether K/V were repeated.
- :func:`measure_micro_steps` records the peak bytes the allocator holds during chosen micro-steps, from the
  PyTorch profiler's memory events (every allocation and free of PyTorch's CPU or CUDA allocator, with the
  allocator's running total), not from the process's RSS. On CPU, activation offload
  (``save_on_cpu``) is measured by keeping the offloaded copies outside PyTorch's allocator, as host memory
  is outside a GPU's (see :func:`host_offload`).

Used by ``benchmarks/plan_check.py``, ``benchmarks/grpo_step_bench.py``, ``benchmarks/gpu_check.sh`` and the
tests.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

#: Token ids the scripted tokenizer uses for padding and EOS (valid in any vocabulary of 3 tokens or more).
PAD_ID, EOS_ID = 0, 1
MARK = "longmill::micro_step::"


# -- the model and tokenizer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinyShape:
    """A Qwen2-shaped model (config.json numbers); small defaults for CPU checks.

    Args:
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
            vocab_size, tie_word_embeddings: as in config.json.
    """

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 4096
    tie_word_embeddings: bool = False

    def config(self, attn: str = "sdpa") -> Any:
        from transformers import Qwen2Config

        return Qwen2Config(
            **{k: getattr(self, k) for k in self.__dataclass_fields__},
            max_position_embeddings=131_072,
            rope_theta=1_000_000.0,
            attn_implementation=attn,
            use_cache=False,
            bos_token_id=PAD_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        )

    def plan_shape(self, name: str = "tiny") -> Any:
        from train.plan import ModelShape

        return ModelShape(
            name,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.vocab_size,
            self.tie_word_embeddings,
            131_072,
        )


def scripted_tokenizer() -> Any:
    """The Qwen2.5 tokenizer (offline, from the tiny-qwen2 preset) with ``!`` (id 0) as padding and ``"`` (id 1)
    as EOS, so that a model of any vocabulary size embeds them."""
    from transformers import AutoTokenizer

    from eval.models import materialize_preset

    tok = AutoTokenizer.from_pretrained(str(materialize_preset("tiny-qwen2")))
    tok.pad_token, tok.eos_token = "!", '"'
    assert (tok.pad_token_id, tok.eos_token_id) == (PAD_ID, EOS_ID)
    tok.padding_side = "left"
    return tok


def write_model(
    shape: TinyShape,
    folder: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    attn: str = "sdpa",
    seed: int = 0,
) -> Path:
    """A randomly initialised model of ``shape`` saved to ``folder`` with its tokenizer (TRL loads the reference
    model from that path)."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(shape.config(attn), dtype=dtype)
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = PAD_ID
    model.save_pretrained(str(folder))
    scripted_tokenizer().save_pretrained(str(folder))
    return folder


# -- scripted rollouts -------------------------------------------------------------------------------------


class ScriptedRollout:
    """A TRL ``rollout_func``: prompts and completions of given token lengths, random tokens, seeded.

    The generation batch TRL passes holds each prompt ``num_generations`` times in a row; group ``g`` (counted
    over the whole run) gets ``prompt_lengths[g % len]`` prompt tokens, and its completion ``j`` gets
    ``completion_lengths[j % len]`` tokens. A completion of ``max_completion_length`` tokens is truncated (no
    EOS; TRL masks it out with ``mask_truncated_completions``); a shorter one ends in EOS.

    Args:
        prompt_lengths: prompt tokens per group, cycled.
        completion_lengths: completion tokens per completion of a group, cycled.
        max_completion_length: the trainer's ``max_completion_length``.
        vocab_size: tokens are drawn from ``[2, vocab_size)`` (0 pads, 1 ends).
        num_generations: the group size.
        seed: the seed.
    """

    __name__ = "scripted_rollout"

    def __init__(
        self,
        prompt_lengths: Sequence[int],
        completion_lengths: Sequence[int],
        max_completion_length: int,
        vocab_size: int,
        num_generations: int,
        seed: int = 0,
    ):
        if max(completion_lengths) > max_completion_length:
            raise ValueError("a completion is longer than max_completion_length")
        self.prompt_lengths = list(prompt_lengths)
        self.completion_lengths = list(completion_lengths)
        self.max_completion_length = max_completion_length
        self.vocab_size = vocab_size
        self.num_generations = num_generations
        self.seed = seed
        self.groups = 0
        self.calls = 0

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        g = self.num_generations
        if len(prompts) % g:
            raise ValueError(f"{len(prompts)} prompts is not a whole number of groups of {g}")
        rng = np.random.default_rng([self.seed, self.calls])
        self.calls += 1
        prompt_ids, completion_ids, logprobs = [], [], []
        for _ in range(len(prompts) // g):
            p = self.prompt_lengths[self.groups % len(self.prompt_lengths)]
            self.groups += 1
            ids = rng.integers(2, self.vocab_size, p).tolist()
            for j in range(g):
                c = self.completion_lengths[j % len(self.completion_lengths)]
                comp = rng.integers(2, self.vocab_size, c).tolist()
                if c < self.max_completion_length:
                    comp[-1] = EOS_ID
                prompt_ids.append(list(ids))
                completion_ids.append(comp)
                logprobs.append([0.0] * c)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}


class AlternatingReward:
    """A reward that differs within every group (so no group lacks signal): 0, 1, 0, 1, ... over the batch."""

    __name__ = "alternating_reward"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        return [float(i % 2) for i in range(len(completions))]


# -- the trainer ------------------------------------------------------------------------------------------


@dataclass
class StepSettings:
    """What one scripted GRPO run looks like.

    Args:
        prompt_lengths, completion_lengths: see :class:`ScriptedRollout`.
        max_completion_length: the longest completion (a completion this long is truncated).
        num_generations: the group size.
        per_device_train_batch_size: rows per micro-step.
        gradient_accumulation_steps, steps_per_generation, max_steps: TRL's.
        gradient_checkpointing: checkpoint every decoder layer.
        activation_offload: ``gradient_checkpointing_kwargs={"offload": True}``.
        padding_free: longmill's padding-free forward (False: TRL's padded forward).
        beta: KL coefficient (above 0 TRL keeps a reference model).
        bf16: train in bfloat16 (weights loaded in bf16, autocast).
        extra: more GRPOConfig fields.
    """

    prompt_lengths: Sequence[int] = (48, 40, 56, 44)
    completion_lengths: Sequence[int] = (16, 5, 9, 16)
    max_completion_length: int = 16
    num_generations: int = 4
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 2
    steps_per_generation: int | None = None
    max_steps: int = 1
    gradient_checkpointing: bool = True
    activation_offload: bool = False
    padding_free: bool = True
    beta: float = 0.0
    bf16: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def two_groups(cls, prompt: int, completion: int, **kw: Any) -> StepSettings:
        """The planner check's micro-step: two groups of two per generation batch, one row per micro-step. The
        two prompts differ (left padding: ``prompt`` and a tenth less), so do the completions (right padding:
        ``completion`` and a quarter less); none reaches the limit, so every row is scored. Two optimiser
        steps of two micro-steps; ``kw`` sets any other field."""
        return cls(
            prompt_lengths=(prompt, prompt - prompt // 10),
            completion_lengths=(completion, completion - completion // 4),
            max_completion_length=completion + 1,
            num_generations=2,
            per_device_train_batch_size=1,
            gradient_accumulation_steps=2,
            steps_per_generation=4,
            max_steps=2,
            **kw,
        )


def build_model(
    shape: TinyShape, *, dtype: torch.dtype = torch.bfloat16, device: str = "cuda", seed: int = 0
) -> Any:
    """A randomly initialised model of ``shape`` built in memory on ``device`` (no folder: for large shapes)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(shape.config(), dtype=dtype)
    model.generation_config.eos_token_id = EOS_ID
    model.generation_config.pad_token_id = PAD_ID
    return model


def make_trainer(
    model_dir: str | Path | Any,
    s: StepSettings,
    out_dir: str | Path,
    *,
    rollout: Callable | None = None,
    reward: Callable | None = None,
    dataset_rows: int = 64,
    **trainer_kwargs: Any,
) -> Any:
    """longmill's GRPO trainer (:class:`train.dapo.DynamicSamplingGRPOTrainer`) on ``model_dir`` (a folder, or a
    model built by :func:`build_model`) with scripted rollouts (``rollout``, default :class:`ScriptedRollout`)."""
    from datasets import Dataset

    from eval.models import load_causal_lm
    from train.config import GRPOPhaseConfig
    from train.dapo import DynamicSamplingGRPOTrainer

    dtype = "bfloat16" if s.bf16 else "float32"
    if isinstance(model_dir, str | Path):
        model, tok = load_causal_lm(str(model_dir), dtype=dtype, device="auto", attn_implementation="sdpa")
        tok.pad_token, tok.eos_token = "!", '"'
    else:
        model, tok, model_dir = model_dir, scripted_tokenizer(), "in-memory"
    spg = s.steps_per_generation or s.gradient_accumulation_steps
    kw: dict[str, Any] = dict(
        output_dir=str(out_dir),
        model=str(model_dir),
        rollout="hf",
        per_device_train_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        steps_per_generation=spg,
        num_generations=s.num_generations,
        max_completion_length=s.max_completion_length,
        max_steps=s.max_steps,
        learning_rate=1e-4,
        beta=s.beta,
        gradient_checkpointing=s.gradient_checkpointing,
        gradient_checkpointing_kwargs={
            "use_reentrant": False,
            **({"offload": True} if s.activation_offload else {}),
        },
        padding_free=s.padding_free,
        bf16=s.bf16,
        use_cpu=not torch.cuda.is_available(),
        dynamic_sampling_rounds=0,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        seed=0,
        reward_funcs=["hybrid_qa"],
        disable_tqdm=True,
    )
    kw.update(s.extra)
    args = GRPOPhaseConfig(**kw)
    dataset = Dataset.from_dict(
        {
            "prompt": [f"prompt {i}" for i in range(dataset_rows)],
            "uid": [f"u{i}" for i in range(dataset_rows)],
        }
    )
    rollout = rollout or ScriptedRollout(
        s.prompt_lengths,
        s.completion_lengths,
        s.max_completion_length,
        model.config.vocab_size,
        s.num_generations,
    )
    return DynamicSamplingGRPOTrainer(
        model=model,
        reward_funcs=[reward or AlternatingReward()],
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        rollout_func=rollout,
        **{
            "dynamic_sampling_rounds": args.dynamic_sampling_rounds,
            "dynamic_sampling_metric": args.dynamic_sampling_metric,
            **trainer_kwargs,
        },
    )


# -- probes -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionCall:
    """One attention call: ``kind`` is ``interface`` (transformers' attention function) or ``sdpa`` (PyTorch's)."""

    kind: str
    implementation: str
    query_shape: tuple[int, ...]
    key_shape: tuple[int, ...]
    mask_shape: tuple[int, ...] | None
    mask_dtype: str | None
    is_causal: bool | None
    enable_gqa: bool | None
    grad: bool
    kernel: str | None = None

    @property
    def square_mask(self) -> bool:
        """A mask over (queries x keys) of the whole sequence: the T x T tensor padding-free avoids."""
        return (
            self.mask_shape is not None
            and len(self.mask_shape) >= 2
            and self.mask_shape[-1] > 1
            and self.mask_shape[-2] > 1
        )


class AttentionProbe:
    """Records every attention call while active (wraps transformers' attention interface and PyTorch's SDPA)."""

    def __init__(self) -> None:
        self.calls: list[AttentionCall] = []

    @contextlib.contextmanager
    def __call__(self) -> Iterator[AttentionProbe]:
        import torch.nn.functional as F
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        sdpa = F.scaled_dot_product_attention
        originals = dict(ALL_ATTENTION_FUNCTIONS._global_mapping)

        def shape(x: Any) -> tuple[int, ...] | None:
            return tuple(x.shape) if isinstance(x, torch.Tensor) else None

        def probed_sdpa(
            q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
        ):
            kernel = sdpa_kernel(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
            self.calls.append(
                AttentionCall(
                    "sdpa",
                    "torch",
                    tuple(q.shape),
                    tuple(k.shape),
                    shape(attn_mask),
                    str(attn_mask.dtype) if isinstance(attn_mask, torch.Tensor) else None,
                    bool(is_causal),
                    bool(enable_gqa),
                    torch.is_grad_enabled(),
                    kernel,
                )
            )
            return sdpa(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                scale=scale,
                enable_gqa=enable_gqa,
            )

        def wrap(name: str, fn: Callable) -> Callable:
            def probed(module, query, key, value, attention_mask, *args, **kwargs):
                self.calls.append(
                    AttentionCall(
                        "interface",
                        name,
                        tuple(query.shape),
                        tuple(key.shape),
                        shape(attention_mask),
                        str(attention_mask.dtype) if isinstance(attention_mask, torch.Tensor) else None,
                        kwargs.get("is_causal"),
                        None,
                        torch.is_grad_enabled(),
                    )
                )
                return fn(module, query, key, value, attention_mask, *args, **kwargs)

            return probed

        F.scaled_dot_product_attention = probed_sdpa
        for name, fn in originals.items():
            ALL_ATTENTION_FUNCTIONS._global_mapping[name] = wrap(name, fn)
        try:
            yield self
        finally:
            F.scaled_dot_product_attention = sdpa
            ALL_ATTENTION_FUNCTIONS._global_mapping.clear()
            ALL_ATTENTION_FUNCTIONS._global_mapping.update(originals)


def sdpa_kernel(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa) -> str | None:
    """The kernel PyTorch's SDPA picks for these inputs (``torch._fused_sdp_choice``): flash_attention,
    efficient_attention, cudnn_attention or math (CPU's flash kernel is ``flash_attention`` too)."""
    from torch.nn.attention import SDPBackend

    try:
        choice = torch._fused_sdp_choice(
            q, k, v, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
        )
    except Exception:  # noqa: BLE001 - a probe never breaks the step it watches
        return None
    names = {int(v): k.lower() for k, v in SDPBackend.__members__.items()}
    return names.get(int(choice))


@contextlib.contextmanager
def host_offload() -> Iterator[dict[str, int]]:
    """Make transformers' activation offload (``save_on_cpu``) keep its copies outside PyTorch's allocator.

    On a GPU the offloaded tensors go to host memory, which the GPU's peak does not include. On CPU host and
    device are one allocator, so to measure the same thing the copies are written into numpy buffers (host
    memory the allocator does not track), and brought back as allocator tensors in backward, as
    ``tensor.to(device)`` does on a GPU. The yielded dict counts packs and bytes (it is the probe that offload
    is active).
    """
    import transformers.modeling_utils as mu

    stats = {"packs": 0, "bytes": 0}
    original = mu.save_on_cpu

    class HostSaveOnCpu(torch.autograd.graph.saved_tensors_hooks):
        def __init__(self, pin_memory: bool = False, device_type: str = "cuda") -> None:
            inner = original(pin_memory=pin_memory, device_type=device_type)

            def pack(t: torch.Tensor) -> Any:
                if t.device.type != "cpu" or t.dtype not in _NUMPY:
                    return inner.pack_hook(t)
                host = np.empty(tuple(t.shape), dtype=_NUMPY[t.dtype])
                _as_torch(host, t.dtype).copy_(t)
                stats["packs"] += 1
                stats["bytes"] += t.numel() * t.element_size()
                return ("host", t.dtype, host)

            def unpack(packed: Any) -> torch.Tensor:
                if isinstance(packed, tuple) and len(packed) == 3 and packed[0] == "host":
                    return _as_torch(packed[2], packed[1]).clone()
                return inner.unpack_hook(packed)

            super().__init__(pack, unpack)

    mu.save_on_cpu = HostSaveOnCpu
    try:
        yield stats
    finally:
        mu.save_on_cpu = original


_NUMPY = {
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.bfloat16: np.uint16,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.bool: np.bool_,
}


def _as_torch(host: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(host)
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


# -- peak memory of micro-steps ------------------------------------------------------------------------------

#: Profiler names of TRL's chunked log-prob function (the LM head) forward and backward.
HEAD_FORWARD, HEAD_BACKWARD = "ChunkedLogProbFunction", "ChunkedLogProbFunctionBackward"


@dataclass
class MicroStepMemory:
    """Bytes held by the allocator during one micro-step (forward and backward of the loss).

    Args:
        index: the micro-step (0-based, over the run).
        start: bytes held when it began (weights, gradients, optimiser states, buffered inputs).
        peak: the most bytes held at any moment during it.
        head_peak: the most bytes held during the LM head's backward.
        layer_peak: the most bytes held outside the LM head's forward and backward (the decoder layers' forward,
            recompute and backward).
        rows: per row of the micro-batch, (prompt width, completion width, real prompt tokens, real completion
            tokens) as TRL padded them.
        seconds: the step's wall time after its inputs were prepared (slower under CPU profiling).
        resident: bytes of the trainer's own tensors at the step's start, counted from the tensors
            (:func:`resident_bytes`), beside the profiler's running total in ``start``.
    """

    index: int
    start: int
    peak: int
    head_peak: int = 0
    layer_peak: int = 0
    rows: list[tuple[int, int, int, int]] = field(default_factory=list)
    seconds: float = 0.0
    resident: int = 0

    @property
    def added(self) -> int:
        return self.peak - self.start


def _walk(nodes: list[Any]) -> Iterator[Any]:
    stack = list(nodes)
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children)


def _rows(inputs: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    pm, cm = inputs["prompt_mask"], inputs["completion_mask"]
    return [(int(pm.size(1)), int(cm.size(1)), int(pm[i].sum()), int(cm[i].sum())) for i in range(pm.size(0))]


def measure_micro_steps(
    trainer: Any, steps: Sequence[int], device: str = "cpu"
) -> dict[int, MicroStepMemory]:
    """Run ``trainer.train()`` under the PyTorch profiler's memory tracking; the allocator's peaks during each
    micro-step in ``steps`` (0-based calls of ``training_step``).

    The profiler reports every allocation and free of PyTorch's allocator for ``device`` with the allocator's
    running total of bytes allocated since tracking began (the start of ``train()``); the tensors that existed
    before (the model's parameters and buffers, a reference model) are added from the tensors themselves, so
    that ``peak`` is what the device holds.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    original = trainer.training_step
    calls = {"n": 0}
    rows: dict[int, list[tuple[int, int, int, int]]] = {}
    seconds: dict[int, float] = {}
    held: dict[int, int] = {}

    def marked(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        i = calls["n"]
        calls["n"] += 1
        held[i] = resident_bytes(trainer)
        with record_function(f"{MARK}{i}"):
            prepared = trainer._prepare_inputs(inputs)
            rows[i] = _rows(prepared)
            # the step prepares its inputs again: hand it these
            trainer._prepare_inputs = lambda _x: prepared
            t0 = time.perf_counter()
            try:
                return original(model, inputs, *args, **kwargs)
            finally:
                seconds[i] = time.perf_counter() - t0
                del trainer._prepare_inputs

    if device == "cuda":  # the CUDA allocator keeps its own peak: no profiler needed
        return _measure_cuda(trainer, steps, original, rows)
    trainer.training_step = marked
    activities = [ProfilerActivity.CPU]
    before = resident_bytes(trainer)
    try:
        with profile(activities=activities, profile_memory=True, record_shapes=False) as prof:
            trainer.train()
    finally:
        trainer.training_step = original
    out = micro_step_peaks(prof, steps, device, before)
    for i, m in out.items():
        m.rows, m.seconds, m.resident = rows.get(i, []), seconds.get(i, 0.0), held.get(i, 0)
    return out


def _measure_cuda(
    trainer: Any, steps: Sequence[int], original: Callable, rows: dict
) -> dict[int, MicroStepMemory]:
    out: dict[int, MicroStepMemory] = {}
    calls = {"n": 0}

    def marked(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        i = calls["n"]
        calls["n"] += 1
        prepared = trainer._prepare_inputs(inputs)
        rows[i] = _rows(prepared)
        trainer._prepare_inputs = lambda _x: prepared
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        try:
            return original(model, inputs, *args, **kwargs)
        finally:
            del trainer._prepare_inputs
            torch.cuda.synchronize()
            if i in steps:
                peak = torch.cuda.max_memory_allocated()
                out[i] = MicroStepMemory(i, start, peak, rows=rows[i], seconds=time.perf_counter() - t0)

    trainer.training_step = marked
    try:
        trainer.train()
    finally:
        trainer.training_step = original
    missing = [i for i in steps if i not in out]
    if missing:
        raise ValueError(f"micro-steps {missing} did not run")
    return out


def resident_bytes(trainer: Any) -> int:
    """Bytes of the tensors a trainer holds between steps: parameters, gradients, buffers, optimiser states."""
    seen: set[int] = set()
    total = 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()

    for m in [trainer.model, getattr(trainer, "ref_model", None)]:
        if m is None:
            continue
        for p in m.parameters():
            add(p)
            add(p.grad)
        for b in m.buffers():
            add(b)
    opt = getattr(trainer, "optimizer", None)
    if opt is not None:
        for st in opt.state.values():
            for v in st.values():
                add(v)
    return total


def micro_step_peaks(
    prof: Any, steps: Sequence[int], device: str, resident: int = 0
) -> dict[int, MicroStepMemory]:
    """Peaks per marked micro-step from a finished profiler's memory events (see :func:`measure_micro_steps`)."""
    from torch._C._profiler import _EventType

    tree = prof.profiler.kineto_results.experimental_event_tree()
    marks: dict[int, tuple[int, int]] = {}
    head: list[tuple[int, int]] = []
    head_fwd: list[tuple[int, int]] = []
    allocs: list[tuple[int, int, int]] = []
    for n in _walk(tree):
        if n.tag == _EventType.Allocation:
            f = n.extra_fields
            if f.device.type == device:
                allocs.append((n.start_time_ns, f.alloc_size, f.total_allocated))
        elif n.name.startswith(MARK):
            marks[int(n.name[len(MARK) :])] = (n.start_time_ns, n.end_time_ns)
        elif n.name == HEAD_BACKWARD:
            head.append((n.start_time_ns, n.end_time_ns))
        elif n.name == HEAD_FORWARD:
            head_fwd.append((n.start_time_ns, n.end_time_ns))
    allocs.sort()
    # the allocator's running total outlives a profiling session (frees outside a session are not subtracted),
    # so count from this session's first event
    base = allocs[0][2] - allocs[0][1] if allocs else 0
    allocs = [(t, a, tot - base) for t, a, tot in allocs]
    out = {}
    for i in steps:
        if i not in marks:
            raise ValueError(f"micro-step {i} did not run (ran {len(marks)})")
        t0, t1 = marks[i]
        inside = [(t, a, tot) for t, a, tot in allocs if t0 <= t <= t1]
        windows = [(a, b) for a, b in head if t0 <= a <= t1]
        forwards = [(a, b) for a, b in head_fwd if t0 <= a <= t1]
        if not inside:
            out[i] = MicroStepMemory(i, resident, resident)
            continue

        def in_head(t: int, windows: list[tuple[int, int]] = windows) -> bool:
            return any(a <= t <= b for a, b in windows)

        start = inside[0][2] - inside[0][1] + resident
        peak = max(tot for _, _, tot in inside) + resident
        head_peak = max((tot for t, _, tot in inside if in_head(t)), default=0) + resident
        layer_peak = max(
            (tot for t, _, tot in inside if not in_head(t) and not in_head(t, forwards)), default=0
        )
        layer_peak += resident
        out[i] = MicroStepMemory(i, start, peak, head_peak, layer_peak)
    return out


def plan_settings_for(m: MicroStepMemory, s: StepSettings, *, padding_free: bool | None = None) -> Any:
    """The planner's settings for the row measured in ``m`` (one process, no vLLM, TRL's CPU head)."""
    from train.plan import PlanSettings

    pf = s.padding_free if padding_free is None else padding_free
    pw, cw, pr, cr = max(m.rows, key=lambda r: (r[2] + r[3]) if pf else (r[0] + r[1]))
    prompt, completion = (pr, cr) if pf else (pw, cw)
    sp = int(s.extra.get("sp_size", 1))
    return PlanSettings(
        prompt_length=prompt,
        completion_length=max(completion, 1),
        per_device_train_batch_size=len(m.rows),
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        num_generations=s.num_generations,
        num_gpus=sp,  # one process, or one sequence-parallel group (DDP: the states are not sharded)
        sharding="ddp",
        gradient_checkpointing=s.gradient_checkpointing,
        activation_offload=s.activation_offload,
        attn_implementation="sdpa",
        padding_free=pf,
        dtype="bf16" if s.bf16 else "fp32",
        device="cuda" if torch.cuda.is_available() else "cpu",
        rollout="vllm-server",
        beta=s.beta,
        sp_size=sp,
    )


@dataclass
class PlanCheck:
    """One micro-step measured beside the planner's estimate for the same row (see :func:`check_plan_row`).

    Args:
        label: a name for the row.
        shape: the model.
        settings: the run.
        measured: the measured micro-step.
        estimate: the planner's :class:`train.plan.Estimate` for its row.
        seconds: wall time of the run.
    """

    label: str
    shape: TinyShape
    settings: StepSettings
    measured: MicroStepMemory
    estimate: Any
    seconds: float

    @property
    def tokens(self) -> int:
        pw, cw, pr, cr = max(self.measured.rows, key=lambda r: r[0] + r[1])
        return pr + cr if self.settings.padding_free else pw + cw

    @property
    def planned(self) -> float:
        return self.estimate.states + max(self.estimate.head_phase, self.estimate.layer_phase)

    @property
    def measured_peak(self) -> float:
        """The step's peak. With sequence parallelism (gloo collectives inside the step) the profiler's running
        total climbs from step to step while the process's memory does not (RSS flat over 30 steps of a smaller run,
        benchmarks/RESULTS.md; frees that end on gloo's threads going unrecorded is our reading): the peak is then
        counted from the tensors the trainer holds at the step's start, plus what the step added (``peak - start``)."""
        m = self.measured
        if int(self.settings.extra.get("sp_size", 1)) > 1 and m.resident:
            return m.resident + m.peak - m.start
        return m.peak

    @property
    def ratio(self) -> float:
        return self.planned / self.measured_peak

    def phase_ratios(self) -> tuple[float, float]:
        """Planned over measured activations (above the step's start) at the LM head and at the layers."""
        m, e = self.measured, self.estimate
        return (
            e.head_phase / max(m.head_peak - m.start, 1),
            e.layer_phase / max(m.layer_peak - m.start, 1),
        )


def check_plan_row(
    shape: TinyShape, s: StepSettings, label: str = "", *, workdir: str | Path | None = None, step: int = 3
) -> PlanCheck:
    """Measure micro-step ``step`` of a scripted GRPO run of ``shape`` (a random model written to ``workdir``)
    and estimate the same row with :func:`train.plan.estimate` (``device="cpu"`` on CPU)."""
    import tempfile

    from train.plan import estimate

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        root = Path(workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="plancheck-")))
        dtype = torch.bfloat16 if s.bf16 else torch.float32
        model_dir = write_model(shape, root / "model", dtype=dtype)
        trainer = make_trainer(model_dir, s, root / "out")
        if s.activation_offload:
            stack.enter_context(host_offload())
        measured = measure_micro_steps(
            trainer, [step], device="cuda" if torch.cuda.is_available() else "cpu"
        )[step]
        est = estimate(shape.plan_shape(), plan_settings_for(measured, s))
        del trainer
    return PlanCheck(label, shape, s, measured, est, time.perf_counter() - t0)


def gib(x: float) -> float:
    return x / 2**30


__all__ = [
    "AttentionCall",
    "AttentionProbe",
    "AlternatingReward",
    "MicroStepMemory",
    "PlanCheck",
    "build_model",
    "check_plan_row",
    "ScriptedRollout",
    "StepSettings",
    "TinyShape",
    "host_offload",
    "make_trainer",
    "measure_micro_steps",
    "micro_step_peaks",
    "plan_settings_for",
    "resident_bytes",
    "scripted_tokenizer",
    "write_model",
]
