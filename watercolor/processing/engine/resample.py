"""High-quality resampling of float images (Lanczos, antialiased when shrinking)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resample(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an H×W or H×W×C float32 array to ``height`` × ``width`` with Lanczos.

    Works on the float data per channel (Pillow mode "F"), so nothing is
    quantised to 8 bits; Lanczos rings a little, so callers clip afterwards.
    """
    if image.shape[:2] == (height, width):
        return np.array(image, dtype=np.float32, copy=True)
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty((height, width, planes.shape[2]), dtype=np.float32)
    for c in range(planes.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(planes[:, :, c], dtype=np.float32))
        out[:, :, c] = np.asarray(plane.resize((width, height), Image.Resampling.LANCZOS))
    return out[:, :, 0] if image.ndim == 2 else out
