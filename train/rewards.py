"""Rewards for long-context QA, built on :mod:`eval.reward` (extraction and rules) and eval's judge.

``hybrid_qa`` = max(rule, judge) (QwenLong-L1): the rule accepts an extracted answer that matches an
accepted answer (exact match by default: sub-EM accepts "Ed Wood, Tim Burton, Johnny Depp" for "Ed Wood",
an easy hack when decoy answers sit in the context; ``bounded_sub_em`` tolerates a few extra words but no
hedging, and ``sub_em`` stays available); the LLM judge is asked only when the rule misses, concurrently and
through a cache. A judge outage makes the reward ``None`` for that completion, so TRL skips it (its
advantage is zero); it is counted and logged as a metric, never scored 0. DAPO's soft overlong
punishment (TRL's implementation) is added to every reward that exists.

:class:`HybridQAReward` is TRL's interface, ``(completions, **columns) -> list[float | None]``; picklable,
with a ``__name__`` that names its logged metric. verl's ``custom_reward_function`` is
:func:`eval.reward.compute_score`, which ``train verl-config`` ships verbatim with the same rules.

Which rewards a run uses is configuration (``reward_funcs``, as in TRL's scripts): names in
:data:`REWARDS` (``hybrid_qa``, the default, and ``format``), or a dotted import path such as
``my_pkg.rewards:my_reward`` (or TRL's ``my_pkg.rewards.my_reward``); see :func:`build_rewards`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from eval import reward as reward_rules
from eval.judge import Judge, JudgeConfig, judge_from_spec, make_judge
from eval.reward import as_answer_list, completion_text, extract_answer
from longmill.errors import LongmillError, UnknownNameError
from longmill.registry import Registry, did_you_mean
from longmill.stats import Stats

log = logging.getLogger(__name__)


def rule_scorer(rule: str, max_extra_tokens: int = 2) -> Callable[[str | None, Sequence[str]], float]:
    """:func:`eval.reward.rule_scorer`, with an unknown rule as a :class:`LongmillError` (the user's to fix)."""
    try:
        return reward_rules.rule_scorer(rule, max_extra_tokens)
    except ValueError as e:
        raise LongmillError(str(e)) from None


class HybridQAReward:
    """max(rule, judge) on the extracted answer, plus DAPO's soft overlong punishment.

    Args:
        rule: what accepts an answer: ``em`` (default), ``bounded_sub_em`` or ``sub_em`` (see :data:`eval.reward.RULES`).
        judge: a judge config; None scores with the rule alone.
        max_completion_length: enables the soft overlong punishment (L_max), with ``overlong_buffer``.
        overlong_buffer: the soft punishment's cache length L_cache (DAPO uses 4096 of 20480).
        overlong_penalty: the penalty's scale (DAPO's penalty_factor).
        judge_factory: builds the judge from ``judge`` (tests inject fakes); default :func:`make_judge`.
        max_extra_tokens: for ``bounded_sub_em``, the extra words tolerated beside the answer.

    After each call, :attr:`last_accuracy` holds the unshaped correctness of each completion (1.0, 0.0, or
    None where the judge failed): dynamic sampling filters on it, and it is logged as ``hybrid_qa/accuracy``
    apart from the shaped reward.

    Example:
        >>> reward = HybridQAReward()
        >>> reward(["Therefore, the answer is Paris.", "It is Lyon.", "no answer"],
        ...        answers=[["Paris"], ["Paris"], ["Paris"]], question=["Capital?"] * 3)
        [1.0, 0.0, 0.0]
    """

    __name__ = "hybrid_qa"

    def __init__(
        self,
        rule: str = "em",
        judge: JudgeConfig | None = None,
        *,
        max_completion_length: int | None = None,
        overlong_buffer: int | None = None,
        overlong_penalty: float = 1.0,
        judge_factory: Callable[[JudgeConfig], Judge] | None = None,
        max_extra_tokens: int = 2,
    ):
        self.rule = rule
        self.max_extra_tokens = max_extra_tokens
        self._metric = rule_scorer(rule, max_extra_tokens)
        self.last_accuracy: list[float | None] = []
        self.judge_config = judge
        self.judge_factory = judge_factory
        self.max_completion_length = max_completion_length
        self.overlong_buffer = overlong_buffer
        self.overlong_penalty = overlong_penalty
        if (
            max_completion_length
            and overlong_buffer is not None
            and not 0 < overlong_buffer < max_completion_length
        ):
            raise LongmillError(
                f"overlong_buffer must be in (0, max_completion_length={max_completion_length}), "
                f"got {overlong_buffer}"
            )
        self._judge: Judge | None = None
        self._lock = threading.Lock()
        self.stats = Stats(
            completions=0, rule_hits=0, judge_calls=0, judge_yes=0, judge_failed=0, no_answer=0
        )

    # Pickling (TRL may ship rewards to worker processes): the live judge client stays behind.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_judge"] = None
        state["_lock"] = None
        state["_metric"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._metric = rule_scorer(self.rule, self.__dict__.get("max_extra_tokens", 2))

    @property
    def judge(self) -> Judge | None:
        if self.judge_config is None:
            return None
        with self._lock:
            if self._judge is None:
                self._judge = (self.judge_factory or make_judge)(self.judge_config)
            return self._judge

    def _overlong(self, completion_ids: Sequence[Sequence[int]] | None, n: int) -> list[float]:
        if not self.max_completion_length or completion_ids is None:
            return [0.0] * n
        from trl.rewards import get_soft_overlong_punishment

        buffer = self.overlong_buffer or max(1, self.max_completion_length // 4)
        punish = get_soft_overlong_punishment(self.max_completion_length, buffer)
        return [self.overlong_penalty * p for p in punish(completion_ids=list(completion_ids))]

    def __call__(
        self,
        completions: Sequence[Any],
        answers: Sequence[Any] | None = None,
        question: Sequence[str] | None = None,
        completion_ids: Sequence[Sequence[int]] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if answers is None:
            raise LongmillError("hybrid_qa needs an 'answers' column (every accepted answer) in the dataset")
        n = len(completions)
        preds = [extract_answer(completion_text(c)) for c in completions]
        golds = [as_answer_list(a) for a in answers]
        rewards: list[float | None] = [
            float(self._metric(p, g) >= 1.0) for p, g in zip(preds, golds, strict=True)
        ]
        ask = [i for i in range(n) if rewards[i] == 0.0 and preds[i] is not None]
        failed = yes = 0
        judge = self.judge if ask else None
        if judge is not None:
            if question is None:
                raise LongmillError("hybrid_qa with a judge needs a 'question' column in the dataset")
            results = judge.judge_many([(question[i], preds[i], golds[i]) for i in ask])
            for i, r in zip(ask, results, strict=True):
                if r.failed:
                    rewards[i] = None  # unknown: TRL gives it no advantage; never a silent 0
                    failed += 1
                elif r.verdict:
                    rewards[i] = 1.0
                    yes += 1
        self.last_accuracy = list(rewards)
        shaped = [
            None if r is None else r + p
            for r, p in zip(rewards, self._overlong(completion_ids, n), strict=True)
        ]
        self.stats.update(
            {
                "completions": n,
                "rule_hits": sum(r == 1.0 for r in rewards) - yes,
                "no_answer": sum(p is None for p in preds),
                "judge_calls": len(ask) if judge is not None else 0,
                "judge_yes": yes,
                "judge_failed": failed,
            }
        )
        if failed:
            log.warning(
                "judge failed for %d of %d completions in this batch; their rewards are None (skipped)",
                failed,
                n,
            )
        if log_metric is not None:
            log_metric("hybrid_qa/no_answer_rate", sum(p is None for p in preds) / max(n, 1))
            scored = [r for r in rewards if r is not None]
            if scored:
                log_metric("hybrid_qa/accuracy", sum(scored) / len(scored))
            if judge is not None:
                log_metric("hybrid_qa/judge_calls", float(len(ask)))
                log_metric("hybrid_qa/judge_yes", float(yes))
                log_metric("hybrid_qa/judge_failed", float(failed))
        return shaped


# -- the reward registry ----------------------------------------------------------------------------

#: Rewards by name: each entry is a factory ``(config) -> reward``, where ``config`` is the phase settings
#: (:class:`train.config.GRPOPhaseConfig`, read by attribute) and the reward is a TRL reward function.
REWARDS: Registry[Callable[[Any], Any]] = Registry("reward")


def register_reward(name: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register a reward factory ``(config) -> reward`` under ``name`` (a decorator), e.g.::

        @register_reward("brevity")
        def brevity(cfg):
            return BrevityReward(cfg.max_completion_length)

    after which ``reward_funcs: [hybrid_qa, brevity]`` uses it.
    """
    return REWARDS.register(name)


def judge_config(cfg: Any) -> JudgeConfig | None:
    """The reward's judge from the phase settings (:func:`eval.judge.judge_from_spec` of ``judge_backend``,
    ``judge_model``, ``judge_url``, ``judge_backend_option`` and ``judge_cache``), or None: the rule alone.

    TRL's reward (:func:`make_reward`) and verl's export (:func:`train.backends.verl.verl_overrides`) both
    take the judge from here, so both use the same options with the same defaults.
    """
    return judge_from_spec(
        getattr(cfg, "judge_backend", None),
        getattr(cfg, "judge_model", None),
        getattr(cfg, "judge_url", None),
        getattr(cfg, "judge_backend_option", None),
        getattr(cfg, "judge_cache", None),
    )


@register_reward("hybrid_qa")
def make_reward(cfg: Any) -> HybridQAReward:
    """longmill's default reward, configured from the phase settings (rule, judge, overlong shaping)."""
    if cfg is None:
        return HybridQAReward()
    return HybridQAReward(
        cfg.reward_rule,
        judge_config(cfg),
        max_completion_length=cfg.max_completion_length if cfg.overlong_cache else None,
        overlong_buffer=cfg.overlong_cache or None,
        overlong_penalty=cfg.overlong_penalty,
        max_extra_tokens=cfg.reward_max_extra_tokens,
    )


class AnswerFormatReward:
    """1.0 when the completion states a final answer that the reward can extract, else 0.0.

    A shaping term to add beside ``hybrid_qa`` (``reward_funcs: [hybrid_qa, format]``, weighted with
    ``reward_weights``): it rewards the answer format, not the answer.

    Example:
        >>> AnswerFormatReward()(["Therefore, the answer is Paris.", "Paris, I think."])
        [1.0, 0.0]
    """

    __name__ = "format"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [float(extract_answer(completion_text(c)) is not None) for c in completions]


REWARDS.add("format", lambda cfg: AnswerFormatReward())


def _import_reward(spec: str) -> Any:
    """The object a dotted path names: ``pkg.module:attr`` or ``pkg.module.attr`` (TRL's form)."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise LongmillError(
            f"reward {spec!r}: a dotted path needs a module and a name, e.g. my_pkg.rewards:my_reward"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise LongmillError(
            f"reward {spec!r}: cannot import module {module_name!r} ({e}); install it or put it on PYTHONPATH"
        ) from e
    try:
        return getattr(module, attr)
    except AttributeError:
        public = [n for n in dir(module) if not n.startswith("_")]
        raise LongmillError(
            f"reward {spec!r}: module {module_name!r} has no {attr!r}{did_you_mean(attr, public)}"
        ) from None


def resolve_reward(spec: str, cfg: Any = None) -> Any:
    """One reward function from its configured name.

    Args:
        spec: a name in :data:`REWARDS`, or a dotted path to a reward function (used as it is), a reward
            class (instantiated without arguments) or an instance with a ``__name__``.
        cfg: the phase settings, passed to registered factories.

    Raises:
        UnknownNameError: a plain name that is not registered, with the closest valid name.
        LongmillError: a dotted path that does not import, or names something that is not a reward.
    """
    if spec in REWARDS:
        return REWARDS.get(spec)(cfg)
    if "." not in spec and ":" not in spec:
        raise UnknownNameError(
            REWARDS.unknown_message(spec) + ", or a dotted path such as my_pkg.rewards:my_reward"
        )
    obj = _import_reward(spec)
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise LongmillError(
            f"reward {spec!r} is a {type(obj).__name__}, not a function "
            "(completions, **columns) -> list[float | None]"
        )
    if not isinstance(getattr(obj, "__name__", None), str):
        raise LongmillError(
            f"reward {spec!r} has no __name__ (TRL names the reward's logged metric after it): "
            "give its class a __name__ attribute"
        )
    return obj


def check_reward_names(specs: Sequence[str]) -> None:
    """Fail early on an unknown registered name (dotted paths are imported only when a run starts).

    Raises:
        LongmillError: an empty list, or an unknown name, with the closest valid name.
    """
    if not specs:
        raise LongmillError("reward_funcs is empty: name at least one reward, e.g. hybrid_qa")
    for spec in specs:
        if spec not in REWARDS and "." not in spec and ":" not in spec:
            raise UnknownNameError(
                REWARDS.unknown_message(spec) + ", or a dotted path such as my_pkg.rewards:my_reward"
            )


def build_rewards(specs: Sequence[str], cfg: Any = None) -> list[Any]:
    """The reward functions named in ``specs`` (``reward_funcs`` of the config), in order.

    Example:
        >>> [f.__name__ for f in build_rewards(["hybrid_qa", "format"])]
        ['hybrid_qa', 'format']
    """
    check_reward_names(specs)
    return [resolve_reward(s, cfg) for s in specs]
