"""``watercolor upscale`` through jobs against a real API: bars in a terminal, lines in a pipe, Ctrl-C."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
import requests
from apitools import FAST_MODEL, REPO, ApiServer
from PIL import Image

from watercolor.api.jobs.store import JobStore
from watercolor.config import load_settings
from watercolor.jobclient import ApiError

ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


class Terminal:
    """``watercolor ARGS`` in a pseudo-terminal of 100x30, its output collected as it comes."""

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-m", "watercolor", *args], stdin=slave,
                                     stdout=slave, stderr=slave, cwd=REPO, start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            self.output += chunk

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        end = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            if exited:
                self._reader.join(10)
            match = re.search(pattern, self.text)
            if match:
                return match
            assert not exited and time.monotonic() < end, f"no {pattern!r} in: {self.text[-2000:]}"
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        os.close(self.master)
        return code


def percents(text: str, label: str) -> list[int]:
    """The percentage shown on ``label``'s bar in every redraw, in order."""
    shown = []
    for line in ESCAPES.sub("", text.replace("\r", "")).split("\n"):
        match = re.match(rf"{re.escape(label)}\s+\[[#.]+\]\s+(\d+)%", line)
        if match:
            shown.append(int(match.group(1)))
    return shown


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("client-photos")
    astronaut = _photo("astronaut")
    crops = [astronaut.crop((0, 0, 256, 256)), _photo("coffee").crop((150, 50, 406, 306)),
             _photo("chelsea").crop((60, 10, 252, 202))]
    paths = []
    for index, crop in enumerate(crops):
        path = folder / f"photo{index}.png"
        crop.save(path)
        paths.append(path)
    return paths


def test_progress_bars_move_in_a_terminal(api_server, photo_files, tmp_path):
    out = tmp_path / "out"
    terminal = Terminal("upscale", *map(str, photo_files), "-o", str(out), "--model", FAST_MODEL,
                        "--scale", "2", "--tile-size", "32", "--poll", "0.1", "--url", api_server.url)
    assert terminal.finish() == 0, terminal.text[-3000:]
    text = terminal.text
    assert "\x1b[4F" in text  # the block of 3 images and the overall bar is redrawn in place

    for label in ("photo0.png", "photo1.png", "photo2.png", "overall"):
        shown = percents(text, label)
        assert shown == sorted(shown), f"{label} went backwards: {shown}"
        assert shown[-1] == 100
        assert len({p for p in shown if 0 < p < 100}) >= 2, f"{label} did not move: {shown}"
    for path in photo_files:
        source, result = Image.open(path), Image.open(out / f"{path.stem}_x2.png")
        assert result.size == (source.width * 2, source.height * 2)
    assert "3 of 3 file(s) upscaled" in text


def test_a_pipe_gets_one_line_per_event(api_server, photo_files, tmp_path):
    done = subprocess.run([sys.executable, "-m", "watercolor", "upscale", *map(str, photo_files[:2]),
                           "-o", str(tmp_path), "--model", "lanczos", "--scale", "1.5", "--url",
                           api_server.url], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert re.fullmatch(r"job http://127\.0\.0\.1:\d+/v1/jobs/[0-9a-f]{32}: 2 image\(s\)", lines[0])
    assert f"photo0.png: done (-> {tmp_path / 'photo0_x1.5.png'})" in lines
    assert "overall: 2 of 2 images finished" in lines
    assert "\x1b" not in done.stderr
    assert (tmp_path / "photo1_x1.5.png").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["ctrl-c", "kill", "terminal-closed"])
def test_ctrl_c_cancels_the_running_job(api_server, photo_files, tmp_path, signum):
    big = tmp_path / "astronaut.png"
    _photo("astronaut").save(big)  # 256 tiles of 32 px: seconds of work
    terminal = Terminal("upscale", str(big), "-o", str(tmp_path / "out"), "--model", FAST_MODEL,
                        "--scale", "2", "--tile-size", "32", "--poll", "0.1", "--url", api_server.url)
    job_url = terminal.wait_for(r"job (http://\S+): 1 image").group(1)
    terminal.wait_for(r"astronaut\.png\s+\[[#.]+\]\s+\d+%\s+\S*\d+/256 tiles")
    os.killpg(terminal.proc.pid, signum)
    assert terminal.finish() == 130
    assert "interrupted: the unfinished work was cancelled" in terminal.text
    job = requests.get(job_url, timeout=10).json()
    assert job["state"] == "cancelled" and job["images"][0]["error"]["code"] == "cancelled"
    assert not (tmp_path / "out" / "astronaut_x2.png").exists()


def test_an_api_that_cannot_take_jobs_gets_the_files_the_direct_way(backends, log_dir, photo_files,
                                                                     tmp_path):
    data_dir = tmp_path / "shared"
    holder = JobStore(load_settings({}, data_dir=str(data_dir)))
    holder.open()  # another API holds the folder, as with two copies sharing one
    server = ApiServer(log_dir, process_backends=",".join(b.label for b in backends), data_dir=data_dir)
    try:
        done = subprocess.run([sys.executable, "-m", "watercolor", "upscale", *map(str, photo_files[:2]),
                               "-o", str(tmp_path / "out"), "--model", "lanczos", "--scale", "2", "--url",
                               server.url], capture_output=True, text=True, timeout=300, cwd=REPO)
    finally:
        server.stop()
        holder.close()
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("the API cannot take jobs now (store_unavailable: the job store is in use by "
                            "another API process; set WTC_DATA_DIR"), first
    assert first.endswith("sending the files directly instead, one waiting request each "
                          "(no progress until done)")
    for path in photo_files[:2]:
        assert f"{path.name}: done (-> {tmp_path / 'out' / (path.stem + '_x2.png')})" in done.stderr
        assert Image.open(tmp_path / "out" / f"{path.stem}_x2.png").size == \
            tuple(2 * side for side in Image.open(path).size)
    assert "2 of 2 file(s) upscaled" in done.stdout


@pytest.mark.parametrize(("status", "code", "refused"), [
    (503, "store_unavailable", True), (503, "store_full", True), (429, "too_many_jobs", True),
    (413, "job_too_large", True), (404, "not_found", True), (503, None, True),
    (422, "invalid_parameter", False), (413, "payload_too_large", False), (401, "unauthorized", False),
    (None, None, False),
], ids=lambda v: str(v))
def test_which_refusals_send_the_files_the_direct_way(status, code, refused):
    assert ApiError("x", status=status, code=code).jobs_refused is refused
