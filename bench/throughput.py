"""Per-model inference throughput: CPU threads, and ncnn's Vulkan path when a Vulkan device exists.

For every model at its largest native scale, ``Engine.upscale`` enlarges a
crop of a real photo (astronaut) sized so one run takes about a second on a
CPU core pair; the table gives input kilopixels per second (medians of
interleaved runs) and, for Vulkan, the largest difference from the CPU result
in 8-bit levels.

On a machine without a GPU the Vulkan device ncnn finds is Mesa's software
rasteriser (lavapipe, Debian ``mesa-vulkan-drivers``): it proves the GPU code
path end to end but is no measure of GPU speed. The table names the device.

    .venv/bin/python bench/throughput.py            # every model (a few minutes)
    .venv/bin/python bench/throughput.py --quick    # one fast model, tiny input
    .venv/bin/python bench/throughput.py --no-vulkan
"""

from __future__ import annotations

import argparse
import os

import benchlib
import numpy as np

from watercolor.processing.engine import Engine

#: (model, scale, input side): sides chosen for roughly a second per CPU run.
FULL_CASES = (
    ("realesrgan-x4plus", 4, 64),
    ("realesrgan-x4plus-anime", 4, 96),
    ("realesr-animevideov3", 4, 256),
    ("waifu2x-photo", 2, 384),
    ("waifu2x-anime", 2, 384),
    ("waifu2x-cunet", 2, 256),
    ("realcugan", 2, 256),
    ("realcugan", 4, 192),
    ("lanczos", 4, 1024),
)
QUICK_CASES = (("realesr-animevideov3", 4, 32),)


def vulkan_device() -> str | None:
    """Name of Vulkan device 0 as ncnn sees it, or None when there is none."""
    try:
        import ncnn

        if ncnn.get_gpu_count() < 1:
            return None
        return ncnn.get_gpu_info(0).device_name()
    except Exception:  # noqa: BLE001 - no loader, no driver: no Vulkan column
        return None


def _run(engine: Engine, rgb: np.ndarray, model: str, scale: int):
    return benchlib.in_thread(lambda: engine.upscale(rgb, model, scale))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-vulkan", action="store_true", help="CPU only")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    benchlib.header("Throughput: input kilopixels per second per model", args)

    device = None if args.no_vulkan else vulkan_device()
    engines = {"cpu": Engine(device="cpu", threads=args.threads)}
    if device is not None:
        engines["vulkan"] = Engine(device="vulkan", gpu_id=0, threads=args.threads)
    source = benchlib.photo("astronaut")
    rows = []
    for model, scale, side in (QUICK_CASES if args.quick else FULL_CASES):
        rgb = benchlib.to_float(benchlib.square_crop(source, side))
        results: dict[str, object] = {}
        variants = {name: benchlib.keeping(_run(engine, rgb, model, scale), results, name)
                    for name, engine in engines.items()}
        times = benchlib.interleaved(variants, args.repeats)
        kpx = {name: side * side / benchlib.median(t) / 1000 for name, t in times.items()}
        row = [f"{model} x{scale}", f"{side}x{side}", f"{kpx['cpu']:.1f}"]
        if "vulkan" in engines:
            cpu, vulkan = (np.rint(np.asarray(results[k]) * 255) for k in ("cpu", "vulkan"))
            diff = np.abs(cpu - vulkan)
            row += [f"{kpx['vulkan']:.1f}", f"{kpx['vulkan'] / kpx['cpu']:.2f}", int(diff.max())]
        rows.append(row)
        print(" ".join(str(c) for c in row), flush=True)

    headers = ["model", "input", f"CPU, {args.threads} threads: kpx/s"]
    if device is not None:
        headers += [f"Vulkan ({device}): kpx/s", "Vulkan / CPU", "Vulkan vs CPU max diff (levels)"]
    print()
    print(f"## Throughput: input kpx/s, {args.repeats} interleaved runs, medians; "
          f"Vulkan device: {device or 'none found'}; load average at end {benchlib.load_average()}")
    print()
    print(benchlib.table(headers, rows))


if __name__ == "__main__":
    main()
