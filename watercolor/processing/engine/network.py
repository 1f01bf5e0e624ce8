"""One loaded ncnn network: files, the whole-image pools it contains, and a safe forward call.

ncnn pitfalls this module exists to contain: ``ncnn.Mat(array)`` wraps the
numpy buffer without copying (the array must outlive the extraction), ignores
strides (arrays are made contiguous), needs float32, and reads planar C×H×W.
A :class:`Network` is loaded once and shared: every call makes its own
Extractor, so several threads may run the same network at once.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from watercolor.processing.engine.networks import NetworkSpec


@dataclass(frozen=True)
class Pool:
    """A whole-image average pool inside the network (squeeze-excitation blocks)."""

    source: str  # blob the pool averages (C×h×w)
    target: str  # the pooled vector (C), which can be fed from outside
    rate: float = 0.0  # feature positions per input pixel at this stage


def model_file(spec: NetworkSpec, suffix: str) -> Path:
    path = Path(str(importlib.resources.files(spec.package) / "models" / f"{spec.stem}{suffix}"))
    if not path.is_file():
        raise FileNotFoundError(f"model file {spec.stem}{suffix} is missing from {spec.package}")
    return path


@functools.cache
def global_pools(spec: NetworkSpec) -> tuple[Pool, ...]:
    """Global average pools in the .param file, in graph order (loads no weights)."""
    pools = []
    for line in model_file(spec, ".param").read_text().splitlines()[2:]:
        fields = line.split()
        if len(fields) < 4 or fields[0] != "Pooling":
            continue
        n_in, n_out = int(fields[2]), int(fields[3])
        params = dict(f.split("=", 1) for f in fields[4 + n_in + n_out:] if "=" in f)
        if params.get("0") == "1" and params.get("4") == "1":  # average, global
            pools.append(Pool(source=fields[4], target=fields[4 + n_in]))
    return tuple(pools)


class Network:
    """An ncnn network loaded for one device, ready for concurrent forward calls."""

    def __init__(self, spec: NetworkSpec, *, threads: int, vulkan: bool, gpu_id: int = 0) -> None:
        import ncnn

        self.spec = spec
        self._ncnn = ncnn
        net = ncnn.Net()
        net.opt.num_threads = threads
        net.opt.use_vulkan_compute = vulkan
        if vulkan:
            net.set_vulkan_device(gpu_id)
        elif spec.lean:
            # Winograd and im2col-GEMM convolutions keep large transformed copies of
            # weights and activations; without them Real-ESRGAN needs half the memory.
            net.opt.use_winograd_convolution = False
            net.opt.use_sgemm_convolution = False
        if net.load_param(str(model_file(spec, ".param"))) != 0 or \
                net.load_model(str(model_file(spec, ".bin"))) != 0:
            raise RuntimeError(f"ncnn could not load {spec.key}")
        self._net = net
        self.pools = self._measure_rates(global_pools(spec))

    def forward(self, chw: np.ndarray, extract: str | None = None,
                feeds: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Run the network on a planar C×H×W input; returns the ``extract`` blob as a new array."""
        ncnn = self._ncnn
        # Every array handed to ncnn stays referenced here until extraction is done.
        keep = [np.ascontiguousarray(chw, dtype=np.float32)]
        # Fresh pools per call: the net's shared pool would keep every block size
        # any tile ever needed; these are freed (returned to the OS) when the call ends.
        blobs, workspace = ncnn.UnlockedPoolAllocator(), ncnn.PoolAllocator()
        ex = self._net.create_extractor()
        ex.set_blob_allocator(blobs)
        ex.set_workspace_allocator(workspace)
        ex.input(self.spec.input_blob, ncnn.Mat(keep[0]))
        for name, vector in (feeds or {}).items():
            keep.append(np.ascontiguousarray(vector, dtype=np.float32))
            ex.input(name, ncnn.Mat(keep[-1]))
        blob = extract or self.spec.output_blob
        ret, mat = ex.extract(blob)
        if ret != 0:
            raise RuntimeError(f"ncnn failed extracting {blob} from {self.spec.key} (code {ret})")
        result = np.array(mat, dtype=np.float32, copy=True)
        del mat, ex  # both hold blocks of the pools: release them first
        blobs.clear()
        workspace.clear()
        del keep
        return result

    def _measure_rates(self, pools: tuple[Pool, ...]) -> tuple[Pool, ...]:
        """How many feature positions each pool sees per input pixel (0.25 to 1.5 here).

        Measured on two tiny inputs that differ by 16 px in width, so tiles can
        tell which part of a pooled feature map is theirs without hard-coding
        each architecture's strides.
        """
        if not pools:
            return ()
        spec = self.spec
        side = -(-(2 * spec.pad + 16) // 16) * 16
        probe = np.zeros((3, side, side + 16), dtype=np.float32)
        measured = []
        for pool in pools:
            feat = self.forward(probe, pool.source)
            measured.append(Pool(pool.source, pool.target, (feat.shape[2] - feat.shape[1]) / 16))
        return tuple(measured)
