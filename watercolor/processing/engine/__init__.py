"""The super-resolution engine: any catalogue model, any scale, tiled, on CPU or Vulkan.

Theory of operation. ``upscale(rgb, model, scale)`` takes a float32 H×W×3
image in 0..1 and

1. resolves the model's options and plans native passes (:mod:`.plan`): the
   fewest, cheapest chain of the model's native scales that reaches
   ``H·scale × W·scale``, halves rounded up (:func:`watercolor.params.output_size`);
2. runs each pass tiled (:mod:`.tiling`) on the network that pass needs
   (:mod:`.networks` says which file and how to feed it; :mod:`.network`
   loads it once per process and runs it);
3. resamples the last pass down to the exact size with Lanczos
   (:mod:`.resample`) and clips to 0..1.

The ``lanczos`` model skips straight to step 3. ``progress(done, total)`` is
called after every tile (over all passes, pooled-statistics stages included);
an exception raised by it stops the work and propagates.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from watercolor.config import ConfigError
from watercolor.errors import InvalidParameter
from watercolor.models import ModelSpec, get_model
from watercolor.processing.engine.network import Network, global_pools
from watercolor.processing.engine.networks import NetworkSpec, network_for
from watercolor.processing.engine.plan import output_size, plan_passes
from watercolor.processing.engine.resample import resample
from watercolor.processing.engine.tiling import run_tiled, unit_count

__all__ = ["Engine", "output_size", "resample"]

Progress = Callable[[int, int], None]

_CPU_DEVICE_TYPE = 3  # ncnn GpuInfo.type(): 0 discrete, 1 integrated, 2 virtual, 3 CPU (software)


class Engine:
    """Loads networks lazily (once per process) and runs them; safe to share between threads."""

    def __init__(self, *, device: str = "cpu", gpu_id: int = 0, threads: int = 0, tile_size: int = 0) -> None:
        if threads < 0 or tile_size < 0:
            raise ConfigError("threads and tile_size must be 0 (automatic) or positive")
        self.device = _pick_device(device, gpu_id)
        self.gpu_id = gpu_id
        self.threads = threads or len(os.sched_getaffinity(0))
        self.tile_size = tile_size
        self._networks: dict[str, Network] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> Engine:
        return cls(device=settings.device, gpu_id=settings.gpu_id, threads=settings.threads,
                   tile_size=settings.tile_size)

    @property
    def loaded_networks(self) -> list[str]:
        """Keys of the networks loaded so far (package/file stem), in load order."""
        with self._lock:
            return list(self._networks)

    # --- cheap checks -------------------------------------------------------------------

    def validate(self, model: str, scale: float, options: dict | None) -> None:
        """Refuse an unknown model, bad options or a combination not shipped; loads nothing."""
        self._resolve(model, scale, options)

    def tile_count(self, height: int, width: int, model: str, scale: float, *,
                   options: dict | None = None, tile_size: int | None = None) -> int:
        """The ``total`` that ``upscale`` will report to its progress callback."""
        spec, opts, scale = self._resolve(model, scale, options)
        if spec.family == "lanczos":
            return 1
        return _units(self._passes(spec, opts, height, width, scale, tile_size))

    def largest_image(self, height: int, width: int, model: str, scale: float, *,
                      options: dict | None = None) -> tuple[int, int]:
        """(height, width) of the largest image an enlargement builds: the output, or the last
        native pass when the chain overshoots it (animevideov3 at 5x runs 2x then 3x: 6x)."""
        spec, opts, scale = self._resolve(model, scale, options)
        out_h, out_w = output_size(height, width, scale)
        if spec.family == "lanczos":
            return out_h, out_w
        passes = self._passes(spec, opts, height, width, scale, None)
        last = passes[-1]
        grown = (last.height * last.net.scale, last.width * last.net.scale)
        return max(grown, (out_h, out_w), key=lambda size: size[0] * size[1])

    # --- work ---------------------------------------------------------------------------

    def preload(self, names: Iterable[str]) -> None:
        """Load every network the named models use with their default options."""
        for name in names:
            spec = get_model(name)
            if spec.family == "lanczos":
                continue
            opts = spec.resolve_options(None)
            for native in spec.native_scales(opts):
                self._network(network_for(spec, opts, native))

    def upscale(self, rgb: np.ndarray, model: str, scale: float, *, options: dict | None = None,
                tile_size: int | None = None, progress: Progress | None = None) -> np.ndarray:
        """Enlarge a float32 H×W×3 image in 0..1 to :func:`output_size` × 3, in 0..1."""
        spec, opts, scale = self._resolve(model, scale, options)
        image = _as_rgb(rgb)
        out_h, out_w = output_size(image.shape[0], image.shape[1], scale)
        if spec.family == "lanczos":
            result = np.clip(resample(image, out_h, out_w), 0.0, 1.0)
            if progress:
                progress(1, 1)
            return result

        passes = self._passes(spec, opts, image.shape[0], image.shape[1], scale, tile_size)
        total = _units(passes)
        done = 0

        def step() -> None:
            nonlocal done
            done += 1
            if progress:
                progress(done, total)

        for p in passes:
            image = run_tiled(image, self._network(p.net), p.tile, step)
        if image.shape[:2] != (out_h, out_w):
            image = np.clip(resample(image, out_h, out_w), 0.0, 1.0)
        return image

    # --- helpers ------------------------------------------------------------------------

    def _resolve(self, model: str, scale: Any, options: dict | None) -> tuple[ModelSpec, dict, float]:
        """The model, its complete options and the scale as a float, or InvalidParameter."""
        spec = get_model(model)
        opts = spec.resolve_options(options)
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise InvalidParameter(f"scale must be a number, not {scale!r}") from None
        if not np.isfinite(scale) or scale < 1:
            raise InvalidParameter(f"scale must be a finite number of at least 1, not {scale!r}")
        if spec.family == "realcugan" and opts["denoise"] in (1, 2) and scale > 2:
            raise InvalidParameter(
                f"realcugan denoise={opts['denoise']} is only shipped at 2x: use a scale up to 2, "
                "or denoise -1, 0 or 3")
        return spec, opts, scale

    def _passes(self, spec: ModelSpec, opts: dict, height: int, width: int, scale: float,
                tile_size: int | None) -> list[_Pass]:
        """Every native pass, in order, with the size of its input and its tile size."""
        natives = spec.native_scales(opts)
        chain = plan_passes(height, width, scale, natives, lambda s: network_for(spec, opts, s).cost)
        passes = []
        for native in chain:
            net = network_for(spec, opts, native)
            passes.append(_Pass(net, height, width, tile_size or self.tile_size or net.tile))
            height, width = height * native, width * native
        return passes

    def _network(self, spec: NetworkSpec) -> Network:
        with self._lock:
            network = self._networks.get(spec.key)
            if network is None:
                network = Network(spec, threads=self.threads, vulkan=self.device == "vulkan",
                                  gpu_id=self.gpu_id)
                self._networks[spec.key] = network
            return network


class _Pass(NamedTuple):
    net: NetworkSpec
    height: int  # of the pass's input
    width: int
    tile: int


def _units(passes: list[_Pass]) -> int:
    return sum(unit_count(p.height, p.width, p.tile, len(global_pools(p.net))) for p in passes)


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidParameter(f"the engine takes an H×W×3 image, not shape {image.shape}")
    return np.ascontiguousarray(image, dtype=np.float32)


def _pick_device(device: str, gpu_id: int) -> str:
    """"cpu" or "vulkan"; "auto" takes Vulkan only on a real GPU, never a software rasteriser."""
    if device == "cpu":
        return "cpu"
    if device not in ("auto", "vulkan"):
        raise ConfigError(f"device must be cpu, vulkan or auto, not {device!r}")
    import ncnn

    count = ncnn.get_gpu_count()
    if device == "vulkan":
        if not 0 <= gpu_id < count:
            raise ConfigError(f"WTC_DEVICE=vulkan but ncnn finds no Vulkan device {gpu_id} "
                              f"({count} found)")
        return "vulkan"
    if 0 <= gpu_id < count and ncnn.get_gpu_info(gpu_id).type() != _CPU_DEVICE_TYPE:
        return "vulkan"
    return "cpu"
