"""Build the staged curriculum: length bins, difficulty, DAPO-style filtering, retrospective sampling,
a held-out eval split, and the manifest.

Stage k holds the samples whose *measured* ``prompt_tokens`` fall in ``(L(k-1), L(k)]``, plus hard
samples of earlier bins drawn without replacement with probability proportional to difficulty, up to
``retro_share`` of the stage (QwenLong-L1's retrospective sampling). Source questions are split between
training and eval by a seeded hash of ``source_id``, then closed over what questions ask (the same text or
the same fact keys under another id is held out too; a training question through a held-out fact, or a
decoy chain asking a held-out question, is dropped), so a question never lands on both sides, at any
length, in any wording. Every choice is seeded: the same inputs and seed give the same shards, byte for byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curriculum.difficulty import FEATURES_VERSION, feature_difficulty, pass_rates
from curriculum.features import features
from datagen.schema import SAMPLE_SCHEMA, conform_samples, schema_core, schema_kind
from datagen.shards import (
    OutputLock,
    check_complete,
    check_output_path,
    finish_promote,
    fresh_staging,
    list_parts,
    part_name,
    promote,
    read_schema,
)
from eval.backends.base import parse_option_items, split_option_items
from eval.data import EvalItem
from eval.run import GenerateConfig
from longmill.errors import LongmillError
from longmill.io import atomic_write_json, write_table_atomic
from longmill.lengths import format_length, parse_lengths
from longmill.manifest import HELDOUT, MANIFEST, normalize_question
from longmill.rng import check_seed, sample_rng, stable_hash
from longmill.stats import Stats, filter_rows
from longmill.version import __version__

log = logging.getLogger(__name__)


@dataclass
class CurriculumConfig:
    """How the curriculum is built (the same names in params.yaml and on the CLI).

    Args:
        bins: upper edges of the length bins, one training phase per bin (e.g. 20k,40k,60k).
        retro_share: the share of each stage (after the first) taken by hard samples of earlier bins.
        retro_hard_quantile: only samples at or above this difficulty quantile of their own bin are hard
            enough to be drawn again (0 makes every earlier sample a candidate).
        eval_share: the share of source questions held out for evaluation, from every bin.
        seed: seeds the eval split, the retrospective draws and the shuffles.
        filter_extremes: with model difficulty, drop samples whose pass rate is exactly 0 or 1 (they give
            zero advantage in GRPO: the offline half of DAPO's dynamic sampling).
        difficulty_model: a model whose pass rate over k rollouts sets difficulty; none uses features.
        difficulty_backend: hf (CPU or GPU), vllm (GPU) or openai (a server).
        k: rollouts per sample for the pass rate.
        difficulty_temperature: sampling temperature of the rollouts.
        difficulty_max_tokens: the most tokens per rollout.
        difficulty_batch_size: prompts per generation call.
        difficulty_backend_option: the difficulty backend's options as KEY=VALUE, comma-separated (e.g.
            url=http://127.0.0.1:8000/v1 for openai, device=cpu for hf, gpu_memory_utilization=0.5 for vllm);
            each backend declares its options and their defaults, and an unknown key is an error that
            suggests the closest.
        correct_if: the rule that marks a rollout correct (a metric of eval.metrics, e.g. sub_em, em).
        rows_per_part: samples per Parquet part.
        task_balance: give every task (the task column: keychain, longqa, aggregation, ...) of a stage an
            equal share of it: its own samples are drawn down to the smallest task's count, and each task
            draws the same number of retrospective samples; a stage cut to less than half is warned about.
    """

    bins: list[int] = field(
        default_factory=lambda: [20_000, 40_000, 60_000], metadata={"parse": parse_lengths}
    )
    retro_share: float = 0.25
    retro_hard_quantile: float = 0.5
    eval_share: float = 0.05
    seed: int = 0
    filter_extremes: bool = True
    difficulty_model: str | None = None
    difficulty_backend: str = "hf"
    k: int = 8
    difficulty_temperature: float = 1.0
    difficulty_max_tokens: int = 512
    difficulty_batch_size: int = GenerateConfig.batch_size
    difficulty_backend_option: list[str] = field(default_factory=list)
    correct_if: str = "sub_em"
    rows_per_part: int = 256
    task_balance: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.bins, str):
            self.bins = parse_lengths(self.bins)
        self.bins = sorted(int(b) for b in self.bins)
        if not self.bins or len(set(self.bins)) != len(self.bins):
            raise LongmillError(f"bins must be distinct lengths, got {self.bins}")
        if not 0.0 <= self.retro_share < 1.0:
            raise LongmillError(f"retro_share must be in [0, 1), got {self.retro_share}")
        if not 0.0 <= self.retro_hard_quantile < 1.0:
            raise LongmillError(f"retro_hard_quantile must be in [0, 1), got {self.retro_hard_quantile}")
        if not 0.0 <= self.eval_share < 1.0:
            raise LongmillError(f"eval_share must be in [0, 1), got {self.eval_share}")
        self.difficulty_backend_option = split_option_items(self.difficulty_backend_option)
        # An unknown backend or option fails here, before any rollout: "did you mean ...?"
        parse_option_items(
            self.difficulty_backend, self.difficulty_backend_option, "--difficulty-backend-option"
        )
        if self.difficulty_model and self.k < 2:
            raise LongmillError(f"k must be >= 2 to estimate a pass rate, got {self.k}")


def read_inputs(inputs: list[str | Path]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """All rows of the input shard folders as one table (in input, part and row order)."""
    tables, info = [], []
    first: tuple[Path, pa.Schema] | None = None
    for inp in inputs:
        parts = list_parts(inp)
        rows = 0
        for p in parts:
            schema = read_schema(p)
            if schema_kind(schema) != "sample":
                raise LongmillError(
                    f"{p} is not a sample shard (made by datagen keychain/longqa); columns: "
                    f"{', '.join(schema.names[:8])}..."
                )
            if first is None:
                first = (p, schema)
            elif not schema_core(schema).equals(schema_core(first[1])):
                diff = sorted(set(map(str, schema)) ^ set(map(str, first[1])))
                raise LongmillError(
                    f"{p} and {first[0]} have different schemas ({'; '.join(diff[:4])}); "
                    "regenerate the older shards with one longmill version"
                )
            t = conform_samples(pq.read_table(p))  # shards written before the task column get it
            rows += t.num_rows
            tables.append(t)
        info.append({"path": str(inp), "parts": len(parts), "rows": rows})
    table = pa.concat_tables(tables).cast(SAMPLE_SCHEMA) if tables else SAMPLE_SCHEMA.empty_table()
    dup = pl.Series(table.column("uid").to_pylist()).is_duplicated()
    if dup.any():
        uid = table.column("uid")[int(dup.arg_true()[0])].as_py()
        raise LongmillError(
            f"uid {uid} appears more than once across the inputs; pass each shard folder once"
        )
    return table, info


def assign_bins(tokens: np.ndarray, edges: list[int]) -> np.ndarray:
    """Bin index of each length: bin k holds ``edges[k-1] < tokens <= edges[k]``; -1 above the last edge."""
    idx = np.searchsorted(np.asarray(edges), tokens, side="left")
    return np.where(idx < len(edges), idx, -1)


def eval_mask(source_ids: list[str], share: float, seed: int) -> np.ndarray:
    """Which rows are held out: a seeded hash of the source question id, so all its samples go together."""
    if share <= 0:
        return np.zeros(len(source_ids), dtype=bool)
    u = np.array([stable_hash(seed, "eval-split", s) / 2**64 for s in source_ids])
    return u < share


def hold_out(table: pa.Table, held: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Close the eval split over what questions ask, so no training row asks or answers a held-out fact.

    Args:
        table: the sample rows.
        held: the rows the source-id hash holds out.

    Returns:
        ``(held, uses_fact, decoy, heldout)``. ``held`` is extended, until nothing changes, to every row that asks a
        held-out question under another source id: the same normalised text, or the same ``fact_keys``
        (the same facts in other words; the synthetic world carries them as data). The other two mark rows
        that may neither train nor be evaluated: ``uses_fact``, a true question that uses a gold fact of a
        held-out question (through a held-out fact it would answer it or train on its evidence), and
        ``decoy``, a KeyChain decoy chain that asks a held-out question (by text or by fact keys).
        ``heldout`` is the content of ``heldout.json``: the source ids, normalised questions and fact keys
        for the SFT stage, plus a report of what the closure removed.

    Documents are not held out: a held-out question's gold documents may still fill other samples'
    contexts as distractors (counted in the report; see docs/design.md, "Held out by fact").
    """
    cols = table.select(["question", "source_id", "chains", "doc_ids", "gold_docs", "fact_keys"]).to_pydict()
    q = [normalize_question(x) for x in cols["question"]]
    facts = [frozenset(f or ()) for f in cols["fact_keys"]]
    first = held.copy()
    same_q = np.zeros(len(q), dtype=bool)
    same_fact = np.zeros(len(q), dtype=bool)
    while True:  # a paraphrase held for its facts brings its own text along, and so on
        held_q = {q[i] for i in np.flatnonzero(held)}
        held_sets = {facts[i] for i in np.flatnonzero(held) if facts[i]}
        by_q = np.array([x in held_q for x in q], dtype=bool) & ~held
        by_fact = np.array([bool(f) and f in held_sets for f in facts], dtype=bool) & ~held & ~by_q
        if not (by_q.any() or by_fact.any()):
            break
        same_q |= by_q
        same_fact |= by_fact
        held = held | by_q | by_fact
    held_facts = frozenset().union(*held_sets) if held_sets else frozenset()
    uses_fact = np.array([bool(f & held_facts) for f in facts], dtype=bool) & ~held

    def asks_held(chain: dict[str, Any]) -> bool:
        if chain["is_true"]:
            return False
        keys = frozenset(chain.get("fact_keys") or ())
        return normalize_question(chain["target"]) in held_q or (bool(keys) and keys in held_sets)

    decoy = np.array([any(asks_held(ch) for ch in chains or []) for chains in cols["chains"]], dtype=bool)
    decoy &= ~held & ~uses_fact
    held_gold = {d["doc_id"] for i in np.flatnonzero(held) for d in cols["gold_docs"][i]}
    gold_as_distractor = 0
    for i in np.flatnonzero(~held & ~uses_fact & ~decoy):
        own = {d["doc_id"] for d in cols["gold_docs"][i]}
        gold_as_distractor += bool((set(cols["doc_ids"][i] or []) - own) & held_gold)
    heldout = {
        "source_ids": sorted({cols["source_id"][i] for i in np.flatnonzero(held)}),
        "questions": sorted(held_q),
        "fact_keys": sorted(held_facts),
        "report": {
            "rows": int(held.sum()),
            "split_rows": int(first.sum()),
            "same_question_other_id": int(same_q.sum()),
            "same_facts_other_wording": int(same_fact.sum()),
            "held_facts": len(held_facts),
            "fact_rows_dropped": int(uses_fact.sum()),
            "decoy_rows_dropped": int(decoy.sum()),
            "train_rows_with_heldout_gold_as_distractor": int(gold_as_distractor),
        },
    }
    return held, uses_fact, decoy, heldout


def retro_draw(
    candidates: np.ndarray,
    weights: np.ndarray,
    own: int,
    share: float,
    rng: np.random.Generator,
    limit: int | None = None,
) -> tuple[np.ndarray, int]:
    """Indices of hard earlier samples for a stage with ``own`` samples, and the target count.

    Drawn without replacement, with probability proportional to ``weights`` (difficulty); at most
    ``limit`` of them when given (the task balance's common count).
    """
    target = int(round(share * own / (1.0 - share))) if share > 0 else 0
    usable = candidates[weights > 0]
    w = weights[weights > 0]
    n = min(target, len(usable), target if limit is None else limit)
    if n == 0:
        return np.array([], dtype=np.int64), target
    chosen = rng.choice(len(usable), size=n, replace=False, p=w / w.sum())
    return np.sort(usable[chosen]), target


def balance_tasks(idx: np.ndarray, tasks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """An equal share per task: each task among ``idx`` is drawn down (seeded, without replacement) to the
    count of the smallest one. Returns the kept indices, sorted, and how many were cut.

    Example:
        >>> t = np.array(["a", "a", "a", "b", "b"], dtype=object)
        >>> kept, cut = balance_tasks(np.arange(5), t, np.random.default_rng(0))
        >>> sorted(t[kept]), cut
        (['a', 'a', 'b', 'b'], 1)
    """
    groups: dict[str, list[int]] = {}
    for i in idx:
        groups.setdefault(str(tasks[i]), []).append(int(i))
    if len(groups) < 2:
        return idx, 0
    n = min(len(g) for g in groups.values())
    kept: list[int] = []
    for name in sorted(groups):
        g = np.asarray(groups[name], dtype=np.int64)
        kept.extend(g[rng.choice(len(g), size=n, replace=False)] if len(g) > n else g)
    return np.sort(np.asarray(kept, dtype=np.int64)), len(idx) - len(kept)


def histogram(values: np.ndarray, edges: list[float]) -> dict[str, Any]:
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def write_stage(table: pa.Table, folder: Path, rows_per_part: int) -> list[dict[str, Any]]:
    """Write ``table`` as parts in ``folder`` (replacing what was there); returns the shard list."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shards = []
    n_parts = max(1, math.ceil(table.num_rows / rows_per_part))
    for i in range(n_parts):
        part = table.slice(i * rows_per_part, rows_per_part)
        path = folder / part_name(i)
        write_table_atomic(part, path)
        shards.append(
            {
                "file": path.name,
                "rows": part.num_rows,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )
    return shards


#: What a curriculum folder holds; a rebuild replaces exactly these and keeps anything else.
def is_curriculum_entry(name: str) -> bool:
    return (
        name.startswith("stage-")
        or name in ("eval", "difficulty", MANIFEST, "stats.json", HELDOUT)
        or (name.startswith(".") and name.endswith(".tmp"))
    )


def build_curriculum(
    inputs: list[str | Path],
    out: str | Path,
    config: CurriculumConfig,
    progress_factory: Callable[[int, str], Any] | None = None,
) -> dict[str, Any]:
    """``python -m curriculum build``: write ``stage-1/`` .. ``stage-K/``, ``eval/``, ``heldout.json``,
    the manifest and stats.

    The build writes to a staging folder next to ``out`` and replaces ``out``'s curriculum (every
    ``stage-*`` folder included, so no stage of an older build with more bins survives) only when it has
    finished; a failed rebuild leaves the previous curriculum as it was.

    Returns:
        The manifest.
    """
    out = Path(out)
    check_seed(config.seed, "--seed")
    check_output_path(out, inputs)
    for inp in inputs:
        check_complete(inp)
    with OutputLock(out):
        finish_promote(out, is_curriculum_entry, MANIFEST)
        staging = fresh_staging(out)
        if (out / "difficulty").is_dir():  # the pass-rate rollouts: a cache that a rebuild resumes from
            shutil.copytree(out / "difficulty", staging / "difficulty")
        try:
            manifest = _build(inputs, staging, config, progress_factory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        promote(staging, out, is_curriculum_entry, MANIFEST)
        return manifest


@dataclass(frozen=True)
class _Rows:
    """The per-row columns the build reads (never writes), one entry per input row, and each row's bin."""

    uid: list[str]
    source_id: list[str]
    data_source: list[str]
    task: np.ndarray
    tokens: np.ndarray
    bin: np.ndarray

    @classmethod
    def of(cls, table: pa.Table, edges: list[int]) -> _Rows:
        m = table.select(["uid", "source_id", "data_source", "prompt_tokens", "task"]).to_pydict()
        tokens = np.asarray(m["prompt_tokens"], dtype=np.int64)
        task = np.array(m["task"], dtype=object)
        return cls(m["uid"], m["source_id"], m["data_source"], task, tokens, assign_bins(tokens, edges))


def _build(
    inputs: list[str | Path],
    out: Path,
    c: CurriculumConfig,
    progress_factory: Callable[[int, str], Any] | None,
) -> dict[str, Any]:
    """The build as steps over row indices: each filter answers, per row, keep (None) or why not, and
    :func:`filter_rows` counts the reasons into ``dropped``; the other steps return data."""
    table, inputs_info = read_inputs(inputs)
    if table.num_rows == 0:
        raise LongmillError(f"the inputs hold no samples: {[str(i) for i in inputs]}")
    rows = _Rows.of(table, c.bins)
    dropped = Stats()
    in_bins = filter_rows(
        np.arange(table.num_rows), np.where(rows.bin < 0, "above_last_bin", None), dropped, ["above_last_bin"]
    )
    held, leaks, heldout = _hold_out(table, rows, c)
    train = in_bins[~held[in_bins]]
    train = filter_rows(train, leaks[train], dropped, declared={v for v in leaks if v is not None})
    difficulty, feature_means = _features(table, c, progress_factory)
    difficulty, source, pass_rate = _model_difficulty(
        table, rows, train, difficulty, c, out, progress_factory
    )
    if c.difficulty_model and c.filter_extremes:  # no advantage in GRPO: the offline half of dynamic sampling
        extremes = np.select([pass_rate[train] == 1.0, pass_rate[train] == 0.0], ["solved", "unsolved"], None)
        train = filter_rows(train, extremes, dropped, ["solved", "unsolved"])
    table = _with_difficulty(table, difficulty, source)
    _check_bins(train, rows, c, filtered=bool(dropped["solved"] or dropped["unsolved"]))
    stages, staged = _stages(table, rows, train, difficulty, c, out)
    if c.task_balance:  # what the balance really dropped: training rows that are in no stage
        filter_rows(train, np.where(staged[train], None, "task_balance"), dropped, ["task_balance"])
    ev = in_bins[held[in_bins]]
    ev = ev[np.lexsort((np.array(rows.uid, dtype=object)[ev], rows.tokens[ev]))] if len(ev) else ev
    eval_shards = write_stage(table.take(pa.array(ev, pa.int64())), out / "eval", c.rows_per_part)
    manifest = {
        "longmill_version": __version__,
        "config": _manifest_config(c),
        "seeds": {
            "split": c.seed,
            "retro": [f"(seed={c.seed}, curriculum/retro, {k})" for k in range(len(c.bins))],
        },
        "inputs": inputs_info,
        "bins": c.bins,
        "difficulty_source": _difficulty_label(c) if c.difficulty_model else FEATURES_VERSION,
        "stages": stages,
        "eval": {
            "rows": int(len(ev)),
            "source_questions": len({rows.source_id[i] for i in ev}),
            "by_source": dict(sorted(Counter(rows.data_source[i] for i in ev).items())),
            "length_hist": histogram(rows.tokens[ev], list(np.linspace(0, c.bins[-1], 11)))
            if len(ev)
            else None,
            "shards": eval_shards,
        },
        "dropped": dropped.to_dict(sort=True),
        "features": {"mean": feature_means},
    }
    _write_records(out, manifest, heldout)
    return manifest


def _hold_out(
    table: pa.Table, rows: _Rows, c: CurriculumConfig
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The eval split closed over what questions ask (:func:`hold_out`): the held rows, and per row the
    reason it may neither train nor be evaluated (``heldout_fact``, ``heldout_decoy``) or None."""
    held, uses_fact, decoy, heldout = hold_out(table, eval_mask(rows.source_id, c.eval_share, c.seed))
    for mask, what in (
        (uses_fact, "ask a question through a held-out question's fact"),
        (decoy, "name a held-out question in a decoy chain"),
    ):
        if mask.any():
            log.warning("%d training samples %s and are left out", int(mask.sum()), what)
    if (rows.bin < 0).any():
        log.warning(
            "%d samples are longer than the last bin (%s tokens) and are left out",
            int((rows.bin < 0).sum()),
            c.bins[-1],
        )
    return held, np.select([uses_fact, decoy], ["heldout_fact", "heldout_decoy"], None), heldout


def _features(
    table: pa.Table, c: CurriculumConfig, progress_factory: Callable[[int, str], Any] | None
) -> tuple[np.ndarray, dict[str, float]]:
    """The feature difficulty of every row, and each feature's mean (for the manifest)."""
    bar = progress_factory(table.num_rows, "features") if progress_factory else None
    feats = []
    for row in table.to_pylist():
        feats.append(features(row))
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    means = pl.DataFrame(feats).select(pl.exclude("uid")).mean().row(0, named=True)
    return (
        np.array([feature_difficulty(f, c.bins[-1]) for f in feats]),
        {k: round(float(v), 6) for k, v in means.items()},
    )


def _difficulty_label(c: CurriculumConfig) -> str:
    return f"pass_rate:{c.difficulty_model}:k={c.k}:{c.correct_if}"


def _model_difficulty(
    table: pa.Table,
    rows: _Rows,
    train: np.ndarray,
    difficulty: np.ndarray,
    c: CurriculumConfig,
    out: Path,
    progress_factory: Callable[[int, str], Any] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(difficulty, difficulty_source, pass_rate)`` per row: with a difficulty model, difficulty is
    1 - the pass rate over k rollouts for the training rows; the others keep the feature difficulty."""
    difficulty = difficulty.copy()
    source = np.array([FEATURES_VERSION] * table.num_rows, dtype=object)
    pass_rate = np.full(table.num_rows, np.nan)
    if c.difficulty_model:
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[train] = True
        rates = _model_pass_rates(table, mask, c, out, progress_factory)
        for i, uid in enumerate(rows.uid):
            if uid in rates:
                pass_rate[i] = rates[uid]
                difficulty[i] = round(1.0 - rates[uid], 6)
                source[i] = _difficulty_label(c)
    return difficulty, source, pass_rate


def _with_difficulty(table: pa.Table, difficulty: np.ndarray, source: np.ndarray) -> pa.Table:
    """``table`` with its ``difficulty`` and ``difficulty_source`` columns filled."""
    for name, values in (
        ("difficulty", pa.array(difficulty, pa.float64())),
        ("difficulty_source", pa.array(source.tolist(), pa.string())),
    ):
        table = table.set_column(table.schema.get_field_index(name), name, values)
    return table


def _check_bins(train: np.ndarray, rows: _Rows, c: CurriculumConfig, filtered: bool) -> None:
    """Every bin must keep training rows; say how to get them otherwise."""
    for k, edge in enumerate(c.bins):
        if not (rows.bin[train] == k).any():
            lo = c.bins[k - 1] if k else 0
            raise LongmillError(
                f"bin {k + 1} ({lo} < prompt_tokens <= {edge}) has no training samples"
                f"{' after filtering' if filtered else ''}; generate "
                f"data at that length (datagen keychain --length {format_length(edge)}) or change --bins"
            )


#: A stage whose own rows the task balance cuts to less than this share is warned about: "most of a
#: stage" is more than half. Below that, balancing trims the surplus of the larger tasks, which is what it
#: is for; beyond it the smallest task, not the data, sets the stage's size (usually a task generated with
#: too few samples), and a run on such a stage should not start unnoticed.
BALANCE_WARN_KEPT = 0.5


def _stages(
    table: pa.Table, rows: _Rows, train: np.ndarray, difficulty: np.ndarray, c: CurriculumConfig, out: Path
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Write ``stage-1`` .. ``stage-K``: each bin's training rows (task-balanced if asked) plus hard rows of
    earlier stages, shuffled with the stage's seed. Returns the manifest's stage records and which rows
    are a stage's own (the others the balance cut).

    "Hard" = at or above the bin's difficulty quantile; retrospective rows are drawn only among earlier
    stages' own rows, so a row that the balance cut from its stage does not come back under another name.
    """
    hard = np.zeros(table.num_rows, dtype=bool)
    for k in range(len(c.bins)):
        members = train[rows.bin[train] == k]
        if len(members):
            hard[members] = difficulty[members] >= np.quantile(difficulty[members], c.retro_hard_quantile)
    staged = np.zeros(table.num_rows, dtype=bool)
    records = []
    for k in range(len(c.bins)):
        own = train[rows.bin[train] == k]
        earlier = np.flatnonzero(staged & hard)
        rng = sample_rng(c.seed, "curriculum/retro", k)
        if c.task_balance:
            own, retro, target, balance = _balanced_stage_rows(rows.task, difficulty, c, k, own, earlier, rng)
        elif k:
            retro, target = retro_draw(earlier, difficulty[earlier], len(own), c.retro_share, rng)
            balance = None
        else:
            retro, target, balance = np.array([], dtype=np.int64), 0, None
        staged[own] = True
        idx = np.concatenate([own, retro])
        order = sample_rng(c.seed, "curriculum/shuffle", k).permutation(len(idx))
        name = f"stage-{k + 1}"
        shards = write_stage(table.take(pa.array(idx[order])), out / name, c.rows_per_part)
        records.append(_stage_record(rows, difficulty, c, k, own, retro, target, idx, shards, balance))
        log.info("%s: %d samples (%d own, %d retrospective)", name, len(idx), len(own), len(retro))
    return records, staged


def _balanced_stage_rows(
    tasks: np.ndarray,
    difficulty: np.ndarray,
    c: CurriculumConfig,
    k: int,
    own: np.ndarray,
    earlier: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int, dict[str, Any]]:
    """``--task-balance``: every task of the stage's own rows gets the same count, retrospective rows
    included. The own rows are drawn down to the smallest task's count, then each task draws the same
    number of retrospective rows (by difficulty, among that task's hard rows of earlier stages): the
    target share of the balanced stage, or fewer when some task has fewer such rows. Retrospective rows
    of tasks that the stage does not train on are not drawn (they would unbalance it).

    Returns:
        ``(own, retro, retro target, task-balance record)``.
    """
    before = Counter(str(t) for t in tasks[own])
    own, _ = balance_tasks(own, tasks, sample_rng(c.seed, "curriculum/task-balance", k))
    names = sorted(before)
    per_task = len(own) // len(names)
    retro, target, common = np.array([], dtype=np.int64), 0, 0
    if k:
        pools = {t: earlier[tasks[earlier] == t] for t in names}
        usable = {t: int((difficulty[p] > 0).sum()) for t, p in pools.items()}
        common = min([*usable.values(), int(round(c.retro_share * per_task / (1.0 - c.retro_share)))])
        drawn = []
        for t in names:
            d, q = retro_draw(pools[t], difficulty[pools[t]], per_task, c.retro_share, rng, limit=common)
            drawn.append(d)
            target += q
        retro = np.sort(np.concatenate(drawn))
        if target and not len(retro):
            lacking = [t for t in names if not usable[t]]
            log.warning(
                "stage-%d: no retrospective rows under the task balance: %s %s no hard rows in earlier "
                "stages, and every task draws the same number",
                k + 1,
                ", ".join(lacking),
                "has" if len(lacking) == 1 else "have",
            )
    smallest = min(names, key=lambda t: before[t])
    total = sum(before.values())
    if len(own) < BALANCE_WARN_KEPT * total:
        log.warning(
            "stage-%d: the task balance keeps %d of the stage's %d own rows: every task is drawn down to the "
            "count of the smallest, %s (%d); generate more samples of it, or build without --task-balance",
            k + 1,
            len(own),
            total,
            smallest,
            before[smallest],
        )
    record = {"own_before": total, "smallest_task": smallest, "retro_per_task": int(common)}
    return own, retro, target, record


def _stage_record(
    rows: _Rows,
    difficulty: np.ndarray,
    c: CurriculumConfig,
    k: int,
    own: np.ndarray,
    retro: np.ndarray,
    target: int,
    idx: np.ndarray,
    shards: list[dict[str, Any]],
    balance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage k's manifest entry."""
    edge = c.bins[k]
    lo = c.bins[k - 1] if k else 0
    by_source = Counter(rows.data_source[i] for i in idx)
    record = {
        "name": f"stage-{k + 1}",
        "bin": [lo, edge],
        "max_prompt_length": edge,
        "max_prompt_tokens": int(rows.tokens[idx].max()),
        "rows": int(len(idx)),
        "own": int(len(own)),
        "retro": int(len(retro)),
        "retro_target": target,
        "retro_share": round(len(retro) / len(idx), 6) if len(idx) else 0.0,
        "retro_uids": [rows.uid[i] for i in retro],
        "by_source": dict(sorted(by_source.items())),
        "by_task": dict(sorted(Counter(rows.task[i] for i in idx).items())),
        "length_hist": histogram(rows.tokens[idx], list(np.linspace(0, edge, 11))),
        "difficulty_hist": histogram(difficulty[idx], list(np.linspace(0, 1, 11))),
        "difficulty_mean": round(float(difficulty[idx].mean()), 6),
        "difficulty_mean_own": round(float(difficulty[own].mean()), 6),
        "difficulty_mean_retro": round(float(difficulty[retro].mean()), 6) if len(retro) else None,
        "shards": shards,
    }
    if balance is not None:  # only with --task-balance: other manifests stay as they were
        record["task_balance"] = balance
    return record


def _manifest_config(c: CurriculumConfig) -> dict[str, Any]:
    config = dataclasses.asdict(c)
    if not config["difficulty_backend_option"]:  # absent when unset: manifests of older builds stay the same
        del config["difficulty_backend_option"]
    return config


def _write_records(out: Path, manifest: dict[str, Any], heldout: dict[str, Any]) -> None:
    """Write ``heldout.json``, then ``manifest.json`` (which records its hash) and ``stats.json``."""
    atomic_write_json(out / HELDOUT, heldout)
    manifest["heldout"] = {
        "file": HELDOUT,
        "sha256": hashlib.sha256((out / HELDOUT).read_bytes()).hexdigest(),
        "source_ids": len(heldout["source_ids"]),
        "questions": len(heldout["questions"]),
        **heldout["report"],
    }
    atomic_write_json(out / MANIFEST, manifest)
    keys = ("rows", "own", "retro", "retro_share", "difficulty_mean", "max_prompt_length", "by_task")
    stats = {
        "stages": {s["name"]: {k: s[k] for k in keys} for s in manifest["stages"]},
        "eval_rows": manifest["eval"]["rows"],
        "train_rows": int(sum(s["own"] for s in manifest["stages"])),
        "dropped": manifest["dropped"],
        "difficulty_source": manifest["difficulty_source"],
    }
    atomic_write_json(out / "stats.json", stats)


def _model_pass_rates(
    table: pa.Table,
    mask: np.ndarray,
    c: CurriculumConfig,
    out: Path,
    progress_factory: Callable[[int, str], Any] | None,
) -> dict[str, float]:
    rows = table.select(["uid", "data_source", "prompt", "question", "answers", "prompt_tokens"]).to_pylist()
    items = [
        EvalItem(
            uid=r["uid"],
            data_source=r["data_source"],
            prompt=[dict(m) for m in r["prompt"]],
            question=r["question"],
            answers=list(r["answers"]),
            prompt_tokens=r["prompt_tokens"],
        )
        for r, m in zip(rows, mask, strict=True)
        if m
    ]
    gen = GenerateConfig(
        model=c.difficulty_model or "",
        backend=c.difficulty_backend,
        n=c.k,
        temperature=c.difficulty_temperature,
        max_tokens=c.difficulty_max_tokens,
        seed=c.seed,
        batch_size=c.difficulty_batch_size,
        backend_option=c.difficulty_backend_option,
    )
    bar = progress_factory(len(items), "difficulty rollouts") if progress_factory else None
    try:
        return pass_rates(
            items,
            gen,
            out / "difficulty" / "rollouts.jsonl",
            rule=c.correct_if,
            progress=bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()
