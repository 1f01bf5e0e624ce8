"""Peak memory of one default-size tile, per network, on CPU.

    python bench/tile_memory.py                 # every network the catalogue uses by default
    python bench/tile_memory.py realcugan       # one model's networks

Each network runs in a fresh process (so high-water marks do not mix): load
it, note the resident set, run one interior tile of the model's default size
(tile plus context on every side, the largest input a tile ever feeds), and
note the peak (``ru_maxrss``). The engine's peak on an image is about this
peak plus the whole-image buffers (the float32 result, 12 bytes per output
pixel, and the padded input). The table in docs/tiling.md comes from here.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

from watercolor.models import MODELS
from watercolor.processing.engine.network import Network
from watercolor.processing.engine.networks import native_scales, network_for


def measure(model: str, scale: int, threads: int) -> dict:
    spec = MODELS[model]
    opts = spec.resolve_options(None)
    net_spec = network_for(spec, opts, scale)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    network = Network(net_spec, threads=threads, vulkan=False)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    side = net_spec.tile + 2 * net_spec.context
    side += -side % net_spec.align
    tile = np.random.default_rng(0).random((3, side, side), dtype=np.float32)
    started = time.perf_counter()
    network.forward(tile)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"network": net_spec.stem, "tile": net_spec.tile, "input": side,
            "start_mib": before / 1024, "loaded_mib": loaded / 1024, "peak_mib": peak / 1024,
            "kpx_s": side * side / elapsed / 1000}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), threads=2)))
        return
    wanted = sys.argv[1:] or [name for name, spec in MODELS.items() if spec.scales]
    print("| network | tile | tile input | after load (MiB) | peak (MiB) | kpx/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for model in wanted:
        spec = MODELS[model]
        for scale in native_scales(spec, spec.resolve_options(None)):
            out = subprocess.run([sys.executable, __file__, "--one", model, str(scale)],
                                 capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(f"| {row['network']} | {row['tile']} | {row['input']}² | {row['loaded_mib']:.0f} | "
                  f"{row['peak_mib']:.0f} | {row['kpx_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
