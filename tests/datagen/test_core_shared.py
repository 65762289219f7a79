"""The shared core: the version comes from package metadata, and one manifest reader serves every package."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

import datagen
from longmill import version as version_mod
from longmill.errors import LongmillError
from longmill.manifest import load_manifest


def test_version_is_the_installed_package_metadata():
    assert datagen.__version__ == version_mod.__version__ == importlib.metadata.version("longmill")


def test_version_falls_back_to_the_checkout_pyproject(monkeypatch, tmp_path):
    def missing(dist):
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(version_mod, "version", missing)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "longmill"\nversion = "9.8.7"\n')
    monkeypatch.setattr(version_mod, "_PYPROJECT", pyproject)
    assert version_mod.package_version() == "9.8.7"
    monkeypatch.setattr(version_mod, "_PYPROJECT", tmp_path / "absent.toml")
    assert version_mod.package_version() == "0+unknown"


def test_manifest_reader_errors_say_what_to_do(tmp_path):
    with pytest.raises(
        LongmillError, match="no manifest.json; build the curriculum with `python -m curriculum build`"
    ):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(LongmillError, match="not valid JSON.*rebuild the curriculum"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(LongmillError, match="not a JSON object"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": []}))
    with pytest.raises(LongmillError, match="lists no stages"):
        load_manifest(tmp_path)
    assert load_manifest(tmp_path, need_stages=False) == {"stages": []}
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": [{"name": "stage-1"}]}))
    assert load_manifest(tmp_path)["stages"][0]["name"] == "stage-1"
