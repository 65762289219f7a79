"""Run inside verl 0.9.1's own environment by tests/train/test_verl.py (see its ``verl_python``), never in longmill's.

For each stage ``config.json`` written by ``python -m train verl-config`` it composes the overrides against the
installed verl's Hydra config (``ppo_trainer``), runs verl's ``validate_config``, builds the actor, reference,
rollout, optimizer and rollout-correction configs the way verl's workers do (``omega_conf_to_dataclass``), and
prints what verl will use as JSON. It also imports the V1 trainer that ``main_ppo`` runs, which needs
``transfer_queue`` (the ``verl-core`` extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> dict:
    import verl
    import verl.trainer.ppo.v1.trainer_base  # noqa: F401 - imports transfer_queue, as main_ppo's V1 trainer does
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.rollout_corr_helper import _parse_rollout_is_threshold
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    report: dict = {"verl": verl.__version__, "stages": []}
    for path in paths:
        stage = json.loads(Path(path).read_text())
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = compose(config_name="ppo_trainer", overrides=stage["overrides"])
        validate_config(
            config=cfg, use_reference_policy=bool(cfg.actor_rollout_ref.actor.use_kl_loss), use_critic=False
        )
        arr = cfg.actor_rollout_ref
        actor = omega_conf_to_dataclass(arr.actor)
        ref_cfg = arr.ref.copy()
        with open_dict(
            ref_cfg
        ):  # what verl's engine worker does before building the reference (engine_workers.py)
            ref_cfg.ppo_mini_batch_size = arr.actor.ppo_mini_batch_size
            ref_cfg.ppo_micro_batch_size = ref_cfg.pop("log_prob_micro_batch_size", None)
            ref_cfg.ppo_micro_batch_size_per_gpu = ref_cfg.pop("log_prob_micro_batch_size_per_gpu", None)
            ref_cfg.use_dynamic_bsz = ref_cfg.pop("log_prob_use_dynamic_bsz", False)
            ref_cfg.ppo_max_token_len_per_gpu = ref_cfg.pop("log_prob_max_token_len_per_gpu", None)
        ref = omega_conf_to_dataclass(ref_cfg)
        rollout = omega_conf_to_dataclass(arr.rollout)
        correction = cfg.algorithm.rollout_correction
        upper, lower = (
            _parse_rollout_is_threshold(correction.rollout_is_threshold)
            if correction.rollout_is is not None
            else (None, None)
        )
        fn = get_custom_reward_fn(cfg)
        report["stages"].append(
            {
                "stage": stage["stage"],
                "train_batch_size": cfg.data.train_batch_size,
                "seed": cfg.data.seed,
                "actor": {
                    "engine_ulysses": actor.engine.ulysses_sequence_parallel_size,
                    "param_offload": actor.engine.param_offload,
                    "optimizer_offload": actor.engine.optimizer_offload,
                    "dtype": actor.engine.dtype,
                    "use_dynamic_bsz": actor.use_dynamic_bsz,
                    "ppo_max_token_len_per_gpu": actor.ppo_max_token_len_per_gpu,
                    "use_remove_padding": bool(arr.model.use_remove_padding),
                    "attn_implementation": arr.model.override_config.get("attn_implementation"),
                    "loss_agg_mode": actor.loss_agg_mode,
                    "clip_ratio_high": actor.clip_ratio_high,
                    "data_loader_seed": actor.data_loader_seed,
                },
                "optim": {
                    "lr_scheduler_type": actor.optim.lr_scheduler_type,
                    "lr_warmup_steps": actor.optim.lr_warmup_steps,
                    "lr_warmup_steps_ratio": actor.optim.lr_warmup_steps_ratio,
                    "weight_decay": actor.optim.weight_decay,
                    "clip_grad": actor.optim.clip_grad,
                },
                "ref": {
                    "engine_ulysses": ref.engine.ulysses_sequence_parallel_size,
                    "param_offload": ref.engine.param_offload,
                    "ppo_max_token_len_per_gpu": ref.ppo_max_token_len_per_gpu,
                },
                "rollout": {
                    "gpu_memory_utilization": rollout.gpu_memory_utilization,
                    "log_prob_max_token_len_per_gpu": rollout.log_prob_max_token_len_per_gpu,
                    "max_model_len": rollout.max_model_len,
                    "seed": rollout.seed,
                },
                "rollout_correction": {"rollout_is": correction.rollout_is, "upper": upper, "lower": lower},
                "trainer": {
                    "total_epochs": cfg.trainer.total_epochs,
                    "max_actor_ckpt_to_keep": cfg.trainer.max_actor_ckpt_to_keep,
                    "logger": list(cfg.trainer.logger),
                },
                "reward_acc": fn(
                    data_source="keychain/x",
                    solution_str="Therefore, the answer is Ed Wood.",
                    ground_truth=["Ed Wood"],
                    extra_info={"question": "q"},
                )["acc"],
            }
        )
    return report


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(sys.argv[1:])) + "\n")
