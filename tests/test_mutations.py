"""``tests/mutations.py`` breaks the README's promises on purpose; a mutation whose source text has changed
reports "n/a" only when someone runs it. This test fails as soon as the code it breaks moves."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutations():
    spec = importlib.util.spec_from_file_location("longmill_mutations", ROOT / "tests" / "mutations.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up while it is made
    spec.loader.exec_module(mod)
    return mod.MUTATIONS


def test_every_mutation_breaks_exactly_one_place_and_names_tests_that_exist():
    muts = _mutations()
    assert len({m.name for m in muts}) == len(muts), "two mutations share a name"
    for m in muts:
        text = (ROOT / m.path).read_text()
        assert text.count(m.old) == 1, (
            f"{m.name}: its source text occurs {text.count(m.old)} times in {m.path}"
        )
        assert (ROOT / m.tests[0]).exists(), f"{m.name}: {m.tests[0]} does not exist"
