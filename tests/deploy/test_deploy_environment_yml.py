"""processing/environment.yml (Miniconda) agrees with pyproject.toml: core dependencies + `process` extra."""

from __future__ import annotations

import re
import tomllib

import yaml
from deploytools import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version


def declared() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["process"]
    requirements = [Requirement(r) for r in listed]
    return {canonicalize_name(r.name): r.specifier for r in requirements}


def environment() -> tuple[dict, dict[str, SpecifierSet]]:
    env = yaml.safe_load((ROOT / "processing" / "environment.yml").read_text())
    conda, pip = {}, {}
    for item in env["dependencies"]:
        if isinstance(item, dict):
            for line in item["pip"]:
                r = Requirement(line)
                pip[canonicalize_name(r.name)] = r.specifier
        else:
            name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", item).groups()
            conda[canonicalize_name(name)] = spec
    # The conda specs used here (>=, <) read the same as PEP 440 specifiers.
    conda_specs = {k: SpecifierSet(v) for k, v in conda.items() if k not in ("python", "pip")}
    return env, {**conda_specs, **pip}


def test_same_packages_and_ranges_as_pyproject():
    _, listed = environment()
    assert listed == declared()


def test_python_version_allowed_by_pyproject():
    env, _ = environment()
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = python.split("=", 1)[1].strip("=")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(version) in SpecifierSet(requires)


def test_conda_forge_channel_and_pip_present():
    env, _ = environment()
    assert "conda-forge" in env["channels"]
    assert "pip" in [d for d in env["dependencies"] if isinstance(d, str)]
