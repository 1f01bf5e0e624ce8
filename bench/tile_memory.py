"""Peak memory of default-size tiles on CPU, per network and for the whole engine.

    python bench/tile_memory.py                    # one interior tile of every default network
    python bench/tile_memory.py realcugan          # one model's networks
    python bench/tile_memory.py --engine realcugan # the engine on a real photo of 2x2 default tiles

Every measurement runs in a fresh process, so high-water marks (``ru_maxrss``)
do not mix. Tile mode loads one network and runs one interior tile of the
model's default size (tile plus context on every side, the largest input a
tile ever feeds). Engine mode runs ``Engine.upscale`` at the model's largest
native scale on a photo two default tiles wide and high, so the pooled-stage
passes, the padded input and the float32 result (12 bytes per output pixel)
all count. The tables in docs/tiling.md come from here.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from watercolor.models import MODELS
from watercolor.processing.engine.network import Network
from watercolor.processing.engine.networks import network_for


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


def measure_engine(model: str, threads: int) -> dict:
    import skimage.data
    from PIL import Image

    from watercolor.processing.engine import Engine

    spec = MODELS[model]
    scale = max(spec.scales)
    side = 2 * network_for(spec, spec.resolve_options(None), scale).tile
    photo = Image.fromarray(skimage.data.astronaut()).resize((side, side), Image.Resampling.LANCZOS)
    image = np.asarray(photo, dtype=np.float32) / 255.0
    engine = Engine(threads=threads)
    engine.preload([model])
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    out = engine.upscale(image, model, scale)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": model, "scale": scale, "side": side, "loaded_mib": loaded / 1024,
            "peak_mib": peak / 1024, "output_mib": out.nbytes / 2**20, "seconds": elapsed,
            "units": engine.tile_count(side, side, model, scale)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    networked = [name for name, spec in MODELS.items() if spec.scales]
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"models to measure (default: all of {', '.join(networked)})")
    parser.add_argument("--engine", action="store_true",
                        help="run the whole engine on a photo of 2x2 default tiles instead of one tile")
    parser.add_argument("--threads", type=int, default=2, help="ncnn threads (default 2)")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SCALE"), help=argparse.SUPPRESS)
    parser.add_argument("--one-engine", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # the child process of one tile measurement
        print(json.dumps(measure(args.one[0], int(args.one[1]), threads=args.threads)))
        return
    if args.one_engine:  # the child process of one engine measurement
        print(json.dumps(measure_engine(args.one_engine, threads=args.threads)))
        return
    unknown = sorted(set(args.models) - set(networked))
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}: choose from {', '.join(networked)}")
    wanted = args.models or networked
    threads = ["--threads", str(args.threads)]
    if args.engine:
        print("| model | scale | photo | progress units | after load (MiB) | peak (MiB) | result (MiB) | s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for model in wanted:
            row = _child("--one-engine", model, *threads)
            print(f"| {model} | {row['scale']} | {row['side']}² | {row['units']} | {row['loaded_mib']:.0f} | "
                  f"{row['peak_mib']:.0f} | {row['output_mib']:.0f} | {row['seconds']:.0f} |", flush=True)
        return
    print("| network | tile | tile input | after load (MiB) | peak (MiB) | kpx/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for model in wanted:
        spec = MODELS[model]
        for scale in spec.native_scales(spec.resolve_options(None)):
            row = _child("--one", model, str(scale), *threads)
            print(f"| {row['network']} | {row['tile']} | {row['input']}² | {row['loaded_mib']:.0f} | "
                  f"{row['peak_mib']:.0f} | {row['kpx_s']:.1f} |", flush=True)


def _child(*args: str) -> dict:
    """One measurement in a fresh process, so high-water marks do not mix."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
