"""ncnn's Vulkan path gives what the CPU path gives.

Without a GPU this runs on Mesa's software Vulkan driver (Debian
``mesa-vulkan-drivers`` and ``libvulkan1``): slow, so the images are tiny, but
it is the real GPU code path end to end. Vulkan computes in fp16 where the
device offers it, hence a tolerance rather than equality.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from watercolor.config import ConfigError
from watercolor.processing.engine import Engine


def _vulkan_devices() -> list[int]:
    """ncnn's Vulkan device types (0 discrete, 1 integrated, 2 virtual, 3 CPU/software)."""
    import ncnn

    return [ncnn.get_gpu_info(i).type() for i in range(ncnn.get_gpu_count())]


@pytest.fixture(scope="module")
def vulkan() -> Engine:
    if not _vulkan_devices():
        if os.environ.get("CI"):  # .ci/run installs the driver: a skip there would hide a broken path
            pytest.fail("no Vulkan device under CI: .ci/run installs mesa-vulkan-drivers libvulkan1")
        pytest.skip("ncnn.get_gpu_count() is 0: no Vulkan device or loader "
                    "(apt-get install mesa-vulkan-drivers libvulkan1 gives a software one)")
    engine = Engine(device="vulkan", threads=2)
    assert engine.device == "vulkan"
    return engine


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    import skimage.data

    return (skimage.data.chelsea()[100:132, 150:178] / 255.0).astype(np.float32)  # 32x28


@pytest.mark.parametrize("model,scale,tile", [
    ("waifu2x-photo", 2, 0),
    ("realcugan", 2, 16),  # 2x2 tiles: pooled vectors fed to the GPU network
    ("realesr-animevideov3", 3, 0),
])
def test_vulkan_matches_cpu(vulkan, photo, model, scale, tile):
    cpu = Engine(threads=2).upscale(photo, model, scale, tile_size=tile or None)
    gpu = vulkan.upscale(photo, model, scale, tile_size=tile or None)
    assert gpu.shape == cpu.shape
    diff = np.abs(gpu - cpu) * 255
    assert diff.max() <= 4.0
    assert diff.mean() <= 0.5


def test_auto_takes_only_a_real_gpu():
    devices = _vulkan_devices()
    assert Engine(device="auto").device == ("vulkan" if devices and devices[0] != 3 else "cpu")


def test_vulkan_without_that_device_is_a_config_error():
    with pytest.raises(ConfigError, match="no Vulkan device 99"):
        Engine(device="vulkan", gpu_id=99)
