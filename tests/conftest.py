"""Shared fixtures: settings, and real photos from scikit-image's sample data."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from watercolor.config import load_settings

#: WTC_TEST_LONG=1 runs the long versions: tests marked ``slow`` run, and suites that scale
#: themselves (fuzzing examples, corpus size, load duration) take the ``long_run`` fixture.
LONG = os.environ.get("WTC_TEST_LONG", "").strip() not in ("", "0")


@pytest.fixture(scope="session")
def long_run() -> bool:
    return LONG


def pytest_collection_modifyitems(config, items):
    if LONG:
        return
    skip = pytest.mark.skip(reason="long version: run with WTC_TEST_LONG=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def settings():
    """Settings as a fresh environment gives them, with small limits-friendly defaults."""
    return load_settings({}, threads=2)


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    """A real 512x512 RGB photo."""
    return _photo("astronaut")


@pytest.fixture(scope="session")
def coffee() -> Image.Image:
    """A real 600x400 RGB photo."""
    return _photo("coffee")


def crop(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    return img.crop(box)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
