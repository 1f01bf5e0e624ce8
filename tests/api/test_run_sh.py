"""``./run.sh``: the one-command local stack, from start to Ctrl-C."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from apitools import REPO, free_port, image_bytes
from PIL import Image


def test_run_sh_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (.ci/run installs it)")
    subprocess.run(["shellcheck", str(REPO / "run.sh")], check=True)


def _two_free_ports() -> int:
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free consecutive ports")


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def _environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTC_")}
    env.update({"WTC_THREADS": "1", "WTC_API_HOST": "127.0.0.1", **settings})
    return env


def _start(log: Path, env: dict[str, str]) -> subprocess.Popen:
    """run.sh as a terminal starts it: a process group of its own, Ctrl-C not ignored."""
    with open(log, "wb") as out:
        return subprocess.Popen(["bash", str(REPO / "run.sh")], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_running(proc: subprocess.Popen, log: Path) -> str:
    end = time.monotonic() + 400
    while "Press Ctrl-C to stop" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < end, log.read_text()[-3000:]
        time.sleep(0.5)
    return log.read_text()


def _children(pid: int) -> dict[int, str]:
    """Child process ids and their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                words = (entry / "cmdline").read_bytes().decode().split("\0")
                found[int(entry.name)] = " ".join(words).strip()
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_run_sh_serves_with_two_backends_and_stops_cleanly_on_ctrl_c(photos, tmp_path):
    api_port, backend_port = free_port(), _two_free_ports()
    log = tmp_path / "run.log"
    proc = _start(log, _environment(WTC_API_PORT=str(api_port), WTC_PROCESS_PORT=str(backend_port)))
    url = f"http://localhost:{api_port}"
    data_dir = REPO / ".data" / f"api-{api_port}"
    try:
        text = _wait_running(proc, log)
        assert url in text and "curl --data-binary @photo.jpg" in text
        assert "&model=realesr-animevideov3" in text and "Anyone who can reach" not in text

        # The README's example: a JPEG in, a PNG four times the size out.
        response = requests.post(f"{url}/v1/upscale?scale=4", data=image_bytes(photos[0], "JPEG"),
                                 headers={"Content-Type": "image/jpeg"}, timeout=300)
        assert response.status_code == 200, response.text[:300]
        result = Image.open(io.BytesIO(response.content))
        assert (result.format, result.size) == ("PNG", (photos[0].width * 4, photos[0].height * 4))

        # Work is spread over both backends.
        files = [("image", (f"{i}.png", image_bytes(photos[i % 3]))) for i in range(6)]
        response = requests.post(f"{url}/v1/upscale?model=lanczos&scale=2", files=files, timeout=300)
        assert response.status_code == 200
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        for port in (backend_port, backend_port + 1):
            assert f'wtc_api_backend_images_total{{backend="127.0.0.1:{port}",outcome="ok"}}' in metrics

        # Jobs are kept in the checkout, in a folder of this API port's own.
        response = requests.post(f"{url}/v1/jobs?model=lanczos&scale=2", data=image_bytes(photos[0]),
                                 headers={"Content-Type": "image/png"}, timeout=60)
        assert response.status_code == 202, response.text[:300]
        assert (data_dir / "jobs" / response.json()["id"]).is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C in the terminal: the whole foreground group
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                data_dir.parent.rmdir()  # .data itself, when nothing else is in it
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert "==> stopped" in text and "exited unexpectedly" not in text and "Traceback" not in text
    for port in (api_port, backend_port, backend_port + 1):
        assert _refuses(port), port


def test_run_sh_stops_everything_when_one_process_dies(tmp_path):
    api_port, backend_port = free_port(), free_port()
    log = tmp_path / "run.log"
    proc = _start(log, _environment(WTC_API_PORT=str(api_port), WTC_PROCESS_PORT=str(backend_port),
                                    WTC_LOCAL_BACKENDS="1", WTC_API_HOST="0.0.0.0"))
    try:
        text = _wait_running(proc, log)
        assert "Anyone who can reach this machine's port" in text  # all addresses, no key
        backend = next(pid for pid, command in _children(proc.pid).items() if command.endswith(" process"))
        os.kill(backend, signal.SIGKILL)
        code = proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 137, text[-3000:]
    assert f"run.sh: processing backend 1 (127.0.0.1:{backend_port}) exited unexpectedly (status 137); " \
           "stopping the rest" in text
    assert "==> stopped" in text and _refuses(api_port)


@pytest.mark.parametrize(("settings", "message"), [
    ({"WTC_LOCAL_BACKENDS": "0"},
     "run.sh: configuration error: WTC_LOCAL_BACKENDS='0' must be between 1 and 64"),
    ({"WTC_LOCAL_BACKENDS": "two"},
     "run.sh: configuration error: WTC_LOCAL_BACKENDS='two' is not a valid int"),
    ({"WTC_PROCESS_PORT": "65535"},
     "run.sh: 2 backends from WTC_PROCESS_PORT=65535 would need ports up to 65536"),
    ({"WTC_PROCESS_PORT": "40000", "WTC_API_PORT": "40001"},
     "run.sh: WTC_API_PORT=40001 is one of the backends' ports (40000-40001)"),
], ids=["no-backends", "not-a-number", "past-the-last-port", "api-among-backends"])
def test_run_sh_refuses_bad_settings_before_starting_anything(settings, message):
    done = subprocess.run(["bash", str(REPO / "run.sh")], cwd=REPO, env=_environment(**settings),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert message in done.stderr.splitlines()[0], done.stderr
    assert "==> starting" not in done.stdout and "division" not in done.stderr


@pytest.mark.parametrize("taken", ["backend", "api"])
def test_run_sh_refuses_a_port_in_use_before_starting_anything(taken):
    api_port, backend_port = free_port(), _two_free_ports()
    busy, setting = ((backend_port + 1, "WTC_PROCESS_PORT") if taken == "backend"
                     else (api_port, "WTC_API_PORT"))
    with socket.create_server(("127.0.0.1", busy)):
        done = subprocess.run(["bash", str(REPO / "run.sh")], cwd=REPO, capture_output=True, text=True,
                              timeout=300, env=_environment(WTC_API_PORT=str(api_port),
                                                            WTC_PROCESS_PORT=str(backend_port)))
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == \
        f"run.sh: cannot listen on 127.0.0.1:{busy}: address already in use (set {setting})"
    assert "nothing was started" in done.stderr and "==> starting" not in done.stdout
