"""Where the judge is, and what happens when it stops answering.

A judge failure makes a completion's reward ``None`` (:class:`train.rewards.HybridQAReward`): TRL gives it no
advantage, its group may drop out as "no signal", and training goes on learning from the rule alone. That is
right for a passing fault and wrong for a judge that is gone, such as a ``127.0.0.1`` URL seen from a second
node. So:

- :func:`check_judge_url`, before a run trains: a loopback ``judge_url`` in a run that spans nodes is refused
  (each node would ask its own loopback), and every rank asks the judge once; an unreachable judge refuses the
  run (``judge_on_failure: stop``) or is logged as an error (``warn``).
- :class:`JudgeHealth`, while it trains: counts consecutive logged batches in which every judge call failed
  (``hybrid_qa/judge_failed`` = ``hybrid_qa/judge_calls``, the reward's metrics, averaged over ranks by TRL, so
  every rank sees the same numbers and takes the same decision). At ``judge_max_failed_batches`` it saves a
  checkpoint and stops the phase, and the backend ends the run with an error naming the judge; with ``warn`` it
  logs an error for every further failed batch instead.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from transformers import TrainerCallback

from eval.http import redact_url
from longmill.errors import LongmillError
from train.model_folder import run_spans_nodes

log = logging.getLogger(__name__)


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine only (127.0.0.0/8, ::1, localhost).

    Example:
        >>> is_loopback("http://127.0.0.1:8001/v1"), is_loopback("http://judge.cluster:8001/v1")
        (True, False)
    """
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def judge_unreachable(url: str, timeout: float = 5.0) -> str | None:
    """Why the OpenAI-compatible server at ``url`` cannot be reached from here, or None when it answers.

    Any HTTP answer (even 404 or 401) means a server is there; a refused connection or a timeout does not.
    The request goes through the openai SDK (``models.list``), without retries.
    """
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=timeout)
    try:
        client.models.list()
    except openai.APIStatusError:
        return None
    except openai.APIConnectionError as e:  # refused, unresolvable, or timed out
        return f"{type(e).__name__}: {e.__cause__ or e}"
    finally:
        client.close()
    return None


def check_judge_url(config: Any, timeout: float = 5.0) -> None:
    """Refuse a judge URL that some rank cannot reach, before any training (call it on every rank).

    Raises:
        LongmillError: a loopback ``judge_url`` in a run over several nodes; or, with ``judge_on_failure`` stop,
            a judge that does not answer from this host.
    """
    url = getattr(config, "judge_url", None)
    if not url:
        return
    shown = redact_url(url)
    if is_loopback(url) and run_spans_nodes():
        raise LongmillError(
            f"judge_url {shown} is a loopback address, but this run spans several nodes: the ranks of every other "
            f"node would ask their own machine, fail, and train on the rule alone. Serve the judge where every node "
            f"reaches it (vllm serve ... --host 0.0.0.0) and set judge_url to that host, e.g. "
            f"http://JUDGE_HOST:8001/v1 (README: 'Where the judge runs')"
        )
    reason = judge_unreachable(url, timeout)
    if reason is None:
        return
    msg = (
        f"the judge at {shown} does not answer from {socket.gethostname()} ({reason}); start it first "
        f"(README: 'Where the judge runs')"
    )
    if getattr(config, "judge_on_failure", "stop") == "stop":
        raise LongmillError(msg + ", or set judge_on_failure: warn to train on the rule alone meanwhile")
    log.error("%s; training starts anyway (judge_on_failure: warn)", msg)


class JudgeHealth(TrainerCallback):
    """Stops (or loudly warns) after ``max_failed_batches`` consecutive logged batches whose judge calls all failed.

    A logged batch without judge calls (every answer matched the rule, or no judge is configured) changes
    nothing; one with at least one verdict resets the count.

    Args:
        max_failed_batches: consecutive failed batches that trip it (0 disables).
        action: ``stop`` (checkpoint, stop the phase; :attr:`tripped` holds the message) or ``warn``.
        url: the judge's URL, for the message.
    """

    def __init__(self, max_failed_batches: int, action: str = "stop", url: str | None = None):
        self.max_failed_batches = int(max_failed_batches)
        self.action = action
        self.url = redact_url(url) if url else "the judge"
        self.streak = 0
        self.tripped: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D401 - transformers' hook
        if not logs or self.max_failed_batches <= 0:
            return
        calls, failed = logs.get("hybrid_qa/judge_calls"), logs.get("hybrid_qa/judge_failed")
        if not calls:
            return
        self.streak = self.streak + 1 if failed is not None and failed >= calls - 1e-9 else 0
        if self.streak < self.max_failed_batches:
            return
        msg = (
            f"JUDGE DOWN: every call to {self.url} failed in {self.streak} consecutive batches (up to step "
            f"{state.global_step}); their rewards are None, so the policy learns from rule matches alone"
        )
        if self.action == "stop":
            if self.tripped is None:
                self.tripped = (
                    f"{msg}. Training stopped at step {state.global_step} with a checkpoint; bring the judge "
                    f"back and rerun with --resume (judge_max_failed_batches, judge_on_failure: warn to go on)"
                )
                log.error(self.tripped)
            control.should_save = True
            control.should_training_stop = True
        else:
            log.error("%s (judge_on_failure: warn, training goes on)", msg)
