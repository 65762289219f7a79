"""``hf``: a Hugging Face dataset (hub id or local folder) through ``datasets.load_dataset``.

Two row layouts are understood: ``mapped`` (any columns, read through the same ``map`` option as the
``jsonl`` source) and ``hotpotqa`` (the hub layout of ``hotpotqa/hotpot_qa``)::

    {"id", "question", "answer", "type", "level",
     "supporting_facts": {"title": [...], "sent_id": [...]},
     "context": {"title": [...], "sentences": [[...], ...]}}
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from datagen.schema import Triplet
from datagen.sources.base import SOURCES, Source, skip_record
from datagen.sources.hotpotqa import hotpotqa_triplet
from datagen.sources.tabular import ColumnMap
from longmill.errors import LongmillError, RecordError

log = logging.getLogger(__name__)

FORMATS = ("mapped", "hotpotqa")


def hub_hotpotqa_row(row: dict[str, Any], label: str, index: int) -> dict[str, Any]:
    """A ``hotpotqa/hotpot_qa`` hub row in the list layout of the published JSON files.

    The hub's test split stores unlabelled rows with ``answer == ""`` and no supporting facts; the
    ``answer`` key is dropped for those, so they count as ``hotpotqa:no_answer`` like the test files.

    Args:
        row: the hub row.
        label: names the dataset in errors.
        index: the row's position (for errors).
    """
    out = dict(row)
    for key, cols in (("context", ("title", "sentences")), ("supporting_facts", ("title", "sent_id"))):
        value = row.get(key)
        if not isinstance(value, dict):
            continue  # left for the parser to report with the field named
        columns = []
        for c in cols:
            if not isinstance(value.get(c), list):
                raise RecordError(label, index, f"{key}.{c}", "missing or not a list")
            columns.append(value[c])
        if len(columns[0]) != len(columns[1]):
            raise RecordError(label, index, key, f"{cols[0]} and {cols[1]} differ in length")
        out[key] = [list(pair) for pair in zip(*columns, strict=True)]
    if out.get("answer") == "" and not out.get("supporting_facts"):
        out.pop("answer")
    return out


@SOURCES.register("hf")
class HFSource(Source):
    """A Hugging Face dataset, loaded with ``datasets.load_dataset(path, name=config, split=split)``.

    Skip counts: as the ``jsonl`` source for ``format=mapped``; as the ``hotpotqa`` source for
    ``format=hotpotqa`` (whose triplets are labelled ``hotpotqa``, with the hub split name, so they
    share ids with the same records read from the published files).

    Args:
        input: the hub id or local folder, when the ``path`` option is not given.
        strict: raise on the first malformed record.
        limit: stop after this many triplets.
        options: ``path`` (hub id such as ``hotpotqa/hotpot_qa``, or a local folder of
            JSONL/Parquet files), ``config`` (the dataset configuration, e.g. ``distractor``),
            ``split`` (default ``train``), ``revision`` (a hub branch, tag or commit), ``format``
            (``mapped``, the default, or ``hotpotqa``), ``map`` (column mapping for ``mapped``, as in
            the ``jsonl`` source), ``cache_dir`` (where ``datasets`` keeps its cache) and
            ``streaming`` (iterate without downloading the whole split first).
    """

    name = "hf"
    needs_input = False
    #: as for jsonl: a mapped dataset's answers may be free-form (format=hotpotqa rows are labelled hotpotqa)
    extractive_answers = False
    option_names = ("path", "config", "split", "revision", "format", "map", "cache_dir", "streaming")

    def __init__(self, input: Any = None, **kwargs: Any):
        super().__init__(input, **kwargs)
        self.path = str(self.options.get("path") or self.input or "")
        if not self.path:
            raise LongmillError("source 'hf' needs a dataset: the option path=HUB_ID_OR_FOLDER, or --input")
        self.format = self.options.get("format") or "mapped"
        if self.format not in FORMATS:
            raise LongmillError(
                f"source 'hf': option format={self.format!r}; valid formats: {', '.join(FORMATS)}"
            )
        if self.format == "hotpotqa" and "map" in self.options:
            raise LongmillError(
                "source 'hf': option map applies to format=mapped only; drop it for format=hotpotqa"
            )
        self.split = str(self.options.get("split") or "train")
        self.config = self.options.get("config")
        self.label = f"hf:{self.path}" + (f"/{self.config}" if self.config else "") + f"[{self.split}]"
        self.columns = (
            ColumnMap(self.options.get("map"), self.name, self.split) if self.format == "mapped" else None
        )

    def _flag(self, key: str) -> bool:
        """A boolean option, also given as text (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
        value = self.options.get(key, False)
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no", ""):
            return value.strip().lower() in ("true", "1", "yes")
        if isinstance(value, bool | None):
            return bool(value)
        raise LongmillError(f"source 'hf': option {key}={value!r}; use true or false")

    def load(self) -> Any:
        """The ``datasets`` split; load failures become a :class:`LongmillError` that says what to do."""
        try:
            import datasets
        except ImportError as e:  # pragma: no cover - a core dependency
            raise LongmillError("source 'hf' needs the datasets package: pip install 'datasets>=3.0'") from e
        kwargs = {k: self.options[k] for k in ("revision", "cache_dir") if self.options.get(k)}
        if self._flag("streaming"):
            kwargs["streaming"] = True
        try:
            return datasets.load_dataset(self.path, name=self.config, split=self.split, **kwargs)
        except (OSError, ValueError, datasets.exceptions.DatasetsError) as e:
            # OSError covers ConnectionError (offline or unreachable hub) and FileNotFoundError
            # (unknown id, empty folder); ValueError covers unknown configs and splits.
            if isinstance(e, ValueError):
                hint = "check the config and split options against the valid names in that message"
            else:
                hint = (
                    "check the dataset id (owner/name, as on huggingface.co), go online (unset "
                    "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) or log in for a gated dataset, or pass a local "
                    "folder of JSONL/Parquet files as path"
                )
            raise LongmillError(f"source 'hf': cannot load {self.label}: {e}; {hint}") from e

    def _iter(self) -> Iterator[Triplet]:
        data = self.load()
        n = 0
        fullwiki = self.config == "fullwiki"
        for index, row in enumerate(data):
            if self.columns is not None:
                try:
                    t = self.columns.triplet(row, self.label, index, str(index))
                except RecordError as e:
                    skip_record(self.skips, e)
                    continue
            else:
                try:
                    row = hub_hotpotqa_row(row, self.label, index)
                except RecordError as e:
                    skip_record(self.skips, e)
                    continue
                t = hotpotqa_triplet(
                    row, self.label, index, split=self.split, fullwiki=fullwiki, skips=self.skips, id_key="id"
                )
            if t is not None:
                n += 1
                yield t
        log.info("%s: %d triplets", self.label, n)
