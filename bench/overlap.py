"""How much tile overlap a same-padded network needs: tiled vs whole-image output on a real photo.

    python bench/overlap.py --model realesrgan-x4plus --size 256 --tile 128 --overlaps 10,16,24,32,48

For each overlap (context px per tile side) it prints the max, mean and 99.9th
percentile absolute difference from the whole-image result in 8-bit steps,
the work done (input pixels run through the network, relative to one
whole-image pass) and the measured time relative to the whole-image pass.
The table in docs/tiling.md comes from this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from watercolor.models import get_model
from watercolor.processing.engine.network import Network
from watercolor.processing.engine.networks import network_for
from watercolor.processing.engine.tiling import run_tiled


class _Counted:
    """A network seen through another overlap, counting the pixels it is fed."""

    def __init__(self, network: Network, overlap: int) -> None:
        self._network = network
        self.spec = dataclasses.replace(network.spec, overlap=overlap)
        self.pools = network.pools
        self.pixels = 0

    def forward(self, chw, extract=None, feeds=None):
        self.pixels += chw.shape[1] * chw.shape[2]
        return self._network.forward(chw, extract, feeds)


def photo(name: str, size: int) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    top, left = max(0, (img.shape[0] - size) // 2), max(0, (img.shape[1] - size) // 2)
    return (img[top:top + size, left:left + size, :3] / 255.0).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="realesrgan-x4plus")
    ap.add_argument("--scale", type=int, default=0, help="native scale (default: the model's largest)")
    ap.add_argument("--photo", default="astronaut", help="an RGB image in skimage.data")
    ap.add_argument("--size", type=int, default=256, help="edge of the centre crop")
    ap.add_argument("--tile", type=int, default=128, help="tile edge in input pixels")
    ap.add_argument("--overlaps", default="10,16,24,32,48")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    spec = get_model(args.model)
    options = spec.resolve_options(None)
    net_spec = network_for(spec, options, args.scale or max(spec.scales))
    network = Network(net_spec, threads=args.threads, vulkan=False)
    image = photo(args.photo, args.size)

    whole = _Counted(network, 0)
    started = time.perf_counter()
    reference = run_tiled(image, whole, tile=10 * args.size)
    whole_time = time.perf_counter() - started

    print(f"{args.model} x{net_spec.scale}, {args.photo} {image.shape[1]}x{image.shape[0]}, "
          f"tile {args.tile}, whole image {whole_time:.1f} s")
    print("| overlap (px) | max | mean | 99.9th pct | work | time |")
    print("|---:|---:|---:|---:|---:|---:|")
    for overlap in (int(v) for v in args.overlaps.split(",")):
        counted = _Counted(network, overlap)
        started = time.perf_counter()
        tiled = run_tiled(image, counted, tile=args.tile)
        elapsed = time.perf_counter() - started
        diff = np.abs(tiled.astype(np.float64) - reference) * 255
        print(f"| {max(overlap, net_spec.pad)} | {diff.max():.2f} | {diff.mean():.3f} | "
              f"{np.percentile(diff, 99.9):.2f} | {counted.pixels / whole.pixels:.2f}x | "
              f"{elapsed / whole_time:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
