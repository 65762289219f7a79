"""One model folder per phase, which every consumer loads: rope scaling (YaRN) is written into it.

HF training, TRL's colocated vLLM (which loads ``model.name_or_path``), ``trl vllm-serve``, longmill's
eval and verl all read ``config.json`` from the folder they are given. Setting YaRN only on the in-memory
config would leave vLLM sampling from a plain-RoPE model while a YaRN model is trained, so the scaling goes
into the folder: a phase's starting folder gets a ``config.json`` with the rope scaling and the matching
``max_position_embeddings``; its weights are symbolic links to the source folder (no copy), or copies where
the folder must stand on its own (``copy=True``: a run whose nodes share the run folder but not the main
process's model cache, which the links would point into).

The module needs only the standard library (and ``huggingface_hub`` for a hub id), so that ``train
verl-config`` can copy it next to verl's stage scripts, which run it on the cluster to write each stage's
folder before verl loads it (``python3 longmill_model_folder.py SRC DST --yarn-factor 4 --needed N``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

try:
    from longmill.errors import LongmillError
except ImportError:  # run as a standalone script beside verl's stage scripts, where longmill is not installed

    class LongmillError(Exception):  # type: ignore[no-redef]
        """What longmill raises for user-facing errors."""


log = logging.getLogger(__name__)


def yarn_scaling(factor: float, original_max_position_embeddings: int) -> dict[str, Any]:
    """The rope-scaling block, in the spelling of Qwen2.5's model cards (read by transformers 4/5 and vLLM)."""
    if factor <= 1.0:
        raise LongmillError(f"YaRN factor must be > 1, got {factor}")
    return {
        "rope_type": "yarn",
        "type": "yarn",
        "factor": float(factor),
        "original_max_position_embeddings": int(original_max_position_embeddings),
    }


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
            out["rope_parameters"] = {
                "rope_type": "default",
                **({"rope_theta": theta} if theta is not None else {}),
            }
        out["max_position_embeddings"] = int(native)
        return out
    out["rope_scaling"] = dict(scaling)
    if "rope_parameters" in out:  # transformers 5 writes rope_parameters and reads it first
        out["rope_parameters"] = {
            **{k: v for k, v in scaling.items() if k != "type"},
            **({"rope_theta": theta} if theta is not None else {}),
        }
    out["max_position_embeddings"] = int(scaling["original_max_position_embeddings"] * scaling["factor"])
    return out


def local_folder(name_or_path: str) -> Path:
    """A local folder for a model: the path itself, or the hub snapshot (downloaded as loading would)."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                name_or_path,
                allow_patterns=[
                    "*.json",
                    "*.safetensors",
                    "*.bin",
                    "*.model",
                    "*.txt",
                    "*.tiktoken",
                    "*.jinja",
                ],
            )
        )
    except Exception as e:  # noqa: BLE001 - offline, unknown id, no access: one message
        raise LongmillError(
            f"cannot load model '{name_or_path}': no such folder, and the hub gave {e}"
        ) from e


def run_spans_nodes(env: dict[str, str] | None = None) -> bool:
    """Whether this process belongs to a run over several nodes (torchrun's and accelerate's WORLD_SIZE and
    LOCAL_WORLD_SIZE: more processes in all than on this node)."""
    env = os.environ if env is None else env
    try:
        return int(env.get("WORLD_SIZE", "1")) > int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    except ValueError:
        return False


def missing_files(folder: str | Path) -> list[str]:
    """Entries of a local model ``folder`` that cannot be read from this host (a dangling link, or the folder
    itself absent); empty for a hub id, which each host resolves for itself."""
    p = Path(folder)
    if not p.exists() and not p.is_absolute() and str(folder).count("/") <= 1 and str(folder)[:1] not in ".~":
        return []  # a hub id ("org/name"), which each host resolves itself
    if not p.is_dir():
        return [str(p)]
    return [str(item) for item in sorted(p.iterdir()) if not item.exists()]


def prepare_model_folder(
    src: str, dst: str | Path, scaling: dict[str, Any] | None, native: int, copy: bool = False
) -> str:
    """The folder a phase starts from: ``src`` itself when its rope already matches, else ``dst``.

    ``dst`` holds ``config.json`` with the rope set as asked and links to every other file of ``src`` (copies
    with ``copy``). Written atomically (a temporary folder renamed into place); call it on the main process only.

    Args:
        src: a model folder or hub id.
        dst: where to write the adjusted folder.
        scaling: :func:`yarn_scaling` output, or None for plain RoPE over the native window.
        native: the model's native window (YaRN's original_max_position_embeddings).
        copy: copy the other files instead of linking them, so ``dst`` does not depend on ``src``'s host.
    """
    folder = local_folder(src)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise LongmillError(f"cannot load model '{src}': {cfg_path} is missing")
    config = json.loads(cfg_path.read_text())
    wanted = with_rope(config, scaling, native)
    if _rope_of(wanted) == _rope_of(config) and wanted.get("max_position_embeddings") == config.get(
        "max_position_embeddings"
    ):
        return str(src)
    if scaling is None and _rope_of(config) is None:
        return str(src)  # plain RoPE already; a larger native max_position_embeddings is left alone
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the folder is read by other processes and users
    try:
        for item in folder.iterdir():
            if item.name == "config.json" or item.name.startswith("."):
                continue
            if not copy:
                os.symlink(item.resolve(), tmp / item.name, target_is_directory=item.is_dir())
            elif item.is_dir():
                shutil.copytree(item.resolve(), tmp / item.name)
            else:
                shutil.copy2(item.resolve(), tmp / item.name)
        (tmp / "config.json").write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "model folder %s: %s from %s (%s)",
        dst,
        f"YaRN x{scaling['factor']}" if scaling else "plain RoPE",
        src,
        "copied" if copy else "linked",
    )
    return str(dst)


def _rope_of(config: dict[str, Any]) -> tuple | None:
    for key in ("rope_scaling", "rope_parameters"):
        block = config.get(key) or {}
        kind = block.get("rope_type", block.get("type"))
        if kind and kind != "default":
            return (
                kind,
                float(block.get("factor", 1.0)),
                int(block.get("original_max_position_embeddings", 0)),
            )
    return None


def phase_scaling(
    factor: float | None, native: int, needed: int, within_native: bool
) -> dict[str, Any] | None:
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
        raise LongmillError(
            f"prompts plus completions need {needed} positions, beyond YaRN x{factor} over {native} "
            f"({int(native * factor)}); raise yarn_factor"
        )
    return yarn_scaling(factor, native)


def main(argv: list[str] | None = None) -> int:
    """Write a stage's model folder and print the folder to load (used by verl's stage scripts)."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Write the rope scaling a stage needs into its model folder; prints the folder to load."
    )
    parser.add_argument("src", help="the model folder or hub id the stage starts from")
    parser.add_argument("dst", help="where to write the adjusted folder (links to SRC's files)")
    parser.add_argument("--yarn-factor", type=float, default=None, help="YaRN factor; omit for plain RoPE")
    parser.add_argument("--native", type=int, default=32_768, help="the model's native window")
    parser.add_argument(
        "--needed", type=int, required=True, help="prompt plus completion positions of the stage"
    )
    parser.add_argument(
        "--copy",
        action="store_true",
        help="copy SRC's files instead of linking them (nodes that do not share SRC's storage load DST)",
    )
    parser.add_argument(
        "--no-yarn-within-native-window",
        action="store_true",
        help="plain RoPE for stages that fit the native window",
    )
    args = parser.parse_args(argv)
    try:
        scaling = phase_scaling(
            args.yarn_factor, args.native, args.needed, not args.no_yarn_within_native_window
        )
        chosen = prepare_model_folder(args.src, args.dst, scaling, args.native, copy=args.copy)
    except LongmillError as e:
        parser.exit(2, f"error: {e}\n")
    dst = Path(args.dst)
    if chosen != str(dst) and args.copy:  # the source already has the rope wanted: DST is a copy of it
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
        shutil.rmtree(tmp)
        shutil.copytree(local_folder(chosen).resolve(), tmp, symlinks=False)
        if dst.is_symlink() or dst.is_file():
            dst.unlink()
        elif dst.is_dir():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    elif chosen != str(
        dst
    ):  # the source already has the rope wanted: DST links to it, so DST is always the path
        link = dst.with_name(f".{dst.name}.link")
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(local_folder(chosen).resolve(), link, target_is_directory=True)
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        os.replace(link, dst)
    sys.stdout.write(f"{dst}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
