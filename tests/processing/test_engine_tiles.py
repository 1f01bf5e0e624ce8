"""Tiling does not change the result; native passes are planned sensibly."""

from __future__ import annotations

import numpy as np
import pytest

from watercolor.models import get_model
from watercolor.processing.engine import Engine
from watercolor.processing.engine.network import Network, global_pools
from watercolor.processing.engine.networks import network_for
from watercolor.processing.engine.plan import plan_passes
from watercolor.processing.engine.tiling import STEP, run_tiled, spans

WHOLE = 100_000  # a tile size no test image reaches


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(threads=2)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A detailed 64x76 crop of a real photo (coffee), float32 RGB in 0..1."""
    import skimage.data

    return (skimage.data.coffee()[80:144, 190:266] / 255.0).astype(np.float32)


@pytest.mark.parametrize("length,tile", [(1, 16), (16, 16), (17, 16), (100, 32), (97, 30), (5000, 256),
                                         (33, 4), (9, 2)])
def test_spans_cover_the_length_in_near_equal_aligned_runs(length, tile):
    runs = spans(length, tile)
    assert runs[0][0] == 0 and sum(size for _, size in runs) == length
    assert all(start + size == nxt for (start, size), (nxt, _) in zip(runs, runs[1:], strict=False))
    assert all(start % STEP == 0 for start, _ in runs)
    assert all(0 < size <= max(STEP, tile) for _, size in runs)
    assert len({size for _, size in runs[:-1]}) <= 1


@pytest.mark.parametrize("model,options,scale,expected", [
    ("waifu2x-photo", {}, 1, (2,)),
    ("waifu2x-photo", {}, 3, (2, 2)),
    ("waifu2x-photo", {}, 8, (2, 2, 2)),
    ("waifu2x-cunet", {}, 1, (1,)),  # denoise 0 ships a same-size network
    ("waifu2x-cunet", {"denoise": -1}, 1, (2,)),
    ("realcugan", {}, 2.5, (3,)),
    ("realcugan", {}, 8, (2, 4)),  # the bigger pass last: 4 then 2 would cost ~3x more
    ("realcugan", {"denoise": 1}, 2, (2,)),
    ("realesr-animevideov3", {}, 5, (2, 3)),
    ("realesr-animevideov3", {}, 8, (2, 4)),
    ("realesrgan-x4plus", {}, 8, (4, 4)),
    ("realesrgan-x4plus", {}, 16, (4, 4)),
], ids=lambda v: str(v))
def test_plan_takes_the_fewest_then_cheapest_passes(model, options, scale, expected):
    spec = get_model(model)
    opts = spec.resolve_options(options)
    natives = spec.native_scales(opts)
    assert plan_passes(301, 217, scale, natives, lambda s: network_for(spec, opts, s).cost) == expected


@pytest.mark.parametrize("model,options,scale,count", [
    ("waifu2x-cunet", {}, 2, 4),
    ("waifu2x-cunet", {"denoise": 3}, 1, 4),
    ("realcugan", {"denoise": -1}, 3, 4),
    ("realcugan", {}, 4, 4),
    ("waifu2x-photo", {}, 2, 0),
    ("realesrgan-x4plus", {}, 4, 0),
], ids=lambda v: str(v))
def test_whole_image_pools_are_found_in_the_graph(model, options, scale, count):
    spec = get_model(model)
    assert len(global_pools(network_for(spec, spec.resolve_options(options), scale))) == count


# Every network family; cunet and Real-CUGAN share their whole-image pools across tiles.
FAMILIES = [
    ("waifu2x-photo", 2, {}),
    ("waifu2x-cunet", 2, {}),
    ("waifu2x-cunet", 1, {"denoise": 2}),
    ("realcugan", 2, {}),
    ("realcugan", 3, {"denoise": 3}),
    ("realcugan", 4, {}),
    ("realesr-animevideov3", 2, {}),
    ("realesr-animevideov3", 4, {}),
]


@pytest.mark.parametrize("model,scale,options", FAMILIES, ids=[f"{m}-x{s}" for m, s, _ in FAMILIES])
def test_tiles_match_the_whole_image(engine, photo, model, scale, options):
    tile = 32  # 2x3 tiles
    whole = engine.upscale(photo, model, scale, options=options, tile_size=WHOLE)
    tiled = engine.upscale(photo, model, scale, options=options, tile_size=tile)
    diff = np.abs(tiled - whole) * 255
    assert diff.max() <= 2.0
    assert np.percentile(diff, 99.9) <= 0.5


class _WithoutSharedPools:
    """A network whose tiles each pool only themselves, as naive tiling would."""

    def __init__(self, network: Network) -> None:
        self._network, self.spec, self.pools = network, network.spec, ()

    def forward(self, chw, extract=None, feeds=None):
        return self._network.forward(chw, extract, feeds)


def test_tiles_need_the_shared_pools(photo):
    spec = get_model("realcugan")
    network = Network(network_for(spec, spec.resolve_options(None), 2), threads=2, vulkan=False)
    assert len(network.pools) == 4
    whole = run_tiled(photo, network, WHOLE)
    shared = run_tiled(photo, network, 32)
    naive = run_tiled(photo, _WithoutSharedPools(network), 32)
    assert np.abs(shared - whole).max() * 255 <= 0.1  # exact up to float rounding
    assert np.abs(naive - whole).max() * 255 > 2.0
