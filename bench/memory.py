"""Peak memory of a processing backend against input size and tile size, per model family.

Each case starts a fresh ``watercolor process`` (model preloaded, the given
``WTC_TILE_SIZE``), reads its resident-set high-water mark (``VmHWM`` in
``/proc/PID/status``) once it is idle, sends it one enlargement of a real
photo over the wire protocol, and reads the high-water mark again.

What tiling promises: the memory a request adds is the output image itself
(the float32 result, 12 bytes per output pixel, is the largest buffer the
pipeline must hold whole) plus a working set that depends on the tile size,
not on the image size. The last column, peak - idle - float32 output, is
that working set: it should stay flat down a column of growing images with
one tile size, and grow with the tile size.

    .venv/bin/python bench/memory.py           # 4 families, up to 1 megapixel in (several minutes)
    .venv/bin/python bench/memory.py --quick   # tiny images, one case per family
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path

import benchlib

from watercolor import protocol, transport
from watercolor.models import get_model

MIB = 1024 * 1024

#: (model, scale, input sides, tile sizes); tile 0 = the model's default.
FULL_CASES = (
    ("realesr-animevideov3", 4, (256, 512, 1024), (64, 128, 256, 0)),
    ("realesrgan-x4plus", 4, (128, 256), (64, 0)),
    ("waifu2x-photo", 2, (256, 512, 1024), (64, 128, 256, 0)),
    ("realcugan", 2, (256, 512, 1024), (128, 0)),
)
QUICK_CASES = (
    ("realesr-animevideov3", 4, (32,), (16,)),
    ("waifu2x-photo", 2, (32,), (16,)),
    ("realcugan", 2, (32,), (16,)),
)


def high_water_mark(pid: int) -> int:
    """Peak resident set size of a process so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status (not Linux?)")


def one_case(log_dir: Path, model: str, scale: int, side: int, tile: int, threads: int,
             png: bytes) -> tuple[int, int]:
    """(idle high-water mark, high-water mark after one request) of a fresh backend, in bytes."""
    backend = benchlib.Backend(log_dir, threads=threads, tile_size=tile, slots=1, queue=1, preload=model,
                               io_timeout=600)
    try:
        idle = high_water_mark(backend.pid)
        frame = protocol.request(uuid.uuid4().hex[:12], png, model=model, scale=scale)
        reply = transport.exchange(backend.address, frame, io_timeout=1200)
        if reply.type is not protocol.FrameType.RESULT:
            raise RuntimeError(f"{model} {side}px tile {tile}: backend answered {reply.type.name} "
                               f"{reply.header}")
        if (reply.header.get("width"), reply.header.get("height")) != (side * scale, side * scale):
            raise RuntimeError(f"unexpected result size {reply.header}")
        return idle, high_water_mark(backend.pid)
    finally:
        backend.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny images, one case per family")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    cases = QUICK_CASES if args.quick else FULL_CASES
    benchlib.header("Memory: backend peak RSS against input size and tile size", args)

    source = benchlib.photo("astronaut")
    rows = []
    with tempfile.TemporaryDirectory(prefix="wtc-bench-") as log_dir:
        for model, scale, sides, tiles in cases:
            family = get_model(model).family
            for tile in tiles:
                for side in sides:
                    png = benchlib.png_bytes(benchlib.square_crop(source, side))
                    idle, peak = one_case(Path(log_dir), model, scale, side, tile, args.threads, png)
                    out_float = (side * scale) ** 2 * 3 * 4
                    rows.append([family, f"{model} x{scale}", f"{side}x{side}", f"{side * side / 1e6:.2f}",
                                 tile or "default", f"{idle / MIB:.0f}", f"{peak / MIB:.0f}",
                                 f"{(peak - idle) / MIB:.0f}", f"{out_float / MIB:.0f}",
                                 f"{(peak - idle - out_float) / MIB:.0f}"])
                    print(" ".join(str(c) for c in rows[-1]), flush=True)
    print()
    print(f"## Memory: {args.threads} ncnn threads, one request per fresh backend, VmHWM in MiB")
    print()
    print(benchlib.table(["family", "model", "input", "input MP", "tile", "idle MiB", "peak MiB",
                          "peak - idle", "float32 output", "peak - idle - float32 output"], rows))


if __name__ == "__main__":
    main()
