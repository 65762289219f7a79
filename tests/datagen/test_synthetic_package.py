"""The synthetic subpackage: pinned output, options declared once, re-exported names, named rejections."""

import hashlib
import inspect
import json
from dataclasses import fields

import pytest

import datagen.sources.synthetic as synthetic
from datagen.sources import get_source
from datagen.sources.synthetic import SyntheticConfig, SyntheticSource, generate_triplets
from longmill.errors import LongmillError


def _digest(triplets) -> str:
    rows = [
        [t.question, t.answers, t.hops, t.question_type, [(d.title, d.text) for d in t.gold_docs],
         [(f.title, f.sent_idx) for f in t.supporting_facts], [d.title for d in t.distractor_docs]]
        for t in triplets
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"n": 200, "seed": 0}, "c834b1f4e5fd802061d1affefa85c1aabce18ca3c5af8007cafff16f81b4b05c"),
        (
            {"n": 100, "seed": 1, "min_hops": 1, "max_hops": 1, "per_region": 20},
            "b35fdec3d58c8b32c194cdfaeaaca790ad9e2347d0a60d96647f47ec84ecc45c",
        ),
    ],
)
def test_world_output_is_pinned(options, expected):
    # hashes of the single-file module before the split into a subpackage: the split changed no byte.
    # A deliberate change to the world or its questions bumps WORLD_VERSION and these hashes together.
    assert synthetic.WORLD_VERSION == "2"
    assert _digest(generate_triplets(**options)) == expected


def test_options_are_the_config_fields():
    names = tuple(f.name for f in fields(SyntheticConfig))
    assert SyntheticSource.option_names == SyntheticConfig.option_names() == names
    for doc in (inspect.getdoc(SyntheticConfig), inspect.getdoc(SyntheticSource)):
        flat = " ".join(doc.split())  # the entries are wrapped
        for f in fields(SyntheticConfig):
            assert f"{f.name}: {' '.join(f.metadata['help'].split())} Default: {f.default!r}." in flat
    with pytest.raises(LongmillError) as err:
        SyntheticConfig.from_options({"hopz": 3})
    assert all(n in str(err.value) for n in names)
    with pytest.raises(LongmillError, match="hopz"):
        get_source("synthetic", options={"hopz": "3"})


def test_every_option_is_coerced_by_its_field_type():
    cfg = SyntheticConfig.from_options({f.name: str(f.default) for f in fields(SyntheticConfig)})
    assert cfg == SyntheticConfig()
    assert all(type(getattr(cfg, f.name)) is type(f.default) for f in fields(SyntheticConfig))


def test_public_names_stay_importable_from_the_package():
    for name in synthetic.__all__:
        assert hasattr(synthetic, name), name
    from datagen.sources.synthetic import (  # noqa: F401  (what generators/aggregation.py and older code import)
        CITY,
        COMPANY,
        COUNTRY,
        FILM,
        PERSON,
        RIVER,
        UNIVERSITY,
        Entity,
        Region,
        SyntheticWorld,
        iter_synthetic_triplets,
    )


def test_give_up_error_names_the_rejections(monkeypatch):
    from datagen.sources.synthetic import source

    monkeypatch.setattr(source, "norm_question", lambda q: "the same question")
    with pytest.raises(LongmillError, match=r"triplet 1 .*600 attempts rejected: \d+ repeated question"):
        generate_triplets(2, seed=0)
