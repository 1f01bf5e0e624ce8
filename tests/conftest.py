"""Shared fixtures: settings, and real photos from scikit-image's sample data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from watercolor.config import load_settings


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
