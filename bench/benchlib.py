"""What the benchmark scripts share: real servers as subprocesses, photos, timing and tables.

Every script measures its variants side by side in one run, interleaved
(A B C, A B C, ...), and reports medians and ratios of medians: the machines
these run on are shared and noisy, so absolute seconds say little and a
ratio measured in one run says much more.
"""

from __future__ import annotations

import io
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from watercolor import protocol, transport

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wtc_env(**settings: object) -> dict[str, str]:
    """This process's environment without any WTC_* variable, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTC_")}
    env.update({f"WTC_{k.upper()}": str(v) for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    """A ``python -m watercolor COMMAND`` subprocess; its output goes to a log file."""

    def __init__(self, command: str, log_dir: Path, port: int, **settings: object) -> None:
        self.port = port
        self.log_path = Path(log_dir) / f"{command}-{port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "watercolor", command],
                                         env=wtc_env(**settings), stdout=log, stderr=subprocess.STDOUT,
                                         cwd=REPO)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.log_path.name} exited: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Backend(Server):
    """A real processing backend (``watercolor process``) on a loopback port."""

    def __init__(self, log_dir: Path, **settings: object) -> None:
        port = free_port()
        settings = {"log_level": "WARNING", "grace_period": 2, **settings}
        super().__init__("process", log_dir, port, process_host="127.0.0.1", process_port=port,
                         **settings)
        self.address = ("127.0.0.1", port)
        self.label = f"127.0.0.1:{port}"
        wait_for_backend(self.address, self)


def wait_for_backend(address: tuple[str, int], server: Server | None = None, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server is not None:
            server.check_alive()
        try:
            reply = transport.exchange(address, protocol.ping("bench"), io_timeout=2, connect_timeout=1)
            if reply.type is protocol.FrameType.PONG:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"backend {address} did not start")


class Api(Server):
    """A real API (``watercolor api``, gunicorn) on a loopback port, in front of ``backends``."""

    def __init__(self, log_dir: Path, backends: Iterable[str], **settings: object) -> None:
        port = free_port()
        settings = {"log_level": "WARNING", "api_deadline": 600, **settings}
        super().__init__("api", log_dir, port, api_host="127.0.0.1", api_port=port,
                         process_backends=",".join(backends), **settings)
        self.url = f"http://127.0.0.1:{port}"
        self._wait_up()

    def _wait_up(self, timeout: float = 60) -> None:
        import requests

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.check_alive()
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not start")


def stop_all(servers: Iterable[Server]) -> None:
    for server in servers:
        server.stop()


# --- photos --------------------------------------------------------------------------------------

#: The fixed set of real photos (scikit-image sample data), name -> loader name.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photo(name: str) -> Image.Image:
    """A real photo, RGB: a scikit-image sample, or ``grace_hopper`` from matplotlib if installed."""
    if name == "grace_hopper":
        path = matplotlib_sample("grace_hopper.jpg")
        if path is None:
            raise FileNotFoundError("matplotlib's sample data is not installed")
        return Image.open(path).convert("RGB")
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def matplotlib_sample(filename: str) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "sample_data" / filename
    return path if path.is_file() else None


def photo_names() -> list[str]:
    names = list(SKIMAGE_PHOTOS)
    if matplotlib_sample("grace_hopper.jpg") is not None:
        names.append("grace_hopper")
    return names


def square_crop(img: Image.Image, side: int) -> Image.Image:
    """The centre ``side`` x ``side`` of ``img`` (resized down first if it is smaller)."""
    if min(img.size) < side:
        factor = side / min(img.size)
        img = img.resize((round(img.width * factor), round(img.height * factor)), Image.LANCZOS)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def to_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


# --- timing --------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, *,
                warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of every variant, run in turn ``repeats`` times (A B C A B C ...).

    The order rotates each round so no variant always runs right after the same other one.
    """
    if warmup:
        for fn in variants.values():
            fn()
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed(variants[name]))
    return times


def in_thread(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn``, run on a fresh thread per call, as the backend runs every request.

    It matters for ncnn: its OpenMP runtime (libgomp) makes the main thread's
    team spin-wait, and on a busy machine that made inference from the main
    thread up to 5x slower than the same call from any other thread.
    """

    def run() -> T:
        box: list = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                box.append(fn())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                error.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return box[0]

    return run


def keeping(fn: Callable[[], object], results: dict[str, object], name: str) -> Callable[[], object]:
    """``fn``, storing what it returns in ``results[name]`` (the last run's result is checked)."""

    def run() -> object:
        results[name] = fn()
        return results[name]

    return run


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --- reporting -----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> str:
    """One line describing the machine and the software versions."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    try:
        import ncnn

        ncnn_version = getattr(ncnn, "__version__", "?")
    except ImportError:
        ncnn_version = "not installed"
    return (f"{len(os.sched_getaffinity(0))} CPUs ({cpu}), {mem} RAM, Python {platform.python_version()}, "
            f"ncnn {ncnn_version}, numpy {np.__version__}, Pillow {Image.__version__}; "
            f"load average at start {load_average()}")


def header(title: str, args: object) -> None:
    print(f"# {title}")
    print(f"machine: {machine()}")
    print(f"arguments: {vars(args) if hasattr(args, '__dict__') else args}")
    print()
