"""YaRN goes into the model folder every consumer loads (HF, TRL's vLLM, eval, verl), not only into memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.core.errors import LongmillError
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
