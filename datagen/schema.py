"""The row types, defined once: ``Triplet`` (a normalised QA record) and ``Sample`` (a training row).

A ``Sample`` row is consumed unchanged by

- TRL: ``prompt`` is a list of chat messages; every other column reaches reward functions as a
  keyword argument;
- verl: ``data_source``, ``prompt``, ``ability``, ``reward_model.ground_truth`` and ``extra_info``;
- ``datasets.load_dataset("parquet", data_files=...)`` and polars/pyarrow.

Structure (documents, chains, gold placement) is carried as data in its own columns, so that no
consumer has to search the rendered prompt for marker strings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1"

DOC_TYPE = pa.struct([("doc_id", pa.string()), ("title", pa.string()), ("text", pa.string())])
FACT_TYPE = pa.struct([("title", pa.string()), ("sent_idx", pa.int32()), ("text", pa.string())])
MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])
CHAIN_TYPE = pa.struct(
    [
        ("keys", pa.list_(pa.string())),
        ("target", pa.string()),
        ("is_true", pa.bool_()),
        ("fact_keys", pa.list_(pa.string())),
    ]
)
#: chain fields added after schema version 1 shipped; older shards lack them (read as null).
CHAIN_OPTIONAL = ("fact_keys",)
REWARD_MODEL_TYPE = pa.struct([("style", pa.string()), ("ground_truth", pa.list_(pa.string()))])
EXTRA_INFO_TYPE = pa.struct(
    [
        ("split", pa.string()),
        ("index", pa.int64()),
        ("uid", pa.string()),
        ("source_id", pa.string()),
        ("data_source", pa.string()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("length_target", pa.int64()),
        ("task", pa.string()),
        ("task_data", pa.string()),
    ]
)
#: extra_info fields added after schema version 1 shipped; older shards lack them (read as null).
EXTRA_INFO_OPTIONAL = ("task", "task_data")


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


@dataclass
class Document:
    """One passage. ``doc_id`` is derived from title and text, so equal passages share an id."""

    doc_id: str
    title: str
    text: str

    @classmethod
    def make(cls, title: str, text: str) -> Document:
        from longmill.rng import doc_id

        return cls(doc_id=doc_id(title, text), title=title, text=text)


@dataclass
class SupportingFact:
    """A sentence that supports the answer: the document title, its sentence index and text."""

    title: str
    sent_idx: int
    text: str


TRIPLET_SCHEMA = pa.schema(
    [
        _f("id", pa.string(), "globally unique source record id, '<source>:<record id>'"),
        _f("source", pa.string(), "source name: hotpotqa, musique, 2wikimqa, synthetic, ..."),
        _f("split", pa.string(), "the source split (train, validation, dev, ...)"),
        _f("question", pa.string(), "the question"),
        _f("answers", pa.list_(pa.string()), "every accepted answer, aliases included"),
        _f("hops", pa.int32(), "reasoning hops (number of gold documents needed)"),
        _f("question_type", pa.string(), "bridge, comparison, compositional, ...", nullable=True),
        _f("gold_docs", pa.list_(DOC_TYPE), "the documents that support the answer"),
        _f("supporting_facts", pa.list_(FACT_TYPE), "supporting sentences, where the format has them"),
        _f("distractor_docs", pa.list_(DOC_TYPE), "the record's own distractors (hard negatives)"),
        _f(
            "fact_keys",
            pa.list_(pa.string()),
            "what the question asks, as data: one key per gold fact (entity and relation in the synthetic "
            "world); the same set is the same question in other words; null where the source has none",
            nullable=True,
        ),
    ],
    metadata={"longmill.schema": "triplet", "longmill.schema_version": SCHEMA_VERSION},
)


@dataclass
class Triplet:
    """A normalised question-context-answer record, the input of every generator.

    Args:
        id: ``<source>:<record id>``, unique across sources.
        source: the source name.
        split: the split the record came from.
        question: the question text.
        answers: every accepted answer (aliases included); never empty.
        hops: reasoning hops.
        question_type: the source's question type, if any.
        gold_docs: documents that contain the evidence.
        supporting_facts: the evidence sentences, where the format has them.
        distractor_docs: the record's own distractor documents.
        fact_keys: the identity of what the question asks, one key per gold fact, sorted (the synthetic
            world gives ``synthetic:<seed>:<region>:<entity>.<relation>``); two questions with the same
            keys ask the same thing in other words. None where the source cannot tell (real sources, whose
            questions are told apart by id and text).
    """

    id: str
    source: str
    split: str
    question: str
    answers: list[str]
    hops: int
    question_type: str | None = None
    gold_docs: list[Document] = field(default_factory=list)
    supporting_facts: list[SupportingFact] = field(default_factory=list)
    distractor_docs: list[Document] = field(default_factory=list)
    fact_keys: list[str] | None = None

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Triplet:
        return cls(
            id=row["id"],
            source=row["source"],
            split=row["split"],
            question=row["question"],
            answers=list(row["answers"]),
            hops=int(row["hops"]),
            question_type=row.get("question_type"),
            gold_docs=[Document(**d) for d in row["gold_docs"]],
            supporting_facts=[SupportingFact(**f) for f in row["supporting_facts"]],
            distractor_docs=[Document(**d) for d in row["distractor_docs"]],
            fact_keys=list(row["fact_keys"]) if row.get("fact_keys") is not None else None,
        )


#: Triplet columns added after schema version 1 shipped: older triplet shards lack them and still read.
TRIPLET_OPTIONAL = ("fact_keys",)


SAMPLE_SCHEMA = pa.schema(
    [
        _f("uid", pa.string(), "stable id from source id, generator, parameters, seed and index"),
        _f("data_source", pa.string(), "'<generator>/<source>', e.g. keychain/hotpotqa"),
        _f("ability", pa.string(), "task family, e.g. long_context_qa"),
        _f("prompt", pa.list_(MESSAGE_TYPE), "chat messages; the whole long context lives here"),
        _f("question", pa.string(), "the true question"),
        _f("answers", pa.list_(pa.string()), "every accepted answer, aliases included"),
        _f("reward_model", REWARD_MODEL_TYPE, "verl: {style: rule, ground_truth: answers}"),
        _f("extra_info", EXTRA_INFO_TYPE, "what a consumer needs to rebuild the reward"),
        _f("length_target", pa.int64(), "the token budget L"),
        _f("prompt_tokens", pa.int64(), "measured tokens of the rendered prompt (<= L)"),
        _f("tokenizer", pa.string(), "tokenizer used for prompt_tokens (datagen.tokenizers name)"),
        _f("chat_template", pa.string(), "chat template applied before counting"),
        _f("num_docs", pa.int32(), "documents in the context"),
        _f("gold_doc_depths", pa.list_(pa.float64()), "relative token depth (0..1) of each gold document"),
        _f("num_chains", pa.int32(), "UUID chains in the context (0 for longqa)"),
        _f("chain_hops", pa.int32(), "keys per chain (0 for longqa)"),
        _f("hops", pa.int32(), "reasoning hops of the underlying question"),
        _f("difficulty", pa.float64(), "0 (easy) .. 1 (hard); filled by curriculum", nullable=True),
        _f("difficulty_source", pa.string(), "how difficulty was computed", nullable=True),
        _f("seed", pa.int64(), "the run seed"),
        _f("generator", pa.string(), "generator name"),
        _f("generator_version", pa.string(), "generator version"),
        _f("source", pa.string(), "source name"),
        _f("source_id", pa.string(), "the triplet id the sample was built from"),
        _f("split", pa.string(), "the source split"),
        _f("question_type", pa.string(), "the source question type", nullable=True),
        _f("gold_docs", pa.list_(DOC_TYPE), "the gold documents, as placed in the context"),
        _f("supporting_facts", pa.list_(pa.string()), "supporting sentences"),
        _f("doc_ids", pa.list_(pa.string()), "document ids in context order"),
        _f(
            "doc_offsets",
            pa.list_(pa.int64()),
            "character offset of each document in the user message, then the end of the last one",
        ),
        _f("chain_head", pa.string(), "the head key named in the instructions", nullable=True),
        _f(
            "chains",
            pa.list_(CHAIN_TYPE),
            "every chain: its keys in order, its target, whether true, and the target question's fact_keys",
        ),
        _f("params", pa.string(), "generator parameters as canonical JSON"),
        _f(
            "task",
            pa.string(),
            "task family (keychain, longqa, aggregation, needles, vartrack, ...); null in "
            "shards written before the column existed, where the generator name stands for it",
            nullable=True,
        ),
        _f(
            "closed_book_pass_rate",
            pa.float64(),
            "pass rate over k answers without the context "
            "(`curriculum ground`; null before, or when generation failed)",
            nullable=True,
        ),
        _f(
            "context_pass_rate",
            pa.float64(),
            "pass rate over k answers with the context (`curriculum ground`)",
            nullable=True,
        ),
        _f(
            "grounding_flag",
            pa.string(),
            "answerable_closed_book when `curriculum ground --action flag` marked it",
            nullable=True,
        ),
        _f(
            "fact_keys",
            pa.list_(pa.string()),
            "the true question's fact identity (the triplet's fact_keys; null where the source has none)",
            nullable=True,
        ),
    ],
    metadata={"longmill.schema": "sample", "longmill.schema_version": SCHEMA_VERSION},
)


@dataclass
class Chain:
    """A chain of keys; the value of ``keys[i]`` is ``keys[i+1]`` and the last key's value is ``target``.

    ``fact_keys`` is the target question's fact identity (:attr:`Triplet.fact_keys`), carried so that the
    curriculum can tell a decoy that asks a held-out question in other words without reading its text.
    """

    keys: list[str]
    target: str
    is_true: bool
    fact_keys: list[str] | None = None


@dataclass
class Sample:
    """One training/eval row. Field meanings are in :data:`SAMPLE_SCHEMA` (``field.metadata['doc']``)."""

    uid: str
    data_source: str
    ability: str
    prompt: list[dict[str, str]]
    question: str
    answers: list[str]
    reward_model: dict[str, Any]
    extra_info: dict[str, Any]
    length_target: int
    prompt_tokens: int
    tokenizer: str
    chat_template: str
    num_docs: int
    gold_doc_depths: list[float]
    num_chains: int
    chain_hops: int
    hops: int
    difficulty: float | None
    difficulty_source: str | None
    seed: int
    generator: str
    generator_version: str
    source: str
    source_id: str
    split: str
    question_type: str | None
    gold_docs: list[Document]
    supporting_facts: list[str]
    doc_ids: list[str]
    doc_offsets: list[int]
    chain_head: str | None
    chains: list[Chain]
    params: str
    task: str | None = None
    closed_book_pass_rate: float | None = None
    context_pass_rate: float | None = None
    grounding_flag: str | None = None
    fact_keys: list[str] | None = None

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Sample:
        kw = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name not in OPTIONAL_COLUMNS}
        kw.update({name: row.get(name) for name in OPTIONAL_COLUMNS})
        kw["gold_docs"] = [Document(**d) for d in row["gold_docs"]]
        kw["chains"] = [
            Chain(
                keys=list(c["keys"]),
                target=c["target"],
                is_true=bool(c["is_true"]),
                fact_keys=list(c["fact_keys"]) if c.get("fact_keys") is not None else None,
            )
            for c in row["chains"]
        ]
        if kw["fact_keys"] is not None:
            kw["fact_keys"] = list(kw["fact_keys"])
        kw["prompt"] = [dict(m) for m in row["prompt"]]
        kw["answers"] = list(row["answers"])
        kw["gold_doc_depths"] = [float(x) for x in row["gold_doc_depths"]]
        kw["supporting_facts"] = list(row["supporting_facts"])
        kw["doc_ids"] = list(row["doc_ids"])
        kw["doc_offsets"] = [int(x) for x in row["doc_offsets"]]
        kw["reward_model"] = {
            "style": row["reward_model"]["style"],
            "ground_truth": list(row["reward_model"]["ground_truth"]),
        }
        kw["extra_info"] = {
            **{k: None for k in EXTRA_INFO_OPTIONAL},
            **row["extra_info"],
            "answers": list(row["extra_info"]["answers"]),
        }
        return cls(**kw)

    @property
    def params_dict(self) -> dict[str, Any]:
        return json.loads(self.params)

    @property
    def user_text(self) -> str:
        """The content of the last user message (where the long context lives)."""
        return next(m["content"] for m in reversed(self.prompt) if m["role"] == "user")


#: Columns added after schema version 1 shipped: older shards lack them and still read (see :func:`conform_samples`).
OPTIONAL_COLUMNS = ("task", "closed_book_pass_rate", "context_pass_rate", "grounding_flag", "fact_keys")


def task_of(row: dict[str, Any]) -> str:
    """A row's task family; shards written before the ``task`` column existed fall back to the generator."""
    return row.get("task") or row["generator"]


def conform_samples(table: pa.Table) -> pa.Table:
    """``table`` in today's :data:`SAMPLE_SCHEMA`: columns and extra_info and chain fields added since its
    shard was written are filled in (``task`` from ``generator``, the rest null), so older shards still read.
    The nested fields are pyarrow's cast's to fill (pyarrow >= 19: apache/arrow#44587).

    Raises:
        ValueError: a column that is neither in the schema's current nor in an older form is missing.
    """
    if "task" not in table.schema.names and "generator" in table.schema.names:
        table = table.append_column("task", table.column("generator"))
    for name in OPTIONAL_COLUMNS:
        if name not in table.schema.names:
            field = SAMPLE_SCHEMA.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    missing = set(SAMPLE_SCHEMA.names) - set(table.schema.names)
    if missing:
        raise ValueError(f"not a longmill sample table: columns {sorted(missing)} are missing")
    return table.select(SAMPLE_SCHEMA.names).cast(SAMPLE_SCHEMA)


def schema_core(schema: pa.Schema) -> pa.Schema:
    """``schema`` without its metadata and without the columns, extra_info and chain fields added since schema
    version 1, so that an older shard and a newer one compare equal (and anything else does not)."""
    fields = []
    for f in schema.remove_metadata():
        if f.name in OPTIONAL_COLUMNS:
            continue
        if f.name == "extra_info" and pa.types.is_struct(f.type):
            f = f.with_type(pa.struct([c for c in f.type if c.name not in EXTRA_INFO_OPTIONAL]))
        if f.name == "chains" and pa.types.is_list(f.type) and pa.types.is_struct(f.type.value_type):
            chain = pa.struct([c for c in f.type.value_type if c.name not in CHAIN_OPTIONAL])
            f = f.with_type(pa.list_(pa.field(f.type.value_field.name, chain)))
        fields.append(f.with_nullable(True))  # what a writer declared nullable is not a schema difference
    return pa.schema(fields)


def schema_kind(schema: pa.Schema) -> str | None:
    """'sample', 'triplet' or None, from the schema metadata written by longmill."""
    meta = schema.metadata or {}
    kind = meta.get(b"longmill.schema")
    return kind.decode() if kind else None


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (``to_row()`` dicts) as a table in ``schema``; extra or missing keys are an error."""
    names = set(schema.names)
    for i, r in enumerate(rows):
        if set(r) != names:
            missing, extra = sorted(names - set(r)), sorted(set(r) - names)
            raise ValueError(f"row {i} does not match the schema: missing {missing}, unexpected {extra}")
    return pa.Table.from_pylist(rows, schema=schema)
