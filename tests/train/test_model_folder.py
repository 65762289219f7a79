"""YaRN goes into the model folder every consumer loads (HF, TRL's vLLM, eval, verl), not only into memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longmill.errors import LongmillError
from train.backends.base import StageSpec
from train.backends.trl import TRLBackend, grpo_args
from train.config import GRPOPhaseConfig
from train.model_folder import phase_scaling, prepare_model_folder, yarn_scaling


def test_yarn_is_written_into_the_folder_that_transformers_loads(tmp_path, tiny_qwen2):
    from transformers import AutoConfig

    folder = Path(prepare_model_folder(str(tiny_qwen2), tmp_path / "m", yarn_scaling(4.0, 32_768), 32_768))
    assert folder == tmp_path / "m"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["rope_scaling"] == {
        "rope_type": "yarn",
        "type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32_768,
    }
    assert cfg["max_position_embeddings"] == 131_072  # what vLLM takes as the model's length limit
    assert (folder / "model.safetensors").is_symlink()  # weights linked, not copied
    loaded = AutoConfig.from_pretrained(str(folder))
    rope = getattr(loaded, "rope_parameters", None) or loaded.rope_scaling
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0 and loaded.max_position_embeddings == 131_072
    # A folder that already has the scaling is used as it is; asking for plain RoPE writes it without.
    assert prepare_model_folder(str(folder), tmp_path / "again", yarn_scaling(4.0, 32_768), 32_768) == str(
        folder
    )
    plain = Path(prepare_model_folder(str(folder), tmp_path / "plain", None, 32_768))
    cfg = json.loads((plain / "config.json").read_text())
    assert "rope_scaling" not in cfg and cfg["max_position_embeddings"] == 32_768


def test_phase_scaling_decides_per_stage():
    assert phase_scaling(None, 32_768, 70_000, True) is None  # no YaRN asked
    assert phase_scaling(4.0, 32_768, 30_000, True)["factor"] == 4.0  # one rope for every phase (the default)
    assert phase_scaling(4.0, 32_768, 30_000, False) is None  # or plain RoPE inside the native window
    with pytest.raises(LongmillError, match="raise yarn_factor"):
        phase_scaling(2.0, 32_768, 70_000, True)


def stage(tmp_path, length):
    return StageSpec(
        index=1,
        name="stage-1",
        files=[tmp_path / "x.parquet"],
        max_prompt_length=length,
        rows=1,
        eval_files=[],
    )


def test_the_phase_folder_and_vllm_length_follow_the_stage(tmp_path, tiny_qwen2):
    cfg = GRPOPhaseConfig(
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=10_000,
        yarn_factor=4.0,
        yarn_within_native_window=False,
    )
    backend = TRLBackend(cfg, tmp_path)
    within = backend.model_folder(stage(tmp_path, 20_000), str(tiny_qwen2), tmp_path / "phase-1")
    assert within == str(tiny_qwen2)  # 30K positions fit the native window: plain RoPE, the folder untouched
    beyond = backend.model_folder(stage(tmp_path, 60_000), str(tiny_qwen2), tmp_path / "phase-3")
    assert json.loads((Path(beyond) / "config.json").read_text())["rope_scaling"]["factor"] == 4.0
    args = grpo_args(cfg, tmp_path / "phase-3", stage(tmp_path, 60_000), "vllm-colocate")
    assert args.use_vllm and args.vllm_mode == "colocate" and args.vllm_max_model_length == 70_000


def test_a_copied_model_folder_stands_on_its_own_and_a_linked_one_is_checked(tmp_path, tiny_qwen2):
    import shutil

    from train.model_folder import missing_files, run_spans_nodes

    src = tmp_path / "cache" / "model"  # stands for the main process's hub cache
    shutil.copytree(tiny_qwen2, src)
    scaling = yarn_scaling(4.0, 32_768)
    linked = Path(prepare_model_folder(str(src), tmp_path / "run" / "linked", scaling, 32_768))
    copied = Path(prepare_model_folder(str(src), tmp_path / "run" / "copied", scaling, 32_768, copy=True))
    weights = copied / "model.safetensors"
    assert not weights.is_symlink() and weights.read_bytes() == (src / "model.safetensors").read_bytes()
    assert missing_files(linked) == missing_files(copied) == []
    # another node mounts the run folder but not this cache: the links dangle there, the copies do not
    shutil.rmtree(tmp_path / "cache")
    assert str(linked / "model.safetensors") in missing_files(linked) and missing_files(copied) == []
    backend = TRLBackend(GRPOPhaseConfig(use_cpu=True), tmp_path / "out")
    with pytest.raises(
        LongmillError, match=r"cannot be read on every node \(rank 0 on .*: \d+ unreadable, e.g. "
    ):
        backend.check_model_folder(str(linked))
    backend.check_model_folder(str(copied))
    backend.check_model_folder("Qwen/Qwen2.5-7B-Instruct")  # a hub id: each node resolves it itself
    assert run_spans_nodes({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"})
    assert not run_spans_nodes({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}) and not run_spans_nodes({})


def test_the_phase_folder_is_copied_when_asked(tmp_path, tiny_qwen2):
    cfg = GRPOPhaseConfig(
        max_completion_length=100,
        yarn_factor=2.0,
        yarn_original_max_position_embeddings=256,
        model_folder_files="copy",
        use_cpu=True,
    )
    stage = StageSpec(1, "stage-1", [], 300, 1, [])
    folder = Path(TRLBackend(cfg, tmp_path).model_folder(stage, str(tiny_qwen2), tmp_path / "phase-1"))
    assert folder == tmp_path / "phase-1" / "init-model"
    assert not any(p.is_symlink() for p in folder.iterdir())
    linked = GRPOPhaseConfig(
        max_completion_length=100,
        yarn_factor=2.0,
        yarn_original_max_position_embeddings=256,
        model_folder_files="link",
        use_cpu=True,
    )
    folder = Path(TRLBackend(linked, tmp_path).model_folder(stage, str(tiny_qwen2), tmp_path / "phase-2"))
    assert (folder / "model.safetensors").is_symlink()


def test_the_standalone_script_copies_too(tmp_path, tiny_qwen2):
    """verl's stage scripts run train/model_folder.py with the standard library only; --copy (written for
    clusters of several nodes) gives a folder of files, with YaRN and without."""
    import subprocess
    import sys

    import train.model_folder as mf

    for name, args in (("yarn", ["--yarn-factor", "4", "--native", "300", "--needed", "600"]), ("plain", [])):
        dst = tmp_path / name
        cmd = [sys.executable, "-I", "-S", mf.__file__, str(tiny_qwen2), str(dst), "--copy"]
        done = subprocess.run(cmd + (args or ["--needed", "100"]), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert not dst.is_symlink() and not (dst / "model.safetensors").is_symlink()
        assert (dst / "model.safetensors").read_bytes() == (
            Path(tiny_qwen2) / "model.safetensors"
        ).read_bytes()
