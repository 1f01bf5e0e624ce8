"""Choosing native passes for any requested scale.

A request for ``scale`` becomes a short chain of native network passes whose
product reaches the exact target size, then one high-quality resample down to
``h·scale × w·scale`` (halves rounded up: :func:`watercolor.params.output_size`).
Among chains that reach the target we take the fewest passes, then the cheapest
(later passes run on larger images, so the order matters: 2 then 4 costs far
less than 4 then 2), then the smallest overshoot.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

from watercolor import params

MAX_PASSES = 5


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The exact output size (height, width) every part of Watercolor agrees on
    (:func:`watercolor.params.output_size`)."""
    out_w, out_h = params.output_size(width, height, scale)
    return out_h, out_w


def plan_passes(height: int, width: int, scale: float, natives: Sequence[int],
                cost: Callable[[int], float]) -> tuple[int, ...]:
    """Native scales to run in order; ``cost(s)`` is the relative cost per input pixel of scale s."""
    if not math.isfinite(scale) or scale < 1:
        raise ValueError(f"scale must be a finite number >= 1, not {scale!r}")
    out_h, out_w = output_size(height, width, scale)
    if 1 in natives and out_h <= height and out_w <= width:
        return (1,)
    growing = sorted(s for s in natives if s > 1)
    if not growing:
        raise ValueError("no native scale above 1")
    for count in range(1, MAX_PASSES + 1):
        best: tuple[float, int, tuple[int, ...]] | None = None
        for chain in itertools.product(growing, repeat=count):
            product = math.prod(chain)
            if height * product < out_h or width * product < out_w:
                continue
            area, total = 1.0, 0.0
            for s in chain:
                total += area * cost(s)
                area *= s * s
            candidate = (total, product, chain)
            if best is None or candidate < best:
                best = candidate
        if best is not None:
            return best[2]
    raise ValueError(f"scale {scale} needs more than {MAX_PASSES} passes")
