"""``./run.sh``: the one-command local stack, from start to Ctrl-C."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import time

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


def test_run_sh_serves_with_two_backends_and_stops_cleanly_on_ctrl_c(photos, tmp_path):
    api_port, backend_port = free_port(), _two_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTC_")}
    env.update(WTC_API_PORT=str(api_port), WTC_PROCESS_PORT=str(backend_port), WTC_THREADS="1",
               WTC_API_HOST="127.0.0.1")
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(REPO / "run.sh")], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://localhost:{api_port}"
    try:
        end = time.monotonic() + 400
        while "Press Ctrl-C to stop" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < end, log.read_text()[-3000:]
            time.sleep(0.5)
        text = log.read_text()
        assert url in text and "curl --data-binary @photo.jpg" in text

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
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 130, log.read_text()[-3000:]
    assert "==> stopped" in log.read_text()
    for port in (api_port, backend_port, backend_port + 1):
        assert _refuses(port), port
