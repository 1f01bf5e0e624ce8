"""What Watercolor costs on top of the model: raw inference against end to end.

For each model and input size, five variants enlarge the same crop of a real
photo (astronaut) x4, interleaved, with the same threads and tiles:

* ``raw``: ``Engine.upscale`` on the float32 image in this process (the model
  and the tiling, nothing else) - the reference;
* ``pipeline``: the backend's pipeline in this process (PNG decode, prepare,
  the same engine call, finish, PNG encode);
* ``backend``: one request over the wire protocol to a real ``watercolor
  process`` subprocess (adds the process boundary and the frames);
* ``api``: ``POST /v1/upscale`` with the PNG as the raw body to a real
  ``watercolor api`` (gunicorn) in front of that backend, PNG back;
* ``api-json``: the original ``POST /`` route, base64 in JSON both ways.

Ratios are medians of each variant over the median of ``raw``. Targets:
``api`` <= 1.05 x raw for realesrgan-x4plus, <= 1.15 x raw for
realesr-animevideov3. A last column checks that the API's image is the raw
result (largest difference in 8-bit levels).

    .venv/bin/python bench/overhead.py           # 128 and 256 px inputs (several minutes)
    .venv/bin/python bench/overhead.py --quick   # 24 px, the compact model only: seconds
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import tempfile
import time
import uuid
from pathlib import Path

import benchlib
import numpy as np
import requests
from PIL import Image

from watercolor import protocol, transport
from watercolor.config import load_settings
from watercolor.params import parse_params
from watercolor.processing.engine import Engine
from watercolor.processing.pipeline import STEPS, Job, Pipeline

MODELS = ("realesrgan-x4plus", "realesr-animevideov3")
SCALE = 4
TARGETS = {"realesrgan-x4plus": 1.05, "realesr-animevideov3": 1.15}
VARIANTS = ("raw", "pipeline", "backend", "api", "api-json")


class Rig:
    """The engine in this process, and one real backend with the API in front of it."""

    def __init__(self, log_dir: Path, threads: int, models: list[str]) -> None:
        self.threads = threads
        self.settings = load_settings({}, threads=threads)
        self.engine = Engine(threads=threads)
        self.engine.preload(models)
        self.pipeline = Pipeline(self.settings, self.engine)
        self.backend = benchlib.Backend(log_dir, threads=threads, slots=1, queue=4, preload=",".join(models))
        self.api = benchlib.Api(log_dir, [self.backend.label], api_workers=4)

    def close(self) -> None:
        benchlib.stop_all([self.api, self.backend])

    def variants(self, png: bytes, model: str,
                 stages: dict[str, list[float]] | None = None) -> dict[str, object]:
        rgb = benchlib.to_float(Image.open(io.BytesIO(png)))
        params = parse_params({"model": model, "scale": SCALE}, default_model=model, max_scale=8)
        url = self.api.url

        def raw() -> np.ndarray:
            return self.engine.upscale(rgb, model, SCALE)

        def pipeline() -> bytes:
            # Pipeline.run, one step at a time, so the time of every step is known.
            job = Job(data=png, params=params, settings=self.settings, engine=self.engine, progress=None)
            for step in STEPS:
                started = time.perf_counter()
                step(job)
                if stages is not None:
                    stages.setdefault(step.__name__, []).append(time.perf_counter() - started)
            assert job.output is not None
            return job.output.data

        def backend() -> bytes:
            frame = protocol.request(uuid.uuid4().hex[:12], png, model=model, scale=SCALE)
            reply = transport.exchange(self.backend.address, frame, io_timeout=600)
            if reply.type is not protocol.FrameType.RESULT:
                raise RuntimeError(f"backend answered {reply.type.name}: {reply.header}")
            return reply.payload

        def api() -> bytes:
            response = requests.post(f"{url}/v1/upscale", params={"model": model, "scale": SCALE},
                                     data=png, headers={"Content-Type": "image/png"}, timeout=900)
            _check(response)
            return response.content

        def api_json() -> bytes:
            body = {"id": "bench", "images": [base64.b64encode(png).decode()], "model": model,
                    "scale": SCALE}
            response = requests.post(f"{url}/", json=body, timeout=900)
            _check(response)
            return base64.b64decode(response.json()["images"][0])

        # In-process work runs on a fresh thread per call, as in the backend (see benchlib.in_thread).
        return {"raw": benchlib.in_thread(raw), "pipeline": benchlib.in_thread(pipeline), "backend": backend,
                "api": api, "api-json": api_json}


def _check(response: requests.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"API answered {response.status_code}: {response.text[:300]}")


def largest_difference(raw: np.ndarray, png: bytes) -> int:
    levels = np.clip(np.rint(raw * 255.0), 0, 255).astype(np.int16)
    got = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    if got.shape != levels.shape:
        raise RuntimeError(f"the API made {got.shape}, raw inference {levels.shape}")
    return int(np.abs(got - levels).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny inputs, one run each")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="input sides in px, comma-separated (default 128,256)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved runs (default 5)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="ncnn threads, here and in the backend (default: all cores)")
    parser.add_argument("--models", type=lambda s: s.split(","), default=None,
                        help=f"comma-separated (default {','.join(MODELS)}; --quick: the compact one)")
    args = parser.parse_args()
    args.models = args.models or (["realesr-animevideov3"] if args.quick else list(MODELS))
    args.sizes = args.sizes or ([24] if args.quick else [128, 256])
    args.repeats = args.repeats or (1 if args.quick else 5)
    benchlib.header("Overhead: end to end against raw inference", args)

    source = benchlib.photo("astronaut")
    rows, stage_rows = [], []
    with tempfile.TemporaryDirectory(prefix="wtc-bench-") as log_dir:
        rig = Rig(Path(log_dir), args.threads, args.models)
        try:
            for model in args.models:
                for side in args.sizes:
                    png = benchlib.png_bytes(benchlib.square_crop(source, side))
                    warm = benchlib.png_bytes(benchlib.square_crop(source, 16))
                    for fn in rig.variants(warm, model).values():  # loads, connects, allocates
                        fn()
                    results: dict[str, object] = {}
                    stages: dict[str, list[float]] = {}
                    variants = {name: benchlib.keeping(fn, results, name)
                                for name, fn in rig.variants(png, model, stages).items()}
                    times = benchlib.interleaved(variants, args.repeats, warmup=False)
                    step_ms = {name: benchlib.median(t) * 1000 for name, t in stages.items()}
                    others = sum(ms for name, ms in step_ms.items() if name != "upscale")
                    stage_rows.append([model, f"{side}x{side}",
                                       *(f"{step_ms[step.__name__]:.1f}" for step in STEPS),
                                       f"{others / step_ms['upscale']:.3f}"])
                    raw_med = benchlib.median(times["raw"])
                    ratios = {name: benchlib.median(times[name]) / raw_med for name in VARIANTS}
                    target = TARGETS.get(model)
                    met = "" if target is None else ("yes" if ratios["api"] <= target else "no")
                    rows.append([model, f"{side}x{side}", f"{raw_med:.2f}",
                                 *(f"{ratios[name]:.3f}" for name in VARIANTS[1:]),
                                 f"<= {target}" if target else "-", met,
                                 largest_difference(results["raw"], results["api"])])
                    print(f"{model} {side}px: " + ", ".join(
                        f"{name} {benchlib.median(times[name]):.3f}s" for name in VARIANTS), flush=True)
        finally:
            rig.close()
    print()
    print(f"## Overhead: x{SCALE}, {args.threads} ncnn threads, model default tiles, "
          f"{args.repeats} interleaved runs, medians; load average at end {benchlib.load_average()}")
    print()
    print(benchlib.table(["model", "input", "raw s", "pipeline / raw", "backend / raw", "API raw body / raw",
                          "API base64 JSON / raw", "target (API)", "met", "API vs raw, max diff (levels)"],
                         rows))
    print()
    print("## Where the pipeline's time goes: median ms per step (the pipeline variant above)")
    print()
    print(benchlib.table(["model", "input", *(s.__name__ for s in STEPS), "all but upscale / upscale"],
                         stage_rows))


if __name__ == "__main__":
    main()
