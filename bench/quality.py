"""Image quality per model against bicubic and Lanczos, tile invariance, and a page of crops.

Protocol: each real photo is cropped to a multiple of 12 px (so every scale
divides it), downscaled by the scale with Pillow's bicubic filter
(antialiased), enlarged again by each method, and compared with the original:
PSNR and SSIM over the whole RGB image in 8-bit levels (skimage.metrics).
Models run at their native scales with default options through
``Engine.upscale``; "lanczos" is Watercolor's own resampler (the ``lanczos``
model), "bicubic" is Pillow's.

PSNR rewards the average; the GAN-trained models (Real-ESRGAN, Real-CUGAN)
invent sharp texture and score at or below bicubic by design, which is why
the page of crops is there.

Tile invariance: each model enlarges a 128x96 crop whole and in tiles of
64 px; the table gives the largest and the 99.9th-percentile difference in
8-bit levels.

    .venv/bin/python bench/quality.py                 # all models, writes docs/quality/
    .venv/bin/python bench/quality.py --quick --out DIR
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import benchlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from watercolor.processing.engine import Engine

#: Models at each native scale (default options).
FULL_MODELS = {
    2: ("realesr-animevideov3", "waifu2x-photo", "waifu2x-anime", "waifu2x-cunet", "realcugan"),
    3: ("realesr-animevideov3", "realcugan"),
    4: ("realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3", "realcugan"),
}
QUICK_MODELS = {2: ("waifu2x-photo",), 4: ("realesr-animevideov3",)}
#: (model, scale) for the tile-invariance check.
FULL_TILED = (("realesrgan-x4plus", 4), ("realesrgan-x4plus-anime", 4), ("realesr-animevideov3", 4),
              ("realesr-animevideov3", 2), ("waifu2x-photo", 2), ("waifu2x-anime", 2),
              ("waifu2x-cunet", 2), ("realcugan", 2), ("realcugan", 3), ("realcugan", 4))
QUICK_TILED = (("waifu2x-photo", 2), ("realesr-animevideov3", 4))
#: Crops for the page: (photo, scale, left, top) of a region in the original photo.
FULL_CROPS = (("astronaut", 4, 176, 64), ("chelsea", 4, 120, 60), ("coffee", 2, 316, 226))
QUICK_CROPS = (("astronaut", 4, 176, 64),)
CROP = 96  # px of the original per panel
BASELINES = ("bicubic", "lanczos")


def prepared(name: str, side: int | None) -> Image.Image:
    """The photo (optionally its centre ``side`` square), cropped to a multiple of 12 px."""
    img = benchlib.photo(name)
    if side:
        img = benchlib.square_crop(img, side)
    w, h = img.width - img.width % 12, img.height - img.height % 12
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((left, top, left + w, top + h))


def downscaled(original: Image.Image, scale: int) -> Image.Image:
    return original.resize((original.width // scale, original.height // scale), Image.BICUBIC)


def to_levels(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


class Enlarger:
    def __init__(self, threads: int) -> None:
        self.engine = Engine(threads=threads)

    def __call__(self, method: str, small: Image.Image, scale: int,
                 tile_size: int | None = None) -> np.ndarray:
        if method == "bicubic":
            return np.asarray(small.resize((small.width * scale, small.height * scale), Image.BICUBIC))
        rgb = benchlib.to_float(small)
        run = benchlib.in_thread(lambda: self.engine.upscale(rgb, method, scale, tile_size=tile_size))
        return to_levels(run())


def scores(enlarge: Enlarger, photos: dict[str, Image.Image], models: dict[int, tuple[str, ...]]):
    """{scale: {method: [(psnr, ssim) per photo]}}"""
    out: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for scale, names in models.items():
        out[scale] = {}
        for method in BASELINES + names:
            results = []
            for photo_name, original in photos.items():
                reference = np.asarray(original)
                got = enlarge(method, downscaled(original, scale), scale)
                results.append((peak_signal_noise_ratio(reference, got, data_range=255),
                                structural_similarity(reference, got, channel_axis=2, data_range=255)))
                print(f"x{scale} {method:24s} {photo_name:12s} PSNR {results[-1][0]:.2f} "
                      f"SSIM {results[-1][1]:.4f}", flush=True)
            out[scale][method] = results
    return out


def score_tables(results, photo_names: list[str]) -> str:
    parts = []
    for scale, methods in results.items():
        bicubic = np.mean([p for p, _ in methods["bicubic"]])
        rows = []
        for method, values in methods.items():
            psnrs, ssims = [p for p, _ in values], [s for _, s in values]
            rows.append([method, *(f"{p:.2f}" for p in psnrs), f"**{np.mean(psnrs):.2f}**",
                         f"{np.mean(psnrs) - bicubic:+.2f}", *(f"{s:.3f}" for s in ssims),
                         f"**{np.mean(ssims):.3f}**"])
        headers = (["method", *(f"PSNR {n}" for n in photo_names), "PSNR mean", "vs bicubic",
                    *(f"SSIM {n}" for n in photo_names), "SSIM mean"])
        parts.append(f"### x{scale}\n\n" + benchlib.table(headers, rows))
    return "\n\n".join(parts)


def tile_invariance(enlarge: Enlarger, cases) -> str:
    source = benchlib.photo("coffee").crop((180, 60, 308, 156))  # 128x96 around the cup
    rows = []
    for model, scale in cases:
        whole = enlarge(model, source, scale, tile_size=4096).astype(np.int16)
        tiled = enlarge(model, source, scale, tile_size=64).astype(np.int16)
        diff = np.abs(whole - tiled)
        rows.append([f"{model} x{scale}", int(diff.max()), f"{np.percentile(diff, 99.9):.0f}",
                     f"{np.mean(diff):.3f}"])
        print("tiles", *rows[-1], flush=True)
    return benchlib.table(["model", "max diff (levels)", "99.9th pct", "mean"], rows)


# --- the page of crops ---------------------------------------------------------------------------


def strip(enlarge: Enlarger, photo_name: str, scale: int, left: int, top: int,
          methods: tuple[str, ...]) -> Image.Image:
    """Side-by-side panels of one region: input, baselines, models, original; labelled."""
    original = prepared(photo_name, None)
    region = (left, top, left + CROP, top + CROP)
    # Enlarge a neighbourhood, not just the region, so models see context as in real use.
    margin = 8 * scale
    box = (max(0, left - margin) // scale * scale, max(0, top - margin) // scale * scale)
    box = (*box, min(original.width, left + CROP + margin) // scale * scale,
           min(original.height, top + CROP + margin) // scale * scale)
    hr = original.crop(box)
    small = downscaled(hr, scale)
    inner = (left - box[0], top - box[1], left - box[0] + CROP, top - box[1] + CROP)
    panels = [("input (nearest)", small.resize(hr.size, Image.NEAREST).crop(inner))]
    for method in BASELINES + methods:
        panels.append((method, Image.fromarray(enlarge(method, small, scale)).crop(inner)))
    panels.append(("original", original.crop(region)))

    font = ImageFont.load_default(size=11)
    label_h = 16
    sheet = Image.new("RGB", (CROP * len(panels) + 2 * (len(panels) - 1), CROP + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, panel) in enumerate(panels):
        x = i * (CROP + 2)
        sheet.paste(panel, (x, label_h))
        draw.text((x + 2, 2), label.replace("realesrgan-", "").replace("realesr-", ""), fill="black",
                  font=font)
    return sheet


def write_page(out: Path, enlarge: Enlarger, crops, models, tables: str, invariance: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Watercolor image quality", "",
             "Generated by `bench/quality.py` (see `docs/benchmarks.md` for the protocol and the machine).",
             "Each strip: the bicubic-downscaled input (shown with nearest-neighbour enlargement), "
             "bicubic, Lanczos, every model at that scale, and the original. "
             f"Panels are {CROP}x{CROP} px of the full-size result, shown 1:1.", ""]
    for photo_name, scale, left, top in crops:
        sheet = strip(enlarge, photo_name, scale, left, top, models[scale])
        name = f"{photo_name}_x{scale}.png"
        sheet.save(out / name, optimize=True)
        lines += [f"## {photo_name}, x{scale}", "", f"![{photo_name} x{scale}]({name})", ""]
    lines += ["## Scores", "", tables, "", "## Tile invariance", "", invariance, ""]
    (out / "README.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small photo, two models")
    parser.add_argument("--out", type=Path, default=benchlib.REPO / "docs" / "quality",
                        help="where the page of crops goes (default docs/quality)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    benchlib.header("Quality: PSNR/SSIM against bicubic and Lanczos, tile invariance", args)

    models = QUICK_MODELS if args.quick else FULL_MODELS
    names = ["astronaut"] if args.quick else benchlib.photo_names()
    photos = {name: prepared(name, 48 if args.quick else None) for name in names}
    enlarge = Enlarger(args.threads)

    tables = score_tables(scores(enlarge, photos, models), names)
    invariance = tile_invariance(enlarge, QUICK_TILED if args.quick else FULL_TILED)
    write_page(args.out, enlarge, QUICK_CROPS if args.quick else FULL_CROPS, models, tables, invariance)

    sizes = ", ".join(f"{p.size.__str__()}" for p in photos.values())
    print()
    print(f"## Quality: photos {', '.join(names)} (sizes {sizes}); PSNR dB / SSIM on RGB, 8-bit")
    print()
    print(tables)
    print()
    print("## Tile invariance: 128x96 crop of coffee, tiles of 64 px vs whole")
    print()
    print(invariance)
    print()
    print(f"page written to {args.out}")


if __name__ == "__main__":
    main()
