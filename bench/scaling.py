"""Batch throughput against the number of processing backends.

Two parts, each a table:

* ``standin``: N stand-in backends (bench/standin.py: the real protocol, a
  fixed sleep per image, slots and BUSY like the real server) behind a real
  ``watercolor api``. Only the API's fan-out is measured. A batch holds
  ``rounds`` x N images, so every N ideally takes ``rounds`` x ``delay``
  seconds; fan-out efficiency = throughput(N) / (N x throughput(1)).
  Target: >= 0.9 at 16 stand-ins.
* ``real``: N real ``watercolor process`` backends (one thread each, plus one
  backend with two threads) behind a real API, running realesr-animevideov3
  x4 on crops of real photos. Target: 2 backends x 1 thread on 2 cores
  >= 1.7 x one backend x 1 thread.

The API runs with WTC_API_PARALLEL = 2 x the largest N (every backend has an
image running and one waiting, so none idles between images) and
WTC_MAX_BATCH large enough for the biggest batch. Configurations are timed
interleaved; the table shows medians.

    .venv/bin/python bench/scaling.py            # both tables (a few minutes)
    .venv/bin/python bench/scaling.py --quick    # tiny version, well under a minute
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import zipfile
from pathlib import Path

import benchlib
import requests
from standin import StandIn

MODEL = "realesr-animevideov3"


def post_batch(url: str, images: list[bytes], params: dict[str, str]) -> None:
    files = [("image", (f"img{i}.png", data, "image/png")) for i, data in enumerate(images)]
    response = requests.post(url + "/v1/upscale", params=params, files=files, timeout=900)
    if response.status_code != 200:
        raise RuntimeError(f"batch failed: {response.status_code} {response.text[:300]}")
    if len(images) > 1:
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            if len(archive.namelist()) != len(images):
                raise RuntimeError(f"{len(archive.namelist())} results for {len(images)} images")


def crops(count: int, side: int, seed: int = 7) -> list[bytes]:
    """``count`` different ``side`` x ``side`` crops of the real photos, as PNG."""
    rng = random.Random(seed)
    photos = [benchlib.photo(name) for name in benchlib.SKIMAGE_PHOTOS]
    out = []
    for i in range(count):
        img = photos[i % len(photos)]
        x, y = rng.randrange(img.width - side), rng.randrange(img.height - side)
        out.append(benchlib.png_bytes(img.crop((x, y, x + side, y + side))))
    return out


# --- (a) stand-in backends -----------------------------------------------------------------------


def bench_standin(args: argparse.Namespace, log_dir: Path) -> None:
    counts = args.backends
    parallel = 2 * max(counts)
    batch_limit = args.rounds * max(counts)
    standins = [StandIn(args.delay, slots=1, queue=args.queue) for _ in range(max(counts))]
    apis: dict[int, benchlib.Api] = {}
    try:
        for n in counts:
            apis[n] = benchlib.Api(log_dir, [s.label for s in standins[:n]], api_parallel=parallel,
                                   api_workers=4, max_batch=batch_limit)
        image = crops(1, 48)[0]
        params = {"model": "lanczos", "scale": "2"}
        variants = {n: (lambda n=n: post_batch(apis[n].url, [image] * (args.rounds * n), params))
                    for n in counts}
        times = benchlib.interleaved(variants, args.repeats)
    finally:
        benchlib.stop_all(apis.values())
        for s in standins:
            s.close()

    base = args.rounds / benchlib.median(times[counts[0]]) / counts[0]
    rows = []
    for n in counts:
        images = args.rounds * n
        med = benchlib.median(times[n])
        throughput = images / med
        rows.append([n, images, f"{med:.2f}", f"{throughput:.1f}", f"{n / args.delay:.1f}",
                     f"{throughput / (n * base):.3f}", f"{throughput / (n / args.delay):.3f}"])
    busy = sum(s.busy_answers for s in standins)
    print(f"## (a) stand-in backends: {args.delay * 1000:.0f} ms per image, slots=1 queue={args.queue}; "
          f"API WTC_API_PARALLEL={parallel} WTC_API_WORKERS=4; {args.repeats} interleaved runs, medians")
    print()
    print(benchlib.table(["backends", "images per batch", "median s", "images/s", "ideal images/s",
                          "efficiency vs N x one backend", "efficiency vs ideal"], rows))
    print()
    print(f"BUSY answers from stand-ins over the whole run (each one a retry by the API): {busy}")
    print()


# --- (b) real backends ---------------------------------------------------------------------------


def bench_real(args: argparse.Namespace, log_dir: Path) -> None:
    configs = [(n, 1) for n in args.real_backends]
    if args.two_thread:
        configs.insert(1, (1, 2))
    batch = args.real_batch
    parallel = 2 * max(n for n, _ in configs)
    backends: list[benchlib.Backend] = []
    apis: dict[tuple[int, int], benchlib.Api] = {}
    try:
        for n, threads in configs:
            group = [benchlib.Backend(log_dir, threads=threads, slots=1, queue=4, preload=MODEL)
                     for _ in range(n)]
            backends += group
            apis[(n, threads)] = benchlib.Api(log_dir, [b.label for b in group], api_parallel=parallel,
                                              api_workers=4, max_batch=max(64, batch))
        images = crops(batch, args.real_side)
        params = {"model": MODEL, "scale": "4"}
        variants = {cfg: (lambda cfg=cfg: post_batch(apis[cfg].url, images, params)) for cfg in configs}
        times = benchlib.interleaved(variants, args.repeats)
    finally:
        benchlib.stop_all(apis.values())
        benchlib.stop_all(backends)

    base = batch / benchlib.median(times[configs[0]])
    rows = []
    for n, threads in configs:
        med = benchlib.median(times[(n, threads)])
        throughput = batch / med
        rows.append([n, threads, n * threads, f"{med:.2f}", f"{throughput:.2f}", f"{throughput / base:.2f}"])
    print(f"## (b) real backends: {MODEL} x4, {batch} crops of {args.real_side}x{args.real_side} px per "
          f"batch, slots=1 queue=4; WTC_API_PARALLEL={parallel}; {args.repeats} interleaved runs, medians")
    print()
    print(benchlib.table(["backends", "threads each", "threads in all", "median s", "images/s",
                          "vs 1 backend x 1 thread"], rows))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--part", choices=("standin", "real", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.backends, args.delay, args.rounds, args.queue = [1, 4], 0.05, 2, 4
        args.real_backends, args.two_thread, args.real_batch, args.real_side = [1, 2], False, 2, 32
        args.repeats = 1
    else:
        args.backends, args.delay, args.rounds, args.queue = [1, 2, 4, 8, 16], 0.25, 8, 4
        args.real_backends, args.two_thread, args.real_batch, args.real_side = [1, 2, 4, 8, 16], True, 32, 128
    benchlib.header("Scaling: batch throughput against the number of backends", args)
    with tempfile.TemporaryDirectory(prefix="wtc-bench-") as log_dir:
        if args.part in ("standin", "both"):
            bench_standin(args, Path(log_dir))
        if args.part in ("real", "both"):
            bench_real(args, Path(log_dir))


if __name__ == "__main__":
    main()
