"""Fixtures of the deployment tests; the helpers live in deploytools.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploytools import ROOT


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
