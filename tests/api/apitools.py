"""Helpers for the API tests: real backends and API servers as subprocesses, free ports, images."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from watercolor import protocol, transport
from watercolor.config import load_settings

REPO = Path(__file__).resolve().parents[2]
#: Fast models keep these tests light on the shared CPUs.
FAST_MODEL = "realesr-animevideov3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def image_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _env(**settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTC_")}
    env.update({f"WTC_{k.upper()}": str(v) for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Backend:
    """A real processing backend, ``python -m watercolor process``, on a loopback port."""

    def __init__(self, log_dir: Path, **settings: object) -> None:
        self.port = free_port()
        self.address = ("127.0.0.1", self.port)
        self.label = f"127.0.0.1:{self.port}"
        self.log_path = log_dir / f"backend-{self.port}.log"
        env = _env(**{"process_host": "127.0.0.1", "process_port": self.port, "threads": 1,
                      "log_level": "WARNING", "grace_period": 2, **settings})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "watercolor", "process"], env=env,
                                        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited: {self.log_path.read_text()[-2000:]}")
            try:
                reply = transport.exchange(self.address, protocol.ping("t"), io_timeout=2,
                                           connect_timeout=1)
                if reply.type is protocol.FrameType.PONG:
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.1)
        raise RuntimeError("backend did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class ApiServer:
    """A real ``python -m watercolor api`` (gunicorn) subprocess."""

    def __init__(self, log_dir: Path, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"api-{self.port}.log"
        env = _env(**{"api_host": "127.0.0.1", "api_port": self.port, "api_workers": 4, **settings})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "watercolor", "api"], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self._wait_up()

    def _wait_up(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not start")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def settings_for(backend_list: list[Backend], **overrides: object):
    values = {"process_backends": ",".join(b.label for b in backend_list), "api_deadline": 120.0,
              "io_timeout": 20.0, "api_retries": 3, **overrides}
    return load_settings({}, **values)


def metric(app, name: str, **labels: str) -> float:
    return app.extensions["watercolor"].metrics.value(name, **labels)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
