"""The API as users run it: ``watercolor api`` (gunicorn) and the ``watercolor upscale`` client."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys

import pytest
import requests
from apitools import FAST_MODEL, REPO, image_bytes
from PIL import Image


def test_raw_jpeg_with_scale_4_answers_a_png_four_times_the_size(api_server, photos):
    # The README's first curl example: default model, scale=4.
    response = requests.post(f"{api_server.url}/v1/upscale?scale=4", data=image_bytes(photos[0], "JPEG"),
                             headers={"Content-Type": "image/jpeg"}, timeout=300)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["Content-Type"] == "image/png"
    result = Image.open(io.BytesIO(response.content))
    assert result.format == "PNG"
    assert result.size == (photos[0].width * 4, photos[0].height * 4)


def test_legacy_batch_over_http(api_server, photos):
    body = {"id": "http", "images": [base64.b64encode(image_bytes(p)).decode() for p in photos],
            "model": FAST_MODEL, "scale": 2}
    response = requests.post(api_server.url + "/", json=body, timeout=300)
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == "http"
    sizes = [Image.open(io.BytesIO(base64.b64decode(i))).size for i in answer["images"]]
    assert sizes == [(p.width * 2, p.height * 2) for p in photos]


def test_oversized_body_is_a_json_413_over_http(api_server):
    response = requests.post(api_server.url + "/v1/upscale", data=b"\0" * (5 * 1024 * 1024),
                             headers={"Content-Type": "image/png"}, timeout=60)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "payload_too_large"


def test_errors_over_http_are_json_and_503_has_retry_after(api_server):
    response = requests.post(api_server.url + "/v1/upscale", data=b"hi", headers={"Content-Type":
                                                                                  "text/plain"})
    assert (response.status_code, response.json()["error"]["code"]) == (415, "unsupported_media_type")
    response = requests.get(api_server.url + "/no/such/page")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


def test_metrics_count_requests_in_the_one_api_process(api_server):
    for _ in range(3):
        assert requests.get(api_server.url + "/healthz", timeout=10).status_code == 200
    text = requests.get(api_server.url + "/metrics", timeout=10).text
    line = next(ln for ln in text.splitlines()
                if ln.startswith('wtc_api_requests_total{method="GET",route="/healthz",status="200"}'))
    assert float(line.split()[-1]) >= 3


def _watercolor(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watercolor", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def test_upscale_client_writes_results_and_reports_failures(api_server, photos, tmp_path):
    inputs = []
    for i, photo in enumerate(photos[:2]):
        path = tmp_path / f"photo{i}.jpg"
        photo.save(path, "JPEG")
        inputs.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(image_bytes(photos[2])[:200])
    out = tmp_path / "out"

    done = _watercolor("upscale", *map(str, inputs), str(broken), "-o", str(out), "--scale", "2",
                       "--model", FAST_MODEL, "--url", api_server.url)
    assert done.returncode == 1, done.stderr
    for i, photo in enumerate(photos[:2]):
        result = Image.open(out / f"photo{i}_x2.png")
        assert result.size == (photo.width * 2, photo.height * 2)
    assert not list(out.glob("broken*"))
    assert "FAILED  " in done.stdout and "corrupt_image" in done.stdout
    assert "2 of 3 file(s) upscaled" in done.stdout

    done = _watercolor("upscale", str(inputs[0]), "--model", "lanczos", "--scale", "1.5", "--format",
                       "jpeg", "--url", api_server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert Image.open(tmp_path / "photo0_x1.5.jpg").size == (96, 72)


def test_upscale_client_passes_model_options(api_server, photos, tmp_path):
    path = tmp_path / "cup.png"
    photos[1].save(path)
    done = _watercolor("upscale", str(path), "--model", "waifu2x-photo", "--option", "denoise=9", "--no-jobs",
                       "--url", api_server.url)
    assert done.returncode == 1 and "invalid_parameter" in done.stdout and "denoise" in done.stdout
    done = _watercolor("upscale", str(path), "--model", "waifu2x-photo", "--option", "denoise=3", "--url",
                       api_server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert Image.open(tmp_path / "cup_x2.png").size == (photos[1].width * 2, photos[1].height * 2)


def test_upscale_client_defaults_to_the_api_port_of_this_machine(tmp_path, photos):
    path = tmp_path / "a.png"
    photos[0].save(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTC_")}
    done = _watercolor("upscale", str(path), "--no-jobs", env={**env, "WTC_API_PORT": "9"})
    assert done.returncode == 1
    assert "cannot reach the API at http://localhost:9" in done.stdout
    done = _watercolor("upscale", str(path), env={**env, "WTC_API_PORT": "port"})
    assert done.returncode == 2 and "WTC_API_PORT='port' is not a valid int" in done.stderr


def test_upscale_client_without_an_api_fails_cleanly(tmp_path, photos):
    path = tmp_path / "a.png"
    photos[0].save(path)
    done = _watercolor("upscale", str(path), "--url", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert "cannot reach the API" in done.stdout


@pytest.mark.parametrize(("name", "value"), [("WTC_API_PORT", "http"), ("WTC_API_DEADLINE", "0"),
                                             ("WTC_PROCESS_BACKENDS", "localhost")])
def test_bad_settings_stop_the_api_at_start_up_with_a_clear_message(name, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTC_")}
    env[name] = value
    done = _watercolor("api", env=env, timeout=60)
    assert done.returncode == 2
    assert name in done.stderr and value in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("command", "setting"), [("process", "WTC_PROCESS_PORT"), ("api", "WTC_API_PORT")])
def test_a_port_in_use_is_one_clear_line_and_status_1(command, setting):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WTC_")}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env.update(WTC_PROCESS_HOST="127.0.0.1", WTC_PROCESS_PORT=str(port), WTC_API_HOST="127.0.0.1",
                   WTC_API_PORT=str(port), WTC_LOG_LEVEL="WARNING")
        done = _watercolor(command, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == \
        f"watercolor: cannot listen on 127.0.0.1:{port}: address already in use (set {setting})"


def test_an_address_not_of_this_machine_names_the_host_setting():
    from watercolor.listen import CannotListen, listen

    with pytest.raises(CannotListen) as info:
        listen("192.0.2.1", 0, host_setting="WTC_API_HOST", port_setting="WTC_API_PORT")  # TEST-NET-1
    assert str(info.value) == \
        "cannot listen on 192.0.2.1:0: cannot assign requested address (set WTC_API_HOST)"


@pytest.mark.parametrize("filename", ["漢字.png", "Ωmega.png", "naïve.png", "plain.png"])
def test_any_filename_gets_a_sendable_content_disposition(api_server, photos, filename):
    response = requests.post(f"{api_server.url}/v1/upscale?model=lanczos&scale=1.5", timeout=60,
                             files={"image": (filename, image_bytes(photos[0]), "image/png")})
    assert response.status_code == 200, response.text[:300]
    disposition = response.headers["Content-Disposition"]
    stem = filename.rsplit(".", 1)[0]
    if filename.isascii():
        assert disposition == f'inline; filename="{stem}_x1.5.png"'
    else:  # an ASCII stand-in, and the real name in RFC 6266's filename*
        from urllib.parse import quote
        assert disposition.endswith(f"filename*=UTF-8''{quote(stem + '_x1.5.png', safe='')}")
        assert disposition.isascii()
    assert Image.open(io.BytesIO(response.content)).size == (96, 72)
