"""Reading a curriculum's ``manifest.json``, the file contract between curriculum and train.

Light on purpose (no numpy, no eval): curriculum, train and their checks all read the manifest here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datagen.core.errors import LongmillError

MANIFEST = "manifest.json"


def load_manifest(folder: str | Path, *, need_stages: bool = True) -> dict[str, Any]:
    """A curriculum folder's ``manifest.json``.

    Args:
        folder: the curriculum folder (``python -m curriculum build --out``).
        need_stages: require at least one stage (what a trainer needs).

    Raises:
        LongmillError: the file is missing, is not a JSON object, or lists no stages when they are needed;
            the message says to build (or rebuild) the curriculum.
    """
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise LongmillError(
            f"{folder}: no {MANIFEST}; build the curriculum with `python -m curriculum build`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LongmillError(f"{path}: not valid JSON ({e}); rebuild the curriculum") from None
    if not isinstance(manifest, dict):
        raise LongmillError(f"{path}: not a JSON object; rebuild the curriculum")
    if need_stages and not manifest.get("stages"):
        raise LongmillError(f"{path}: the manifest lists no stages")
    return manifest
