"""Training configs: TRL's own ``GRPOConfig`` and ``SFTConfig``, extended with longmill's fields.

:class:`GRPOPhaseConfig` subclasses :class:`trl.GRPOConfig` and :class:`SFTConfig` subclasses
:class:`trl.SFTConfig` (as TRL's ``GRPOWithReplayBufferConfig`` adds one field to ``GRPOConfig``), so
every TRL and ``transformers.TrainingArguments`` option (scheduler, warm-up, ``steps_per_generation``,
``num_iterations``, vLLM sleep mode and tensor parallelism, the importance-sampling correction,
``report_to``...) is a YAML key, a command-line flag and a params.yaml key, under TRL's own name.

A YAML file (``--config``) sets values; flags typed on the command line override it; an unknown key is
an error that suggests the closest field (TRL's convention). Only the values a user gave are kept
(:attr:`GRPOPhaseConfig.given`): each phase builds its own TRL config from them, with its output folder
and its stage's lengths.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from trl import GRPOConfig as TRLGRPOConfig
from trl import SFTConfig as TRLSFTConfig

from longmill.cliutil import field_defaults
from longmill.errors import LongmillError
from longmill.secrets import redact_url, url_credentials

ROLLOUTS = ("auto", "hf", "vllm-colocate", "vllm-server")
DYNAMIC_SAMPLING_METRICS = ("accuracy", "reward")
JUDGE_ON_FAILURE = ("stop", "warn")
MODEL_FOLDER_FILES = ("auto", "link", "copy")


def model_options(role: str, backend: str, items: Any, url: str | None = None) -> list[str]:
    """``<role>_backend_option`` items (``KEY=VALUE``, or ``"K=V,K2=V2"``) checked against the backend's ``Options``.

    A training config is written to files (each phase's config, the checkpoints' ``training_args.bin``), so
    it must hold no credentials: an ``api_key`` option and a ``user:pass@`` URL (``url``, or the ``url=``
    option) are refused; a key travels only as the name of the environment variable that holds it
    (``api_key_env``).

    Raises:
        LongmillError: an unknown backend or option (with the closest name), a value of the wrong type, or a
            credential.
    """
    from eval.backends.base import parse_option_items, split_option_items

    items = split_option_items(items)
    options = parse_option_items(backend, items, f"{role}_backend_option")
    if "api_key" in options:
        raise LongmillError(
            f"{role}_backend_option api_key: a training config is written to files (phase configs, checkpoints), "
            f"so it must not hold a key; put the key in an environment variable and name it instead, e.g. "
            f"{role}_backend_option: [api_key_env=MY_{role.upper()}_KEY]"
        )
    url = url or options.get("url")
    if url_credentials(url or ""):
        where = f"{role}_url" if "url" not in options else f"{role}_backend_option url="
        raise LongmillError(
            f"{where} {redact_url(url)} carries user:pass@: a training config is written to files, so it must "
            f"not hold credentials; serve the {role} with an API key and name its environment variable "
            f"({role}_backend_option: [api_key_env=MY_{role.upper()}_KEY])"
        )
    return items


#: GRPOConfig fields whose loss of meaning would silently turn DAPO into something else. If the installed TRL
#: lacks one (renamed or removed), declaring it here would create a field TRL never reads: refuse instead.
DAPO_CRITICAL_FIELDS = (
    "epsilon",
    "epsilon_high",
    "beta",
    "loss_type",
    "mask_truncated_completions",
    "scale_rewards",
    "steps_per_generation",
    "num_iterations",
    "num_generations",
    "max_completion_length",
    "vllm_importance_sampling_correction",
    "vllm_importance_sampling_mode",
    "vllm_importance_sampling_clip_max",
    "vllm_importance_sampling_clip_min",
)


def gpu_has_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def check_trl_fields(base: type, names: tuple[str, ...] = DAPO_CRITICAL_FIELDS) -> None:
    """Raise when the installed TRL's ``base`` config lacks one of ``names``.

    Raises:
        LongmillError: naming the missing fields and the TRL range longmill supports.
    """
    have = {f.name for f in dataclasses.fields(base)}
    missing = [n for n in names if n not in have]
    if missing:
        from importlib.metadata import version

        raise LongmillError(
            f"the installed TRL ({version('trl')}) has no {', '.join(missing)} in {base.__name__}; "
            "DAPO would silently lose these settings. Install a supported TRL: "
            "pip install 'trl>=1.6,<1.17'"
        )


class _GivenMixin:
    """Remembers the values that differ from the class defaults, before TRL's ``__post_init__`` derives others."""

    def _snapshot_given(self) -> None:
        defaults = field_defaults(type(self))
        given = {}
        for f in dataclasses.fields(self):
            if not f.init:
                continue
            v = getattr(self, f.name)
            if f.name not in defaults or v != defaults[f.name]:
                given[f.name] = v
        self._given = given

    @property
    def given(self) -> dict[str, Any]:
        """The fields set away from their defaults (what ``--config`` needs to rebuild this config)."""
        return dict(self._given)

    def derive(self, **overrides: Any) -> Any:
        """A new config of the same class from :attr:`given` with ``overrides`` on top (re-validated)."""
        return type(self)(**{**self._given, **overrides})


@dataclass
class GRPOPhaseConfig(_GivenMixin, TRLGRPOConfig):
    """Phased GRPO with DAPO defaults: TRL's ``GRPOConfig`` plus longmill's own fields.

    Every ``GRPOConfig``/``TrainingArguments`` field is accepted under TRL's name (see TRL's docs); the
    defaults that differ from TRL's are DAPO's (``epsilon_high`` 0.28, truncated completions masked, a
    constant learning rate with optional warm-up) and longmill's logging (every step, bounded checkpoints).
    ``output_dir`` is set per phase (``OUT/phase-K``).

    Args:
        model: the starting policy: a preset (tiny-qwen2), a folder (e.g. the SFT output) or a hub id.
        rollout: auto (vLLM colocated when vLLM is importable and a GPU is present, else hf), hf,
            vllm-colocate, or vllm-server (a `trl vllm-serve` process on other GPUs, at vllm_server_base_url).
        overlong_buffer: L_cache of the soft overlong punishment (default max_completion_length/4; 0 disables).
        overlong_penalty: the overlong punishment's scale.
        dynamic_sampling_rounds: extra generation rounds per generation batch to replace groups without
            signal (0 disables).
        dynamic_sampling_metric: what a group must vary in to be kept: accuracy (the rule/judge correctness,
            as DAPO and QwenLong-L1 filter) or reward (the shaped reward).
        reward_funcs: the rewards, summed with reward_weights (TRL's): names registered in
            train.rewards.REWARDS (hybrid_qa, the default, and format) or dotted import paths
            (my_pkg.rewards:my_reward).
        reward_rule: the rule half of the reward: em (exact match on the extracted answer), bounded_sub_em
            (sub-EM with at most reward_max_extra_tokens extra words) or sub_em (lenient; listing hacks it).
        reward_max_extra_tokens: for bounded_sub_em, how many words beyond the gold answer are tolerated.
        judge_url: an OpenAI-compatible judge endpoint (the judge half of the reward); none disables.
        judge_model: the judge's served model name.
        judge_backend: a generation backend of eval (openai, hf or vllm) that runs the judge.
        judge_backend_option: options of the judge's backend as KEY=VALUE, comma-separated (e.g.
            timeout=20,max_retries=3,breaker_cooldown=60 for openai); the backend's ``Options`` declares them
            and their defaults (eval.judge.JudgeConfig's for the judge), TRL's reward and verl-config's export
            both use them, and a key is refused: name its environment variable (api_key_env=VAR).
        judge_cache: a JSONL verdict cache.
        yarn_factor: YaRN rope scaling for contexts beyond the model's native window; written into the
            model folder every consumer loads.
        yarn_original_max_position_embeddings: the native window YaRN scales from (Qwen2.5: 32768).
        yarn_within_native_window: also use YaRN for stages whose prompts and completions fit the native
            window (default true: one position encoding for every phase; see docs/design.md, "YaRN lives in
            the model folder").
        attn_implementation: e.g. sdpa or flash_attention_2.
        judge_max_failed_batches: stop training (or, with judge_on_failure warn, log an error) once every judge
            call of this many consecutive logged batches has failed; 0 turns the check off.
        judge_on_failure: stop (save a checkpoint and end the run with an error; resume once the judge is back)
            or warn. The same setting decides whether an unreachable judge_url refuses to start the run.
        model_folder_files: how a phase's model folder holds the weights of the folder it starts from: link
            (symbolic links into it, e.g. the main process's hub cache), copy (a self-sufficient folder, for runs
            whose nodes share the run folder but not the cache), or auto (copy when the run spans nodes).
        sp_size: Ulysses sequence-parallel size: ranks form groups of sp_size that run the training forward and
            backward of their micro-batches together, each holding 1/sp_size of the tokens (train/sequence_parallel.py);
            generation stays per rank and the data-parallel size is processes / sp_size. Needs padding_free and an
            attention implementation the hook covers (sdpa or flash attention). verl-config exports it as
            ulysses_sequence_parallel_size.
        padding_free: score each micro-batch from its real tokens only (no T x T attention mask; see
            ``train/padfree.py``); off gives TRL's padded forward.
    """

    # Defaults that differ from TRL's (DAPO and longmill's logging).
    output_dir: str | None = field(
        default=None, metadata={"help": "Set per phase by `train grpo` (OUT/phase-K)."}
    )
    epsilon_high: float | None = field(
        default=0.28, metadata={"help": "Upper clip range (DAPO's clip-higher)."}
    )
    mask_truncated_completions: bool = field(
        default=True, metadata={"help": "Keep truncated completions out of the loss."}
    )
    max_completion_length: int | None = field(
        default=1024, metadata={"help": "The most tokens per completion."}
    )
    lr_scheduler_type: str = field(
        default="constant_with_warmup",
        metadata={
            "help": "Learning-rate schedule; DAPO and QwenLong-L1 keep it constant "
            "(set warmup_steps or warmup_ratio for a warm-up)."
        },
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every this many steps."})
    save_steps: float = field(
        default=50, metadata={"help": "Checkpoint every this many steps (resume points)."}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept per phase."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bfloat16; default: when a CUDA GPU supports it."}
    )
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over each stage when max_steps is -1."}
    )
    vllm_importance_sampling_mode: str = field(
        default="token_truncate",
        metadata={
            "help": "How the vLLM/trainer mismatch is corrected: token_truncate (default here; truncated "
            "importance sampling per token), token_mask, sequence_truncate or sequence_mask (TRL's default, "
            "which masks most sequences of several thousand tokens)."
        },
    )

    # longmill's own fields.
    model: str = "tiny-qwen2"
    rollout: str = "auto"
    overlong_buffer: int | None = None
    overlong_penalty: float = 1.0
    dynamic_sampling_rounds: int = 2
    dynamic_sampling_metric: str = "accuracy"
    reward_funcs: list[str] = field(default_factory=lambda: ["hybrid_qa"])
    reward_rule: str = "em"
    reward_max_extra_tokens: int = 2
    judge_url: str | None = None
    judge_model: str | None = None
    judge_backend: str | None = None
    judge_backend_option: list[str] = field(default_factory=list)
    judge_cache: str | None = None
    yarn_factor: float | None = None
    yarn_original_max_position_embeddings: int = 32_768
    yarn_within_native_window: bool = True
    attn_implementation: str | None = None
    # Issue 17: the judge's health, multi-node model folders, sequence parallelism (kept together).
    judge_max_failed_batches: int = 3
    judge_on_failure: str = "stop"
    model_folder_files: str = "auto"
    sp_size: int = 1
    # issue 17 (memory): the padding-free training forward
    padding_free: bool = True

    def __post_init__(self) -> None:
        check_trl_fields(TRLGRPOConfig)
        self._snapshot_given()
        if self.rollout not in ROLLOUTS:
            close = difflib.get_close_matches(self.rollout, ROLLOUTS, n=1)
            raise LongmillError(
                f"unknown rollout {self.rollout!r}"
                f"{f'; did you mean {close[0]!r}?' if close else ''} Valid: {', '.join(ROLLOUTS)}"
            )
        if self.rollout == "vllm-server" and not self.vllm_server_base_url:
            raise LongmillError(
                "rollout=vllm-server needs vllm_server_base_url, e.g. http://10.0.0.2:8000 from "
                "`trl vllm-serve --model MODEL` on other GPUs"
            )
        if self.num_generations is not None and self.num_generations < 2:
            raise LongmillError(
                f"num_generations must be >= 2 (GRPO compares completions within a group), "
                f"got {self.num_generations}"
            )
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise LongmillError(
                f"epsilon_high ({self.epsilon_high}) must be >= epsilon ({self.epsilon}) for clip-higher"
            )
        if self.overlong_buffer is not None and self.overlong_buffer >= (self.max_completion_length or 0):
            raise LongmillError(
                f"overlong_buffer ({self.overlong_buffer}) must be smaller than max_completion_length "
                f"({self.max_completion_length})"
            )
        from train.rewards import check_reward_names

        if isinstance(self.reward_funcs, str):  # `reward_funcs: hybrid_qa` in YAML
            self.reward_funcs = [self.reward_funcs]
        check_reward_names(self.reward_funcs)
        if self.dynamic_sampling_rounds < 0:
            raise LongmillError("dynamic_sampling_rounds must be >= 0")
        if self.dynamic_sampling_metric not in DYNAMIC_SAMPLING_METRICS:
            raise LongmillError(
                f"dynamic_sampling_metric must be one of {', '.join(DYNAMIC_SAMPLING_METRICS)}, "
                f"got {self.dynamic_sampling_metric!r}"
            )
        self.judge_backend_option = model_options(
            "judge", self.judge_backend or "openai", self.judge_backend_option, self.judge_url
        )
        if self.judge_max_failed_batches < 0:
            raise LongmillError(
                f"judge_max_failed_batches must be >= 0 (0 turns the check off), got {self.judge_max_failed_batches}"
            )
        for name, valid in (
            ("judge_on_failure", JUDGE_ON_FAILURE),
            ("model_folder_files", MODEL_FOLDER_FILES),
        ):
            if getattr(self, name) not in valid:
                raise LongmillError(f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        if self.sp_size < 1:
            raise LongmillError(f"sp_size must be >= 1, got {self.sp_size}")
        if self.sp_size > 1:
            from train.sequence_parallel import COVERED_ATTENTION

            if not self.padding_free:
                raise LongmillError(
                    f"sp_size={self.sp_size} needs padding_free: true (the group shares its rows' real tokens, "
                    "packed; the padded forward has no sequence-parallel path)"
                )
            if self.attn_implementation is not None and self.attn_implementation not in COVERED_ATTENTION:
                raise LongmillError(
                    f"sp_size={self.sp_size} with attn_implementation={self.attn_implementation!r}: the Ulysses hook "
                    f"covers {', '.join(COVERED_ATTENTION)}; choose one of them"
                )
        if self.yarn_factor is not None and self.yarn_factor <= 1.0:
            raise LongmillError(f"yarn_factor must be > 1 (or unset), got {self.yarn_factor}")
        if self.bf16 is None:
            self.bf16 = gpu_has_bf16()
        try:
            super().__post_init__()
        except ValueError as e:  # TRL's and transformers' own checks, as one-line errors
            raise LongmillError(f"invalid GRPO settings: {e}") from e

    def resolved_rollout(self) -> str:
        """``auto`` resolved: vllm-colocate when vLLM is importable and CUDA is available, else hf."""
        if self.rollout != "auto":
            return self.rollout
        import torch

        has_vllm = importlib.util.find_spec("vllm") is not None
        return "vllm-colocate" if has_vllm and torch.cuda.is_available() else "hf"

    @property
    def overlong_cache(self) -> int:
        n = self.max_completion_length or 0
        return n // 4 if self.overlong_buffer is None else self.overlong_buffer


@dataclass
class SFTConfig(_GivenMixin, TRLSFTConfig):
    """Warm-up SFT on short triplets: TRL's ``SFTConfig`` plus longmill's own fields.

    Every ``SFTConfig``/``TrainingArguments`` field is accepted under TRL's name (``max_length``,
    ``learning_rate``, ``lr_scheduler_type``...). ``output_dir`` is the command's ``--out``.

    Args:
        model: the model to fine-tune: a preset, a folder or a hub id.
        max_examples: use at most this many triplets.
        distractors: how many of a triplet's own distractor documents go into its prompt.
        teacher_model: generate targets with this model and keep those the reward accepts (rejection sampling).
        teacher_backend: hf, vllm or openai.
        teacher_backend_option: options of the teacher's backend as KEY=VALUE, comma-separated (e.g.
            url=http://127.0.0.1:8000/v1,timeout=120 for openai, dtype=bfloat16 for hf); a key is refused:
            name its environment variable (api_key_env=VAR).
        teacher_k: completions sampled per triplet from the teacher.
        teacher_max_tokens: the most tokens per teacher completion.
    """

    output_dir: str | None = field(default=None, metadata={"help": "Set by `train sft --out`."})
    max_length: int | None = field(default=4096, metadata={"help": "Truncate examples to this many tokens."})
    logging_steps: float = field(default=5, metadata={"help": "Log every this many steps."})
    save_strategy: str = field(default="no", metadata={"help": "The final model is saved to OUT/final."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the data."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bfloat16; default: when a CUDA GPU supports it."}
    )

    model: str = "tiny-qwen2"
    max_examples: int | None = None
    distractors: int = 3
    teacher_model: str | None = None
    teacher_backend: str = "hf"
    teacher_backend_option: list[str] = field(default_factory=list)
    teacher_k: int = 4
    teacher_max_tokens: int = 512

    def __post_init__(self) -> None:
        self._snapshot_given()
        self.teacher_backend_option = model_options(
            "teacher", self.teacher_backend, self.teacher_backend_option
        )
        if self.bf16 is None:
            self.bf16 = gpu_has_bf16()
        try:
            super().__post_init__()
        except ValueError as e:
            raise LongmillError(f"invalid SFT settings: {e}") from e


# -- parsing: YAML defaults, flags on top -----------------------------------------------------------

#: Fields a command sets itself (not flags).
NOT_FLAGS = ("output_dir",)


def config_keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in NOT_FLAGS]


def unknown_key_error(key: str, names: list[str], where: str) -> LongmillError:
    close = difflib.get_close_matches(key, names, n=1)
    return LongmillError(
        f"{where}: unknown key {key!r}{f'; did you mean {close[0]!r}?' if close else ''} "
        f"(keys are the command's flag names with underscores: longmill's fields and every field "
        f"of TRL's config)"
    )


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A config file's top-level mapping; a missing file or another shape is a one-line error naming the file."""
    p = Path(path)
    if not p.exists():
        raise LongmillError(f"{p}: no such config file")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise LongmillError(f"{p}: a config file must be a YAML mapping of option: value")
    return data


def load_yaml_config(cls: type, path: str | Path | None, overrides: dict[str, Any]) -> Any:
    """``cls`` from a YAML file, with ``overrides`` (the flags the user typed) on top.

    Raises:
        LongmillError: the file is missing or not a mapping, or has a key that is not a field.
    """
    values: dict[str, Any] = {}
    names = config_keys(cls)
    if path:
        p = Path(path)
        data = read_yaml_mapping(p)
        for key in data:
            if key not in names:
                raise unknown_key_error(key, names, str(p))
        values.update(data)
    for key in overrides:
        if key not in names:
            raise unknown_key_error(key, names, "options")
    values.update(overrides)
    return cls(**values)
