"""verl 0.9.1 commands: every generated override composed against verl's real Hydra config (where verl is
installed), per-stage eval sets that fit, and a reward file that verl loads without longmill."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import eval.reward as vr
from curriculum.build import CurriculumConfig, build_curriculum
from datagen.generators.base import GenConfig
from datagen.runner import RunConfig, run_generator
from datagen.sources import get_source

from ..eval.fake_server import Action, FakeServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def curriculum_with_eval(tmp_path_factory):
    """Two stages (300 and 400 tokens) and held-out rows of both lengths."""
    root = tmp_path_factory.mktemp("verl-data")
    src = get_source("synthetic", options={"num_triplets": 60})
    ins = []
    for length in (300, 400):
        run_generator(
            "longqa",
            GenConfig(length=length, seed=3),
            src,
            RunConfig(out=root / f"qa-{length}", num_samples=16),
        )
        ins.append(root / f"qa-{length}")
    build_curriculum(ins, root / "curriculum", CurriculumConfig(bins=[300, 400], eval_share=0.3, seed=1))
    return root / "curriculum"


@pytest.fixture(scope="module")
def verl_out(curriculum_with_eval, tmp_path_factory):
    from train.cli import main

    out = tmp_path_factory.mktemp("verl-out")
    cfg = out / "gpu.yaml"
    cfg.write_text(
        "num_generations: 8\nmax_completion_length: 4096\noverlong_buffer: 1024\n"
        "per_device_train_batch_size: 1\ngradient_accumulation_steps: 8\n"
        "judge_url: http://127.0.0.1:8001/v1\njudge_model: Qwen/Qwen2.5-1.5B-Instruct\n"
    )
    r = CliRunner().invoke(
        main,
        [
            "verl-config",
            "--curriculum",
            str(curriculum_with_eval),
            "--model",
            "Qwen/Qwen2.5-7B-Instruct",
            "--out",
            str(out / "verl"),
            "--config",
            str(cfg),
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    return out / "verl"


def stage_configs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("stage-*/config.json"))]


def test_commands_use_verl_091_names(verl_out):
    s1, s2 = stage_configs(verl_out)
    o = s1["overrides"]
    assert (
        s1["entrypoint"] == "verl.trainer.main_ppo"
        and "python3 -m verl.trainer.main_ppo" in (verl_out / "stage-1" / "run.sh").read_text()
    )
    # the reward lives under reward.* (main_ppo ignores the legacy top-level keys)
    assert not any(
        x.startswith(("custom_reward_function.", "reward_model.", "+custom_reward_function")) for x in o
    )
    assert f"reward.custom_reward_function.path={verl_out.resolve() / 'longmill_reward.py'}" in o
    for needle in (
        "reward.reward_manager.name=dapo",
        "+reward.reward_kwargs.max_resp_len=4096",
        "+reward.reward_kwargs.overlong_buffer_cfg.enable=True",
        "+reward.reward_kwargs.overlong_buffer_cfg.len=1024",
        "algorithm.filter_groups.metric=acc",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "actor_rollout_ref.rollout.n=8",
        "data.max_prompt_length=300",
        "data.train_batch_size=8",
        "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "+reward.custom_reward_function.reward_kwargs.judge_url=http://127.0.0.1:8001/v1",
    ):
        assert needle in o, needle
    assert s2["init_checkpoint"].endswith("stage-1/hf") and "data.max_prompt_length=400" in s2["overrides"]
    for k in (1, 2):
        assert subprocess.run(["bash", "-n", str(verl_out / f"stage-{k}" / "run.sh")]).returncode == 0
    assert (verl_out / "longmill_reward.py").read_bytes() == Path(vr.__file__).read_bytes()


def test_batch_sizes_count_prompts_as_trl_does():
    from types import SimpleNamespace

    from train.backends.verl import verl_batch_sizes

    # the GPU profile: 1 x 8 GPUs x 32 micro-steps = 256 completions = 32 prompts per generation; an optimiser
    # step every 1 x 8 x 8 = 64 completions = 8 prompts: four updates per rollout, as QwenLong-L1 trains
    profile = SimpleNamespace(
        num_generations=8,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=8,
        steps_per_generation=32,
    )
    assert verl_batch_sizes(profile, 8) == (32, 8)
    assert verl_batch_sizes(
        SimpleNamespace(
            num_generations=8,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=1,
            steps_per_generation=None,
        ),
        2,
    ) == (2, 2)


def test_each_stage_validates_on_rows_that_fit_it(verl_out, curriculum_with_eval):
    all_eval = pq.read_table(curriculum_with_eval / "eval").column("prompt_tokens").to_pylist()
    assert max(all_eval) > 300  # some held-out rows are too long for stage 1
    for cfg, limit in zip(stage_configs(verl_out), (300, 400), strict=True):
        (val,) = cfg["val_files"]
        lengths = pq.read_table(val).column("prompt_tokens").to_pylist()
        assert lengths and max(lengths) <= limit
        assert len(lengths) == sum(n <= limit for n in all_eval)
        assert f"data.val_files=[{val}]" in cfg["overrides"]


def test_reward_file_runs_without_longmill(verl_out):
    code = (
        "import importlib.util, sys; s = importlib.util.spec_from_file_location('r', sys.argv[1]); "
        "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
        "print(m.compute_score('keychain/x', 'Therefore, the answer is Ed Wood.', ['Ed Wood'], {'question': 'q'})); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('datagen', 'eval', 'train', 'numpy')))"
    )
    # -I -S: no site-packages, no PYTHONPATH, no current directory: the standard library only
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(verl_out / "longmill_reward.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["{'score': 1.0, 'acc': 1.0, 'rule': 1.0, 'judge_failed': 0.0}", "[]"]


def test_judge_over_http_with_bounded_failures():
    def verdict(body):
        return Action.ok("YES" if "Edward" in body["messages"][1]["content"] else "NO")

    with FakeServer(rule=verdict) as server:
        try:
            kw = {"judge_url": server.url, "judge_timeout": 5, "judge_max_retries": 0}
            assert vr.compute_score(
                "s", "Therefore, the answer is Ed Wood.", ["Edward Wood"], {"question": "q"}, **kw
            ) == {"score": 1.0, "acc": 1.0, "rule": 0.0, "judge_failed": 0.0}
            assert (
                vr.compute_score(
                    "s", "Therefore, the answer is Tim Burton.", ["Ed Wood"], {"question": "q"}, **kw
                )["score"]
                == 0.0
            )
            server.rule = lambda body: Action.error(500)
            before = server.count()
            kw |= {"judge_breaker_failures": 2, "judge_breaker_cooldown": 60}
            results = [
                vr.compute_score(
                    "s", "Therefore, the answer is Ed Wood.", ["Edward Wood"], {"question": "q"}, **kw
                )
                for _ in range(5)
            ]
            assert all(r["judge_failed"] == 1.0 and r["score"] == 0.0 for r in results)
            # the breaker opened after two failures: no more waits on a dead judge
            assert server.count() - before == 2
        finally:
            vr._BREAKERS.clear()


# -- composition against verl's real config -----------------------------------------------------------------

VERL_VERSION = "0.9.1"
_VERL_WHEEL_CONFIG: list[Path | None] = []


def _verl_wheel_config() -> Path | None:
    """verl's Hydra config, unpacked from the real verl wheel fetched from the package index (no install, no
    deps: composing needs only the YAML files); None where the index is unreachable."""
    if not _VERL_WHEEL_CONFIG:
        import tempfile
        import zipfile

        root = Path(tempfile.mkdtemp(prefix="verl-wheel-"))
        from eval.pretrained import pip_download

        done = pip_download(f"verl=={VERL_VERSION}", root)
        wheels = sorted(root.glob("verl-*.whl"))
        path = None
        if done.returncode == 0 and wheels:
            with zipfile.ZipFile(wheels[0]) as zf:
                zf.extractall(
                    root / "site",
                    [
                        n
                        for n in zf.namelist()
                        if n.startswith("verl/trainer/config/") or n.endswith(".dist-info/METADATA")
                    ],
                )
            path = root / "site" / "verl" / "trainer" / "config"
        _VERL_WHEEL_CONFIG.append(path if path and (path / "ppo_trainer.yaml").exists() else None)
    return _VERL_WHEEL_CONFIG[0]


def verl_config_dir() -> Path | None:
    """verl 0.9.1's trainer config: from an installed verl, else from its wheel."""
    spec = importlib.util.find_spec("verl")  # finds the package without importing it (no ray needed)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "trainer" / "config"
        if (path / "ppo_trainer.yaml").exists():
            return path
    return _verl_wheel_config()


def test_every_override_composes_against_verl_091(verl_out):
    config_dir = verl_config_dir()
    if config_dir is None or importlib.util.find_spec("hydra") is None:
        pytest.skip(
            "verl 0.9.1 is neither installed nor fetchable from the package index (or hydra-core is missing)"
        )
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        with pytest.raises(Exception, match="overlong_buffer"):  # the keys the old command used are refused
            compose(config_name="ppo_trainer", overrides=["reward_model.overlong_buffer.len=1024"])
    for stage_cfg in stage_configs(verl_out):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = compose(config_name="ppo_trainer", overrides=stage_cfg["overrides"])
        assert cfg.reward.custom_reward_function.path == str(verl_out.resolve() / "longmill_reward.py")
        assert cfg.reward.reward_manager.name == "dapo"
        assert cfg.reward.reward_kwargs.max_resp_len == cfg.data.max_response_length == 4096
        assert cfg.reward.reward_kwargs.overlong_buffer_cfg.len == 1024
        assert cfg.actor_rollout_ref.rollout.prompt_length == cfg.data.max_prompt_length  # interpolated
        assert cfg.algorithm.filter_groups.enable and cfg.algorithm.filter_groups.metric == "acc"
        assert list(cfg.data.val_files) == stage_cfg["val_files"]
        try:  # verl's own checks and reward loading need verl importable (ray, tensordict, ...)
            from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls
            from verl.utils.config import validate_config
        except ImportError as e:
            pytest.skip(f"verl's config composes; its validation needs verl's runtime deps: {e}")
        validate_config(config=cfg, use_reference_policy=False, use_critic=False)
        fn = get_custom_reward_fn(cfg)  # verl loads the file by path and binds reward_kwargs
        assert (
            fn(
                data_source="keychain/x",
                solution_str="Therefore, the answer is Ed Wood.",
                ground_truth=["Ed Wood"],
                extra_info={"question": "q"},
            )["acc"]
            == 1.0
        )
        manager = resolve_reward_manager_cls(cfg)(
            cfg, tokenizer=None, compute_score=fn
        )  # DAPO's, with its checks
        assert type(manager).__name__ == "DAPORewardManager" and manager.max_resp_len == 4096
        assert manager.overlong_buffer_cfg.enable and manager.overlong_buffer_cfg.len == 1024


def test_readme_verl_snippet_composes_against_verl_091():
    import re
    import shlex

    config_dir = verl_config_dir()
    if config_dir is None or importlib.util.find_spec("hydra") is None:
        pytest.skip("verl 0.9.1 is neither installed nor fetchable from the package index")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    readme = (ROOT / "README.md").read_text()
    block = next(
        b for b in re.findall(r"```bash\n(.*?)```", readme, re.DOTALL) if "verl.trainer.main_ppo" in b
    )
    words = shlex.split(block.replace("\\\n", " ").replace("$PWD", str(ROOT)))
    overrides = words[words.index("verl.trainer.main_ppo") + 1 :]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    assert cfg.reward.custom_reward_function.path == str(ROOT / "eval/reward.py")


def test_the_shipped_gpu_config_gives_a_command_verl_accepts(curriculum_with_eval, tmp_path):
    from train.cli import main

    args = ["verl-config", "--curriculum", str(curriculum_with_eval)]
    args += ["--config", str(ROOT / "train/configs/grpo-gpu-qwen2.5-7b.yaml")]
    # 8 GPUs x 32 micro-steps x 1 / 8 completions = 32 prompts per step, more than these small stages hold:
    # verl would count 0 steps per epoch and divide by it, so the export is refused with the reason
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "v8")])
    assert r.exit_code == 2 and "fewer than verl's data.train_batch_size=32 prompts" in r.output, r.output
    assert "stage-1 has" in r.output and "divide by it" in r.output
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "v"), "--n-gpus-per-node", "2"])
    assert r.exit_code == 0, r.output  # also on a machine without a GPU (a login node)
    # the profile's options that verl cannot carry are named, not dropped in silence
    assert "warning: attn_implementation='sdpa' is not exported" in r.output
    assert "warning: judge_cache=" in r.output and "warning: dynamic_sampling_rounds=3" in r.output
    (cfg1, _) = stage_configs(tmp_path / "v")
    o = cfg1["overrides"]
    assert "data.train_batch_size=8" in o and "actor_rollout_ref.actor.ppo_mini_batch_size=2" in o
    assert (
        "+reward.reward_kwargs.max_resp_len=10000" in o
        and "+reward.reward_kwargs.overlong_buffer_cfg.len=2000" in o
    )
    assert "actor_rollout_ref.rollout.gpu_memory_utilization=0.35" in o  # as the profile says, not raised
    assert "actor_rollout_ref.rollout.free_cache_engine=True" in o  # vllm_enable_sleep_mode
    assert 'pip install "verl[vllm]==0.9.1"' in (tmp_path / "v" / "stage-1" / "run.sh").read_text()
    config_dir = verl_config_dir()
    if config_dir is None:
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=o)
    assert cfg.data.train_batch_size == 8 and cfg.actor_rollout_ref.rollout.n == 8


def test_yarn_goes_into_each_verl_stage_model_folder(curriculum_with_eval, tiny_qwen2, tmp_path):
    """With a YaRN factor, each stage's run.sh first writes the stage's model folder (rope scaling in its
    config.json) with a standalone copy of train/model_folder.py, and verl loads that folder."""
    from train.cli import main

    cfg = tmp_path / "yarn.yaml"
    cfg.write_text(
        "num_generations: 8\nmax_completion_length: 256\nyarn_factor: 4.0\n"
        "yarn_original_max_position_embeddings: 600\nyarn_within_native_window: false\n"
    )
    out = tmp_path / "verl"
    r = CliRunner().invoke(
        main,
        [
            "verl-config",
            "--curriculum",
            str(curriculum_with_eval),
            "--model",
            str(tiny_qwen2),
            "--out",
            str(out),
            "--config",
            str(cfg),
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    s1, s2 = stage_configs(out)
    script = out / "longmill_model_folder.py"
    for stage, needed in ((s1, 300 + 256), (s2, 400 + 256)):
        model = Path(stage["model_path"])
        assert f"actor_rollout_ref.model.path={model}" in stage["overrides"]
        run_sh = (out / stage["stage"] / "run.sh").read_text()
        assert f"--needed {needed}" in run_sh and run_sh.index(str(script)) < run_sh.index(
            "verl.trainer.main_ppo"
        )
    # stage 1 fits the 600-token native window: plain RoPE, the folder links to the source model
    src = s1["init_checkpoint"]
    cmd = [
        sys.executable,
        "-I",
        "-S",
        str(script),
        src,
        s1["model_path"],
        "--yarn-factor",
        "4.0",
        "--native",
        "600",
        "--needed",
        "556",
        "--no-yarn-within-native-window",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)  # -I -S: the standard library only
    assert done.returncode == 0, done.stderr
    assert Path(s1["model_path"]).resolve() == Path(src).resolve()
    # stage 2 needs 656 positions > 600: YaRN x4 written into its folder's config.json, weights linked
    cmd = [
        sys.executable,
        "-I",
        "-S",
        str(script),
        src,
        s2["model_path"],
        "--yarn-factor",
        "4.0",
        "--native",
        "600",
        "--needed",
        "656",
        "--no-yarn-within-native-window",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == s2["model_path"], done.stderr
    config = json.loads((Path(s2["model_path"]) / "config.json").read_text())
    assert config["rope_scaling"]["rope_type"] == "yarn" and config["rope_scaling"]["factor"] == 4.0
    assert config["max_position_embeddings"] == 2400
    assert Path(s2["model_path"]).stat().st_mode & 0o755 == 0o755  # readable by the cluster's other users
    assert (Path(s2["model_path"]) / "model.safetensors").resolve() == (
        Path(src) / "model.safetensors"
    ).resolve()
    # beyond what the factor reaches: a one-line error, exit 2
    cmd[cmd.index("656")] = "4096"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and "raise yarn_factor" in done.stderr
