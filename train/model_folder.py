"""One model folder per phase, which every consumer loads: rope scaling (YaRN) is written into it.

HF training, TRL's colocated vLLM (which loads ``model.name_or_path``), ``trl vllm-serve``, longmill's
eval and verl all read ``config.json`` from the folder they are given. Setting YaRN only on the in-memory
config would leave vLLM sampling from a plain-RoPE model while a YaRN model is trained, so the scaling goes
into the folder: a phase's starting folder gets a ``config.json`` with the rope scaling and the matching
``max_position_embeddings``; its weights are symbolic links to the source folder (no copy).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from datagen.core.errors import LongmillError

log = logging.getLogger(__name__)


def yarn_scaling(factor: float, original_max_position_embeddings: int) -> dict[str, Any]:
    """The rope-scaling block, in the spelling of Qwen2.5's model cards (read by transformers 4/5 and vLLM)."""
    if factor <= 1.0:
        raise LongmillError(f"YaRN factor must be > 1, got {factor}")
    return {"rope_type": "yarn", "type": "yarn", "factor": float(factor),
            "original_max_position_embeddings": int(original_max_position_embeddings)}


def with_rope(config: dict[str, Any], scaling: dict[str, Any] | None, native: int) -> dict[str, Any]:
    """``config`` (a config.json mapping) with ``scaling`` applied, or with YaRN removed when ``scaling`` is None.

    ``max_position_embeddings`` becomes ``native * factor`` with YaRN and ``native`` without it.
    """
    out = dict(config)
    params = dict(out.get("rope_parameters") or {})
    theta = params.get("rope_theta", out.get("rope_theta"))
    if scaling is None:
        out.pop("rope_scaling", None)
        if "rope_parameters" in out:
            out["rope_parameters"] = {"rope_type": "default", **({"rope_theta": theta} if theta is not None else {})}
        out["max_position_embeddings"] = int(native)
        return out
    out["rope_scaling"] = dict(scaling)
    if "rope_parameters" in out:  # transformers 5 writes rope_parameters and reads it first
        out["rope_parameters"] = {**{k: v for k, v in scaling.items() if k != "type"},
                                  **({"rope_theta": theta} if theta is not None else {})}
    out["max_position_embeddings"] = int(scaling["original_max_position_embeddings"] * scaling["factor"])
    return out


def local_folder(name_or_path: str) -> Path:
    """A local folder for a model: the path itself, or the hub snapshot (downloaded as loading would)."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model",
                                                                    "*.txt", "*.tiktoken", "*.jinja"]))
    except Exception as e:  # noqa: BLE001 - offline, unknown id, no access: one message
        raise LongmillError(f"cannot load model '{name_or_path}': no such folder, and the hub gave {e}") from e


def prepare_model_folder(src: str, dst: str | Path, scaling: dict[str, Any] | None, native: int) -> str:
    """The folder a phase starts from: ``src`` itself when its rope already matches, else ``dst``.

    ``dst`` holds ``config.json`` with the rope set as asked and links to every other file of ``src``.
    Written atomically (a temporary folder renamed into place); call it on the main process only.

    Args:
        src: a model folder or hub id.
        dst: where to write the adjusted folder.
        scaling: :func:`yarn_scaling` output, or None for plain RoPE over the native window.
        native: the model's native window (YaRN's original_max_position_embeddings).
    """
    folder = local_folder(src)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise LongmillError(f"cannot load model '{src}': {cfg_path} is missing")
    config = json.loads(cfg_path.read_text())
    wanted = with_rope(config, scaling, native)
    if _rope_of(wanted) == _rope_of(config) and wanted.get("max_position_embeddings") == config.get("max_position_embeddings"):
        return str(src)
    if scaling is None and _rope_of(config) is None:
        return str(src)  # plain RoPE already; a larger native max_position_embeddings is left alone
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        for item in folder.iterdir():
            if item.name != "config.json" and not item.name.startswith("."):
                os.symlink(item.resolve(), tmp / item.name, target_is_directory=item.is_dir())
        (tmp / "config.json").write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("model folder %s: %s from %s", dst, f"YaRN x{scaling['factor']}" if scaling else "plain RoPE", src)
    return str(dst)


def _rope_of(config: dict[str, Any]) -> tuple | None:
    for key in ("rope_scaling", "rope_parameters"):
        block = config.get(key) or {}
        kind = block.get("rope_type", block.get("type"))
        if kind and kind != "default":
            return (kind, float(block.get("factor", 1.0)), int(block.get("original_max_position_embeddings", 0)))
    return None


def phase_scaling(factor: float | None, native: int, needed: int, within_native: bool) -> dict[str, Any] | None:
    """The rope scaling of a phase whose prompts plus completions need ``needed`` positions.

    Raises:
        LongmillError: the phase needs more than the native window and no YaRN factor is set, or more than
            the factor reaches.
    """
    if not factor:
        return None
    if needed <= native and not within_native:
        return None
    if needed > native * factor:
        raise LongmillError(f"prompts plus completions need {needed} positions, beyond YaRN x{factor} over {native} "
                            f"({int(native * factor)}); raise yarn_factor")
    return yarn_scaling(factor, native)
