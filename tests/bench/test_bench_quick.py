"""Every benchmark script runs in its quick mode and prints its table(s).

These keep the scripts in bench/ from rotting as the code they measure
changes; they assert nothing about speed (the machines are shared and noisy,
and the full runs are for docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--quick", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def table_rows(output: str, first_header: str) -> list[list[str]]:
    """The body rows of the markdown table whose first column header is ``first_header``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_scaling_quick():
    out = run_bench("scaling.py")
    standin = table_rows(out, "backends")
    assert [row[0] for row in standin] == ["1", "4"]
    assert all(float(row[5]) > 0 for row in standin)  # an efficiency was computed for every N
    real = table_rows(out[out.index("## (b)"):], "backends")
    assert [row[0] for row in real] == ["1", "2"]


def test_overhead_quick():
    rows = table_rows(run_bench("overhead.py"), "model")
    assert [row[0] for row in rows] == ["realesr-animevideov3"]
    assert int(rows[0][-1]) <= 1  # the API's image is the raw inference result, up to rounding


def test_memory_quick():
    rows = table_rows(run_bench("memory.py"), "family")
    assert {row[0] for row in rows} == {"realesrgan", "waifu2x", "realcugan"}
    assert all(int(row[6]) >= int(row[5]) > 0 for row in rows)  # peak >= idle


def test_quality_quick(tmp_path):
    out = run_bench("quality.py", "--out", str(tmp_path))
    rows = table_rows(out, "method")
    assert {"bicubic", "lanczos", "waifu2x-photo"} <= {row[0] for row in rows}
    assert (tmp_path / "README.md").is_file()
    strips = list(tmp_path.glob("*.png"))
    assert strips and all(p.stat().st_size > 1000 for p in strips)


@pytest.mark.timeout(600)
def test_throughput_quick():
    rows = table_rows(run_bench("throughput.py"), "model")
    assert rows and float(rows[0][2]) > 0


def test_tile_memory_one_network():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "tile_memory.py"), "waifu2x-photo"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table_rows(proc.stdout, "network")
    assert [row[0] for row in rows] == ["WAIFU2X_PHOTO_UP2X_DENOISE0X"]
    assert float(rows[0][4]) > float(rows[0][3]) > 0  # a tile's peak is above the loaded network
