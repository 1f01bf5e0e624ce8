"""Tiled inference whose result does not depend on the tile size.

Theory of operation. The whole image is padded once, the way its family
needs (reflect or edge, ``pad`` px, plus a few px at the bottom/right so the
padded size meets the network's size rule). Tiles are cut from that padded
image: each tile's own region plus ``context`` px on every side (clipped at
the padded border, so border tiles see exactly what the whole image sees).

* Valid-convolution networks (waifu2x, Real-CUGAN) eat exactly ``pad`` px
  per side, so with ``context == pad`` every output pixel of a tile equals the
  whole-image pixel: tiling is exact.
* Same-padded networks (Real-ESRGAN) zero-pad every layer; a wider
  ``overlap`` pushes the tile-edge error below what can be seen.
* Networks with whole-image average pools (waifu2x cunet, Real-CUGAN) would
  each see only their tile's average. With more than one tile we compute each
  pooled vector for the whole image first, stage by stage: run every tile up
  to the pool's input, sum the feature positions the tile owns, divide by the
  whole count, then feed the vector to every tile for the next stage and the
  final pass (the idea behind upstream Real-CUGAN's "sync gap"). Tile starts
  are multiples of 4 px so feature grids of strided stages line up, and each
  tile owns the features from its start to the next tile's start, so the sum
  is exactly the whole-image sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from watercolor.processing.engine.network import Pool
from watercolor.processing.engine.networks import NetworkSpec

STEP = 4  # tile starts are multiples of this (strided stages up to 4x down must line up)


class Runner(Protocol):
    """What tiling needs of a network (:class:`~.network.Network` is one)."""

    spec: NetworkSpec
    pools: tuple[Pool, ...]

    def forward(self, chw: np.ndarray, extract: str | None = None,
                feeds: dict[str, np.ndarray] | None = None) -> np.ndarray: ...


def spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into near-equal (start, size) runs of at most ``tile`` (>= 4) px.

    Starts are multiples of :data:`STEP`; only the last run may have another size.
    """
    limit = max(STEP, tile // STEP * STEP)
    count = math.ceil(length / limit)
    size = math.ceil(math.ceil(length / count) / STEP) * STEP
    return [(start, min(size, length - start)) for start in range(0, length, size)]


def unit_count(height: int, width: int, tile: int, pools: int) -> int:
    """Progress units of one pass: every tile once, plus once per pool stage when tiled."""
    tiles = len(spans(height, tile)) * len(spans(width, tile))
    return tiles * (1 + pools) if tiles > 1 else 1


@dataclass(frozen=True)
class _Tile:
    y: int
    h: int
    x: int
    w: int
    last_row: bool
    last_col: bool


def run_tiled(image: np.ndarray, runner: Runner, tile: int,
              step: Callable[[], None] = lambda: None) -> np.ndarray:
    """Enlarge an H×W×3 float32 image by ``runner.spec.scale`` in tiles; ``step()`` after each unit."""
    spec = runner.spec
    height, width = image.shape[:2]
    padded = _pad(image, spec)
    rows, cols = spans(height, tile), spans(width, tile)
    tiles = [_Tile(y, h, x, w, i == len(rows) - 1, j == len(cols) - 1)
             for i, (y, h) in enumerate(rows) for j, (x, w) in enumerate(cols)]

    feeds: dict[str, np.ndarray] = {}
    if runner.pools and len(tiles) > 1:
        for pool in runner.pools:
            total, count = 0.0, 0
            for t in tiles:
                feat = runner.forward(_cut(padded, t, spec)[0], pool.source, feeds)
                own_h = feat.shape[1] if t.last_row else _owned(pool.rate, t.h)
                own_w = feat.shape[2] if t.last_col else _owned(pool.rate, t.w)
                total = total + feat[:, :own_h, :own_w].sum(axis=(1, 2), dtype=np.float64)
                count += own_h * own_w
                step()
            feeds[pool.target] = (total / count).astype(np.float32)

    s = spec.scale
    out = np.empty((height * s, width * s, 3), dtype=np.float32)
    for t in tiles:
        chw, (top, left) = _cut(padded, t, spec)
        res = runner.forward(chw, None, feeds)
        oy, ox = top * s, left * s
        block = res[:, oy:oy + t.h * s, ox:ox + t.w * s].transpose(1, 2, 0)
        if block.shape[:2] != (t.h * s, t.w * s):
            raise RuntimeError(f"{spec.key} returned {res.shape[1:]} for a {chw.shape[1:]} tile")
        target = out[t.y * s:(t.y + t.h) * s, t.x * s:(t.x + t.w) * s]
        target[...] = block
        if spec.residual:
            core = image[t.y:t.y + t.h, t.x:t.x + t.w]
            target += np.repeat(np.repeat(core, s, axis=0), s, axis=1)
        step()
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _owned(rate: float, size: int) -> int:
    owned = rate * size
    if abs(owned - round(owned)) > 1e-6:
        raise RuntimeError(f"a {size} px tile does not line up with a pool at {rate} per px")
    return round(owned)


def _pad(image: np.ndarray, spec: NetworkSpec) -> np.ndarray:
    """The whole image padded for its family, grown at the bottom/right to the size rule."""
    p, a = spec.pad, spec.align
    extra_h = -(image.shape[0] + 2 * p) % a
    extra_w = -(image.shape[1] + 2 * p) % a
    return np.pad(image, ((p, p + extra_h), (p, p + extra_w), (0, 0)), mode=spec.pad_mode)


def _cut(padded: np.ndarray, t: _Tile, spec: NetworkSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """A tile's planar input, and where its own region starts in the network's output (input px)."""
    p, c = spec.pad, spec.context
    top, left = max(0, t.y + p - c), max(0, t.x + p - c)
    bottom = padded.shape[0] if t.last_row else min(padded.shape[0], t.y + p + t.h + c)
    right = padded.shape[1] if t.last_col else min(padded.shape[1], t.x + p + t.w + c)
    if (bottom - top) % spec.align or (right - left) % spec.align:
        raise RuntimeError(f"tile of {spec.key} breaks its size rule")  # a spec/grid mismatch
    chw = np.ascontiguousarray(padded[top:bottom, left:right].transpose(2, 0, 1))
    eaten = p if spec.valid else 0
    return chw, (t.y + p - top - eaten, t.x + p - left - eaten)
